//! The run specification as users meet it: `--config` files (TOML and JSON) with flags that override them,
//! `--print-config`, the `config.json` every run writes and that trains the same run again bit for bit, a
//! validation split held out of an IDX data set's training images, and one definition of every default.

mod common;

use std::path::Path;

use common::*;
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::run::{RunDir, read_metrics};

/// The weights, momentum and figures (without timings) of the run in `dir`.
fn outcome(dir: &Path) -> (Vec<f32>, Vec<f32>, Vec<[f64; 4]>) {
    let run = RunDir::new(dir);
    let ck = Checkpoint::load(&run.state()).unwrap();
    let history = read_metrics(&run.metrics()).unwrap();
    let figures = history.iter().map(|m| [m.train_loss, m.train_acc, m.val_loss, m.val_acc]).collect();
    (ck.params, ck.momentum.unwrap(), figures)
}

fn train(args: &[&str]) -> String {
    let mut all = vec!["train", "--progress", "plain"];
    all.extend_from_slice(args);
    let o = lenet5(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn a_runs_config_json_trains_the_same_run_again_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 600, 200);
    let (d, first, again) = (data.to_str().unwrap(), tmp.path().join("first"), tmp.path().join("again"));
    let flags = ["--lr", "0.02", "--head", "logits", "--epochs", "2", "--augment", "--scale", "0.8,1.2"];
    let mut args = vec!["--dataset", d, "--out", first.to_str().unwrap(), "--batch-size", "13"];
    args.extend(flags);
    train(&args);
    let config = first.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"lr\": 0.02,") && text.contains("\"batch_size\": 13,"), "{text}");
    train(&["--config", config.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert_eq!(outcome(&first), outcome(&again));
}

#[test]
fn flags_override_a_toml_config_and_print_config_shows_the_resolved_specification() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = tmp.path().join("run.toml");
    std::fs::write(&toml, "lr = 0.05\nepochs = 3\nhead = \"logits\"\n# comments are fine\nscale = [0.8, 1.2]\n")
        .unwrap();
    let o = lenet5(&["train", "--config", toml.to_str().unwrap(), "--epochs", "7", "--print-config"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let spec: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!((spec["lr"].as_f64(), spec["epochs"].as_u64()), (Some(0.05), Some(7)));
    assert_eq!((spec["head"].as_str(), spec["batch_size"].as_u64()), (Some("logits"), Some(16)));
    assert_eq!(spec["scale"], serde_json::json!([0.8, 1.2]));

    // What --print-config prints, --config reads, to the same specification.
    let printed = tmp.path().join("printed.json");
    std::fs::write(&printed, stdout(&o)).unwrap();
    let again = lenet5(&["train", "--config", printed.to_str().unwrap(), "--print-config"]);
    assert_eq!(stdout(&again), stdout(&o));

    // Bad files: one line naming the file and the setting.
    std::fs::write(&toml, "learning_rate = 0.1\n").unwrap();
    let o = lenet5(&["train", "--config", toml.to_str().unwrap()]);
    assert_clean_error(&o, &["run.toml", "unknown setting `learning_rate`", "did you mean `lr`"]);
    std::fs::write(&toml, "lr = -1\n").unwrap();
    let o = lenet5(&["train", "--config", toml.to_str().unwrap(), "--out", tmp.path().join("r").to_str().unwrap()]);
    assert_clean_error(&o, &["--lr must be a positive number, got -1"]);
    assert!(!tmp.path().join("r").exists(), "nothing written for a refused specification");
    let o = lenet5(&["train", "--config", tmp.path().join("missing.toml").to_str().unwrap()]);
    assert_clean_error(&o, &["missing.toml"]);
}

#[test]
fn a_validation_split_of_idx_data_keeps_the_test_set_for_one_final_figure() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 1000, 300);
    let (d, held, recipe) = (data.to_str().unwrap(), tmp.path().join("held"), tmp.path().join("recipe"));
    let common = ["--dataset", d, "--epochs", "2", "--lr", "0.05", "--head", "logits"];
    let text = train(&[&common[..], &["--out", held.to_str().unwrap(), "--val-split", "0.2"]].concat());
    assert!(
        text.contains("20% of each class held out for val_acc; 300 test images, measured once at the end"),
        "{text}"
    );
    let test_line = text.lines().find(|l| l.starts_with("test: ")).expect(&text);
    assert!(test_line.contains("/300 correct) with the best weights"), "{text}");
    let state = RunDir::new(&held).load_state().unwrap().0;
    let test = state.test.expect("the test figures are recorded");
    assert_eq!(test.total, 300);
    assert!(test_line.contains(&format!("({}/300", test.correct)), "{text}");

    let text = train(&[&common[..], &["--out", recipe.to_str().unwrap()]].concat());
    assert!(text.contains("1000 train / 300 test images, val_acc on the test images"), "{text}");
    assert!(!text.contains("test: "), "{text}");
    assert!(RunDir::new(&recipe).load_state().unwrap().0.test.is_none());
    // The held-out run validates on other images, and trains on fewer.
    let (held_run, recipe_run) = (outcome(&held), outcome(&recipe));
    assert_ne!(held_run.2, recipe_run.2);

    // Resumed, the run keeps its split (recorded with its settings) and measures the test set again at the end.
    let text = train(&["--resume", held.to_str().unwrap(), "--epochs", "3"]);
    assert!(text.contains("held out for val_acc") && text.contains("test: "), "{text}");
}

