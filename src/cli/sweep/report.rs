//! The table of a sweep's trials, sorted by their best val_acc: printed with the settings that differ between
//! trials, and written as `results.csv` and `results.json` (every setting) with a picture of every trial's
//! val_acc curve. A trial whose `trial.json` cannot be read is reported and left out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use lenet5_core::fs::write_atomic;
use lenet5_core::run::read_metrics;
use lenet5_core::spec::SETTINGS;
use lenet5_core::train::EpochMetrics;

use super::super::CliResult;
use super::super::flags::SWEEP_SETS;
use super::grid::show;
use super::trials::TRIAL_FILE;

/// One trial's line of the table.
#[derive(serde::Serialize)]
struct Row {
    trial: String,
    settings: BTreeMap<String, String>,
    epochs: usize,
    best_epoch: usize,
    best_val_acc: f64,
    seconds: f64,
    /// Whether val_acc is measured on images held out of the training set (else on the test set).
    held_out: bool,
    #[serde(skip)]
    history: Vec<EpochMetrics>,
}

/// The trial directories of `dir` (those with a `trial.json`), sorted.
fn trial_dirs(dir: &Path) -> CliResult<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.join(TRIAL_FILE).is_file()).collect();
    dirs.sort();
    Ok(dirs)
}

/// The row of the trial in `dir`, or why it has none.
fn row(dir: &Path) -> Result<Row, String> {
    let file = dir.join(TRIAL_FILE);
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let settings: serde_json::Map<String, Value> = match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        _ => return Err(format!("{}: not a JSON object of settings", file.display())),
    };
    let history = read_metrics(&dir.join("metrics.jsonl")).unwrap_or_default();
    let best = history.iter().filter(|m| !m.val_acc.is_nan()).max_by(|x, y| x.val_acc.total_cmp(&y.val_acc));
    Ok(Row {
        trial: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        settings: settings
            .iter()
            .filter(|(k, _)| !SWEEP_SETS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), show(v)))
            .collect(),
        epochs: history.len(),
        best_epoch: best.map_or(0, |m| m.epoch),
        best_val_acc: best.map_or(f64::NAN, |m| m.val_acc),
        seconds: history.iter().map(|m| m.train_seconds + m.val_seconds).sum(),
        held_out: settings.get("val_split").and_then(Value::as_f64).is_some_and(|share| share > 0.0),
        history,
    })
}

/// The trial of `dir` with the best val_acc so far, and that val_acc.
pub fn best_so_far(dir: &Path) -> Option<(String, f64)> {
    trial_dirs(dir)
        .ok()?
        .into_iter()
        .filter_map(|trial| {
            let history = read_metrics(&trial.join("metrics.jsonl")).ok()?;
            let best = history.iter().map(|m| m.val_acc).filter(|v| !v.is_nan()).fold(f64::NAN, f64::max);
            (!best.is_nan()).then(|| (trial.file_name().unwrap_or_default().to_string_lossy().into_owned(), best))
        })
        .max_by(|x, y| x.1.total_cmp(&y.1))
}

/// The settings' names, in the order of the specification, then any others the trials record.
fn columns(rows: &[Row]) -> Vec<String> {
    let mut keys: Vec<String> = SETTINGS
        .iter()
        .map(|s| s.name.to_string())
        .filter(|k| rows.iter().any(|r| r.settings.contains_key(k)))
        .collect();
    for r in rows {
        keys.extend(r.settings.keys().filter(|k| !keys.contains(k)).cloned().collect::<Vec<_>>());
    }
    keys
}

