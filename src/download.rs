//! Fetching a missing data set from the public mirrors torchvision uses, verified against the SHA-256 of each
//! decompressed file, and stored (still gzipped) in torchvision's layout under the data root.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use lenet5_core::data::DatasetId;
use lenet5_core::data::idx::decompress_if_gzip;
use lenet5_core::fs::{create_dir, write_atomic};

/// No data set file we fetch is larger than this compressed.
const MAX_DOWNLOAD: u64 = 64 << 20;

/// Where a known data set comes from (what its files hash to is [`DatasetId::sha256`]).
pub struct Remote {
    pub mirrors: &'static [&'static str],
    /// The directory under the data root, as torchvision lays it out.
    pub subdir: &'static str,
}

pub const MNIST: Remote = Remote {
    mirrors: &["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    subdir: "MNIST/raw",
};

pub const FASHION_MNIST: Remote =
    Remote { mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"], subdir: "FashionMNIST/raw" };

/// The remote of a known data set; `None` for a plain directory.
pub fn remote(id: &DatasetId) -> Option<&'static Remote> {
    match id {
        DatasetId::Mnist => Some(&MNIST),
        DatasetId::FashionMnist => Some(&FASHION_MNIST),
        DatasetId::Dir(_) => None,
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a downloaded file was not kept.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("larger than {MAX_DOWNLOAD} bytes")]
    TooLarge,
    #[error(transparent)]
    Damaged(#[from] lenet5_core::data::idx::IdxError),
    #[error("SHA-256 of the decompressed data is {found}, expected {expected}")]
    Checksum { found: String, expected: String },
}

/// Checks a (possibly gzipped) file's decompressed content against the expected hash.
pub fn verify(gz_or_raw: Vec<u8>, expected: &str) -> std::result::Result<(), FetchError> {
    let raw = decompress_if_gzip(gz_or_raw)?;
    let found = sha256_hex(&raw);
    if found == expected { Ok(()) } else { Err(FetchError::Checksum { found, expected: expected.to_string() }) }
}

fn fetch(url: &str) -> std::result::Result<Vec<u8>, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(std::time::Duration::from_secs(15)))
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into();
    let resp = agent.get(url).call().map_err(|e| FetchError::Http(e.to_string()))?;
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .take(MAX_DOWNLOAD + 1)
        .read_to_end(&mut body)
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if body.len() as u64 > MAX_DOWNLOAD {
        return Err(FetchError::TooLarge);
    }
    Ok(body)
}

/// Downloads `files` of `id` (all four of [`DatasetId::FILES`], or some of them) into `root/<subdir>`, trying each mirror
/// in turn and keeping only verified files. `progress` is told each file as it starts.
pub fn download(id: &DatasetId, root: &Path, files: &[&str], progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let remote = remote(id).ok_or_else(|| Error::NotDownloadable(id.name()))?;
    let dir = root.join(remote.subdir);
    create_dir(&dir)?;
    let sums = id.sha256().ok_or_else(|| Error::NotDownloadable(id.name()))?;
    for (file, sha) in DatasetId::FILES.iter().zip(sums).filter(|(f, _)| files.contains(f)) {
        let target = dir.join(format!("{file}.gz"));
        if target.exists() {
            continue;
        }
        let mut errors = Vec::new();
        let mut done = false;
        for mirror in remote.mirrors {
            let url = format!("{mirror}{file}.gz");
            progress(&url);
            match fetch(&url).and_then(|b| verify(b.clone(), sha).map(|_| b)) {
                Ok(bytes) => {
                    write_atomic(&target, &bytes)?;
                    done = true;
                    break;
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        if !done {
            return Err(Error::Download { dataset: id.name(), attempts: errors, dir });
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_mnist_matches_the_published_hashes_and_tampering_is_caught() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/MNIST/raw");
        for (file, sha) in DatasetId::FILES.iter().zip(DatasetId::Mnist.sha256().unwrap()) {
            let bytes = std::fs::read(dir.join(format!("{file}.gz"))).unwrap();
            verify(bytes, sha).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let mut labels = std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        labels = decompress_if_gzip(labels).unwrap();
        labels[100] ^= 1;
        assert!(verify(labels, DatasetId::Mnist.sha256().unwrap()[3]).unwrap_err().to_string().contains("SHA-256"));
    }
}
