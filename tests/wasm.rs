//! The engine compiled to WebAssembly (`assets/web/lenet5.wasm`, which the training page runs) gives the bits
//! of the native build running the same kernels on one thread (`LENET5_SIMD=baseline --threads 1`): the same
//! weights and momentum (their SHA-256) after a few hundred steps, and the same metrics, epoch by epoch. It runs
//! under Node, through the exports the page's worker uses (`web/tests/train.mjs`); skipped, saying why, where
//! Node is missing. The multithreaded module (`lenet5-threads.wasm`), its steps shared by Node's worker threads
//! through the page's own host code, gives the bits of `--threads N` for N = 1, 2 and 3. (CI checks that the
//! committed modules are built from the current source: `scripts/build-web.sh --check`.)

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn node_available() -> bool {
    Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The SHA-256 of the weights and momentum, and the metrics without their timings, of a native run.
fn native(args: &[&str]) -> (String, Vec<Value>) {
    let out = tempfile::tempdir().unwrap();
    let run = out.path().join("run");
    let data = repo().join("data");
    let o = Command::new(env!("CARGO_BIN_EXE_lenet5"))
        .args(["train", "--no-download", "--progress", "plain", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&run)
        .args(args)
        .args(if args.contains(&"--threads") { &[][..] } else { &["--threads", "1"] })
        .env(lenet5_core::SIMD_CAP_VAR, "baseline")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let state = lenet5_core::checkpoint::Checkpoint::load(&run.join("last.safetensors")).unwrap();
    let history = lenet5_core::run::read_metrics(&run.join("metrics.jsonl")).unwrap();
    same_figures_as_eval(&run, &history, out.path());
    let history = history.into_iter().map(without_timings).collect();
    (state.metadata["tensors_sha256"].clone(), history)
}

/// `lenet5 eval` of the run's best weights on the run's validation images gives that epoch's val figures exactly:
/// one definition of loss and accuracy for a run, an evaluation and (through the equality below) the page.
fn same_figures_as_eval(run: &std::path::Path, history: &[lenet5_core::train::EpochMetrics], tmp: &std::path::Path) {
    let state = lenet5_core::run::RunDir::new(run).load_state().unwrap().0;
    let best = &history[state.best_epoch.unwrap() - 1];
    let images = tmp.join("validation");
    write_subset(&images, 1, state.config.test_limit.unwrap());
    let weights = run.join("best.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_lenet5"))
        .args(["eval", "--json", "--weights", weights.to_str().unwrap(), "--dataset", images.to_str().unwrap()])
        .env(lenet5_core::SIMD_CAP_VAR, "baseline")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let eval: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((eval["loss"].as_f64().unwrap(), eval["accuracy"].as_f64().unwrap()), (best.val_loss, best.val_acc));
}

fn without_timings(m: impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(m).unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("train_seconds");
    o.remove("val_seconds");
    v
}

/// The same run in `module` (under assets/web/) under Node, and the workers that shared its steps.
fn webassembly(module: &str, settings: &str) -> (String, Vec<Value>, f64, u64) {
    let o = Command::new("node")
        .arg(repo().join("web/tests/train.mjs"))
        .arg(repo().join("assets/web").join(module))
        .arg(repo().join("data/MNIST/raw"))
        .arg(settings)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let history = v["history"].as_array().unwrap().clone();
    let sha = v["tensors_sha256"].as_str().unwrap().to_string();
    (sha, history, v["images_per_second"].as_f64().unwrap(), v["workers"].as_u64().unwrap())
}

/// The runs compared, as the page's settings (a JSON object's members) and `lenet5 train`'s flags.
const RUNS: [(&str, &[&str]); 3] = [
    // The recipe's settings, three epochs of 2,000 images: 375 steps.
    (
        r#""epochs": 3, "train_limit": 2000, "test_limit": 500"#,
        &["--epochs", "3", "--train-limit", "2000", "--test-limit", "500"],
    ),
    // The logits head, a batch that is not a whole number of slices, one epoch.
    (
        r#""epochs": 1, "head": "logits", "lr": 0.05, "batch_size": 50, "seed": 7, "train_limit": 3000, "test_limit": 1000"#,
        &["--epochs", "1", "--head", "logits", "--lr", "0.05", "--batch-size", "50", "--seed", "7"],
    ),
    // A batch of more slices than a step holds, run in rounds (a whole one and a short one).
    (
        r#""epochs": 2, "head": "logits", "lr": 0.05, "batch_size": 1500, "train_limit": 3000, "test_limit": 500"#,
        &["--epochs", "2", "--head", "logits", "--lr", "0.05", "--batch-size", "1500", "--test-limit", "500"],
    ),
];

/// Each run's flags for `lenet5 train`, with the data's limits the settings hold.
fn native_flags(settings: &str, flags: &[&'static str]) -> Vec<String> {
    let mut all: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let v: Value = serde_json::from_str(&format!("{{{settings}}}")).unwrap();
    for (key, flag) in [("train_limit", "--train-limit"), ("test_limit", "--test-limit")] {
        if !all.iter().any(|f| f == flag) {
            all.extend([flag.to_string(), v[key].to_string()]);
        }
    }
    all
}

/// Runs `settings` in `module` under Node and `lenet5 train` with `flags`: the same weights, momentum and
/// metrics. Returns the module's training images/s and the workers that shared its steps.
fn assert_same_bits(module: &str, settings: &str, flags: &[String]) -> (f64, u64) {
    let (wasm_sha, wasm_history, rate, workers) = webassembly(module, settings);
    let (native_sha, native_history) = native(&flags.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(wasm_history, native_history, "{settings}");
    assert_eq!(wasm_sha, native_sha, "{settings}: the weights and momentum differ");
    (rate, workers)
}

#[test]
fn webassembly_training_gives_the_bits_of_the_native_portable_kernels() {
    if !node_available() {
        println!("skipped: no Node.js to run the WebAssembly engine with");
        return;
    }
    for (members, flags) in RUNS {
        let settings = format!("{{{members}}}");
        let (rate, _) = assert_same_bits("lenet5.wasm", &settings, &native_flags(members, flags));
        println!("{settings}: same bits; {rate:.0} training images/s in WebAssembly under Node");
    }
}

/// The multithreaded module on 1, 2 and 3 workers (as many as the batch keeps busy): the phased schedule (a
/// slice a worker at most), whole slices, and a batch run in rounds.
#[test]
fn the_multithreaded_module_gives_the_bits_of_native_threads() {
    if !node_available() {
        println!("skipped: no Node.js to run the WebAssembly engine with");
        return;
    }
    for (members, flags) in RUNS {
        for threads in [1, 2, 3] {
            let settings = format!(r#"{{{members}, "threads": {threads}}}"#);
            let mut flags = native_flags(members, flags);
            flags.extend(["--threads".to_string(), threads.to_string()]);
            let (rate, workers) = assert_same_bits("lenet5-threads.wasm", &settings, &flags);
            // No more than the batch keeps busy: at the recipe's 16, two.
            let batch = serde_json::from_str::<Value>(&settings).unwrap()["batch_size"].as_u64().unwrap_or(16);
            let busy = lenet5_core::train::Trainer::useful_workers(batch as usize);
            assert_eq!(workers, threads.min(busy) as u64, "{settings}: the workers that shared the steps");
            println!("{settings}: same bits; {rate:.0} training images/s under Node");
        }
    }
}

/// An engine thread that traps (a bug: here, started on a pointer past the memory's end) is reported by its
/// helper on the pool's BroadcastChannel, where the page listens to end the engine that now waits for it.
#[test]
fn a_failed_engine_thread_is_reported_on_its_channel() {
    if !node_available() {
        println!("skipped: no Node.js to run the WebAssembly engine with");
        return;
    }
    let o = Command::new("node")
        .arg(repo().join("web/tests/train.mjs"))
        .arg("--failing-thread")
        .arg(repo().join("assets/web/lenet5-threads.wasm"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("reported: {\"failed\":\""), "{}", stdout(&o));
}
