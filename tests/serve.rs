//! The HTTP API against a server on an ephemeral loopback port: good requests, every kind of bad request, and
//! that the server keeps serving after them.

mod common;

use common::*;
use lenet5::serve::MAX_BODY;

#[test]
fn page_health_model_and_predictions() {
    let srv = TestServer::start();
    let (status, page) = srv.request("GET", "/", None, b"");
    assert_eq!(status, 200);
    let page = String::from_utf8_lossy(&page);
    assert!(
        page.contains("<canvas id=\"pad\"") && !page.contains("http://") && !page.contains("https://"),
        "self-contained"
    );
    assert_eq!(srv.request("GET", "/healthz", None, b""), (200, b"ok".to_vec()));
    let (status, m) = srv.json("GET", "/api/model", None, b"");
    assert_eq!(status, 200);
    assert_eq!(m["parameters"], 61706);
    assert_eq!(m["class_names"][7], "7");

    // A PNG drawing, preprocessed like MNIST.
    let png = std::fs::read(repo().join("tests/fixtures/digits/dark_on_light_4.png")).unwrap();
    let (status, r) = srv.json("POST", "/api/predict?features=1", Some("image/png"), &png);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["class"], "4");
    let total: f64 = r["probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-4);
    assert_eq!(r["input"].as_array().unwrap().len(), 784);
    assert_eq!(r["features"]["conv1"].as_array().unwrap().len(), 6);
    assert_eq!(r["features"]["conv2"][15].as_array().unwrap().len(), 100);

    // A test-set sample, sent back as 784 floats.
    let (status, s) = srv.json("GET", "/api/sample?index=0", None, b"");
    assert_eq!(status, 200);
    assert_eq!(s["label"], "7");
    let body = serde_json::to_vec(&serde_json::json!({ "pixels": s["pixels"] })).unwrap();
    let (status, r) = srv.json("POST", "/api/predict", Some("application/json"), &body);
    assert_eq!((status, r["class"].as_str()), (200, Some("7")));
    assert!(r.get("features").is_none());
    let (status, _) = srv.json("GET", "/api/sample", None, b"");
    assert_eq!(status, 200);
}

#[test]
fn every_bad_request_gets_a_4xx_json_error_and_the_server_keeps_serving() {
    let srv = TestServer::start();
    // A vertical bar: a "1".
    let bar: Vec<f32> = (0..784).map(|i| if (12..16).contains(&(i % 28)) { 1.0 } else { 0.0 }).collect();
    let ones = serde_json::to_vec(&bar).unwrap();
    let constant = serde_json::to_vec(&vec![0.0f32; 784]).unwrap();
    /// path, content type, body, expected status, a phrase of the error
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/api/predict", Some("text/plain"), b"hello".to_vec(), 415, "content type"),
        ("/api/predict", None, ones.clone(), 415, "content type"),
        ("/api/predict", Some("image/png"), b"not a png".to_vec(), 400, "not a PNG"),
        ("/api/predict", Some("image/png"), Vec::new(), 400, ""),
        ("/api/predict", Some("application/json"), b"{\"pixels\": [1, 2".to_vec(), 400, "invalid JSON"),
        ("/api/predict", Some("application/json"), b"{\"pixels\": [0.5, 0.5]}".to_vec(), 422, "784"),
        ("/api/predict", Some("application/json"), b"{\"other\": 1}".to_vec(), 400, "pixels"),
        ("/api/predict", Some("application/json"), format!("[{}1e39]", "0,".repeat(783)).into_bytes(), 422, "0 to 1"),
        ("/api/predict", Some("application/json"), format!("[{}1.5]", "0,".repeat(783)).into_bytes(), 422, "0 to 1"),
        ("/api/predict", Some("application/json"), format!("[{}-0.1]", "0,".repeat(783)).into_bytes(), 422, "0 to 1"),
        ("/api/predict", Some("application/json"), constant, 422, "blank"),
        ("/api/predict?features=banana", Some("application/json"), ones.clone(), 400, "features"),
        ("/api/sample?index=-1", None, Vec::new(), 400, "index"),
        (
            "/api/predict",
            Some("application/json"),
            format!("[{}\"x\"]", "0,".repeat(783)).into_bytes(),
            422,
            "not a number",
        ),
        ("/api/predict", Some("image/png"), vec![0u8; MAX_BODY + 1], 413, "larger than"),
        ("/api/sample?index=99999", None, Vec::new(), 400, "out of range"),
        ("/api/nothing-here", None, Vec::new(), 404, "no such page"),
    ];
    for (path, ctype, body, want, needle) in cases {
        let method = if path.starts_with("/api/predict") { "POST" } else { "GET" };
        let (status, v) = srv.json(method, path, ctype, &body);
        assert_eq!(status, want, "{path} {ctype:?}: {v}");
        let msg = v["error"].as_str().unwrap_or_else(|| panic!("no error message: {v}"));
        assert!(msg.contains(needle), "{path} {ctype:?}: {msg}");
    }
    // A blank drawing is understood but has no digit in it.
    let blank = {
        let img = image::GrayImage::new(50, 50);
        let mut b = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png).unwrap();
        b
    };
    let (status, v) = srv.json("POST", "/api/predict", Some("image/png"), &blank);
    assert_eq!(status, 422, "{v}");
    // A small file can hold a huge picture: beyond 4096 pixels on a side it is refused before it is decoded.
    let wide = {
        let img = image::GrayImage::new(5000, 2);
        let mut b = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png).unwrap();
        b
    };
    let (status, v) = srv.json("POST", "/api/predict", Some("image/png"), &wide);
    assert_eq!(status, 400, "{v}");
    // A method a route does not take is refused in JSON too.
    let (status, v) = srv.json("DELETE", "/api/predict", None, b"");
    assert_eq!(status, 405, "{v}");
    assert!(v["error"].as_str().is_some(), "{v}");
    // Still serving.
    let (status, r) = srv.json("POST", "/api/predict", Some("application/json"), &ones);
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["class"], "1", "{r}");
    assert_eq!(srv.request("GET", "/healthz", None, b"").0, 200);
}

