//! The real binary: a short training run that must learn, evaluation, and clean errors for bad input.

mod common;

use common::*;

#[test]
fn trains_a_subset_to_over_90_percent_then_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 4000, 1000);
    let out = tmp.path().join("run");
    let o = lenet5(&[
        "train",
        "--dataset",
        data.to_str().unwrap(),
        "--epochs",
        "3",
        "--head",
        "logits",
        "--lr",
        "0.01",
        "--out",
        out.to_str().unwrap(),
        "--progress",
        "plain",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(text.lines().filter(|l| l.starts_with("epoch")).count(), 3, "{text}");
    assert!(text.contains("saved best"), "{text}");
    let history = lenet5_core::run::read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(history.len(), 3);
    let best = history.iter().map(|m| m.val_acc).fold(0.0, f64::max);
    assert!(best > 0.90, "val_acc only {best}: {text}");

    let weights = out.join("best.safetensors");
    let o = lenet5(&["eval", "--weights", weights.to_str().unwrap(), "--dataset", data.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["total"], 1000);
    assert!((v["accuracy"].as_f64().unwrap() - best).abs() < 1e-9, "eval agrees with training's best val_acc");

    // A second run into the same directory is refused unless forced.
    let args = ["train", "--dataset", data.to_str().unwrap(), "--epochs", "1", "--out", out.to_str().unwrap()];
    let o = lenet5(&args);
    assert_clean_error(&o, &["already holds a training run", "--force"]);
    assert!(weights.exists(), "the refused run left the old weights alone");
    // An output "directory" that is a file.
    let args = ["train", "--dataset", data.to_str().unwrap(), "--epochs", "1", "--out", weights.to_str().unwrap()];
    assert_clean_error(&lenet5(&args), &["best.safetensors: exists and is not a directory"]);
    assert!(lenet5_core::checkpoint::Checkpoint::load(&weights).is_ok(), "the file is left as it was");
}

/// `bench` prints every figure it promises: each batch size with one thread and with two, the scaling, what the
/// machine's cores gain on pure arithmetic, the evaluation, and the time per layer.
#[test]
fn bench_prints_every_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 512, 256);
    let args = ["bench", "--dataset", data.to_str().unwrap(), "--batch-size", "16,64", "--threads", "2"];
    let o = lenet5(&[&args[..], &["--seconds", "0.1"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let rows: Vec<(usize, usize)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 8 && f[6].ends_with('x')).then(|| (f[0].parse().unwrap(), f[1].parse().unwrap()))
        })
        .collect();
    assert_eq!(rows, [(16, 1), (16, 2), (64, 1), (64, 2)], "{text}");
    for expected in ["2 threads, SIMD", "machine: 2 threads of pure arithmetic did", "evaluation: 256 test images"] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    for layer in ["conv1", "conv2", "linear1", "loss"] {
        assert!(text.lines().any(|l| l.starts_with(layer)), "no row for {layer} in:\n{text}");
    }
}

