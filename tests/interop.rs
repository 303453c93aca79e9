//! PyTorch `.pth` import (zip, strided views, legacy format), refusal of malicious pickles, and ONNX export
//! with the very same bits (the exported model runs in an independent runtime in `onnx-check/`).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use lenet5::interop::pth;
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::infer::Predictor;
use lenet5_core::nn::model::Head;
use lenet5_core::nn::params::{Param, num_params};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

fn reference(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name).unwrap().data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn init_params() -> Vec<f32> {
    let mut flat = Vec::with_capacity(num_params(10));
    for p in Param::ALL {
        flat.extend(reference(&format!("init.{}", p.name())));
    }
    flat
}

fn batch() -> Vec<[f32; 784]> {
    reference("x").chunks_exact(784).map(|c| c.try_into().unwrap()).collect()
}

#[test]
fn every_pth_format_imports_bit_identically_and_matches_pytorch_outputs() {
    let want = init_params();
    let torch_scores = reference("tutorial.scores");
    for name in ["tutorial.pth", "tutorial_strided.pth", "tutorial_legacy.pth"] {
        let ck = pth::read_pth(&fixture(name), Head::Sigmoid).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(ck.params == want, "{name}: weights differ from the state_dict");
        let scores: Vec<f32> = Predictor::new(ck).predict(&batch()).iter().flat_map(|p| p.scores.clone()).collect();
        for (a, b) in scores.iter().zip(&torch_scores) {
            assert!((a - b).abs() <= 1e-5, "{name}: {a} vs PyTorch {b}");
        }
    }
}

#[test]
fn malicious_pickle_is_refused_and_nothing_runs() {
    let marker = Path::new("/tmp/lenet5_pickle_was_executed_marker");
    let _ = std::fs::remove_file("/tmp/lenet5_pwned");
    let _ = std::fs::remove_file(marker);
    let e = pth::read_pth(&fixture("malicious.pth"), Head::Sigmoid).unwrap_err().to_string();
    assert!(e.contains("malicious.pth") && e.contains("refusing to load") && e.contains("system"), "{e}");
    assert!(!Path::new("/tmp/lenet5_pwned").exists(), "the pickle's command ran");
    // Through the binary too: a clean one-line error.
    let o = lenet5(&["import", fixture("malicious.pth").to_str().unwrap(), "/tmp/never-written.safetensors"]);
    assert_clean_error(&o, &["malicious.pth", "refusing to load"]);
    assert!(!Path::new("/tmp/never-written.safetensors").exists());
}

#[test]
fn wrong_keys_shapes_and_garbage_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    // A .pth that is not LeNet-5: rename one key in the pickle (same length, so offsets stay valid; the legacy
    // format has no checksum to break).
    let mut bytes = std::fs::read(fixture("tutorial_legacy.pth")).unwrap();
    let at = bytes.windows(12).position(|w| w == b"conv1.weight").unwrap();
    bytes[at..at + 12].copy_from_slice(b"convX.weight");
    let e = pth::from_pth_bytes(&bytes, Path::new("renamed.pth"), Head::Sigmoid).unwrap_err().to_string();
    assert!(e.contains("missing [\"conv1.weight\"]") && e.contains("convX.weight"), "{e}");
    // In the zip format the same edit breaks the entry's checksum, which is reported.
    let mut zipped = std::fs::read(fixture("tutorial.pth")).unwrap();
    let at = zipped.windows(12).position(|w| w == b"conv1.weight").unwrap();
    zipped[at] = b'k';
    let e = pth::from_pth_bytes(&zipped, Path::new("z.pth"), Head::Sigmoid).unwrap_err().to_string();
    assert!(e.starts_with("z.pth: ") && e.contains("checksum"), "{e}");
    let e = pth::from_pth_bytes(b"PK\x03\x04 nonsense", Path::new("bad.pth"), Head::Sigmoid).unwrap_err().to_string();
    assert!(e.starts_with("bad.pth: not a readable zip"), "{e}");
    let legacy = std::fs::read(fixture("tutorial_legacy.pth")).unwrap();
    let e = pth::from_pth_bytes(&legacy[..legacy.len() - 100], Path::new("cut.pth"), Head::Sigmoid).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let out = tmp.path().join("x.safetensors");
    let o = lenet5(&["import", fixture("reference.safetensors").to_str().unwrap(), out.to_str().unwrap()]);
    assert_clean_error(&o, &["reference.safetensors", "a safetensors file, not a PyTorch checkpoint"]);
    assert!(!out.exists());
    let e = pth::from_pth_bytes(b"plain text", Path::new("notes.pth"), Head::Sigmoid).unwrap_err().to_string();
    assert!(e.starts_with("notes.pth: not a PyTorch checkpoint: expected a zip archive"), "{e}");
}