/// `lenet5 serve ARGS` on an ephemeral port, run in `dir`: the child, its address, its stdout after the first
/// line, and that first line.
fn spawn_serve(
    args: &[&str],
    dir: &std::path::Path,
) -> (std::process::Child, String, std::io::BufReader<std::process::ChildStdout>, String) {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_lenet5"))
        .arg("serve")
        .args(args)
        .args(["--addr", "127.0.0.1:0", "--data", repo().join("data").to_str().unwrap()])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.split("http://").nth(1).and_then(|s| s.split('/').next()).unwrap_or_else(|| panic!("{line}"));
    (child, addr.to_string(), out, line)
}

/// The status line and body of `GET path` from `addr`.
fn get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn the_binary_prints_its_address_and_stops_gracefully_on_sigterm() {
    use std::io::Read;
    use std::process::Command;
    let weights = repo().join("models/lenet5-mnist.safetensors");
    let (mut child, addr, mut out, _) = spawn_serve(&["--weights", weights.to_str().unwrap()], &repo());
    let resp = get(&addr, "/healthz");
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("ok"), "{resp}");
    // Every response says not to guess its type, and the pages' content policy forbids framing them.
    let page = get(&addr, "/").to_lowercase();
    assert!(page.contains("x-content-type-options: nosniff") && page.contains("frame-ancestors 'none'"), "{page}");
    // The page and the API name the weights by their file name, never by where they lie on the server.
    let model = get(&addr, "/api/model");
    assert!(model.contains("\"weights\":\"lenet5-mnist.safetensors\""), "{model}");
    assert!(!model.contains(repo().to_str().unwrap()), "{model}");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "exit {status:?}");
    assert!(rest.contains("stopped"), "{rest}");
    // A port that cannot be had is a clean error.
    let o = lenet5(&["serve", "--weights", "models/lenet5-mnist.safetensors", "--addr", "not-an-address"]);
    assert_clean_error(&o, &["cannot listen on not-an-address"]);
}