#[test]
fn missing_data_set_says_where_to_put_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let o = lenet5(&["train", "--data", tmp.path().to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-download"]);
    assert_clean_error(&o, &["not found", "train-images-idx3-ubyte", "MNIST/raw"]);
    // A directory data set is never downloaded.
    let o = lenet5(&[
        "eval",
        "--weights",
        "models/lenet5-mnist.safetensors",
        "--dataset",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["not found"]);
}

#[test]
fn broken_idx_files_are_named_in_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    type Damage = fn(&std::path::Path);
    let cases: [(&str, Damage, &[&str]); 4] = [
        (
            "truncated",
            |d| {
                let p = d.join("train-images-idx3-ubyte");
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() - 100]).unwrap();
            },
            &["train-images-idx3-ubyte", "truncated"],
        ),
        (
            "wrong magic",
            |d| {
                let p = d.join("t10k-labels-idx1-ubyte");
                let mut b = std::fs::read(&p).unwrap();
                b[3] = 3;
                std::fs::write(&p, b).unwrap();
            },
            &["t10k-labels-idx1-ubyte", "magic number 2051, expected 2049"],
        ),
        (
            "count mismatch",
            |d| {
                let split = lenet5_core::data::Split { images: vec![0; 99 * 784], labels: vec![1; 99] };
                let lab = split.to_idx().1;
                std::fs::write(d.join("train-labels-idx1-ubyte"), lab).unwrap();
            },
            &["train-labels-idx1-ubyte", "99 labels", "200 images"],
        ),
        (
            "bad gzip",
            |d| {
                std::fs::remove_file(d.join("t10k-images-idx3-ubyte")).unwrap();
                std::fs::write(d.join("t10k-images-idx3-ubyte.gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
            },
            &["t10k-images-idx3-ubyte.gz", "corrupt gzip"],
        ),
    ];
    for (name, damage, needles) in cases {
        let data = tmp.path().join(name.replace(' ', "_"));
        write_subset(&data, 200, 100);
        damage(&data);
        let o = lenet5(&["train", "--dataset", data.to_str().unwrap(), "--out", run.to_str().unwrap(), "--force"]);
        assert_clean_error(&o, needles);
    }
}

#[test]
fn bad_checkpoints_and_flags_give_clean_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.safetensors");
    let o = lenet5(&["eval", "--weights", missing.to_str().unwrap()]);
    assert_clean_error(&o, &["nope.safetensors", "No such file"]);

    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    let o = lenet5(&["eval", "--weights", garbage.to_str().unwrap()]);
    assert_clean_error(&o, &["garbage.safetensors", "not a valid safetensors"]);

    // A checkpoint with one tensor of the wrong shape.
    use safetensors::tensor::{Dtype, TensorView};
    let mut tensors = Vec::new();
    let all = lenet5_core::nn::Param::ALL;
    let bufs: Vec<Vec<u8>> = all.iter().map(|p| vec![0u8; 4 * p.numel(10)]).collect();
    for (p, buf) in all.iter().zip(&bufs) {
        let shape = if p.name() == "linear2.weight" { vec![120, 84] } else { p.shape(10) };
        tensors.push((p.name(), TensorView::new(Dtype::F32, shape, buf).unwrap()));
    }
    let bad = tmp.path().join("misshapen.safetensors");
    std::fs::write(&bad, safetensors::serialize(tensors, None).unwrap()).unwrap();
    let o = lenet5(&["eval", "--weights", bad.to_str().unwrap()]);
    assert_clean_error(&o, &["misshapen.safetensors", "linear2.weight", "[120, 84]", "[84, 120]"]);

    let o = lenet5(&["train", "--batch-size", "0", "--out", tmp.path().join("r").to_str().unwrap()]);
    assert_clean_error(&o, &["--batch-size"]);
    let o = lenet5(&["train", "--lr=-1", "--out", tmp.path().join("r").to_str().unwrap()]);
    assert_clean_error(&o, &["--lr must be a positive number, got -1"]);
    // Written as two words the value is still read as a number, and checked as one.
    let o = lenet5(&["train", "--momentum", "-0.5", "--out", tmp.path().join("r").to_str().unwrap()]);
    assert_clean_error(&o, &["--momentum must be in [0, 1), got -0.5"]);
    // No data here: bench falls back to 60,000 random images, fewer than one batch of this size.
    let no_data = tmp.path().join("no-data");
    let o = lenet5(&["bench", "--batch-size", "16,60001", "--data", no_data.to_str().unwrap(), "--no-download"]);
    assert_clean_error(&o, &["--batch-size 60001", "60000 training images"]);
    let o = lenet5(&["train", "--threads", "100000", "--out", tmp.path().join("r").to_str().unwrap()]);
    assert_clean_error(&o, &["--threads", "between 1 and 256, got 100000"]);
    let o = lenet5(&["bench", "--seconds", "0"]);
    assert_clean_error(&o, &["--seconds", "positive"]);
    let o = lenet5(&["train", "--head", "softmax"]);
    assert!(!o.status.success() && stderr(&o).contains("softmax") && !stderr(&o).contains("panicked"));
}

/// Every instruction set the kernels can run with on this CPU gives the same model: the committed weights score
/// the same on the test images, and a short training run ends with the same metrics. (Each kernel is also
/// tested against its reference alone; this runs them all together, through the binary.)
#[test]
fn every_instruction_set_gives_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 512, 256);
    let run = |cap: &str| -> (serde_json::Value, Vec<lenet5_core::train::EpochMetrics>) {
        let env = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_lenet5"))
                .args(args)
                .env_remove("LENET5_DATA")
                .env(lenet5_core::SIMD_CAP_VAR, cap)
                .output()
                .expect("run lenet5")
        };
        let o = env(&[
            "eval",
            "--weights",
            "models/lenet5-mnist.safetensors",
            "--dataset",
            data.to_str().unwrap(),
            "--json",
        ]);
        assert!(o.status.success(), "{cap}: {}", stderr(&o));
        let eval: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let out = tmp.path().join(format!("run-{cap}"));
        let o = env(&[
            "train",
            "--dataset",
            data.to_str().unwrap(),
            "--epochs",
            "2",
            "--threads",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--progress",
            "plain",
        ]);
        assert!(o.status.success(), "{cap}: {}", stderr(&o));
        (eval, lenet5_core::run::read_metrics(&out.join("metrics.jsonl")).unwrap())
    };
    let (eval, history) = run("native");
    for cap in ["avx2", "baseline"] {
        let (e, h) = run(cap);
        assert_eq!(e["correct"], eval["correct"], "{cap}: {e} vs {eval}");
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
        assert!(close(e["loss"].as_f64().unwrap(), eval["loss"].as_f64().unwrap()), "{cap}: {e} vs {eval}");
        for (a, b) in h.iter().zip(&history) {
            assert!(close(a.train_loss, b.train_loss) && close(a.val_loss, b.val_loss), "{cap}: {a:?} vs {b:?}");
            assert!((a.train_acc - b.train_acc).abs() <= 0.01 && (a.val_acc - b.val_acc).abs() <= 0.01, "{cap}");
        }
        assert_eq!(h.len(), history.len());
    }
}

