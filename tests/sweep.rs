//! `lenet5 sweep`: the table of its trials, each trial the bits of `lenet5 train` alone, shards that collect into
//! the table of one sweep, a resume after an interruption, and bad values refused before any trial starts.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lenet5_core::checkpoint::Checkpoint;

/// `lenet5 sweep` on `data` into `out` with `extra` flags.
fn sweep(data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sweep", "--dataset", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--head", "logits", "--lr", "0.01,0.02", "--epochs", "2"]);
    args.extend_from_slice(extra);
    lenet5(&args)
}

/// `n` learning rates, comma-separated.
fn lrs(n: usize) -> String {
    (1..=n).map(|i| format!("{}", i as f32 * 1e-4)).collect::<Vec<_>>().join(",")
}

fn results(dir: &Path) -> Vec<(String, f64)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    v["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["trial"].as_str().unwrap().to_string(), r["best_val_acc"].as_f64().unwrap()))
        .collect()
}

/// `lenet5 train` alone on `data` into `out`, with the logits head, `lr` and `epochs`, holding out the share of
/// the training images a sweep chooses on by default; must succeed.
fn train_alone(data: &Path, out: &Path, lr: &str, epochs: &str) {
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["train", "--dataset", d, "--out", o, "--head", "logits", "--lr", lr, "--epochs", epochs];
    args.extend(["--val-split", "0.1"]);
    let r = lenet5(&args);
    assert!(r.status.success(), "{}", stderr(&r));
}

fn same_weights(a: &Path, b: &Path) -> bool {
    let (x, y) = (
        Checkpoint::load(&a.join("last.safetensors")).unwrap(),
        Checkpoint::load(&b.join("last.safetensors")).unwrap(),
    );
    x.params == y.params && x.momentum == y.momentum
}

