//! The training page: LeNet-5 trained in a browser tab by the engine compiled to WebAssembly. The same files
//! are served by `lenet5 serve` (at `/train`) and written as a static site by `lenet5 site`:
//!
//! ```text
//! index.html (train)      the page: settings, progress, curves, conv1's kernels, a pad to draw on
//! train-worker.js         the Web Worker that runs the engine
//! lenet5.wasm             the engine, one thread (built from web/ by scripts/build-web.sh)
//! lenet5-threads.wasm     the engine with its training step shared by Web Workers (the same build, threads on)
//! threads.js              what that module needs from the page: its imports and helper threads
//! train-helper.js         a helper thread's Web Worker
//! data/datasets.json      the data sets offered: {"server", "datasets": [{"name", "class_names", "files"}]}
//! data/NAME/FILE          their four IDX files as named in the list (raw or .gz: the engine decompresses)
//! _headers                (the site only) the headers below, for static hosts that read such a file
//! ```
//!
//! Browsers share memory between workers only on a cross-origin-isolated page, one served with
//! [`ISOLATION_HEADERS`]; elsewhere the page trains on one thread and says why.

use std::path::{Path, PathBuf};

use lenet5_core::data::{Dataset, DatasetId};

const FILES: [&str; 4] = DatasetId::FILES;
use lenet5_core::error::IoContext;
use lenet5_core::fs::{create_dir, write_atomic};
use serde_json::{Value, json};

use crate::error::Result;

/// The page.
pub const PAGE: &str = include_str!("../assets/web/train.html");
/// A file the page loads, beside it.
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The page's other files: its workers and the engine's two modules.
pub const ASSETS: [Asset; 5] = [
    Asset { name: "train-worker.js", content_type: JS, bytes: include_bytes!("../assets/web/train-worker.js") },
    Asset { name: "train-helper.js", content_type: JS, bytes: include_bytes!("../assets/web/train-helper.js") },
    Asset { name: "threads.js", content_type: JS, bytes: include_bytes!("../assets/web/threads.js") },
    Asset { name: "lenet5.wasm", content_type: WASM, bytes: include_bytes!("../assets/web/lenet5.wasm") },
    Asset {
        name: "lenet5-threads.wasm",
        content_type: WASM,
        bytes: include_bytes!("../assets/web/lenet5-threads.wasm"),
    },
];
const JS: &str = "text/javascript";
const WASM: &str = "application/wasm";

/// The headers that make the page cross-origin isolated, so that its workers may share memory: `lenet5 serve`
/// sends them with the page and its files, and `lenet5 site` writes them into `_headers`.
pub const ISOLATION_HEADERS: [(&str, &str); 2] =
    [("Cross-Origin-Opener-Policy", "same-origin"), ("Cross-Origin-Embedder-Policy", "require-corp")];

/// The data sets the page can train on.
const KNOWN: [DatasetId; 2] = [DatasetId::Mnist, DatasetId::FashionMnist];

/// A known data set found under a data root, its files checked to be the published ones.
#[derive(Clone, Debug)]
pub struct Offered {
    pub id: DatasetId,
    /// Its four files as they lie on disk (raw or `.gz`), in [`DatasetId::FILES`] order.
    pub files: [PathBuf; 4],
}