/// A schedule's rate of each epoch is in the log and on the epoch lines; patience ends a run that stopped
/// improving, says so and keeps the best weights; out-of-range settings name their flag.
#[test]
fn schedules_and_early_stopping_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let out = tmp.path().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--dataset", d, "--out", o, "--force", "--progress", "plain"];
        args.extend_from_slice(extra);
        lenet5(&args)
    };
    let r = train(&["--epochs", "4", "--lr-schedule", "step", "--step-size", "2", "--gamma", "0.5"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let lrs: Vec<f64> =
        lenet5_core::run::read_metrics(&out.join("metrics.jsonl")).unwrap().iter().map(|m| m.lr.unwrap()).collect();
    let (a, b) = (1e-3f32 as f64, 5e-4f32 as f64);
    assert_eq!(lrs, [a, a, b, b]);
    assert!(stdout(&r).contains("lr 5.000e-4"), "{}", stdout(&r));

    // At a learning rate this small nothing improves for long.
    let r = train(&["--epochs", "30", "--lr", "1e-9", "--patience", "2"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let text = stdout(&r);
    assert!(text.contains("stopped early after epoch") && text.contains("not improved for 2 epochs"), "{text}");
    assert!(text.lines().filter(|l| l.starts_with("epoch")).count() < 30, "{text}");
    assert!(out.join("best.safetensors").exists());

    assert_clean_error(
        &train(&["--lr-schedule", "cosine", "--epochs", "3", "--warmup-epochs", "3"]),
        &["--warmup-epochs"],
    );
    assert_clean_error(&train(&["--patience", "0"]), &["--patience", "at least 1"]);
    assert_clean_error(&train(&["--lr-schedule", "step", "--step-size", "0"]), &["--step-size"]);
}

/// IDX data sets whose labels are not numbered from 0 (EMNIST letters: 1 to 26): the classes are counted from
/// the labels, `--label-offset` moves them, and the weights remember it for `eval`.
#[test]
fn idx_labels_from_one_with_a_label_offset() {
    use lenet5_core::checkpoint::Checkpoint;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 500, 100);
    for prefix in ["train", "t10k"] {
        let path = data.join(format!("{prefix}-labels-idx1-ubyte"));
        let mut split =
            lenet5_core::data::Split::load(&data.join(format!("{prefix}-images-idx3-ubyte")), &path).unwrap();
        split.labels.iter_mut().for_each(|l| *l += 1);
        std::fs::write(&path, split.to_idx().1).unwrap();
    }
    let (d, out) = (data.to_str().unwrap(), tmp.path().join("run"));
    let o = out.to_str().unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--dataset", d, "--out", o, "--epochs", "1", "--force", "--progress", "plain"];
        args.extend_from_slice(extra);
        lenet5(&args)
    };
    let r = train(&[]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(Checkpoint::load(&out.join("last.safetensors")).unwrap().classes(), 11, "labels 1..=10: 11 classes");
    let r = train(&["--label-offset", "1"]);
    assert!(r.status.success(), "{}", stderr(&r));
    let ck = Checkpoint::load(&out.join("best.safetensors")).unwrap();
    assert_eq!((ck.classes(), ck.class_names[0].as_str(), ck.class_names[9].as_str()), (10, "1", "10"));
    // The weights record the directory, but never choose to read it: eval is told the data, and reads the
    // label offset the weights recorded.
    let weights = out.join("best.safetensors");
    let e = lenet5(&["eval", "--weights", weights.to_str().unwrap(), "--json"]);
    assert_clean_error(&e, &["metadata cannot choose", "--dataset"]);
    let e = lenet5(&["eval", "--weights", weights.to_str().unwrap(), "--json", "--dataset", d]);
    assert!(e.status.success(), "{}", stderr(&e));
    assert_clean_error(&train(&["--label-offset", "2"]), &["label 1 is below the label offset 2"]);
}

/// `eval` and `confusion` on a test split without images say so instead of printing 0/0; `serve` on an address
/// that is taken says so before it reads anything.
#[test]
fn an_empty_test_split_and_a_taken_address_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 100, 0);
    let weights = repo().join("models/lenet5-mnist.safetensors");
    let (w, d) = (weights.to_str().unwrap(), data.to_str().unwrap());
    assert_clean_error(&lenet5(&["eval", "--weights", w, "--dataset", d]), &["empty test split"]);
    let out = tmp.path().to_str().unwrap();
    assert_clean_error(&lenet5(&["confusion", "--weights", w, "--dataset", d, "--out", out]), &["empty test split"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = lenet5(&["serve", "--addr", &addr, "--weights", "/nonexistent/weights.safetensors"]);
    assert_clean_error(&o, &["cannot listen on", &addr]);
}

/// A run whose loss stops being a number says where, and leaves the last state it saved as it was.
#[test]
fn a_diverging_run_stops_with_a_clear_error_and_keeps_its_last_good_state() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 100);
    let out = tmp.path().join("run");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let r = lenet5(&["train", "--dataset", d, "--out", o, "--head", "logits", "--lr", "1e20", "--epochs", "3"]);
    assert_clean_error(&r, &["diverged at epoch 1, batch", "the loss is NaN", "lower --lr"]);
    let state = lenet5_core::checkpoint::Checkpoint::load(&out.join("last.safetensors")).unwrap();
    assert!(state.params.iter().all(|v| v.is_finite()));
}

