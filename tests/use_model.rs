//! Using a trained model: predictions on drawn digits, the summary, and every picture.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn model() -> String {
    repo().join("models/lenet5-mnist.safetensors").to_string_lossy().into_owned()
}

fn digits() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(repo().join("tests/fixtures/digits")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

/// The digit a fixture shows, from its name (`..._7.png`).
fn truth(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().rsplit('_').next().unwrap().to_string()
}

#[test]
fn every_drawn_digit_is_predicted_correctly_in_every_format() {
    let files = digits();
    assert_eq!(files.len(), 50);
    let mut args = vec!["predict".to_string(), "--weights".into(), model(), "--json".into()];
    args.extend(files.iter().map(|p| p.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = lenet5(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), files.len());
    for (file, v) in files.iter().zip(&lines) {
        assert_eq!(v["predicted"], truth(file).as_str(), "{}: {v}", file.display());
        let p: f64 = v["top"].as_array().unwrap().iter().map(|t| t["probability"].as_f64().unwrap()).sum();
        assert!(p <= 1.0 + 1e-6 && v["top"].as_array().unwrap().len() == 3);
    }
}

#[test]
fn bad_files_get_their_own_error_and_the_others_are_still_predicted() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let junk = tmp.path().join("junk.jpg");
    std::fs::write(&junk, b"this is no image at all").unwrap();
    // A BMP header claiming 30000 x 30000 pixels: refused before any allocation for them.
    let huge = tmp.path().join("huge.bmp");
    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&(54u32 + 4).to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&30_000i32.to_le_bytes());
    bmp.extend_from_slice(&30_000i32.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[0; 4]);
    std::fs::write(&huge, bmp).unwrap();
    let good = digits()[0].to_string_lossy().into_owned();
    let out = tmp.path().join("seen");
    let o = lenet5(&[
        "predict",
        "--weights",
        &model(),
        empty.to_str().unwrap(),
        &good,
        junk.to_str().unwrap(),
        huge.to_str().unwrap(),
        "--save-preprocessed",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let (text, err) = (stdout(&o), stderr(&o));
    assert!(!err.contains("panicked"), "{err}");
    assert!(text.contains(&good), "the good file was predicted: {text}");
    assert!(err.contains("empty.png: empty file"), "{err}");
    assert!(err.contains("junk.jpg: not a PNG, JPEG"), "{err}");
    assert!(err.contains("huge.bmp: cannot decode"), "{err}");
    let seen = image::open(out.join(format!("{}.28x28.png", digits()[0].file_stem().unwrap().to_string_lossy())));
    assert_eq!(seen.unwrap().to_luma8().dimensions(), (28, 28));
}

#[test]
fn test_index_prints_predicted_and_actual_like_the_tutorial() {
    let o = lenet5(&[
        "predict",
        "--weights",
        &model(),
        "--test-index",
        "0,1",
        "--data",
        repo().join("data").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("test[0]: predict: 7, actual: 7"), "{text}");
    assert!(text.contains("test[1]: predict: 2, actual: 2"), "{text}");
    let o = lenet5(&[
        "predict",
        "--weights",
        &model(),
        "--test-index",
        "10000",
        "--data",
        repo().join("data").to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["out of range"]);
}

#[test]
fn summary_derives_shapes_and_counts_from_the_model() {
    let o = lenet5(&["summary", "--batch", "8"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(text.contains("61,706 parameters"), "{text}");
    assert!(text.contains("(5x5x6)x16 + 16") && text.contains("2,416"), "{text}");
    assert!(text.contains("[8, 16, 5, 5]"), "{text}");
}

fn png_size(p: &Path) -> (u32, u32) {
    image::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).to_rgb8().dimensions()
}

#[test]
fn plot_writes_png_and_svg_that_follow_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("metrics.jsonl");
    let line = |e: usize, acc: f64| {
        format!(
            "{{\"epoch\":{e},\"train_loss\":{},\"train_acc\":{acc},\"val_loss\":1.6,\"val_acc\":{acc},\"train_seconds\":1,\"val_seconds\":0.1}}\n",
            2.0 - acc
        )
    };
    std::fs::write(&log, line(1, 0.5) + &line(2, 0.8) + &line(3, 0.9)).unwrap();
    let o = lenet5(&["plot", tmp.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (png, svg) = (tmp.path().join("curves.png"), tmp.path().join("curves.svg"));
    assert_eq!(png_size(&png), (1100, 420));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let first = std::fs::read(&png).unwrap();
    std::fs::write(&log, line(1, 0.5) + &line(2, 0.6) + &line(3, 0.95)).unwrap();
    assert!(lenet5(&["plot", tmp.path().to_str().unwrap()]).status.success());
    assert_ne!(first, std::fs::read(&png).unwrap(), "the picture follows the data");
    std::fs::write(&log, "not json\n").unwrap();
    assert_clean_error(&lenet5(&["plot", tmp.path().to_str().unwrap()]), &["metrics.jsonl", "line 1"]);
}

#[test]
fn confusion_counts_the_test_set_and_draws_the_mistakes() {
    let tmp = tempfile::tempdir().unwrap();
    let o = lenet5(&[
        "confusion",
        "--weights",
        &model(),
        "--data",
        repo().join("data").to_str().unwrap(),
        "--misclassified",
        "12",
        "--out",
        tmp.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("/10000 correct"), "{text}");
    let (w, h) = png_size(&tmp.path().join("confusion.png"));
    assert!(w > 500 && h > 500);
    let (w, h) = png_size(&tmp.path().join("misclassified.png"));
    assert!(w > 200 && h > 100);
}

#[test]
fn inspect_draws_kernels_and_feature_maps_that_depend_on_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |img: &Path, out: &Path| {
        let o = lenet5(&["inspect", "--weights", &model(), img.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let files = digits();
    run(&files[0], &a);
    run(&files[1], &b);
    for name in [
        "input.png",
        "kernels_conv1.png",
        "kernels_conv2.png",
        "features_conv1.png",
        "features_pool1.png",
        "features_conv2.png",
        "features_pool2.png",
    ] {
        let (w, h) = png_size(&a.join(name));
        assert!(w >= 90 && h >= 60, "{name}: {w}x{h}");
    }
    let same = |n: &str| std::fs::read(a.join(n)).unwrap() == std::fs::read(b.join(n)).unwrap();
    assert!(same("kernels_conv1.png"), "kernels do not depend on the image");
    assert!(!same("features_conv1.png") && !same("features_pool2.png"), "feature maps do");
}

/// The README gives the shipped model's SHA-256, for anyone who copies it elsewhere; it must stay true.
#[test]
fn the_readme_gives_the_shipped_models_checksum() {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(model()).unwrap();
    let hex: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains(&format!("SHA-256 is `{hex}`")), "README.md should give the model's SHA-256 {hex}");
}

/// Class names come from files: control characters in them reach the terminal escaped, and a name longer than
/// 256 bytes is refused when the checkpoint is read.
#[test]
fn class_names_reach_the_terminal_escaped_and_long_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ck = lenet5_core::checkpoint::Checkpoint::load(std::path::Path::new(&model())).unwrap();
    ck.class_names[7] = "seven\u{1b}[2J\r\nforged: 1 (1.000)".into();
    let crafted = tmp.path().join("crafted.safetensors");
    ck.save(&crafted).unwrap();
    let o = lenet5(
        &["predict", "--weights", crafted.to_str().unwrap(), "--test-index", "0", "--data"]
            .into_iter()
            .chain([repo().join("data").to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("seven\\u{1b}[2J\\r\\nforged"), "{text}");
    assert!(!text.contains('\u{1b}') && text.lines().count() == 1, "{text}");

    ck.class_names[7] = "x".repeat(257);
    let long = tmp.path().join("long.safetensors");
    ck.save(&long).unwrap();
    assert_clean_error(
        &lenet5(&["eval", "--weights", long.to_str().unwrap()]),
        &["long.safetensors", "at most 256 bytes"],
    );
}
