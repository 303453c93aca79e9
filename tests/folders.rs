//! Training on image folders (torchvision's `ImageFolder` layout) with any number of classes, end to end through
//! the real binary, on small data sets the tests draw themselves.

mod common;

use std::path::Path;

use common::*;
use image::{GrayImage, Rgb, RgbImage};
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::Split;

/// Picture `index` of class `class` of `classes`, `size` pixels square, in colour: a light block on a dark
/// background at a place that tells the class (a 6x5 grid of places), moved a little by the index.
fn picture(class: usize, classes: usize, index: usize, size: u32) -> RgbImage {
    assert!(classes <= 30);
    let cell = size / 6;
    let (cx, cy) = ((class % 6) as u32 * cell, (class / 6) as u32 * cell + cell / 2);
    let (dx, dy) = ((index % 3) as u32, (index / 3 % 3) as u32);
    RgbImage::from_fn(size, size, |x, y| {
        let on = (cx + dx..cx + dx + cell).contains(&x) && (cy + dy..cy + dy + cell).contains(&y);
        if on { Rgb([235, 240, 230 + (index % 7) as u8]) } else { Rgb([20, 10, 30]) }
    })
}

/// Writes `per_class` pictures of each class into `dir/<name>/`, as PNG, JPEG and BMP in turn.
fn draw_classes(dir: &Path, names: &[String], per_class: usize, first_index: usize) {
    for (class, name) in names.iter().enumerate() {
        let class_dir = dir.join(name);
        std::fs::create_dir_all(&class_dir).unwrap();
        for i in first_index..first_index + per_class {
            let ext = ["png", "jpg", "bmp"][i % 3];
            picture(class, names.len(), i, 40).save(class_dir.join(format!("{i:04}.{ext}"))).unwrap();
        }
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `lenet5 train` on `data` into `out` for `epochs`, with `extra` flags; must succeed.
fn train(data: &Path, out: &Path, epochs: &str, extra: &[&str]) -> String {
    let mut args = vec!["train", "--dataset", data.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--epochs", epochs, "--head", "logits", "--lr", "0.05", "--batch-size", "8"]);
    args.extend(["--progress", "plain", "--force"]);
    args.extend_from_slice(extra);
    let o = lenet5(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn three_classes_in_train_and_test_folders_from_training_to_eval_predict_confusion_and_export() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run) = (tmp.path().join("shapes"), tmp.path().join("run"));
    // Not in sorted order, to show the classes are sorted by name.
    let classes = names(&["square", "circle", "cross"]);
    draw_classes(&data.join("train"), &classes, 60, 0);
    draw_classes(&data.join("test"), &classes, 15, 100);
    let text = train(&data, &run, "8", &[]);
    assert!(text.contains("180 train / 45 test"), "{text}");
    let best = run.join("best.safetensors");
    let ck = Checkpoint::load(&best).unwrap();
    assert_eq!(ck.class_names, names(&["circle", "cross", "square"]));
    assert_eq!((ck.classes(), ck.metadata["data.preprocess"].as_str()), (3, "resize"));
    let history = lenet5_core::run::read_metrics(&run.join("metrics.jsonl")).unwrap();
    let best_acc = history.iter().map(|m| m.val_acc).fold(0.0, f64::max);
    assert!(best_acc > 0.9, "val_acc only {best_acc}: {text}");

    // eval of weights trained on a folder is told the folder (their metadata never chooses what to read), and
    // agrees with training.
    let o = lenet5(&["eval", "--weights", best.to_str().unwrap(), "--json"]);
    assert_clean_error(&o, &["--dataset", "metadata cannot choose"]);
    let o = lenet5(&["eval", "--weights", best.to_str().unwrap(), "--json", "--dataset", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["total"], 45);
    assert!((v["accuracy"].as_f64().unwrap() - best_acc).abs() < 1e-9);

    // predict prepares a picture as training did, and names the class.
    let cross = data.join("test/cross/0100.jpg");
    let args = ["predict", "--weights", best.to_str().unwrap(), cross.to_str().unwrap(), "--json", "--top-k", "5"];
    let o = lenet5(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap();
    assert_eq!(v["predicted"], "cross", "{v}");
    assert_eq!(v["top"].as_array().unwrap().len(), 3, "{v}");

    let (w, d, out) = (best.to_str().unwrap(), data.to_str().unwrap(), tmp.path().to_str().unwrap());
    let o = lenet5(&["confusion", "--weights", w, "--dataset", d, "--out", out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l.trim_start().starts_with("square")), "{}", stdout(&o));
    assert!(tmp.path().join("confusion.png").exists());

    // The server prepares an upload as training did (resized, not framed) and answers with the 3 classes.
    let server = TestServer::with_state(lenet5::serve::AppState::new(
        lenet5_core::infer::Predictor::new(ck.clone()),
        None,
        "shapes",
    ));
    let png = std::fs::read(data.join("test/square/0102.png")).unwrap();
    let (status, v) = server.json("POST", "/api/predict", Some("image/png"), &png);
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["class"].as_str(), v["probabilities"].as_array().map(Vec::len)), (Some("square"), Some(3)), "{v}");
    let (_, info) = server.json("GET", "/api/model", None, b"");
    assert_eq!(info["class_names"], serde_json::json!(["circle", "cross", "square"]));
    drop(server);

    let model = tmp.path().join("shapes.onnx");
    let o = lenet5(&["export", "--weights", best.to_str().unwrap(), "--onnx", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lenet5(&["summary", "--classes", "3"]);
    assert!(stdout(&o).contains("Linear(84, 3)"), "{}", stdout(&o));
}

#[test]
fn twenty_six_classes_in_one_folder_split_by_class_reproducibly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("letters");
    let letters: Vec<String> = ('a'..='z').map(|c| c.to_string()).collect();
    draw_classes(&data, &letters, 12, 0);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let first = train(&data, &a, "12", &["--val-split", "0.25"]);
    // 25% of each class's 12: 3 held out, so 26 x 9 train and 26 x 3 validation images.
    assert!(first.contains("234 train / 78 test"), "{first}");
    train(&data, &b, "12", &["--val-split", "0.25"]);
    let (x, y) = (
        Checkpoint::load(&a.join("last.safetensors")).unwrap(),
        Checkpoint::load(&b.join("last.safetensors")).unwrap(),
    );
    assert!(x.params == y.params, "the same split and seed give the same run");
    assert_eq!(x.classes(), 26);
    let history = lenet5_core::run::read_metrics(&a.join("metrics.jsonl")).unwrap();
    let best = history.iter().map(|m| m.val_acc).fold(0.0, f64::max);
    assert!(best > 0.8, "val_acc only {best}: {first}");
    // eval reads the folder it is given and splits it as training did, from what the weights recorded.
    let weights = a.join("best.safetensors");
    let o = lenet5(&["eval", "--weights", weights.to_str().unwrap(), "--json", "--dataset", data.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["total"], 78);
    assert!((v["accuracy"].as_f64().unwrap() - best).abs() < 1e-9);
    // Another split seed holds out other images.
    let c = tmp.path().join("c");
    train(&data, &c, "1", &["--val-split", "0.25", "--split-seed", "9"]);
    let fingerprint = |dir: &Path| {
        let ck = Checkpoint::load(&dir.join("last.safetensors")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&ck.metadata["train_state"]).unwrap();
        state["data_fingerprint"].clone()
    };
    assert_ne!(fingerprint(&a), fingerprint(&c));
    // A resumed run reads the folder the same way without being told.
    let o = lenet5(&["train", "--resume", a.to_str().unwrap(), "--epochs", "13", "--progress", "plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("234 train / 78 test"), "{}", stdout(&o));
}

/// A folder of 28x28 grey PNGs made from MNIST trains to the very bits of the IDX files that hold the same
/// images in the same order.
#[test]
fn mnist_as_png_folders_trains_to_the_same_bits_as_its_idx_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (folder, idx) = (tmp.path().join("png"), tmp.path().join("idx"));
    std::fs::create_dir_all(&idx).unwrap();
    for (prefix, part, n) in [("train", "train", 400), ("t10k", "test", 100)] {
        let all = mnist_split(prefix);
        let (img, lab) = (&all.images, &all.labels);
        // The folder's order: class by class, each class's files by name (their index).
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (lab[i], i));
        for &i in &order {
            let dir = folder.join(part).join(lab[i].to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let pixels = img[i * 784..(i + 1) * 784].to_vec();
            GrayImage::from_raw(28, 28, pixels).unwrap().save(dir.join(format!("{i:05}.png"))).unwrap();
        }
        let images: Vec<u8> = order.iter().flat_map(|&i| img[i * 784..(i + 1) * 784].to_vec()).collect();
        let labels = order.iter().map(|&i| lab[i]).collect();
        let (images, labels) = Split { images, labels }.to_idx();
        std::fs::write(idx.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(idx.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&folder, &a, "2", &[]);
    train(&idx, &b, "2", &[]);
    let (x, y) = (
        Checkpoint::load(&a.join("last.safetensors")).unwrap(),
        Checkpoint::load(&b.join("last.safetensors")).unwrap(),
    );
    assert!(x.params == y.params && x.momentum == y.momentum, "the folder and the IDX files train differently");
    assert_eq!(x.classes(), 10);
}

/// The page's session trained on `settings` to the end.
fn session_trained(mut session: lenet5_web::session::Session, settings: &str) -> Vec<f32> {
    session.configure(settings).unwrap();
    let clock = || 0.0;
    while !session.status().unwrap().finished {
        while session.train(7, &clock).unwrap() > 0 {}
        session.finish_epoch(&clock).unwrap();
    }
    session.params().unwrap().to_vec()
}

/// One folder, split by class: the command line trains the same bits on the folder and on its zip archive, and
/// the page's session on the archive and on the folder's files handed over one by one (as a dropped folder is).
#[test]
fn a_folder_its_zip_and_the_pages_session_train_the_same_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shapes");
    draw_classes(&data, &names(&["b", "a", "c", "d"]), 10, 0);
    std::fs::write(data.join("c/0003.png"), b"not a png").unwrap();
    std::fs::create_dir_all(data.join("a/more")).unwrap();
    picture(0, 4, 50, 33).save(data.join("a/more/x.png")).unwrap();
    let files = files_under(&data);
    // Shuffled in the archive: the order of its entries must not matter.
    let mut shuffled = files.clone();
    shuffled.reverse();
    let zipped = tmp.path().join("shapes.zip");
    std::fs::write(&zipped, zip_of(&shuffled, "shapes")).unwrap();

    let flags = ["--val-split", "0.3", "--split-seed", "4", "--skip-bad-images"];
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let out = train(&data, &a, "3", &flags);
    assert!(out.contains("28 train / 12 test"), "{out}");
    assert!(train(&zipped, &b, "3", &flags).contains("28 train / 12 test"));
    let native = Checkpoint::load(&a.join("last.safetensors")).unwrap();
    assert!(native.params == Checkpoint::load(&b.join("last.safetensors")).unwrap().params);

    let settings = r#"{"epochs": 3, "head": "logits", "lr": 0.05, "batch_size": 8, "val_split": 0.3, "split_seed": 4,
        "skip_bad_images": true}"#;
    let mut from_zip = lenet5_web::session::Session::default();
    let loaded = from_zip.load_zip("shapes.zip", std::fs::read(&zipped).unwrap(), settings).unwrap();
    assert_eq!((loaded.train, loaded.test, loaded.skipped), (28, 12, 1), "{loaded:?}");
    assert_eq!(loaded.classes, names(&["a", "b", "c", "d"]));
    assert!(loaded.bad[0].starts_with("shapes.zip/c/0003.png (not a PNG"), "{:?}", loaded.bad);
    assert!(session_trained(from_zip, settings) == native.params);

    let mut dropped = lenet5_web::session::Session::default();
    for (name, bytes) in shuffled {
        dropped.stage_file(format!("shapes/{name}"), bytes).unwrap();
    }
    dropped.load_folder("shapes", settings).unwrap();
    assert!(session_trained(dropped, settings) == native.params);
}

#[test]
fn bad_folders_and_images_get_one_line_errors_or_are_skipped_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let run = |data: &Path, extra: &[&str]| {
        let mut args = vec!["train", "--dataset", data.to_str().unwrap(), "--out", o, "--epochs", "1", "--force"];
        args.extend_from_slice(extra);
        lenet5(&args)
    };
    let abc = names(&["a", "b", "c"]);

    let one = tmp.path().join("one");
    draw_classes(&one, &names(&["only"]), 5, 0);
    assert_clean_error(&run(&one, &[]), &["one", "1 class folder(s)", "expected 2 to 1000"]);

    // Images with no class folders: in a folder, and zipped in one folder (which the reader steps into).
    let loose = tmp.path().join("loose");
    draw_classes(&loose, &names(&["x"]), 4, 0);
    let mut pictures = Vec::new();
    for entry in std::fs::read_dir(loose.join("x")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        pictures.push((name.clone(), std::fs::read(&path).unwrap()));
        std::fs::rename(&path, loose.join(name)).unwrap();
    }
    std::fs::remove_dir(loose.join("x")).unwrap();
    let expected = ["loose", "4 image(s) but no class folder", "/<class>/<image>"];
    assert_clean_error(&run(&loose, &[]), &expected);
    let zipped = tmp.path().join("loose.zip");
    std::fs::write(&zipped, zip_of(&pictures, "loose")).unwrap();
    assert_clean_error(&run(&zipped, &[]), &expected);
    // The page's session, given the folder dropped whole, says the same.
    let mut dropped = lenet5_web::session::Session::default();
    for (name, bytes) in pictures {
        dropped.stage_file(format!("loose/{name}"), bytes).unwrap();
    }
    let error = dropped.load_folder("loose", "{}").unwrap_err().to_string();
    assert!(error.contains("loose: 4 image(s) but no class folder"), "{error}");

    let empty = tmp.path().join("empty");
    draw_classes(&empty, &abc, 5, 0);
    std::fs::create_dir_all(empty.join("d")).unwrap();
    assert_clean_error(&run(&empty, &[]), &["class `d` holds no image"]);

    let differ = tmp.path().join("differ");
    draw_classes(&differ.join("train"), &abc, 5, 0);
    draw_classes(&differ.join("test"), &names(&["a", "b", "x"]), 2, 0);
    assert_clean_error(&run(&differ, &[]), &["different classes", "\"c\"", "\"x\""]);

    let broken = tmp.path().join("broken");
    draw_classes(&broken, &abc, 6, 0);
    std::fs::write(broken.join("b/0001.jpg"), b"not a jpeg at all").unwrap();
    std::fs::write(broken.join("c/empty.png"), b"").unwrap();
    assert_clean_error(&run(&broken, &[]), &["2 of 19 images cannot be used", "0001.jpg", "empty.png"]);
    let skipped = run(&broken, &["--skip-bad-images", "--progress", "plain"]);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(stderr(&skipped).contains("left out 2 image(s)"), "{}", stderr(&skipped));
    // Its weights read the folder as it was read, the same files left out: the same validation images.
    let best = out.join("best.safetensors");
    let eval = lenet5(&["eval", "--weights", best.to_str().unwrap(), "--dataset", broken.to_str().unwrap(), "--json"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    assert!(stderr(&eval).contains("left out 2 image(s)"), "{}", stderr(&eval));
    let metrics = lenet5_core::run::read_metrics(&out.join("metrics.jsonl")).unwrap();
    let figures: serde_json::Value = serde_json::from_str(&stdout(&eval)).unwrap();
    assert_eq!(figures["accuracy"].as_f64(), Some(metrics[0].val_acc), "{figures}");

    let sized = run(&broken, &["--preprocess", "none"]);
    assert_clean_error(&sized, &["19 of 19 images cannot be used", "40x40, expected 28x28"]);
    assert_clean_error(&run(&broken, &["--val-split", "1.5"]), &["--val-split must be between 0 and 1", "1.5"]);
}
