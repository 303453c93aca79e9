//! Long runs: resuming gives bit-identical results, signals stop cleanly, and a killed run never leaves an
//! unreadable checkpoint.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::run::read_metrics;

fn train_args<'a>(data: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec!["train", "--dataset", data, "--out", out, "--epochs", epochs, "--progress", "plain", "--head", "logits"]
}

/// The figures of a run, without its timings.
fn figures(dir: &Path) -> Vec<(usize, f64, f64, f64, f64)> {
    read_metrics(&dir.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|m| (m.epoch, m.train_loss, m.train_acc, m.val_loss, m.val_acc))
        .collect()
}

fn assert_same_run(a: &Path, b: &Path) {
    for file in ["best.safetensors", "last.safetensors"] {
        let x = Checkpoint::load(&a.join(file)).unwrap();
        let y = Checkpoint::load(&b.join(file)).unwrap();
        assert!(x.params == y.params, "{file}: weights differ");
        assert!(x.momentum == y.momentum, "{file}: momentum differs");
    }
    assert_eq!(figures(a), figures(b));
}

#[test]
fn resumed_run_is_bit_identical_to_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let (d, full, part) = (data.to_str().unwrap(), tmp.path().join("full"), tmp.path().join("part"));
    assert!(lenet5(&train_args(d, full.to_str().unwrap(), "3")).status.success());
    assert!(lenet5(&train_args(d, part.to_str().unwrap(), "1")).status.success());
    let o = lenet5(&["train", "--resume", part.to_str().unwrap(), "--epochs", "3", "--progress", "plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("resuming"), "{}", stdout(&o));
    assert_same_run(&full, &part);
    // Nothing left to do: resuming a finished run changes nothing.
    let o = lenet5(&["train", "--resume", part.to_str().unwrap(), "--progress", "plain"]);
    assert!(o.status.success());
    assert_same_run(&full, &part);
    // A run killed after writing its state but before its log: resuming restores the log from the state.
    let log = part.join("metrics.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let short: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&log, short.join("\n") + "\n").unwrap();
    assert_eq!(figures(&part).len(), 2);
    let o = lenet5(&["train", "--resume", part.to_str().unwrap(), "--progress", "plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_run(&full, &part);
}

/// A resume is told nothing of the data: it reads them from where the run did (not from ./data, which here
/// holds the whole of MNIST), a flag given again overrides that, and other data are refused.
#[test]
fn resume_remembers_its_data_and_refuses_other_data() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, copy, run) = (tmp.path().join("root"), tmp.path().join("copy"), tmp.path().join("run"));
    write_subset(&root, 500, 100);
    write_subset(&copy, 500, 100);
    let (r, o) = (root.to_str().unwrap(), run.to_str().unwrap());
    let first = lenet5(&["train", "--dataset", r, "--out", o, "--epochs", "1", "--progress", "plain"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(stdout(&first).contains("500 train / 100 test"), "{}", stdout(&first));
    let again = lenet5(&["train", "--resume", o, "--epochs", "2", "--progress", "plain"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("500 train / 100 test"), "{}", stdout(&again));
    let other = ["train", "--resume", o, "--epochs", "3", "--progress", "plain", "--dataset", copy.to_str().unwrap()];
    let moved = lenet5(&other);
    assert!(moved.status.success(), "the same data elsewhere: {}", stderr(&moved));
    assert!(stdout(&moved).contains(copy.to_str().unwrap()), "{}", stdout(&moved));
    assert_eq!(figures(&run).len(), 3);

    // The run now reads from the copy, where the data change.
    write_subset(&copy, 400, 100);
    let changed = lenet5(&["train", "--resume", o, "--epochs", "4", "--progress", "plain"]);
    assert_clean_error(&changed, &["not the data this run was trained on", "--dataset"]);
    assert_eq!(figures(&run).len(), 3, "the refused resume left the run as it was");
}

/// Augmented runs give the same bits on 1, 2 and 3 threads, and when stopped and resumed; and not those of a
/// run without augmentation.
#[test]
fn augmentation_is_the_same_for_any_thread_count_and_across_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let d = data.to_str().unwrap();
    let run = |name: &str, epochs: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let mut args = train_args(d, out.to_str().unwrap(), epochs);
        args.extend_from_slice(extra);
        let o = lenet5(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let one = run("t1", "3", &["--augment", "--threads", "1"]);
    for threads in ["2", "3"] {
        assert_same_run(&one, &run(&format!("t{threads}"), "3", &["--augment", "--threads", threads]));
    }
    let part = run("part", "1", &["--augment", "--threads", "2"]);
    let o = lenet5(&["train", "--resume", part.to_str().unwrap(), "--epochs", "3", "--progress", "plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("augment (rotate ±10°"), "{}", stdout(&o));
    assert_same_run(&one, &part);
    let plain = run("plain", "3", &["--threads", "1"]);
    let (a, b) = (
        Checkpoint::load(&one.join("last.safetensors")).unwrap(),
        Checkpoint::load(&plain.join("last.safetensors")).unwrap(),
    );
    assert!(a.params != b.params, "augmentation changed nothing");
    let o = lenet5(
        &train_args(d, tmp.path().join("bad").to_str().unwrap(), "1")
            .into_iter()
            .chain(["--augment", "--rotate", "200"])
            .collect::<Vec<_>>(),
    );
    assert_clean_error(&o, &["--rotate", "200"]);
}

/// No temporary file of an atomic write is left in `dir`.
fn assert_no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp."), "left {name}");
    }
}

fn spawn_training(data: &str, out: &str, epochs: &str, resume: bool) -> std::process::Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lenet5"));
    if resume {
        cmd.args(["train", "--resume", out, "--epochs", epochs, "--progress", "plain"]);
    } else {
        cmd.args(train_args(data, out, epochs));
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

fn wait_for_epochs(dir: &Path, epochs: usize, limit: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if read_metrics(&dir.join("metrics.jsonl")).map(|m| m.len() >= epochs).unwrap_or(false) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no {epochs} epochs in {dir:?} after {limit:?}");
}

#[test]
fn sigint_stops_with_a_resumable_state_and_exit_130() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 3000, 200);
    let (d, run, full) = (data.to_str().unwrap(), tmp.path().join("run"), tmp.path().join("full"));
    let child = spawn_training(d, run.to_str().unwrap(), "200", false);
    wait_for_epochs(&run, 1, Duration::from_secs(60));
    signal(child.id(), "-INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("lenet5 train --resume") && !err.contains("panicked"), "{err}");
    let state = Checkpoint::load(&run.join("last.safetensors")).unwrap();
    assert!(state.momentum.is_some());
    let done = figures(&run).len();
    assert!((1..200).contains(&done));
    // No temporary files are left behind.
    assert_no_temp_files(&run);
    // Resuming to a short end matches an uninterrupted run of that length.
    let end = (done + 1).to_string();
    let o = lenet5(&["train", "--resume", run.to_str().unwrap(), "--epochs", &end, "--progress", "plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(lenet5(&train_args(d, full.to_str().unwrap(), &end)).status.success());
    assert_same_run(&full, &run);
}

#[test]
fn sigkill_at_random_points_never_corrupts_and_resume_matches() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 1000, 200);
    let (d, run, full) = (data.to_str().unwrap(), tmp.path().join("run"), tmp.path().join("full"));
    let epochs = "6";
    assert!(lenet5(&train_args(d, full.to_str().unwrap(), epochs)).status.success());
    let mut rng = lenet5_core::rng::Rng::new(42);
    let mut started = false;
    for _ in 0..40 {
        let mut child = spawn_training(d, run.to_str().unwrap(), epochs, started);
        std::thread::sleep(Duration::from_millis(30 + rng.below(250)));
        let finished = child.try_wait().unwrap().is_some();
        if !finished {
            signal(child.id(), "-KILL");
        }
        let status = child.wait().unwrap();
        // Whatever the moment of death, every checkpoint on disk reads back.
        for file in ["best.safetensors", "last.safetensors"] {
            let p = run.join(file);
            if p.exists() {
                Checkpoint::load(&p).unwrap_or_else(|e| panic!("{file} unreadable after SIGKILL: {e}"));
            }
        }
        started = run.join("last.safetensors").exists();
        if finished && status.success() && figures(&run).len() == 6 {
            break;
        }
    }
    // Finish whatever is left, then compare.
    let o = lenet5(&["train", "--resume", run.to_str().unwrap(), "--epochs", epochs, "--progress", "plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_run(&full, &run);
}

#[test]
fn a_second_sigint_exits_at_once_without_leaving_files_half_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 3000, 200);
    let run = tmp.path().join("run");
    let child = spawn_training(data.to_str().unwrap(), run.to_str().unwrap(), "200", false);
    wait_for_epochs(&run, 1, Duration::from_secs(60));
    signal(child.id(), "-INT");
    signal(child.id(), "-INT");
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
    // Normally the second signal arrives while the first is still being honoured; if the run had already
    // stopped, the ordinary interrupted message is printed instead.
    assert!(err.contains("interrupted twice: exiting now") || err.contains("lenet5 train --resume"), "{err}");
    // Whatever was on disk is whole: the state reads back, and no temporary file is left.
    Checkpoint::load(&run.join("last.safetensors")).unwrap();
    Checkpoint::load(&run.join("best.safetensors")).unwrap();
    read_metrics(&run.join("metrics.jsonl")).unwrap();
    assert_no_temp_files(&run);
}

/// One run directory, one process: a second `train` into it, or a `--resume` of it, while a run is going is
/// refused naming the process; a lock left by a killed process never blocks; and what a killed write left
/// behind is removed when the run is resumed.
#[test]
fn a_run_directory_belongs_to_one_process_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 2000, 200);
    let (d, out) = (data.to_str().unwrap(), tmp.path().join("run"));
    let o = out.to_str().unwrap();
    let mut first = spawn_training(d, o, "500", false);
    wait_for_epochs(&out, 1, Duration::from_secs(60));
    let pid = first.id().to_string();
    let second = lenet5(&[&train_args(d, o, "1")[..], &["--force"]].concat());
    assert_clean_error(&second, &["is in use by another lenet5 process", &pid]);
    let resume = lenet5(&["train", "--resume", o, "--epochs", "2"]);
    assert_clean_error(&resume, &["is in use by another lenet5 process", &pid]);
    signal(first.id(), "-KILL");
    first.wait().unwrap();

    let stale = out.join(".last.safetensors.tmp.4242");
    std::fs::write(&stale, b"half a file").unwrap();
    let epochs = read_metrics(&out.join("metrics.jsonl")).unwrap().len();
    let more = (epochs + 1).to_string();
    let resumed = lenet5(&["train", "--resume", o, "--epochs", &more, "--progress", "plain"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains(".last.safetensors.tmp.4242"), "{}", stderr(&resumed));
    assert!(!stale.exists());
    assert_no_temp_files(&out);
}
