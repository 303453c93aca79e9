//! An output never replaces what is not a regular file. Every command that writes a file is run with that file
//! already standing as each kind of thing a path can name: a regular file and a link to one are replaced (the
//! link followed, and kept), while a directory, a FIFO and a link to a FIFO are refused with a one-line error and
//! left as they were. (Writing once replaced any of them: a FIFO, or `/dev/full`, became a regular file.)

mod common;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// What may already stand where a command writes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    File,
    Directory,
    Fifo,
    LinkToFile,
    LinkToFifo,
}

const KINDS: [Kind; 5] = [Kind::File, Kind::Directory, Kind::Fifo, Kind::LinkToFile, Kind::LinkToFifo];

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// Makes `path` a thing of `kind`; what a link points to goes into `aside`.
fn make(path: &Path, kind: Kind, aside: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let target = aside.join("target");
    match kind {
        Kind::File => std::fs::write(path, b"old").unwrap(),
        Kind::Directory => std::fs::create_dir(path).unwrap(),
        Kind::Fifo => mkfifo(path),
        Kind::LinkToFile => {
            std::fs::write(&target, b"old").unwrap();
            std::os::unix::fs::symlink(&target, path).unwrap();
        }
        Kind::LinkToFifo => {
            mkfifo(&target);
            std::os::unix::fs::symlink(&target, path).unwrap();
        }
    }
}

/// Checks what the command did to `path` (made a thing of `kind`) and how it ended.
fn check(command: &str, path: &Path, kind: Kind, aside: &Path, status: std::process::ExitStatus, err: &str) {
    let place = format!("{command} with {} as {kind:?}", path.display());
    let meta = std::fs::symlink_metadata(path).unwrap();
    let target = aside.join("target");
    match kind {
        Kind::File => {
            assert!(status.success(), "{place}: {err}");
            assert!(meta.file_type().is_file() && std::fs::read(path).unwrap() != b"old", "{place}: not replaced");
        }
        Kind::LinkToFile => {
            assert!(status.success(), "{place}: {err}");
            assert!(meta.file_type().is_symlink(), "{place}: the link was replaced");
            assert!(std::fs::read(&target).unwrap() != b"old", "{place}: the link's file was not written");
        }
        Kind::Directory | Kind::Fifo | Kind::LinkToFifo => {
            assert!(!status.success(), "{place}: succeeded");
            assert!(err.contains("an output replaces only a regular file"), "{place}: {err}");
            assert!(!err.contains("panicked"), "{place}: {err}");
            let still = match kind {
                Kind::Directory => meta.file_type().is_dir(),
                Kind::Fifo => meta.file_type().is_fifo(),
                _ => meta.file_type().is_symlink() && std::fs::metadata(&target).unwrap().file_type().is_fifo(),
            };
            assert!(still, "{place}: replaced");
        }
    }
}

/// Every command that writes a file: its name, the file it writes under `dir`, and its arguments.
fn commands(dir: &Path, data: &Path, run: &Path) -> Vec<(&'static str, PathBuf, Vec<String>)> {
    let weights = repo().join("models/lenet5-mnist.safetensors").display().to_string();
    let image = repo().join("tests/fixtures/digits/dark_on_light_7.png").display().to_string();
    let pth = repo().join("tests/fixtures/tutorial.pth").display().to_string();
    let (at, data) = (|p: &str| dir.join(p), data.display().to_string());
    let s = |p: &Path| p.display().to_string();
    let small = ["--epochs", "1", "--train-limit", "100", "--test-limit", "50"].map(String::from);
    vec![
        (
            "export",
            at("model.onnx"),
            vec!["export".into(), "--weights".into(), weights.clone(), "--onnx".into(), s(&at("model.onnx"))],
        ),
        ("import", at("model.safetensors"), vec!["import".into(), pth, s(&at("model.safetensors"))]),
        ("train", at("run/best.safetensors"), {
            let mut a =
                vec!["train".into(), "--dataset".into(), data.clone(), "--out".into(), s(&at("run")), "--force".into()];
            a.extend(small.clone());
            a
        }),
        ("sweep", at("sweep/results.csv"), {
            let mut a = vec!["sweep".into(), "--lr".into(), "0.01".into(), "--dataset".into(), data.clone()];
            a.extend(["--out".into(), s(&at("sweep"))]);
            a.extend(small);
            a
        }),
        ("plot", at("plots/curves.png"), vec!["plot".into(), s(run), "--out".into(), s(&at("plots"))]),
        ("confusion", at("confusion/confusion.png"), {
            let w = ["confusion", "--weights", &weights, "--dataset", &data, "--out"].map(String::from);
            [&w[..], &[s(&at("confusion"))]].concat()
        }),
        (
            "inspect",
            at("inspect/input.png"),
            vec![
                "inspect".into(),
                image.clone(),
                "--weights".into(),
                weights.clone(),
                "--out".into(),
                s(&at("inspect")),
            ],
        ),
        ("predict", at("seen/dark_on_light_7.28x28.png"), {
            let w = ["predict", "--weights", &weights, "--save-preprocessed"].map(String::from);
            [&w[..], &[s(&at("seen")), image]].concat()
        }),
        ("site", at("site/index.html"), vec!["site".into(), s(&at("site")), "--data".into(), s(&repo().join("data"))]),
    ]
}

#[test]
fn every_output_replaces_only_regular_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_subset(&data, 100, 50);
    let run = tmp.path().join("run");
    let o = lenet5(&["train", "--dataset", data.to_str().unwrap(), "--epochs", "1", "--out", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut commands_seen = 0;
    for kind in KINDS {
        let case = tempfile::tempdir().unwrap();
        let aside = tempfile::tempdir().unwrap();
        for (command, file, args) in commands(case.path(), &data, &run) {
            let aside = aside.path().join(command);
            std::fs::create_dir(&aside).unwrap();
            make(&file, kind, &aside);
            let mut child = Command::new(env!("CARGO_BIN_EXE_lenet5"))
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // A write that opened the FIFO would wait for a reader for ever.
            let status = wait_at_most(&mut child, 120, &format!("{command} with {kind:?}"));
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            check(command, &file, kind, &aside, status, &err);
            commands_seen += 1;
        }
    }
    assert_eq!(commands_seen, 9 * KINDS.len());
}
