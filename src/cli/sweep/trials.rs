//! Running a sweep's trials: each a `lenet5 train --config trial.json` child of its own, `parallel` at a time,
//! resumed where an earlier sweep left it, left alone while another process trains it, and refused when its
//! directory holds a trial of another grid.

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use lenet5::lock::lock_dir;
use lenet5_core::fs::{create_dir, write_atomic};
use lenet5_core::run::{RunDir, read_metrics};
use lenet5_core::spec::RunSpec;

use super::super::CliResult;
use super::super::flags::flag;
use super::grid::{Grid, Trial, show};
use super::report::best_so_far;

/// The file in each trial's directory that holds its specification, which its `lenet5 train` reads.
pub const TRIAL_FILE: &str = "trial.json";

/// Polls of the running trials between two refreshes of the status line (a poll is 50 ms).
const STATUS_POLLS: usize = 10;

/// What to run: this shard's trials of the grid, in `out`, `parallel` at a time on `threads` threads each.
pub struct Plan<'a> {
    pub grid: &'a Grid,
    pub out: &'a Path,
    pub shard: u64,
    pub shards: u64,
    pub parallel: usize,
    pub threads: usize,
}

/// How the trials went.
pub struct Outcome {
    pub failed: usize,
    /// Trials another process was training.
    pub elsewhere: usize,
}

/// Prints a line beside the status line, or as it is.
fn say(status: &Option<ProgressBar>, line: String) {
    match status {
        Some(bar) => bar.println(line),
        None => println!("{line}"),
    }
}

/// Runs this shard's trials that are not finished; on a terminal a status line shows the trials finished, each
/// running trial's epoch and the best so far; elsewhere a line per finished trial says as much.
pub fn run_trials(plan: &Plan, stop: &AtomicBool) -> CliResult<Outcome> {
    let mine = plan.grid.len.saturating_sub(plan.shard).div_ceil(plan.shards);
    let mut pending = (plan.shard..plan.grid.len).step_by(plan.shards as usize);
    let mut running: Vec<(Trial, Child)> = Vec::new();
    let (mut done, mut interrupted) = (0, false);
    let mut outcome = Outcome { failed: 0, elsewhere: 0 };
    let status = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(mine);
        let style = ProgressStyle::with_template("{pos}/{len} trials [{bar:20}] {wide_msg}").expect("valid template");
        bar.set_style(style.progress_chars("=> "));
        bar
    });
    for polls in 0.. {
        while running.len() < plan.parallel && !stop.load(Ordering::SeqCst) {
            let Some(index) = pending.next() else { break };
            let trial = plan.grid.trial(index, plan.out)?;
            match launch(&trial, plan.threads)? {
                Launch::Started(child) => running.push((trial, child)),
                Launch::Finished => done += 1,
                Launch::Elsewhere(holder) => {
                    (done, outcome.elsewhere) = (done + 1, outcome.elsewhere + 1);
                    say(
                        &status,
                        format!("trial-{index:03} is being trained by another process (pid {holder}): left to it"),
                    );
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
            running.iter().for_each(|(_, child)| interrupt(child));
        }
        let (mut still, mut finished) = (Vec::new(), Vec::new());
        for (trial, mut child) in running {
            match child.try_wait()? {
                Some(exit) => finished.push((trial.index, exit)),
                None => still.push((trial, child)),
            }
        }
        for (index, exit) in &finished {
            done += 1;
            if !exit.success() && !stop.load(Ordering::SeqCst) {
                outcome.failed += 1;
            }
            let best =
                best_so_far(plan.out).map_or(String::new(), |(t, acc)| format!("; best so far {t}, val_acc {acc:.4}"));
            let word = if exit.success() { "done" } else { "stopped" };
            say(&status, format!("trial-{index:03} {word} ({done}/{mine} finished, {} running{best})", still.len()));
        }
        running = still;
        if let Some(bar) = &status
            && (!finished.is_empty() || polls % STATUS_POLLS == 0)
        {
            bar.set_position(done);
            bar.set_message(status_line(plan.out, running.iter().map(|(t, _)| t)));
        }
    }
    if let Some(bar) = &status {
        bar.finish_and_clear();
    }
    Ok(outcome)
}

/// The running trials with the epochs they finished, and the best trial so far.
fn status_line<'a>(out: &Path, running: impl Iterator<Item = &'a Trial>) -> String {
    let trials: Vec<String> = running
        .map(|t| {
            let epochs = read_metrics(&RunDir::new(Trial::dir(out, t.index)).metrics()).map_or(0, |h| h.len());
            format!("trial-{:03} {epochs}/{} epochs", t.index, t.spec.spec().epochs)
        })
        .collect();
    let best = best_so_far(out).map(|(trial, acc)| format!("best {trial} {acc:.4}"));
    let running = (!trials.is_empty()).then(|| format!("running {}", trials.join(", ")));
    [running, best].into_iter().flatten().collect::<Vec<_>>().join("; ")
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

/// The specification a trial's directory records, as written for it.
fn recorded(trial: &Trial) -> RunSpec {
    RunSpec { force: false, resume: None, threads: None, ..trial.spec.spec().clone() }
}

/// Refuses a directory whose `trial.json` is another grid's trial, naming the settings that differ.
fn check_same_trial(trial: &Trial, file: &Path) -> CliResult {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let theirs =
        RunSpec::from_json_text(&text).map_err(|e| format!("{}: not a trial's specification ({e})", file.display()))?;
    let (ours, theirs) = (recorded(trial).to_json(), theirs.to_json());
    let differ: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(*k) != Some(*v))
        .map(|(k, v)| format!("{} {} here, {} there", flag(k), show(v), show(theirs.get(k).unwrap_or(&Value::Null))))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{} holds a trial of another grid ({}); sweep into a new --out, or remove it to run this grid there",
        file.parent().unwrap_or(file).display(),
        differ.join(", ")
    )
    .into())
}