/// The table of every trial in `dir`, sorted by best val_acc: printed, and written as `results.csv` and
/// `results.json`, with the picture of every trial's val_acc curve.
pub fn report(dir: &Path) -> CliResult {
    let mut rows = Vec::new();
    for trial in trial_dirs(dir)? {
        match row(&trial) {
            Ok(row) => rows.push(row),
            Err(why) => eprintln!("note: left out of the table: {why}"),
        }
    }
    if rows.is_empty() {
        return Err(format!("{}: no trials (directories with trial.json) to report", dir.display()).into());
    }
    rows.sort_by(|x, y| y.best_val_acc.total_cmp(&x.best_val_acc).then(x.trial.cmp(&y.trial)));
    let keys = columns(&rows);
    // The table shows the settings that differ between trials; the files hold them all.
    let varying: Vec<&String> =
        keys.iter().filter(|k| rows.iter().any(|r| r.settings.get(*k) != rows[0].settings.get(*k))).collect();
    print_table(&rows, &varying);
    let chosen = chosen(dir, &rows[0]);
    write_atomic(&dir.join("results.csv"), csv(&rows, &keys).as_bytes())?;
    let json = serde_json::json!({ "trials": rows, "chosen": chosen });
    write_atomic(&dir.join("results.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
    let curves: Vec<(String, Vec<EpochMetrics>)> =
        rows.iter().map(|r| (format!("{} {}", r.trial, shown(r, &varying)), r.history.clone())).collect();
    let (csv_path, json_path, png) = (dir.join("results.csv"), dir.join("results.json"), dir.join("val_acc.png"));
    match lenet5::viz::plot_sweep(&curves, &png) {
        Ok(()) => println!("results: {}, {} and {}", csv_path.display(), json_path.display(), png.display()),
        Err(e) => {
            println!("results: {} and {}", csv_path.display(), json_path.display());
            eprintln!("note: no picture ({e})");
        }
    }
    Ok(())
}

/// The trial the sweep chooses (the best val_acc) and, when it chose on held-out images, the test figures its
/// run measured once, with its best weights, after training: the only test figure a sweep reports, so that it
/// stays an honest estimate. Printed, and returned for `results.json`.
fn chosen(dir: &Path, best: &Row) -> Value {
    let mut chosen = serde_json::json!({ "trial": best.trial, "val_acc": best.best_val_acc });
    if !best.held_out {
        println!(
            "val_acc above is the test set's (val_split 0): choosing on it leaves no unbiased test figure; \
             hold out training images with --val-split to have one"
        );
        return chosen;
    }
    let state = lenet5_core::run::RunDir::new(dir.join(&best.trial)).load_state();
    match state.ok().and_then(|(state, _, _)| state.test) {
        Some(test) => {
            println!(
                "chosen: {} (val_acc {:.4} on held-out training images); its test accuracy, measured once with \
                 its best weights: {:.4} ({}/{} correct), loss {:.4}",
                best.trial, best.best_val_acc, test.accuracy, test.correct, test.total, test.loss
            );
            chosen["test"] = serde_json::json!(test);
        }
        None => println!("chosen: {} (its run has not finished: no test figure yet)", best.trial),
    }
    chosen
}

/// The rows as text, with the settings that vary.
fn print_table(rows: &[Row], varying: &[&String]) {
    println!("{:<10} {:<40} {:>6} {:>5} {:>8} {:>8}", "trial", "settings", "epochs", "best", "val_acc", "seconds");
    for r in rows {
        println!(
            "{:<10} {:<40} {:>6} {:>5} {:>8.4} {:>8.1}",
            r.trial,
            shown(r, varying),
            r.epochs,
            r.best_epoch,
            r.best_val_acc,
            r.seconds
        );
    }
}

/// The settings of `varying` of a row, as `name=value` pairs.
fn shown(r: &Row, varying: &[&String]) -> String {
    let pairs: Vec<String> =
        varying.iter().map(|k| format!("{k}={}", r.settings.get(*k).map_or("", String::as_str))).collect();
    pairs.join(" ")
}

/// The rows as CSV: every setting, then the figures.
fn csv(rows: &[Row], keys: &[String]) -> String {
    let quote = |v: &str| match v.contains([',', '"', '\n']) {
        true => format!("\"{}\"", v.replace('"', "\"\"")),
        false => v.to_string(),
    };
    let mut csv = format!("trial,{},epochs_done,best_epoch,best_val_acc,seconds\n", keys.join(","));
    for r in rows {
        let values: Vec<String> = keys.iter().map(|k| quote(r.settings.get(k).map_or("", String::as_str))).collect();
        let (trial, epochs, best, acc, secs) = (&r.trial, r.epochs, r.best_epoch, r.best_val_acc, r.seconds);
        csv += &format!("{trial},{},{epochs},{best},{acc},{secs:.3}\n", values.join(","));
    }
    csv
}
