//! The documentation cannot drift: every fenced `sh` block of README.md and of the guides in `docs/` runs, in
//! order, as a bash script in a scratch directory where `lenet5` is the program built from this source, trained
//! on a small part of MNIST (so the recipe's 50 epochs take a second). Each block must exit 0, and each
//! `lenet5` command in it must print its key line. A block that cannot run here (one that installs packages,
//! needs a network or a server that runs until Ctrl-C) is fenced `sh no-run`, which a reader's viewer still shows
//! as shell.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The fenced blocks of `markdown` whose info string is exactly `sh`, with the line each starts on.
fn sh_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some((i + 1, String::new())),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "an unclosed block");
    blocks
}

/// What each command prints when it worked (a phrase of its last lines).
fn key_line(command: &str, line: &str) -> Option<&'static str> {
    Some(match command {
        "train" if line.contains("--print-config") => "\"epochs\"",
        "train" => "best val_acc",
        "eval" => "accuracy",
        "predict" => ": ",
        "summary" => "total:",
        "plot" => "curves",
        "confusion" => "accuracy",
        "inspect" => "inspect",
        "import" => ".safetensors",
        "export" if line.contains("--c ") => "lenet5_model.c",
        "export" => ".onnx",
        "quantize" => "int8",
        "sweep" => "results:",
        "site" => "the training page",
        _ => return None,
    })
}

/// A scratch directory to run the examples in: the repository's models, fixtures and scripts within reach, MNIST
/// as the data root, and `lenet5` on the PATH.
///
/// So that the recipe's 50 epochs take a second, `lenet5` there is a wrapper that gives the commands that read
/// a data set (a fresh `train`, `sweep`, `eval`, `confusion`, `predict`) the first 1000 training and 200 test
/// images of MNIST, as an IDX directory (`--dataset`), unless the command names a data set or resumes a run.
/// A subset cannot pass for MNIST itself: a known data set is its published files.
fn playground() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    for dir in ["models", "tests", "examples", "scripts"] {
        std::os::unix::fs::symlink(repo().join(dir), tmp.path().join(dir)).unwrap();
    }
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::os::unix::fs::symlink(repo().join("data/MNIST"), tmp.path().join("data/MNIST")).unwrap();
    let subset = tmp.path().join(".subset");
    write_subset(&subset, 1000, 200);
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let wrapper = format!(
        r#"#!/usr/bin/env bash
case "$1" in
  train|sweep|eval|confusion|predict)
    for a in "$@"; do
      case "$a" in --dataset|--dataset=*|--resume|--resume=*|--) exec {bin} "$@";; esac
    done
    exec {bin} "$1" --dataset {subset} "${{@:2}}";;
esac
exec {bin} "$@"
"#,
        bin = env!("CARGO_BIN_EXE_lenet5"),
        subset = subset.display()
    );
    let script = bin.join("lenet5");
    std::fs::write(&script, wrapper).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    (tmp, path)
}

fn run_guide(file: &Path) {
    let text = std::fs::read_to_string(file).unwrap();
    let blocks = sh_blocks(&text);
    let (dir, path) = playground();
    for (line, script) in &blocks {
        let o = Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(dir.path())
            .env("PATH", &path)
            .env("LENET5_DATA", dir.path().join("data"))
            .output()
            .unwrap();
        let place = format!("{}:{line}", file.strip_prefix(repo()).unwrap_or(file).display());
        assert!(o.status.success(), "{place}: the block failed:\n{script}\n{}{}", stdout(&o), stderr(&o));
        let out = stdout(&o) + &stderr(&o);
        for command_line in script.lines().map(str::trim).filter(|l| l.starts_with("lenet5 ")) {
            let command = command_line.split_whitespace().nth(1).unwrap_or_default();
            if let Some(key) = key_line(command, command_line) {
                assert!(out.contains(key), "{place}: `{command_line}` printed no `{key}`:\n{out}");
            }
        }
    }
}

fn guides() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_shell_example_of_the_readme_runs() {
    run_guide(&repo().join("README.md"));
}

#[test]
fn every_shell_example_of_the_guides_runs() {
    for file in guides().iter().skip(1) {
        run_guide(file);
    }
}

#[test]
fn the_readme_is_short_and_the_check_sees_every_block() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.len() <= 15 * 1024, "README.md is {} bytes; the depth belongs in docs/", readme.len());
    // The runner finds the blocks a reader sees, and none that a reader sees as something else.
    let sample = "text\n```sh\nlenet5 eval\n```\n```sh no-run\nlenet5 serve\n```\n```text\n$ lenet5 x\n```\n";
    assert_eq!(sh_blocks(sample), vec![(2, "lenet5 eval\n".to_string())]);
    let runnable: usize = guides().iter().map(|f| sh_blocks(&std::fs::read_to_string(f).unwrap()).len()).sum();
    assert!(runnable >= 8, "only {runnable} runnable blocks in the README and the guides");
}