/// Starts `trial` as a `lenet5 train` of its own (resuming it if it has a state), unless it is finished or
/// another process holds its directory.
fn launch(trial: &Trial, threads: usize) -> CliResult<Launch> {
    let dir = &trial.spec.spec().out;
    create_dir(dir)?;
    // Held while the trial is looked at and its settings written, and let go just before its run takes it:
    // two sweeps of one directory never write the same trial's files or run it twice.
    let probe = match lock_dir(dir) {
        Ok(lock) => lock,
        Err(lenet5::Error::Locked { holder, .. }) => return Ok(Launch::Elsewhere(holder)),
        Err(e) => return Err(e.into()),
    };
    let file = dir.join(TRIAL_FILE);
    if file.exists() {
        check_same_trial(trial, &file)?;
    }
    let run = RunDir::new(dir);
    let config = file.display().to_string();
    let mut args: Vec<String> = vec!["train".into(), "--config".into(), config];
    if let Ok((state, _, _)) = run.load_state() {
        if state.epoch >= trial.spec.spec().epochs || state.stopped_early() {
            return Ok(Launch::Finished);
        }
        args.extend(["--resume".into(), dir.display().to_string()]);
    } else {
        write_atomic(&file, recorded(trial).to_json_text().as_bytes())?;
        args.push("--force".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_shows_each_running_trials_epochs_and_the_best_so_far() {
        let out = tempfile::tempdir().unwrap();
        let grid =
            Grid::new(RunSpec { epochs: 4, ..RunSpec::default() }, vec![("seed", vec![0.into(), 1.into()])], None)
                .unwrap();
        let (first, second) = (grid.trial(0, out.path()).unwrap(), grid.trial(1, out.path()).unwrap());
        assert_eq!(
            status_line(out.path(), [&first, &second].into_iter()),
            "running trial-000 0/4 epochs, trial-001 0/4 epochs"
        );
        let dir = Trial::dir(out.path(), 0);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(TRIAL_FILE), "{}").unwrap();
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

    #[test]
    fn a_directory_of_another_grids_trial_is_refused_with_the_settings_that_differ() {
        let out = tempfile::tempdir().unwrap();
        let grid = |lr: f64| Grid::new(RunSpec::default(), vec![("lr", vec![lr.into()])], None).unwrap();
        let trial = grid(0.01).trial(0, out.path()).unwrap();
        let file = out.path().join(TRIAL_FILE);
        std::fs::write(&file, recorded(&trial).to_json_text()).unwrap();
        assert!(check_same_trial(&trial, &file).is_ok());
        let other = grid(0.02).trial(0, out.path()).unwrap();
        let e = check_same_trial(&other, &file).unwrap_err().to_string();
        assert!(e.contains("another grid") && e.contains("--lr 0.02 here, 0.01 there"), "{e}");
        std::fs::write(&file, r#"{"lr": "0.01"}"#).unwrap();
        let e = check_same_trial(&other, &file).unwrap_err().to_string();
        assert!(e.contains("not a trial's specification"), "{e}");
    }
}
