//! Helpers shared by the tests that run the real binary.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use lenet5::serve::{AppState, serve};
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::{Dataset, DatasetId, Split};
use lenet5_core::infer::Predictor;

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
        let mut split = mnist_split(prefix);
        split.truncate(n);
        let (images, labels) = split.to_idx();
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
}

/// One split of the bundled MNIST: `train` or `t10k`.
pub fn mnist_split(prefix: &str) -> Split {
    let path =
        |kind: &str| mnist_dir().join(format!("{prefix}-{kind}-idx{}-ubyte.gz", if kind == "images" { 3 } else { 1 }));
    Split::load(&path("images"), &path("labels")).unwrap()
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

/// Waits for `child` to exit, for at most `seconds`; kills it and fails the test (saying `what`) if it does not.
pub fn wait_at_most(child: &mut std::process::Child, seconds: u64, what: &str) -> std::process::ExitStatus {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t0.elapsed() > std::time::Duration::from_secs(seconds) {
            child.kill().unwrap();
            panic!("{what} did not finish within {seconds} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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

/// The web server on an ephemeral loopback port, in its own thread; stopped (gracefully) when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// The server with the bundled model, and the bundled MNIST for the sample button and the training page.
    pub fn start() -> TestServer {
        TestServer::with_data_root(&repo().join("data"))
    }

    /// The server with the bundled model and the data sets under `root`.
    pub fn with_data_root(root: &Path) -> TestServer {
        let ck = Checkpoint::load(&repo().join("models/lenet5-mnist.safetensors")).unwrap();
        let test = Dataset::load_test(&DatasetId::Mnist, root, 10).ok();
        TestServer::with_state(
            AppState::new(Predictor::new(ck), test, "test model").with_datasets(lenet5::web::available(root).0),
        )
    }

    /// The server of `state`.
    pub fn with_state(state: AppState) -> TestServer {
        let state = Arc::new(state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                serve(listener, state, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        TestServer { addr: addr_rx.recv().unwrap(), stop: Some(tx), thread: Some(thread) }
    }

    /// One HTTP/1.1 request; returns the status code and the body.
    pub fn request(&self, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(t) = ctype {
            head.push_str(&format!("Content-Type: {t}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(head.as_bytes()).unwrap();
        // A server may answer (413) before reading a large body; a failed write is then expected.
        let _ = s.write_all(body);
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        let text = String::from_utf8_lossy(&resp);
        let status: u16 =
            text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"));
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let (headers, mut content) = (String::from_utf8_lossy(&resp[..split]).to_lowercase(), resp[split..].to_vec());
        if headers.contains("transfer-encoding: chunked") {
            content = dechunk(&content);
        }
        (status, content)
    }

    pub fn json(&self, method: &str, path: &str, ctype: Option<&str>, body: &[u8]) -> (u16, serde_json::Value) {
        let (status, body) = self.request(method, path, ctype, body);
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (status, v)
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..line_end]).trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + n]);
        b = &b[line_end + 2 + n + 2..];
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every file under `dir`, as (path relative to `dir` with `/` between names, bytes), sorted by path.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().to_str().unwrap().replace('\\', "/");
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// `files` as a zip archive, deflated, each under `top/`, in the order given, with what a Mac adds.
pub fn zip_of(files: &[(String, Vec<u8>)], top: &str) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.add_directory(format!("{top}/"), options).unwrap();
    for (name, bytes) in files {
        zip.start_file(format!("{top}/{name}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.start_file(format!("__MACOSX/{top}/._a"), options).unwrap();
    zip.write_all(b"resource fork").unwrap();
    zip.finish().unwrap().into_inner()
}

/// An image folder of MNIST digits as 28x28 PNGs, `per_class` of each of the classes `zero`, `one` and `two`
/// (the first of each in the training set), with one file that is no image and one that is not a PNG though
/// named so.
pub fn write_digit_folder(dir: &Path, per_class: usize) {
    let all = mnist_split("train");
    for (label, name) in ["zero", "one", "two"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        let indices = (0..all.len()).filter(|&i| all.labels[i] as usize == label).take(per_class);
        for i in indices {
            let pixels = all.images[i * 784..(i + 1) * 784].to_vec();
            image::GrayImage::from_raw(28, 28, pixels)
                .unwrap()
                .save(dir.join(name).join(format!("{i:05}.png")))
                .unwrap();
        }
    }
    std::fs::write(dir.join("two/broken.png"), b"not a png").unwrap();
    std::fs::write(dir.join("README.txt"), b"digits").unwrap();
}
