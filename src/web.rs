//! The training page: LeNet-5 trained in a browser tab by the engine compiled to WebAssembly. The same files
//! are served by `lenet5 serve` (at `/train`) and written as a static site by `lenet5 site`:
//!
//! ```text
//! index.html (train)      the page: settings, progress, curves, conv1's kernels, a pad to draw on
//! train-worker.js         the Web Worker that runs the engine
//! lenet5.wasm             the engine (built from web/ by scripts/build-web.sh)
//! data/datasets.json      the data sets offered: {"server", "datasets": [{"name", "class_names"}]}
//! data/NAME/FILE.gz       their four IDX files, which the page fetches and the engine decompresses
//! ```

use std::path::{Path, PathBuf};

use lenet5_core::data::DatasetId;

const FILES: [&str; 4] = DatasetId::FILES;
use lenet5_core::error::IoContext;
use lenet5_core::fs::{create_dir, write_atomic};
use serde_json::{Value, json};

use crate::error::Result;

/// The page.
pub const PAGE: &str = include_str!("../assets/web/train.html");
/// Its worker.
pub const WORKER: &str = include_str!("../assets/web/train-worker.js");
/// The engine, as WebAssembly.
pub const WASM: &[u8] = include_bytes!("../assets/web/lenet5.wasm");

/// The data sets the page can train on.
const KNOWN: [DatasetId; 2] = [DatasetId::Mnist, DatasetId::FashionMnist];

/// The known data sets found under `root`, with the directory that holds each one's files.
pub fn available(root: &Path) -> Vec<(DatasetId, PathBuf)> {
    KNOWN.into_iter().filter_map(|id| Some((id.clone(), id.locate_files(root, &DatasetId::FILES).ok()?))).collect()
}

/// `data/datasets.json`: the data sets offered, and whether a `lenet5 serve` offers them (it also has the
/// draw-a-digit page at `/`).
pub fn datasets_json(available: &[(DatasetId, PathBuf)], server: bool) -> Value {
    let datasets: Vec<Value> =
        available.iter().map(|(id, _)| json!({"name": id.name(), "class_names": id.class_names()})).collect();
    json!({ "server": server, "datasets": datasets })
}

/// The file at `data/NAME/FILE` under `root`: `None` unless NAME is a known data set found there and FILE one
/// of its four files (with `.gz`, whether the file on disk is compressed or not).
pub fn data_file(root: &Path, name: &str, file: &str) -> Option<PathBuf> {
    let id = KNOWN.into_iter().find(|id| id.name() == name)?;
    let stem = file.strip_suffix(".gz").filter(|stem| FILES.contains(stem))?;
    DatasetId::find_file(&id.locate_files(root, &DatasetId::FILES).ok()?, stem)
}

/// What [`write_site`] wrote.
#[derive(Clone, Debug)]
pub struct Site {
    pub dir: PathBuf,
    pub datasets: Vec<String>,
    pub bytes: u64,
}

/// Writes the page as a static site into `dir`, with every known data set found under `root`.
pub fn write_site(dir: &Path, root: &Path) -> Result<Site> {
    let found = available(root);
    if found.is_empty() {
        // Name what was looked for, as for a training run.
        DatasetId::Mnist.locate_files(root, &DatasetId::FILES)?;
    }
    create_dir(dir)?;
    let mut bytes = 0u64;
    let mut write = |path: &Path, content: &[u8]| -> Result<()> {
        bytes += content.len() as u64;
        Ok(write_atomic(path, content)?)
    };
    write(&dir.join("index.html"), PAGE.as_bytes())?;
    write(&dir.join("train-worker.js"), WORKER.as_bytes())?;
    write(&dir.join("lenet5.wasm"), WASM)?;
    create_dir(&dir.join("data"))?;
    let listing = serde_json::to_vec_pretty(&datasets_json(&found, false)).expect("serialisable");
    write(&dir.join("data/datasets.json"), &listing)?;
    for (id, source) in &found {
        let out = dir.join("data").join(id.name());
        create_dir(&out)?;
        for file in FILES {
            let from = DatasetId::find_file(source, file).expect("located with every file");
            write(&out.join(format!("{file}.gz")), &gzipped(&from)?)?;
        }
    }
    Ok(Site { dir: dir.to_path_buf(), datasets: found.iter().map(|(id, _)| id.name()).collect(), bytes })
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
