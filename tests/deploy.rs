//! Deployment: `lenet5 quantize` keeps the shipped model's accuracy, `lenet5 export --c` writes C99 that compiles
//! cleanly and predicts, with the same scores, what the engine's int8 network predicts on every MNIST test image;
//! and what cannot be deployed is refused in one line.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TestServer, assert_clean_error, lenet5, mnist_split, repo, stderr, stdout};
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::quant::QuantModel;

/// The shipped model quantized into `dir`, and what `quantize` printed.
fn quantized(dir: &Path) -> (std::path::PathBuf, String) {
    let out = dir.join("int8.safetensors");
    let o = lenet5(&[
        "quantize",
        "--weights",
        repo().join("models/lenet5-mnist.safetensors").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--data",
        repo().join("data").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    (out, stdout(&o))
}

/// Compiles the C export in `dir` with the test driver; `None` when no such compiler is installed.
fn compile(compiler: &str, dir: &Path) -> Option<std::path::PathBuf> {
    let exe = dir.join(format!("driver-{compiler}"));
    let flags = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"];
    let sources = [repo().join("tests/fixtures/c/driver.c"), dir.join("lenet5_model.c")];
    let o = Command::new(compiler).args(flags).arg("-I").arg(dir).args(&sources).arg("-o").arg(&exe).output();
    match o {
        Err(_) => None,
        Ok(o) => {
            assert!(o.status.success(), "{compiler}: {}", String::from_utf8_lossy(&o.stderr));
            Some(exe)
        }
    }
}

#[test]
fn the_exported_c_predicts_every_test_image_with_the_engines_int8_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let (int8, printed) = quantized(tmp.path());
    // The shipped recipe model loses at most 0.3 points (98.04% in float).
    let accuracy: f64 = printed.split("int8 ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(accuracy >= 0.9774, "{printed}");

    let c = tmp.path().join("c");
    let o = lenet5(&["export", "--weights", int8.to_str().unwrap(), "--c", c.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let model = QuantModel::load(&int8).unwrap();
    let test = mnist_split("t10k");
    let images = tmp.path().join("t10k-images-idx3-ubyte");
    std::fs::write(&images, test.to_idx().0).unwrap();
    let mut expected = String::new();
    let mut scores = vec![0i32; 10];
    for i in 0..test.len() {
        let class = model.predict(test.image(i), &mut scores);
        expected += &format!("{class}{}\n", scores.iter().map(|s| format!(" {s}")).collect::<String>());
    }
    // `predict` runs the int8 network too.
    let data = repo().join("data");
    let o = lenet5(&[
        "predict",
        "--weights",
        int8.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--test-index",
        "0,1,2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for (line, expected_line) in stdout(&o).lines().zip(expected.lines()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["predicted"].as_str().unwrap(), expected_line.split(' ').next().unwrap());
    }
    let mut compiled = 0;
    for compiler in ["gcc", "clang"] {
        let Some(driver) = compile(compiler, &c) else {
            eprintln!("note: {compiler} is not installed; the C export is not compiled with it");
            continue;
        };
        let o = Command::new(&driver).arg(&images).output().unwrap();
        assert!(o.status.success());
        let got = String::from_utf8(o.stdout).unwrap();
        assert_eq!(got.lines().count(), 10_000);
        for (k, (a, b)) in got.lines().zip(expected.lines()).enumerate() {
            assert_eq!(a, b, "{compiler}: image {k}");
        }
        compiled += 1;
    }
    assert!(compiled > 0, "neither gcc nor clang is installed");

    // On a Cortex-M4: the footprint `export` prints, and where the cross compiler and qemu can be had (CI
    // installs them), the first 100 images on an emulated MPS2-AN386 board, to the host's lines.
    let printed = stdout(&o);
    let Some(footprint) = printed.lines().find(|l| l.starts_with("Cortex-M4 (")) else {
        eprintln!("note: no Cortex-M4 cross compiler: {printed}");
        return;
    };
    let number =
        |after: &str| -> usize { footprint.split(after).nth(1).unwrap().split(' ').next().unwrap().parse().unwrap() };
    assert!(number("flash ") <= 72 * 1024 && number("RAM ") <= 8 * 1024, "{footprint}");
    if Command::new("qemu-system-arm").arg("--version").output().is_err() {
        eprintln!("note: qemu-system-arm is not installed; the Cortex-M4 run is skipped");
        return;
    }
    let o = Command::new(repo().join("scripts/cortex-m4.sh")).arg(&c).arg(&images).arg("100").output().unwrap();
    let got = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success(), "{got}{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(got.lines().collect::<Vec<_>>(), expected.lines().take(100).collect::<Vec<_>>());
}

#[test]
fn serve_runs_an_int8_file_with_the_engines_predictions_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (int8, _) = quantized(tmp.path());
    let model = QuantModel::load(&int8).unwrap();
    let test = mnist_split("t10k");
    let weights = lenet5::deploy::Weights::load(&int8, lenet5_core::nn::Head::Sigmoid).unwrap();
    let srv = TestServer::with_state(lenet5::serve::AppState::new(weights, Some(test.clone()), "int8.safetensors"));
    let (status, m) = srv.json("GET", "/api/model", None, b"");
    assert_eq!((status, &m["int8"], &m["parameters"]), (200, &serde_json::json!(true), &serde_json::json!(61706)));
    for index in [0, 1, 2, 3, 4] {
        let (_, sample) = srv.json("GET", &format!("/api/sample?index={index}"), None, b"");
        let body = serde_json::to_vec(&serde_json::json!({ "pixels": sample["pixels"] })).unwrap();
        // The page asks for feature maps; an int8 network has none to give, and still answers.
        let (status, r) = srv.json("POST", "/api/predict?features=1", Some("application/json"), &body);
        assert_eq!(status, 200, "{r}");
        assert!(r.get("features").is_none() && r["input"].as_array().unwrap().len() == 784);
        let mut scores = [0i32; 10];
        let class = model.predict(test.image(index), &mut scores);
        assert_eq!(r["index"].as_u64(), Some(class as u64));
        let pixels: Vec<f32> = test.image(index).iter().map(|&p| p as f32 / 255.0).collect();
        let expected = model.predict_image(&pixels);
        let got: Vec<f32> = r["probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap() as f32).collect();
        assert_eq!(got, expected.probabilities);
    }
    // The commands that take float weights only still say which ones take int8.
    let picture = repo().join("tests/fixtures/digits/dark_on_light_4.png");
    let o = lenet5(&["inspect", "--weights", int8.to_str().unwrap(), picture.to_str().unwrap()]);
    assert_clean_error(&o, &["int8", "serve"]);
}

#[test]
fn class_names_that_would_break_a_c_string_are_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ck = Checkpoint::load(&repo().join("models/lenet5-mnist.safetensors")).unwrap();
    let names = ["quote \"", "back\\slash", "*/ end", "??/ trigraph", "tab\tnew\nline", "é", "6", "7", "8", "9"];
    ck.class_names = names.map(String::from).to_vec();
    let float = tmp.path().join("named.safetensors");
    ck.save(&float).unwrap();
    let c = tmp.path().join("c");
    let o = lenet5(&[
        "export",
        "--weights",
        float.to_str().unwrap(),
        "--c",
        c.to_str().unwrap(),
        "--calibration",
        "50",
        "--data",
        repo().join("data").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let Some(driver) = compile("gcc", &c).or_else(|| compile("clang", &c)) else { return };
    let o = Command::new(driver).arg("--names").output().unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), names.map(|n| format!("{n}\n")).concat());
}

#[test]
fn what_cannot_be_deployed_is_refused_in_one_line_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = repo().join("data");
    let data = data.to_str().unwrap();
    let shipped = repo().join("models/lenet5-mnist.safetensors");
    let out = tmp.path().join("q.safetensors");
    // Weights that are not all finite.
    let mut ck = Checkpoint::load(&shipped).unwrap();
    ck.params[7] = f32::NAN;
    let nan = tmp.path().join("nan.safetensors");
    std::fs::write(&nan, ck.to_bytes().unwrap()).unwrap();
    let o = lenet5(&["quantize", "--weights", nan.to_str().unwrap(), "--out", out.to_str().unwrap(), "--data", data]);
    assert_clean_error(&o, &["nan.safetensors"]);
    // No calibration image.
    let o = lenet5(&[
        "quantize",
        "--weights",
        shipped.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--calibration",
        "0",
        "--data",
        data,
    ]);
    assert_clean_error(&o, &["calibration", "0"]);
    assert!(!out.exists());
    // A directory that holds something, without --force; with it, the two files are written beside.
    let c = tmp.path().join("c");
    std::fs::create_dir(&c).unwrap();
    std::fs::write(c.join("main.c"), "int main(void) { return 0; }\n").unwrap();
    let export = |force: bool| {
        let mut args =
            vec!["export", "--weights", shipped.to_str().unwrap(), "--c", c.to_str().unwrap(), "--data", data];
        args.extend(["--calibration", "20"]);
        if force {
            args.push("--force");
        }
        lenet5(&args)
    };
    assert_clean_error(&export(false), &["not empty", "--force"]);
    assert!(!c.join("lenet5_model.c").exists());
    assert!(export(true).status.success());
    assert!(c.join("lenet5_model.c").is_file() && c.join("main.c").is_file());
    // An int8 file is not quantized twice; it is exported as ONNX in QDQ form (run by the onnx-check crate).
    let (int8, _) = quantized(tmp.path());
    let o = lenet5(&["quantize", "--weights", int8.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_clean_error(&o, &["int8 already"]);
    let onnx = tmp.path().join("m.onnx");
    let o = lenet5(&["export", "--weights", int8.to_str().unwrap(), "--onnx", onnx.to_str().unwrap()]);
    assert!(o.status.success() && stdout(&o).contains("int8 as QDQ"), "{}", stderr(&o));
    assert!(std::fs::read(&onnx).unwrap().windows(14).any(|w| w == b"QuantizeLinear"));
}
