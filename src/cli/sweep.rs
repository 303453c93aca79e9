//! `lenet5 sweep`: the Cartesian product of comma-separated values of the training flags, each trial a
//! `lenet5 train` run of its own in `OUT/trial-NNN` (so it gives the bits that run gives alone), several at a
//! time, resumable, and splittable by index for job arrays; then one table of them all, sorted by val_acc.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use lenet5::lock::lock_dir;
use lenet5_core::fs::{create_dir, write_atomic};
use lenet5_core::run::{RunDir, read_metrics};

use clap::Parser;

use super::train::{ScheduleArg, TrainArgs};
use super::{CliResult, DataArgs, HeadArg};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    Off,
    On,
}

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Learning rates, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.001", allow_negative_numbers = true)]
    pub lr: Vec<f32>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub batch_size: Vec<usize>,
    /// Heads: sigmoid, logits.
    #[arg(long, value_delimiter = ',', value_enum, default_value = "sigmoid")]
    pub head: Vec<HeadArg>,
    /// Momenta.
    #[arg(long, value_delimiter = ',', default_value = "0.9", allow_negative_numbers = true)]
    pub momentum: Vec<f32>,
    /// Weight decays.
    #[arg(long, value_delimiter = ',', default_value = "0", allow_negative_numbers = true)]
    pub weight_decay: Vec<f32>,
    /// Seeds.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub seed: Vec<u64>,
    /// Learning-rate schedules (their parameters take `lenet5 train`'s defaults).
    #[arg(long, value_delimiter = ',', value_enum, default_value = "constant")]
    pub lr_schedule: Vec<ScheduleArg>,
    /// Augmentation: off, on.
    #[arg(long, value_delimiter = ',', value_enum, default_value = "off")]
    pub augment: Vec<OnOff>,
    /// Epochs of each trial.
    #[arg(long, value_delimiter = ',', default_value = "50")]
    pub epochs: Vec<usize>,
    /// Epochs between the cuts of the `step` schedule [default: `lenet5 train`'s].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub step_size: Vec<usize>,
    /// Factors of the `step` schedule's cuts [default: `lenet5 train`'s].
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub gamma: Vec<f32>,
    /// Warm-up epochs of the `cosine` and `onecycle` schedules [default: `lenet5 train`'s].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    pub warmup_epochs: Vec<usize>,
    /// Largest rotations of --augment on, in degrees [default: `lenet5 train`'s].
    #[arg(long, value_delimiter = ',', value_name = "DEGREES,...", allow_negative_numbers = true)]
    pub rotate: Vec<f32>,
    /// Largest shifts of --augment on, in pixels [default: `lenet5 train`'s].
    #[arg(long, value_delimiter = ',', value_name = "PIXELS,...", allow_negative_numbers = true)]
    pub shift: Vec<f32>,
    /// Early stopping for every trial (see `lenet5 train --patience`).
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// Train every trial on only the first N training images.
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Evaluate every trial on only the first N test images.
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Directory of the sweep: a run directory per trial, and the results table (CSV and JSON).
    #[arg(long, default_value = "sweep", value_name = "DIR")]
    pub out: PathBuf,
    /// Trials run at once; each gets the cores divided among them.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub parallel: usize,
    /// Run only every N-th trial from the I-th (0-based), for job arrays: `--shard I/N`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Only gather the trials in DIR (written by shards, or an earlier sweep) into one table.
    #[arg(long, value_name = "DIR")]
    pub collect: Option<PathBuf>,
    /// Further `lenet5 train` flags, the same for every trial, after `--` (`-- --scale 0.8,1.2 --init-weights
    /// w.safetensors`).
    #[arg(last = true, value_name = "TRAIN FLAGS")]
    pub train_flags: Vec<String>,
}

