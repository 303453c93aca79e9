//! Helpers shared by the tests that run the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use lenet5::data::idx::{encode_images, encode_labels, read_images, read_labels};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled MNIST.
pub fn mnist_dir() -> PathBuf {
    repo().join("data/MNIST/raw")
}

/// Writes the first `train` and `test` MNIST images, as raw IDX files, into `dir`.
pub fn write_subset(dir: &Path, train: usize, test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let img = read_images(&mnist_dir().join(format!("{prefix}-images-idx3-ubyte.gz"))).unwrap();
        let lab = read_labels(&mnist_dir().join(format!("{prefix}-labels-idx1-ubyte.gz"))).unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_images(n, 28, 28, &img.pixels[..n * 784]),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), encode_labels(&lab[..n])).unwrap();
    }
}

pub fn lenet5(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lenet5")).args(args).env_remove("LENET5_DATA").output().expect("run lenet5")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: non-zero exit, one `error:` line naming `needle`, no panic.
pub fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "error does not mention `{n}`: {err}");
    }
}