#[test]
fn before_any_training_serve_falls_back_on_the_bundled_model_and_after_it_serves_the_trained_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _, line) = spawn_serve(&[], dir.path());
    assert!(line.contains("the bundled MNIST model"), "{line}");
    for path in ["/", "/train", "/lenet5.wasm", "/api/sample?index=0"] {
        assert!(get(&addr, path).starts_with("HTTP/1.1 200"), "{path}");
    }
    let model = get(&addr, "/api/model");
    assert!(
        model.contains("\"weights\":\"the bundled MNIST model") && model.contains("\"dataset\":\"mnist\""),
        "{model}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // Once `lenet5 train` has left save_model/best.safetensors, that is what is served.
    std::fs::create_dir(dir.path().join("save_model")).unwrap();
    std::fs::copy(repo().join("models/lenet5-mnist.safetensors"), dir.path().join("save_model/best.safetensors"))
        .unwrap();
    let (mut child, _, _, line) = spawn_serve(&[], dir.path());
    assert!(line.starts_with("serving save_model/best.safetensors on http://"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The training page and everything it loads are cross-origin isolated (so its workers may share memory); the
/// draw page and the API are not, and `lenet5 site` writes the same headers into `_headers`.
#[test]
fn the_training_page_is_served_cross_origin_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, _, _) = spawn_serve(&[], dir.path());
    let isolated = |response: &str| {
        let head = response.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        let coop = head.contains("\r\ncross-origin-opener-policy: same-origin\r\n");
        let coep = head.contains("\r\ncross-origin-embedder-policy: require-corp\r\n");
        assert_eq!(coop, coep, "{head}");
        coop
    };
    let page = ["/train", "/train-worker.js", "/train-helper.js", "/threads.js", "/lenet5.wasm"];
    for path in page.into_iter().chain(["/lenet5-threads.wasm", "/data/datasets.json"]) {
        let response = get(&addr, path);
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response:.200}");
        assert!(isolated(&response), "{path}");
    }
    for path in ["/", "/api/model", "/healthz"] {
        assert!(!isolated(&get(&addr, path)), "{path}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let site = dir.path().join("site");
    let o = lenet5(&["site", site.to_str().unwrap(), "--data", repo().join("data").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let headers = std::fs::read_to_string(site.join("_headers")).unwrap();
    assert_eq!(
        headers,
        "/*\n  Cross-Origin-Opener-Policy: same-origin\n  Cross-Origin-Embedder-Policy: require-corp\n"
    );
    for asset in page.iter().skip(1).chain(&["/lenet5-threads.wasm"]) {
        assert!(site.join(&asset[1..]).is_file(), "{asset}");
    }
}

/// A test set without images (an empty split) gives the sample button a 404, not a crash.
#[test]
fn an_empty_test_set_answers_404_and_the_server_keeps_serving() {
    let ck = lenet5_core::checkpoint::Checkpoint::load(&repo().join("models/lenet5-mnist.safetensors")).unwrap();
    let empty = Some(lenet5_core::data::Split::default());
    let predictor = lenet5_core::infer::Predictor::new(ck);
    let server = TestServer::with_state(lenet5::serve::AppState::new(predictor, empty, "model"));
    let (status, v) = server.json("GET", "/api/sample", None, b"");
    assert_eq!(status, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no test images"), "{v}");
    assert_eq!(server.request("GET", "/healthz", None, b"").0, 200);
}

/// Slow clients cannot take the server: with 500 connections open that never finish their headers, a normal
/// request is answered; and SIGTERM ends the server within its grace period even while they hold half-sent
/// requests (it once waited for them for ever).
#[test]
fn slow_clients_neither_block_requests_nor_keep_the_server_from_stopping() {
    use std::io::Write;
    let weights = repo().join("models/lenet5-mnist.safetensors");
    // Its stdout is kept open: it prints a last line when it stops.
    let (mut child, addr, _stdout, _) = spawn_serve(&["--weights", weights.to_str().unwrap()], &repo());
    let slow: Vec<std::net::TcpStream> = (0..500)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n").unwrap();
            s
        })
        .collect();
    let resp = get(&addr, "/healthz");
    assert!(resp.starts_with("HTTP/1.1 200") && resp.ends_with("ok"), "{resp}");
    signal_child(&child, "-TERM");
    let status = wait_at_most(&mut child, 60, "the server after SIGTERM");
    assert!(status.success(), "{status:?}");
    drop(slow);
}

fn signal_child(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

/// The training page's data files are served as they lie on disk: in a torchvision-style root that holds both
/// a raw and a `.gz` copy of each file, each URL gives the bytes of the file it names (it once gave the raw file
/// for the `.gz` URL), and the list names the files the page is to fetch. A data set is offered under its own
/// name only: MNIST's files laid flat in the root are MNIST, not Fashion-MNIST too (which every flat directory
/// once was).
#[test]
fn each_data_url_serves_the_file_it_names_and_a_data_set_only_under_its_own_name() {
    let root = tempfile::tempdir().unwrap();
    let raw = root.path().join("MNIST/raw");
    std::fs::create_dir_all(&raw).unwrap();
    for file in lenet5_core::data::DatasetId::FILES {
        let gz = std::fs::read(mnist_dir().join(format!("{file}.gz"))).unwrap();
        std::fs::write(raw.join(format!("{file}.gz")), &gz).unwrap();
        let plain = lenet5_core::data::idx::decompress_if_gzip(gz).unwrap();
        std::fs::write(raw.join(file), plain).unwrap();
    }
    let server = TestServer::with_data_root(root.path());
    for file in lenet5_core::data::DatasetId::FILES {
        for name in [file.to_string(), format!("{file}.gz")] {
            let (status, body) = server.request("GET", &format!("/data/mnist/{name}"), None, b"");
            assert_eq!(status, 200, "{name}");
            assert!(body == std::fs::read(raw.join(&name)).unwrap(), "/data/mnist/{name} is not that file");
        }
    }
    let (_, list) = server.json("GET", "/data/datasets.json", None, b"");
    assert_eq!(list["datasets"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["datasets"][0]["files"][0], "train-images-idx3-ubyte", "{list}");
    assert_eq!(server.request("GET", "/data/mnist/t10k-images-idx3-ubyte.zip", None, b"").0, 404);

    // MNIST laid flat in the root: offered as MNIST, not as Fashion-MNIST.
    let flat = tempfile::tempdir().unwrap();
    for file in lenet5_core::data::DatasetId::FILES {
        std::fs::copy(mnist_dir().join(format!("{file}.gz")), flat.path().join(format!("{file}.gz"))).unwrap();
    }
    let server = TestServer::with_data_root(flat.path());
    let (_, list) = server.json("GET", "/data/datasets.json", None, b"");
    let names: Vec<&str> = list["datasets"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mnist"], "{list}");
    assert_eq!(server.request("GET", "/data/fashion-mnist/t10k-labels-idx1-ubyte.gz", None, b"").0, 404);
}