/// One trial: its number and its settings as `lenet5 train` flags.
struct Trial {
    index: usize,
    settings: Vec<(&'static str, String)>,
}

impl Trial {
    fn dir(&self, out: &Path) -> PathBuf {
        out.join(format!("trial-{:03}", self.index))
    }
}

/// Every combination of the swept values, in a fixed order (the last flag varies fastest).
fn trials(a: &SweepArgs) -> Vec<Trial> {
    let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let axes: Vec<(&'static str, Vec<String>)> = vec![
        ("--epochs", a.epochs.iter().map(|v| v.to_string()).collect()),
        ("--batch-size", a.batch_size.iter().map(|v| v.to_string()).collect()),
        ("--head", a.head.iter().map(|v| name(v)).collect()),
        ("--lr", a.lr.iter().map(|v| v.to_string()).collect()),
        ("--momentum", a.momentum.iter().map(|v| v.to_string()).collect()),
        ("--weight-decay", a.weight_decay.iter().map(|v| v.to_string()).collect()),
        ("--lr-schedule", a.lr_schedule.iter().map(|v| name(v)).collect()),
        ("--augment", a.augment.iter().map(|v| name(v)).collect()),
        ("--seed", a.seed.iter().map(|v| v.to_string()).collect()),
        ("--step-size", a.step_size.iter().map(|v| v.to_string()).collect()),
        ("--gamma", a.gamma.iter().map(|v| v.to_string()).collect()),
        ("--warmup-epochs", a.warmup_epochs.iter().map(|v| v.to_string()).collect()),
        ("--rotate", a.rotate.iter().map(|v| v.to_string()).collect()),
        ("--shift", a.shift.iter().map(|v| v.to_string()).collect()),
    ];
    let mut combos: Vec<Vec<(&'static str, String)>> = vec![Vec::new()];
    // A flag given no values is not swept: every trial takes `lenet5 train`'s default.
    for (flag, values) in axes.iter().filter(|(_, values)| !values.is_empty()) {
        combos = combos
            .into_iter()
            .flat_map(|c| values.iter().map(move |v| [c.clone(), vec![(*flag, v.clone())]].concat()))
            .collect();
    }
    combos.into_iter().enumerate().map(|(index, settings)| Trial { index, settings }).collect()
}

/// `lenet5 train`'s arguments, parsed alone.
#[derive(clap::Parser)]
#[command(name = "lenet5 train", no_binary_name = true)]
struct TrainCommand {
    #[command(flatten)]
    args: TrainArgs,
}

/// Every trial's command line read and checked as `lenet5 train` reads and checks it, before any trial starts.
fn validate(a: &SweepArgs, trials: &[Trial]) -> CliResult {
    check_train_flags(&a.train_flags)?;
    for t in trials {
        let args = train_flags(a, t, &a.out);
        let parsed = TrainCommand::try_parse_from(&args).map_err(|e| {
            let first = e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
            format!("trial-{:03} (lenet5 train {}): {first}", t.index, args.join(" "))
        })?;
        parsed.args.options().config().validate()?;
    }
    Ok(())
}

/// The flags after `--` are none of the sweep's own (which it passes itself) nor those it sets for each trial.
fn check_train_flags(flags: &[String]) -> CliResult {
    let sweep = <SweepArgs as clap::Args>::augment_args(clap::Command::new("sweep"));
    let own: Vec<String> = sweep.get_arguments().filter_map(|arg| Some(format!("--{}", arg.get_long()?))).collect();
    for flag in flags.iter().filter(|f| f.starts_with('-')) {
        let name = flag.split('=').next().unwrap_or_default();
        if ["-h", "--help", "-V", "--version"].contains(&name) {
            return Err(format!("{name} after -- is not a training flag; `lenet5 train --help` lists those").into());
        }
        if own.iter().any(|o| o == name) {
            return Err(format!("{name} is a flag of the sweep: give it before --").into());
        }
        if ["--resume", "--force", "--threads", "--progress"].contains(&name) {
            return Err(format!("{name} is the sweep's to set for each trial, not a flag to give after --").into());
        }
    }
    Ok(())
}

/// The `lenet5 train` flags of a new run of trial `t` in `out`: its settings, the flags every trial shares (the
/// data's among them), and those after `--`; `launch` adds the threads and the progress display.
fn train_flags(a: &SweepArgs, t: &Trial, out: &Path) -> Vec<String> {
    let mut args = vec!["--out".to_string(), t.dir(out).display().to_string()];
    for (flag, value) in &t.settings {
        match (*flag, value.as_str()) {
            ("--augment", "on") => args.push("--augment".into()),
            ("--augment", _) => {}
            _ => args.extend([flag.to_string(), value.clone()]),
        }
    }
    args.extend(fixed_flags(a));
    args.extend(a.data.to_args());
    args.extend(a.train_flags.iter().cloned());
    args
}

/// `I/N` with `I < N`.
fn parse_shard(s: &str) -> CliResult<(usize, usize)> {
    let bad = || format!("--shard must be I/N with 0 <= I < N, got {s}");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad().into());
    }
    Ok((i, n))
}