impl Offered {
    /// The name under which file `k` is served: its name on disk.
    fn file_name(&self, k: usize) -> String {
        self.files[k].file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
}

/// The known data sets found under `root`, each checked by the SHA-256 of its files, and why those found but
/// not offered were refused (files that are another data set's, offered under its own name, are left out
/// without a word: a flat directory of MNIST is not also Fashion-MNIST).
pub fn available(root: &Path) -> (Vec<Offered>, Vec<lenet5_core::Error>) {
    let (mut offered, mut refused) = (Vec::<Offered>::new(), Vec::new());
    for id in KNOWN {
        let Ok(dir) = id.locate_files(root, &FILES) else { continue };
        let files = FILES.map(|f| DatasetId::find_file(&dir, f).expect("located with every file"));
        if offered.iter().any(|o| o.files == files) {
            continue;
        }
        match Dataset::load(&id, root) {
            Ok(_) => offered.push(Offered { id, files }),
            Err(e) => refused.push(e),
        }
    }
    (offered, refused)
}

/// `data/datasets.json`: the data sets offered, the names of their four files (as a server has them on disk;
/// a site writes them gzipped), and whether a `lenet5 serve` offers them (it also has the draw-a-digit page).
pub fn datasets_json(offered: &[Offered], server: bool) -> Value {
    let datasets: Vec<Value> = offered
        .iter()
        .map(|o| {
            let files: Vec<String> =
                (0..FILES.len()).map(|k| if server { o.file_name(k) } else { format!("{}.gz", FILES[k]) }).collect();
            json!({"name": o.id.name(), "class_names": o.id.class_names(), "files": files})
        })
        .collect();
    json!({ "server": server, "datasets": datasets })
}

/// The file served at `data/NAME/FILE`: `None` unless NAME is an offered data set and FILE one of its four
/// files, raw or `.gz`, that lies in its directory under exactly that name (a root that holds both copies
/// serves each under its own name, never one encoding for the other). The list names the checked copies.
pub fn data_file(offered: &[Offered], name: &str, file: &str) -> Option<PathBuf> {
    let o = offered.iter().find(|o| o.id.name() == name)?;
    let stem = file.strip_suffix(".gz").unwrap_or(file);
    let k = FILES.iter().position(|f| *f == stem)?;
    let path = o.files[k].parent()?.join(file);
    path.is_file().then_some(path)
}

/// What [`write_site`] wrote.
#[derive(Clone, Debug)]
pub struct Site {
    pub dir: PathBuf,
    pub datasets: Vec<String>,
    /// Why data sets found under the root were left out.
    pub refused: Vec<String>,
    pub bytes: u64,
}

/// Writes the page as a static site into `dir`, with every known data set found under `root`.
pub fn write_site(dir: &Path, root: &Path) -> Result<Site> {
    let (found, mut refused) = available(root);
    if found.is_empty() {
        // Say why the files found are not offered, or name what was looked for, as for a training run.
        if !refused.is_empty() {
            return Err(refused.swap_remove(0).into());
        }
        DatasetId::Mnist.locate_files(root, &DatasetId::FILES)?;
    }
    create_dir(dir)?;
    let mut bytes = 0u64;
    let mut write = |path: &Path, content: &[u8]| -> Result<()> {
        bytes += content.len() as u64;
        Ok(write_atomic(path, content)?)
    };
    write(&dir.join("index.html"), PAGE.as_bytes())?;
    for asset in &ASSETS {
        write(&dir.join(asset.name), asset.bytes)?;
    }
    write(&dir.join("_headers"), headers_file().as_bytes())?;
    create_dir(&dir.join("data"))?;
    let listing = serde_json::to_vec_pretty(&datasets_json(&found, false)).expect("serialisable");
    write(&dir.join("data/datasets.json"), &listing)?;
    for o in &found {
        let out = dir.join("data").join(o.id.name());
        create_dir(&out)?;
        for (file, from) in FILES.iter().zip(&o.files) {
            write(&out.join(format!("{file}.gz")), &gzipped(from)?)?;
        }
    }
    let datasets = found.iter().map(|o| o.id.name()).collect();
    Ok(Site { dir: dir.to_path_buf(), datasets, refused: refused.iter().map(|e| e.to_string()).collect(), bytes })
}

/// `_headers`, as Netlify and Cloudflare Pages read it: [`ISOLATION_HEADERS`] on every path.
fn headers_file() -> String {
    let mut text = String::from("/*\n");
    for (name, value) in ISOLATION_HEADERS {
        text += &format!("  {name}: {value}\n");
    }
    text
}

/// A data file's bytes, gzipped if it is not already.
fn gzipped(path: &Path) -> Result<Vec<u8>> {
    use std::io::Write;
    let raw = std::fs::read(path).at(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&raw).at(path)?;
    Ok(enc.finish().at(path)?)
}
