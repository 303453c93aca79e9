//! End to end in a real browser: headless Chromium, driven over the DevTools protocol, draws a "1" on the
//! page's canvas with mouse (pointer) events and reads the prediction the page shows.
//! Skipped, with the reason printed, where no Chromium is installed (`.ci/run` installs it).

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket, stream::MaybeTlsStream};

fn find_chromium() -> Option<String> {
    let candidates = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
    std::env::var("LENET5_CHROMIUM").ok().into_iter().chain(candidates.iter().map(|s| s.to_string())).find(|c| {
        Command::new(c).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(binary: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it chose to DevToolsActivePort in its profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let t0 = Instant::now();
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file).ok().and_then(|s| s.lines().next()?.parse().ok()) {
                break p;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "chromium did not open its DevTools port");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The page target's WebSocket, from the /json/list endpoint.
        let list = http_get(port, "/json/list");
        let targets: Vec<Value> = serde_json::from_str(&list).unwrap();
        let url = targets.iter().find(|t| t["type"] == "page").expect("a page target")["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let (ws, _) = tungstenite::connect(url).expect("connect to DevTools");
        if let MaybeTlsStream::Plain(tcp) = ws.get_ref() {
            tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        Browser { child, _profile: profile, ws, next_id: 0 }
    }

    /// Sends one DevTools command and waits for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).unwrap();
        loop {
            let msg = self.ws.read().expect("DevTools answer");
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    fn eval(&mut self, expr: &str) -> Value {
        self.call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true}))["result"]["value"].clone()
    }

    fn wait_for(&mut self, expr: &str, what: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.eval(expr);
            if !v.is_null() && v != json!("") && v != json!(false) {
                return v;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn mouse(&mut self, kind: &str, x: f64, y: f64) {
        let buttons = if kind == "mouseReleased" { 0 } else { 1 };
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": x, "y": y, "button": "left", "buttons": buttons, "clickCount": 1}),
        );
    }
}

/// A GET to the DevTools HTTP endpoint, which keeps connections open: read exactly Content-Length bytes.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut r = BufReader::new(s);
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

#[test]
fn drawing_a_one_on_the_page_shows_a_one() {
    let Some(chromium) = find_chromium() else {
        println!("skipped: no Chromium found (install Debian's `chromium`, or set LENET5_CHROMIUM)");
        return;
    };
    let server = TestServer::start();
    let mut b = Browser::launch(&chromium);
    b.call("Page.enable", json!({}));
    b.call("Page.navigate", json!({"url": format!("http://{}/", server.addr)}));
    b.wait_for("document.readyState === 'complete' && document.getElementById('model').textContent", "the page");
    let rect = b.eval("JSON.stringify(document.getElementById('pad').getBoundingClientRect())");
    let rect: Value = serde_json::from_str(rect.as_str().unwrap()).unwrap();
    let (left, top) = (rect["left"].as_f64().unwrap(), rect["top"].as_f64().unwrap());
    let (w, h) = (rect["width"].as_f64().unwrap(), rect["height"].as_f64().unwrap());
    // A vertical stroke down the middle of the pad: a "1".
    let x = left + w * 0.5;
    b.mouse("mousePressed", x, top + h * 0.15);
    for i in 1..=20 {
        b.mouse("mouseMoved", x, top + h * (0.15 + 0.7 * i as f64 / 20.0));
    }
    b.mouse("mouseReleased", x, top + h * 0.85);
    let seen = b.wait_for("document.getElementById('prediction').dataset.class", "a prediction");
    assert_eq!(seen, "1", "the page read the drawing as {seen}");
    // The bars and the feature maps were drawn too.
    assert_eq!(b.eval("document.querySelectorAll('#bars .bar').length"), 10);
    assert_eq!(b.eval("document.querySelectorAll('#conv2 canvas').length"), 16);
    // A screenshot for people to look at.
    let shot = b.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64_decode(shot["data"].as_str().unwrap());
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-page.png");
    std::fs::write(&out, png).unwrap();
    println!("screenshot: {}", out.display());

    // The random test-image button: the page shows a prediction and the true label.
    b.eval("document.getElementById('sample').click()");
    b.wait_for("document.getElementById('truth').textContent", "the true label");
}

fn base64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(table).collect();
    bytes
        .chunks(4)
        .flat_map(|c| {
            let n = c.iter().enumerate().fold(0u32, |acc, (i, &v)| acc | (v as u32) << (18 - 6 * i));
            let k = c.len() * 6 / 8;
            (0..k).map(move |i| (n >> (16 - 8 * i)) as u8)
        })
        .collect()
}