pub fn run(a: SweepArgs) -> CliResult {
    if let Some(dir) = &a.collect {
        return report(dir);
    }
    if a.parallel == 0 || a.parallel > 256 {
        return Err(format!("--parallel must be from 1 to 256, got {}", a.parallel).into());
    }
    let (shard, shards) = a.shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));
    let all = trials(&a);
    validate(&a, &all)?;
    let mine: Vec<Trial> = all.into_iter().filter(|t| t.index % shards == shard).collect();
    create_dir(&a.out)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / a.parallel).max(1);
    println!(
        "sweep of {} trial(s){} into {}, {} at a time with {} thread(s) each",
        mine.len(),
        if shards > 1 { format!(" (shard {shard}/{shards})") } else { String::new() },
        a.out.display(),
        a.parallel,
        threads
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let (failed, elsewhere) = run_trials(&a, &mine, threads, &stop)?;
    if stop.load(Ordering::SeqCst) {
        return Err(
            format!("interrupted; run the same command again to resume the sweep in {}", a.out.display()).into()
        );
    }
    report(&a.out)?;
    if elsewhere > 0 {
        println!(
            "{elsewhere} trial(s) were being trained by another process; when it is done, run the same command again \
             (it finishes nothing twice) or `lenet5 sweep --collect {}` for the whole table",
            a.out.display()
        );
    }
    if failed > 0 {
        return Err(format!("{failed} trial(s) failed: see train.log in their directories").into());
    }
    Ok(())
}

/// Polls of the running trials between two refreshes of the status line (a poll is 50 ms).
const STATUS_POLLS: usize = 10;