#[test]
fn pth_round_trips_through_safetensors_and_onnx_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("imported.safetensors");
    let o = lenet5(&["import", fixture("tutorial.pth").to_str().unwrap(), st.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ck = Checkpoint::load(&st).unwrap();
    assert!(ck.params == init_params());
    // eval, predict and export take the .pth directly as well
    let model = tmp.path().join("m.onnx");
    let o =
        lenet5(&["export", "--weights", fixture("tutorial.pth").to_str().unwrap(), "--onnx", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The ONNX initializers hold the very same bits.
    let bytes = std::fs::read(&model).unwrap();
    for p in Param::ALL {
        let raw: Vec<u8> = reference(&format!("init.{}", p.name())).iter().flat_map(|v| v.to_le_bytes()).collect();
        assert!(bytes.windows(raw.len()).any(|w| w == raw.as_slice()), "{} not found bit-identical", p.name());
    }
}

/// A PyTorch model of 26 classes (output layer [26, 84]) imports with its classes, runs to PyTorch's logits,
/// and exports to ONNX.
#[test]
fn a_pth_of_twenty_six_classes_imports_and_matches_pytorch() {
    let ck = pth::read_pth(&fixture("letters.pth"), Head::Logits).unwrap();
    assert_eq!((ck.classes(), ck.class_names.len()), (26, 26));
    let bytes = std::fs::read(fixture("letters.safetensors")).unwrap();
    let torch: Vec<f32> = SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let ours: Vec<f32> = Predictor::new(ck).predict(&batch()).iter().flat_map(|p| p.scores.clone()).collect();
    assert_eq!(ours.len(), 16 * 26);
    for (a, b) in ours.iter().zip(&torch) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "ours {a}, PyTorch {b}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let (st, model) = (tmp.path().join("letters.safetensors"), tmp.path().join("letters.onnx"));
    let o = lenet5(&["import", fixture("letters.pth").to_str().unwrap(), st.to_str().unwrap(), "--head", "logits"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(Checkpoint::load(&st).unwrap().classes(), 26);
    let o = lenet5(&["export", "--weights", st.to_str().unwrap(), "--onnx", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// No command writes its output over its input: `import` and `export` refuse the same file under any name, and
/// `predict --save-preprocessed` gives two inputs of the same stem two files.
#[test]
fn outputs_never_overwrite_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let pth = tmp.path().join("m.pth");
    std::fs::copy(fixture("tutorial.pth"), &pth).unwrap();
    let before = std::fs::read(&pth).unwrap();
    let same = tmp.path().join(".").join("m.pth");
    assert_clean_error(&lenet5(&["import", pth.to_str().unwrap(), same.to_str().unwrap()]), &["is also the input"]);
    let o = lenet5(&["export", "--weights", pth.to_str().unwrap(), "--onnx", pth.to_str().unwrap()]);
    assert_clean_error(&o, &["is also the input"]);
    assert_eq!(std::fs::read(&pth).unwrap(), before, "the input is left as it was");

    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(repo().join("tests/fixtures/digits/dark_on_light_3.png"), dir.join("x.png")).unwrap();
    }
    let (out, ax, bx) = (tmp.path().join("pre"), a.join("x.png"), b.join("x.png"));
    let weights = repo().join("models/lenet5-mnist.safetensors");
    let (x, y, w) = (ax.to_str().unwrap(), bx.to_str().unwrap(), weights.to_str().unwrap());
    let o = lenet5(&["predict", x, y, "--weights", w, "--save-preprocessed", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("x.28x28.png").exists() && out.join("x-2.28x28.png").exists());
}

/// Weights are read no further than they must be: an endless file is refused after a bounded read, whether it
/// starts like a PyTorch zip or not.
#[cfg(unix)]
#[test]
fn endless_weight_files_are_refused_after_a_bounded_read() {
    let tmp = tempfile::tempdir().unwrap();
    let zeros = tmp.path().join("zeros.safetensors");
    std::os::unix::fs::symlink("/dev/zero", &zeros).unwrap();
    let o = lenet5(&["eval", "--weights", zeros.to_str().unwrap()]);
    assert_clean_error(&o, &["zeros.safetensors", "not a valid safetensors"]);
    let o = lenet5(&["import", "/dev/zero", tmp.path().join("out.safetensors").to_str().unwrap()]);
    assert_clean_error(&o, &["/dev/zero", "larger than"]);
}

/// An output never replaces what is not a regular file: a FIFO, a directory or a link to a device given as the
/// output of `export`, `import` or `predict --save-preprocessed` is refused and left as it was; a link to a
/// regular file is followed, and the file it names replaced.
#[test]
fn outputs_replace_only_regular_files() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let device = tmp.path().join("device");
    std::os::unix::fs::symlink("/dev/null", &device).unwrap();
    let weights = repo().join("models/lenet5-mnist.safetensors");
    let w = weights.to_str().unwrap();
    for target in [&fifo, &device, &tmp.path().to_path_buf()] {
        let t = target.to_str().unwrap();
        assert_clean_error(
            &lenet5(&["export", "--weights", w, "--onnx", t]),
            &[t, "an output replaces only a regular file"],
        );
        let pth = repo().join("tests/fixtures/tutorial.pth");
        assert_clean_error(&lenet5(&["import", pth.to_str().unwrap(), t]), &["an output replaces only a regular file"]);
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(std::fs::symlink_metadata(&device).unwrap().file_type().is_symlink());
    let (file, link) = (tmp.path().join("model.onnx"), tmp.path().join("link.onnx"));
    std::fs::write(&file, b"old").unwrap();
    std::os::unix::fs::symlink(&file, &link).unwrap();
    let o = lenet5(&["export", "--weights", w, "--onnx", link.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(&file).unwrap().len() > 1000
            && std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink()
    );
}