#[test]
fn a_sweep_ranks_its_trials_each_as_train_alone_and_its_shards_collect_into_the_same_table() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let whole = tmp.path().join("whole");
    let o = sweep(&data, &whole, &["--parallel", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = results(&whole);
    assert_eq!(table.len(), 2);
    assert!(table[0].1 >= table[1].1);
    let csv = std::fs::read_to_string(whole.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    // Every setting of each trial (as its trial.json holds it), in the specification's order.
    assert!(csv.starts_with("trial,epochs,batch_size,lr,momentum,weight_decay,seed,head,"), "{csv}");
    assert!(csv.contains("\"0.9,1.1\""), "a pair quoted: {csv}");
    assert!(whole.join("val_acc.png").exists(), "the picture of every trial's curve");
    assert!(stdout(&o).contains("best so far trial-00"), "{}", stdout(&o));

    // Trial 1 (lr 0.02) is the run `lenet5 train` makes alone.
    let alone = tmp.path().join("alone");
    train_alone(&data, &alone, "0.02", "2");
    assert!(same_weights(&whole.join("trial-001"), &alone));

    // Run again: nothing left to do, the same table.
    let again = sweep(&data, &whole, &[]);
    assert!(again.status.success() && !stdout(&again).contains(" done ("), "{}", stdout(&again));
    assert_eq!(results(&whole), table);

    // Two shards, then their collection: the same table.
    let sharded = tmp.path().join("sharded");
    for shard in ["0/2", "1/2"] {
        assert!(sweep(&data, &sharded, &["--shard", shard]).status.success());
    }
    let o = lenet5(&["sweep", "--collect", sharded.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(results(&sharded), table);
}

#[test]
fn bad_values_are_refused_before_any_trial_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let o = lenet5(&["sweep", "--lr", "0.01,-1", "--out", out.to_str().unwrap()]);
    assert_clean_error(&o, &["--lr", "-1"]);
    assert!(!out.exists(), "no trial was started");
    let o = lenet5(&["sweep", "--shard", "2/2", "--out", out.to_str().unwrap()]);
    assert_clean_error(&o, &["--shard must be I/N"]);
    // Flags after `--`: read as `lenet5 train` reads them, and none that the sweep sets itself.
    let after = |flags: &[&str]| {
        let mut args = vec!["sweep", "--out", out.to_str().unwrap(), "--"];
        args.extend_from_slice(flags);
        lenet5(&args)
    };
    assert_clean_error(&after(&["--scale", "0.5"]), &["--scale", "expected MIN,MAX"]);
    assert_clean_error(&after(&["--no-such-flag"]), &["unexpected argument '--no-such-flag'"]);
    let swept = lenet5(&["sweep", "--lr", "0.1,0.2", "--out", out.to_str().unwrap(), "--", "--lr", "0.3"]);
    assert_clean_error(&swept, &["--lr is given both before and after --"]);
    assert_clean_error(&after(&["--threads=3"]), &["--threads is the sweep's to set"]);
    assert_clean_error(&after(&["--out", "x"]), &["--out is the sweep's to set"]);
    let o = lenet5(&["sweep", "--out", out.to_str().unwrap(), "--seed", "0,1,2,3,4,5,6,7,8,9", "--lr", &lrs(1001)]);
    assert_clean_error(&o, &["10010 trials", "--max-trials 10010"]);
    assert_clean_error(&after(&["--help"]), &["--help after -- is not a training flag"]);
    assert_clean_error(&after(&["--step-size", "0", "--lr-schedule", "step"]), &["trial-000", "--step-size"]);
    assert!(!out.exists(), "no trial was started");
}

/// Schedule and augmentation ranges are swept like the other settings, and flags after `--` reach every
/// trial: each trial is still the run `lenet5 train` makes alone with the same flags.
#[test]
fn schedule_parameters_sweep_and_flags_after_the_double_dash_reach_every_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let out = tmp.path().join("sweep");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let extra =
        ["--lr-schedule", "step", "--step-size", "1", "--gamma", "0.5,0.1", "--augment", "on", "--rotate", "20"];
    let mut args = vec!["sweep", "--dataset", d, "--out", o, "--head", "logits", "--lr", "0.02", "--epochs", "2"];
    args.extend(extra);
    args.extend(["--", "--scale", "0.8,1.2"]);
    let r = lenet5(&args);
    assert!(r.status.success(), "{}", stderr(&r));
    let table = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(table.lines().nth(1).unwrap().contains(",step,1,0.5,"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains(",true,20.0,2.0,\"0.8,1.2\","), "{table}");
    assert!(stdout(&r).contains("gamma=0.1") && stdout(&r).contains("gamma=0.5"), "{}", stdout(&r));

    let alone = tmp.path().join("alone");
    let a = alone.to_str().unwrap();
    let train = [
        "train",
        "--dataset",
        d,
        "--out",
        a,
        "--head",
        "logits",
        "--lr",
        "0.02",
        "--epochs",
        "2",
        "--lr-schedule",
        "step",
        "--step-size",
        "1",
        "--gamma",
        "0.1",
        "--augment",
        "--scale",
        "0.8,1.2",
        "--rotate",
        "20",
        "--val-split",
        "0.1",
    ];
    let r = lenet5(&train);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(same_weights(&out.join("trial-001"), &alone));
    assert!(!same_weights(&out.join("trial-000"), &alone));
}

/// Interrupted (Ctrl-C, SIGTERM) a sweep stops its trials at their last finished epoch; killed (SIGKILL to its
/// process group) they stop wherever they were. Run again, it resumes each trial's run, every epoch trained once,
/// and each ends with the bits of an uninterrupted `lenet5 train`.
#[test]
fn an_interrupted_sweep_resumes_to_the_same_bits() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 2000, 200);
    let alone = tmp.path().join("alone");
    train_alone(&data, &alone, "0.01", "40");
    // Ctrl-C and SIGTERM reach the sweep, which stops its trials at their last finished epoch; SIGKILL of the
    // whole process group (a scheduler's, or a lost machine) gives nobody a chance to do anything.
    for (signal, group) in [("-INT", false), ("-TERM", false), ("-KILL", true)] {
        let out = tmp.path().join(format!("sweep{signal}"));
        let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
        let args = ["sweep", "--dataset", d, "--out", o, "--head", "logits", "--lr", "0.01", "--epochs", "40"];
        let mut child = Command::new(env!("CARGO_BIN_EXE_lenet5"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while lenet5_core::run::read_metrics(&out.join("trial-000/metrics.jsonl")).map_or(0, |m| m.len()) < 2 {
            assert!(t0.elapsed() < Duration::from_secs(120), "no epoch after two minutes");
            std::thread::sleep(Duration::from_millis(20));
        }
        let target = if group { format!("-{}", child.id()) } else { child.id().to_string() };
        assert!(Command::new("kill").args([signal, "--", &target]).status().unwrap().success());
        assert!(!child.wait().unwrap().success(), "an interrupted sweep reports it");
        // The trial's process is gone too (it holds its directory's lock while it lives).
        let t1 = Instant::now();
        while lenet5::lock::lock_dir(&out.join("trial-000")).is_err() {
            assert!(t1.elapsed() < Duration::from_secs(30), "{signal}: the trial still runs");
            std::thread::sleep(Duration::from_millis(20));
        }
        let partial = lenet5_core::run::read_metrics(&out.join("trial-000/metrics.jsonl")).unwrap().len();
        assert!(partial < 40, "{signal}: the trial was stopped ({partial} epochs)");
        let resumed = lenet5(&args);
        assert!(resumed.status.success(), "{signal}: {}", stderr(&resumed));
        let epochs: Vec<usize> = lenet5_core::run::read_metrics(&out.join("trial-000/metrics.jsonl"))
            .unwrap()
            .iter()
            .map(|m| m.epoch)
            .collect();
        assert_eq!(epochs, (1..=40).collect::<Vec<_>>(), "{signal}: every epoch once");
        assert!(same_weights(&out.join("trial-000"), &alone), "{signal}: not the bits of a run alone");
    }
}

/// A trial that another process is training (its directory locked) is left to it: the sweep neither fails nor
/// touches the trial's files, and the same command run later trains it, appending to its log.
#[test]
fn a_trial_another_process_trains_is_left_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let out = tmp.path().join("sweep");
    let busy = out.join("trial-000");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("train.log"), "written by the other process\n").unwrap();
    let lock = lenet5::lock::lock_dir(&busy).unwrap();
    let o = sweep(&data, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("trial-000 is being trained by another process"), "{text}");
    assert!(text.contains("1 trial(s) were being trained by another process"), "{text}");
    assert!(text.contains("trial-001 done"), "{text}");
    assert_eq!(std::fs::read_to_string(busy.join("train.log")).unwrap(), "written by the other process\n");
    assert!(!busy.join("trial.json").exists() && !busy.join("last.safetensors").exists());
    drop(lock);

    let o = sweep(&data, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("trial-000 done") && !stdout(&o).contains("trial-001 done"), "{}", stdout(&o));
    let log = std::fs::read_to_string(busy.join("train.log")).unwrap();
    assert!(log.starts_with("written by the other process\ntraining LeNet-5"), "{log}");
    assert_eq!(results(&out).len(), 2);
}

/// A sweep never mixes grids: another grid into a directory that holds a trial is refused before anything runs,
/// naming the settings that differ; `--collect` reports a trial whose `trial.json` cannot be read and goes on.
#[test]
fn another_grid_is_refused_and_collect_skips_unreadable_trials() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 300, 100);
    let out = tmp.path().join("sweep");
    let first = sweep(&data, &out, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let other = sweep(&data, &out, &["--seed", "3"]);
    assert_clean_error(&other, &["trial-000", "another grid", "--seed 3 here, 0 there", "new --out"]);
    assert_eq!(results(&out).len(), 2, "the first grid's trials are as they were");

    std::fs::write(out.join("trial-001/trial.json"), "{ hand-edited").unwrap();
    let o = lenet5(&["sweep", "--collect", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("left out of the table") && stderr(&o).contains("trial-001"), "{}", stderr(&o));
    assert_eq!(results(&out).len(), 1);
}

/// A sweep chooses on images held out of the training set (10% unless `--val-split` says otherwise) and reports
/// a test figure for the chosen trial alone, measured once after training; `--val-split 0` chooses on the test
/// set, as a single run of the recipe does, and says that it leaves no unbiased test figure.
#[test]
fn a_sweep_chooses_on_held_out_images_and_tests_only_the_chosen_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let out = tmp.path().join("held-out");
    let o = sweep(&data, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let trial: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("trial-000/trial.json")).unwrap()).unwrap();
    assert_eq!(trial["val_split"], 0.1);
    let text = stdout(&o);
    assert_eq!(text.matches("test accuracy").count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let (chosen, best) = (&v["chosen"], &v["trials"][0]);
    assert_eq!(chosen["trial"], best["trial"]);
    assert_eq!(chosen["test"]["total"], 200, "{v}");
    assert!(text.contains(&format!("chosen: {}", best["trial"].as_str().unwrap())), "{text}");
    // The chosen trial's figures are those of its run alone, which holds out the same images.
    let alone = tmp.path().join("alone");
    let lr = if best["trial"] == "trial-000" { "0.01" } else { "0.02" };
    train_alone(&data, &alone, lr, "2");
    let state = lenet5_core::run::RunDir::new(&alone).load_state().unwrap().0;
    assert_eq!(serde_json::json!(state.test.unwrap()), chosen["test"]);

    let on_test = tmp.path().join("on-test");
    let o = sweep(&data, &on_test, &["--val-split", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(!text.contains("test accuracy") && text.contains("val_acc above is the test set's"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(on_test.join("results.json")).unwrap()).unwrap();
    assert!(v["chosen"].get("test").is_none(), "{v}");
}