/// A batch far larger than the data set costs the memory of the data set's images, not of the batch: the
/// largest batch (65,536) on 300 images trains within 1.5 GB of address space (it once needed about 7 GB).
#[test]
fn a_huge_batch_on_a_small_data_set_needs_little_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 300, 100);
    let out = tmp.path().join("run");
    let script = format!(
        "ulimit -v 1500000 && exec {} train --dataset {} --out {} --batch-size 65536 --epochs 1 --progress plain",
        env!("CARGO_BIN_EXE_lenet5"),
        data.display(),
        out.display()
    );
    let o = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("saved best"), "{}", stdout(&o));
}

/// Extreme numbers end promptly: a metrics log with a loss of 1.7e308 and a NaN plots (the figures that cannot
/// go on an axis are left out), and counts near 2^64 are refused before anything wraps.
#[test]
fn extreme_values_are_plotted_or_refused_and_never_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("metrics.jsonl");
    let line = |epoch: u32, loss: &str| {
        format!(
            "{{\"epoch\":{epoch},\"train_loss\":{loss},\"train_acc\":0.5,\"val_loss\":1,\"val_acc\":0.4,\
             \"train_seconds\":1,\"val_seconds\":1}}\n"
        )
    };
    std::fs::write(&log, line(1, "1.7e308") + &line(2, "\"NaN\"") + &line(3, "0.9")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lenet5"))
        .args(["plot", tmp.path().to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_at_most(&mut child, 60, "plot");
    assert!(status.success() && tmp.path().join("curves.png").exists());

    let huge = u64::MAX.to_string();
    assert_clean_error(&lenet5(&["summary", "--batch", &huge]), &["--batch must be from 1 to 65536"]);
    assert_clean_error(&lenet5(&["bench", "--seconds", "1e300"]), &["--seconds", "at most 3600"]);
    let out = tmp.path().join("run");
    let o = lenet5(&["train", "--epochs", &huge, "--out", out.to_str().unwrap()]);
    assert_clean_error(&o, &["--epochs must be in 1..=1000000"]);
}

/// Evaluating needs only the test split: with the training files absent, `eval` works (and would download
/// nothing else), while `train` names what is missing.
#[test]
fn eval_needs_only_the_test_files() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    for f in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
        std::fs::copy(mnist_dir().join(f), raw.join(f)).unwrap();
    }
    let (weights, root) = (repo().join("models/lenet5-mnist.safetensors"), tmp.path().to_str().unwrap());
    let o = lenet5(&["eval", "--weights", weights.to_str().unwrap(), "--data", root, "--no-download", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["total"], 10000);
    let out = tmp.path().join("run");
    let o = lenet5(&["train", "--data", root, "--no-download", "--out", out.to_str().unwrap(), "--epochs", "1"]);
    assert_clean_error(&o, &["train-images-idx3-ubyte"]);
}

/// More threads than cores only cost memory: the count is capped at the cores, with a note, and the numbers are
/// those of any other thread count.
#[test]
fn threads_beyond_the_cores_are_capped_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 300, 100);
    let cores = std::thread::available_parallelism().unwrap().get();
    let run = |out: &str, threads: usize| {
        let (d, o) = (data.to_str().unwrap(), tmp.path().join(out));
        let args = ["train", "--dataset", d, "--epochs", "1", "--progress", "plain", "--out", o.to_str().unwrap()];
        let r = lenet5(&[&args[..], &["--threads", &threads.to_string()]].concat());
        assert!(r.status.success(), "{}", stderr(&r));
        (stderr(&r), lenet5_core::checkpoint::Checkpoint::load(&o.join("last.safetensors")).unwrap().params)
    };
    let (note, many) = run("many", 200);
    assert!(note.contains(&format!("--threads 200 is more than the {cores} cores: using {cores}")), "{note}");
    let (quiet, one) = run("one", 1);
    assert!(!quiet.contains("note:"), "{quiet}");
    assert_eq!(many, one);
}