/// Runs the trials that are not finished, `a.parallel` at a time; returns how many failed and how many another
/// process was training. On a terminal a status line shows the trials finished, each running trial's epoch and
/// the best so far; elsewhere a line per finished trial says as much.
fn run_trials(a: &SweepArgs, trials: &[Trial], threads: usize, stop: &AtomicBool) -> CliResult<(usize, usize)> {
    let mut pending = trials.iter();
    let mut running: Vec<(&Trial, Child)> = Vec::new();
    let (mut done, mut failed, mut elsewhere, mut interrupted) = (0, 0, 0, false);
    let status = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(trials.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{pos}/{len} trials [{bar:20}] {wide_msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    for polls in 0.. {
        while running.len() < a.parallel && !stop.load(Ordering::SeqCst) {
            let Some(t) = pending.next() else { break };
            match launch(a, t, threads)? {
                Launch::Started(child) => running.push((t, child)),
                Launch::Finished => done += 1,
                Launch::Elsewhere(holder) => {
                    done += 1;
                    elsewhere += 1;
                    let line =
                        format!("trial-{:03} is being trained by another process (pid {holder}): left to it", t.index);
                    match &status {
                        Some(bar) => bar.println(line),
                        None => println!("{line}"),
                    }
                }
            }
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if stop.load(Ordering::SeqCst) && !interrupted {
            // Each trial saves its last finished epoch and stops, as it would on its own Ctrl-C.
            interrupted = true;
            for (_, child) in &running {
                interrupt(child);
            }
        }
        let mut still = Vec::new();
        let mut finished = Vec::new();
        for (trial, mut child) in running {
            match child.try_wait()? {
                Some(status) => finished.push((trial.index, status)),
                None => still.push((trial, child)),
            }
        }
        for (index, exit) in &finished {
            done += 1;
            if !exit.success() && !stop.load(Ordering::SeqCst) {
                failed += 1;
            }
            let outcome = if exit.success() { "done" } else { "stopped" };
            let line = format!(
                "trial-{index:03} {outcome} ({done}/{} finished, {} running{})",
                trials.len(),
                still.len(),
                best_so_far(&a.out)
                    .map_or(String::new(), |(trial, acc)| format!("; best so far {trial}, val_acc {acc:.4}"))
            );
            match &status {
                Some(bar) => bar.println(line),
                None => println!("{line}"),
            }
        }
        running = still;
        if let Some(bar) = &status
            && (!finished.is_empty() || polls % STATUS_POLLS == 0)
        {
            bar.set_position(done as u64);
            bar.set_message(status_line(&a.out, running.iter().map(|(t, _)| *t)));
        }
    }
    if let Some(bar) = &status {
        bar.finish_and_clear();
    }
    Ok((failed, elsewhere))
}

/// The running trials with the epochs they finished, and the best trial so far.
fn status_line<'a>(out: &Path, running: impl Iterator<Item = &'a Trial>) -> String {
    let trials: Vec<String> = running
        .map(|t| {
            let epochs = read_metrics(&RunDir::new(t.dir(out)).metrics()).map_or(0, |h| h.len());
            format!("trial-{:03} {epochs}/{} epochs", t.index, t.settings[0].1)
        })
        .collect();
    let best = best_so_far(out).map(|(trial, acc)| format!("best {trial} {acc:.4}"));
    let running = (!trials.is_empty()).then(|| format!("running {}", trials.join(", ")));
    [running, best].into_iter().flatten().collect::<Vec<_>>().join("; ")
}

/// The trial of `dir` with the best val_acc so far, and that val_acc.
fn best_so_far(dir: &Path) -> Option<(String, f64)> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter(|e| e.path().join("trial.json").is_file())
        .filter_map(|e| {
            let history = read_metrics(&e.path().join("metrics.jsonl")).ok()?;
            let best = history.iter().map(|m| m.val_acc).filter(|v| !v.is_nan()).fold(f64::NAN, f64::max);
            (!best.is_nan()).then(|| (e.file_name().to_string_lossy().into_owned(), best))
        })
        .max_by(|x, y| x.1.total_cmp(&y.1))
}

/// Asks a running trial to stop as Ctrl-C would.
fn interrupt(child: &Child) {
    #[cfg(unix)]
    // SAFETY: sends a signal to our own child process; touches no memory.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    #[cfg(not(unix))]
    let _ = child;
}

/// What became of a trial the sweep came to.
enum Launch {
    /// Its `lenet5 train` runs.
    Started(Child),
    /// It had finished before.
    Finished,
    /// Another process (another sweep, or a `lenet5 train --resume`) is training it: this process's id.
    Elsewhere(String),
}

/// Starts trial `t` as a `lenet5 train` of its own (resuming it if it has a state), unless it is finished or
/// another process holds its directory.
fn launch(a: &SweepArgs, t: &Trial, threads: usize) -> CliResult<Launch> {
    let dir = t.dir(&a.out);
    create_dir(&dir)?;
    // Held while the trial is looked at and its settings written, and let go just before its run takes it:
    // two sweeps of one directory never write the same trial's files or run it twice.
    let probe = match lock_dir(&dir) {
        Ok(lock) => lock,
        Err(lenet5::Error::Locked { holder, .. }) => return Ok(Launch::Elsewhere(holder)),
        Err(e) => return Err(e.into()),
    };
    let run = RunDir::new(&dir);
    let epochs: usize = t.settings[0].1.parse()?;
    let mut args: Vec<String> = vec!["train".into()];
    if let Ok((state, _, _)) = run.load_state() {
        if state.epoch >= epochs || state.stopped_early() {
            return Ok(Launch::Finished);
        }
        args.extend(["--resume".into(), dir.display().to_string(), "--epochs".into(), epochs.to_string()]);
        args.extend(a.data.to_args());
    } else {
        let settings: BTreeMap<&str, &str> = t.settings.iter().map(|(f, v)| (&f[2..], v.as_str())).collect();
        write_atomic(&dir.join("trial.json"), serde_json::to_string_pretty(&settings)?.as_bytes())?;
        args.push("--force".into());
        args.extend(train_flags(a, t, &a.out));
    }
    args.extend(["--threads".into(), threads.to_string(), "--progress".into(), "plain".into()]);
    // Appended to: a resumed trial's log keeps what its earlier runs wrote.
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("train.log"))?;
    drop(probe);
    let child = Command::new(std::env::current_exe()?)
        .args(&args)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()?;
    Ok(Launch::Started(child))
}

/// The flags every trial shares.
fn fixed_flags(a: &SweepArgs) -> Vec<String> {
    let mut args = Vec::new();
    for (flag, value) in [("--patience", a.patience), ("--train-limit", a.train_limit), ("--test-limit", a.test_limit)]
    {
        if let Some(v) = value {
            args.extend([flag.to_string(), v.to_string()]);
        }
    }
    args
}

/// One trial's line of the table.
#[derive(serde::Serialize)]
struct Row {
    trial: String,
    settings: BTreeMap<String, String>,
    epochs: usize,
    best_epoch: usize,
    best_val_acc: f64,
    seconds: f64,
}