/// The recipe's defaults are written once, in `core/src/spec.rs`: no front end restates them.
#[test]
fn a_preset_sits_under_the_config_and_the_flags_and_an_unknown_one_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let printed = |args: &[&str]| {
        let o = lenet5(&[&["train", "--print-config"], args].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    let fast = printed(&["--preset", "fast"]);
    let (head, schedule) = (fast["head"].as_str(), fast["lr_schedule"].as_str());
    assert_eq!((head, schedule, fast["lr_per_batch"].as_bool()), (Some("logits"), Some("onecycle"), Some(true)));
    assert_eq!((fast["eval_every"].as_u64(), fast["val_split"].as_f64()), (Some(0), None));
    let toml = tmp.path().join("run.toml");
    std::fs::write(&toml, "epochs = 5\nbatch_size = 64\n").unwrap();
    let mixed = printed(&["--preset", "fast", "--config", toml.to_str().unwrap(), "--batch-size", "128"]);
    assert_eq!((mixed["epochs"].as_u64(), mixed["batch_size"].as_u64()), (Some(5), Some(128)));
    assert_eq!((mixed["head"].as_str(), mixed["lr"].as_f64()), (Some("logits"), fast["lr"].as_f64()));
    let o = lenet5(&["train", "--preset", "quick", "--out", tmp.path().join("r").to_str().unwrap()]);
    assert_clean_error(&o, &["--preset", "quick", "fast"]);
    assert!(!tmp.path().join("r").exists());
}

#[test]
fn every_default_is_written_in_the_specification_alone() {
    let mut files = Vec::new();
    for dir in ["src", "core/src", "web/src", "python/src", "python/lenet5", "assets/web"] {
        collect(&repo().join(dir), &mut files);
    }
    // The recipe's values as a front end would restate them: a clap default, a keyword default, a struct field.
    let restated = [
        "default_value_t = 16",
        "default_value_t = 1e-3",
        "default_value = \"0.001\"",
        "default_value = \"save_model\"",
        "lr: 1e-3",
        "lr = 1e-3",
        "momentum: 0.9",
        "momentum = 0.9",
        "batch_size = 16",
        "epochs: 50",
        "epochs = 50",
        "value=\"0.001\"",
        "value=\"50\"",
        "scale_min: 0.9",
    ];
    let spec = repo().join("core/src/spec.rs");
    let mut found = Vec::new();
    let test_code = |f: &Path| f.ends_with("tests.rs") || f.components().any(|c| c.as_os_str() == "tests");
    for file in files.iter().filter(|f| **f != spec && !test_code(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for r in restated.iter().filter(|r| code.contains(*r)) {
            found.push(format!("{}: {r}", file.strip_prefix(repo()).unwrap().display()));
        }
    }
    assert!(found.is_empty(), "defaults written outside the specification:\n{}", found.join("\n"));
    // And the check above can see one.
    assert!(std::fs::read_to_string(&spec).unwrap().contains("lr: 1e-3"));
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| ["rs", "py", "pyi", "html", "js"].contains(&e.to_str().unwrap())) {
            files.push(path);
        }
    }
}