/// A known data set is what its files are, checked by their SHA-256: MNIST's files taken for Fashion-MNIST are
/// an error naming both (they once trained digits under Fashion-MNIST's class names, and exited 0), other files
/// under MNIST's name are an error that says how to use them, and the same files named as an IDX directory
/// train. `site` offers a flat directory of MNIST as MNIST alone.
#[test]
fn a_known_data_set_is_identified_by_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let flat = tmp.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    for file in lenet5_core::data::DatasetId::FILES {
        std::fs::copy(mnist_dir().join(format!("{file}.gz")), flat.join(format!("{file}.gz"))).unwrap();
    }
    let (flat, out) = (flat.to_str().unwrap(), tmp.path().join("run"));
    let out = out.to_str().unwrap();
    let base = ["train", "--no-download", "--epochs", "1", "--train-limit", "100", "--out", out];
    let o = lenet5(&[&base[..], &["--dataset", "fashion-mnist", "--data", flat]].concat());
    assert_clean_error(&o, &["train-images-idx3-ubyte.gz", "MNIST's training images, not Fashion-MNIST's"]);
    assert!(!std::path::Path::new(out).exists(), "a refused run wrote {out}");
    let o =
        lenet5(&["eval", "--weights", "models/lenet5-mnist.safetensors", "--dataset", "fashion-mnist", "--data", flat]);
    assert_clean_error(&o, &["t10k-images-idx3-ubyte.gz", "not Fashion-MNIST's"]);

    // A part of MNIST is not MNIST: it trains when its directory is named as the data set.
    let root = tmp.path().join("root");
    write_subset(&root.join("MNIST/raw"), 300, 100);
    let o = lenet5(&[&base[..], &["--data", root.to_str().unwrap()]].concat());
    assert_clean_error(&o, &["train-images-idx3-ubyte", "not MNIST's published training images", "--dataset DIR"]);
    let o = lenet5(&[&base[..], &["--dataset", root.join("MNIST/raw").to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", stderr(&o));

    let site = tmp.path().join("site");
    let o = lenet5(&["site", site.to_str().unwrap(), "--data", flat]);
    assert!(o.status.success(), "{}", stderr(&o));
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join("data/datasets.json")).unwrap()).unwrap();
    assert_eq!(list["datasets"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["datasets"][0]["name"], "mnist");
    assert!(!site.join("data/fashion-mnist").exists());
}

/// A step's memory does not grow with the batch size: a batch of 65,536 (all of MNIST's training images in one
/// step) runs in rounds of a few slices, and the whole run, data and evaluation included, stays within 300 MB
/// (it took 6.4 GB when a step held every slice of its batch at once). The rounds give the bits of one pass
/// (the engine's `a_batch_run_in_rounds_gives_the_bits_of_one_round`).
#[test]
fn a_huge_batch_trains_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // Reaped by `wait4`, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_lenet5"))
        .args(["train", "--batch-size", "65536", "--epochs", "1", "--no-download", "--progress", "plain", "--data"])
        .arg(repo().join("data"))
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: waits for our own child, which nothing else waits for, into locals of the right types.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status}");
    assert!(out.join("best.safetensors").is_file());
    let peak_mb = usage.ru_maxrss / 1024;
    assert!(peak_mb <= 300, "a batch of 65,536 took {peak_mb} MB");
}