/// The table of every trial in `dir`, sorted by best val_acc: printed, and written as `results.csv` and
/// `results.json`.
fn report(dir: &Path) -> CliResult {
    let mut rows = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("trial.json").is_file())
        .collect();
    entries.sort();
    for trial in entries {
        let settings: BTreeMap<String, String> = serde_json::from_slice(&std::fs::read(trial.join("trial.json"))?)
            .map_err(|e| format!("{}: {e}", trial.join("trial.json").display()))?;
        let history = read_metrics(&trial.join("metrics.jsonl")).unwrap_or_default();
        let best = history.iter().filter(|m| !m.val_acc.is_nan()).max_by(|x, y| x.val_acc.total_cmp(&y.val_acc));
        rows.push(Row {
            trial: trial.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            settings,
            epochs: history.len(),
            best_epoch: best.map_or(0, |m| m.epoch),
            best_val_acc: best.map_or(f64::NAN, |m| m.val_acc),
            seconds: history.iter().map(|m| m.train_seconds + m.val_seconds).sum(),
        });
    }
    if rows.is_empty() {
        return Err(format!("{}: no trials (directories with trial.json) to report", dir.display()).into());
    }
    rows.sort_by(|x, y| y.best_val_acc.total_cmp(&x.best_val_acc).then(x.trial.cmp(&y.trial)));
    let keys: Vec<String> = rows[0].settings.keys().cloned().collect();
    // The table shows the settings that differ between trials; the files hold them all.
    let varying: Vec<&String> =
        keys.iter().filter(|k| rows.iter().any(|r| r.settings.get(*k) != rows[0].settings.get(*k))).collect();
    let mut csv = format!("trial,{},epochs_done,best_epoch,best_val_acc,seconds\n", keys.join(","));
    println!("{:<10} {:<40} {:>6} {:>5} {:>8} {:>8}", "trial", "settings", "epochs", "best", "val_acc", "seconds");
    for r in &rows {
        let values: Vec<&str> = keys.iter().map(|k| r.settings.get(k).map_or("", String::as_str)).collect();
        csv += &format!(
            "{},{},{},{},{},{:.3}\n",
            r.trial,
            values.join(","),
            r.epochs,
            r.best_epoch,
            r.best_val_acc,
            r.seconds
        );
        let shown: Vec<String> =
            varying.iter().map(|k| format!("{k}={}", r.settings.get(*k).map_or("", String::as_str))).collect();
        println!(
            "{:<10} {:<40} {:>6} {:>5} {:>8.4} {:>8.1}",
            r.trial,
            shown.join(" "),
            r.epochs,
            r.best_epoch,
            r.best_val_acc,
            r.seconds
        );
    }
    write_atomic(&dir.join("results.csv"), csv.as_bytes())?;
    write_atomic(&dir.join("results.json"), serde_json::to_string_pretty(&rows)?.as_bytes())?;
    let curves: Vec<(String, Vec<lenet5_core::train::EpochMetrics>)> = rows
        .iter()
        .map(|r| {
            let label = varying.iter().map(|k| format!("{k}={}", r.settings[*k])).collect::<Vec<_>>().join(" ");
            (
                format!("{} {label}", r.trial),
                read_metrics(&dir.join(&r.trial).join("metrics.jsonl")).unwrap_or_default(),
            )
        })
        .collect();
    let png = dir.join("val_acc.png");
    match lenet5::viz::plot_sweep(&curves, &png) {
        Ok(()) => println!(
            "results: {}, {} and {}",
            dir.join("results.csv").display(),
            dir.join("results.json").display(),
            png.display()
        ),
        Err(e) => {
            println!("results: {} and {}", dir.join("results.csv").display(), dir.join("results.json").display());
            eprintln!("note: no picture ({e})");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_shows_each_running_trials_epochs_and_the_best_so_far() {
        let out = tempfile::tempdir().unwrap();
        let trial = |index| Trial { index, settings: vec![("--epochs", "4".into())] };
        let (first, second) = (trial(0), trial(1));
        assert_eq!(
            status_line(out.path(), [&first, &second].into_iter()),
            "running trial-000 0/4 epochs, trial-001 0/4 epochs"
        );
        let dir = first.dir(out.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("trial.json"), "{}").unwrap();
        let epoch = |e, acc| {
            format!(
                r#"{{"epoch":{e},"train_loss":1,"train_acc":0.5,"val_loss":1,"val_acc":{acc},"train_seconds":1,"val_seconds":0}}"#
            )
        };
        std::fs::write(dir.join("metrics.jsonl"), format!("{}\n{}\n", epoch(1, 0.75), epoch(2, 0.5))).unwrap();
        assert_eq!(
            status_line(out.path(), [&first, &second].into_iter()),
            "running trial-000 2/4 epochs, trial-001 0/4 epochs; best trial-000 0.7500"
        );
        assert_eq!(status_line(out.path(), std::iter::empty()), "best trial-000 0.7500");
    }
}
