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

/// Where a known data set comes from, and what its decompressed files must hash to (in [`DatasetId::FILES`] order).
pub struct Remote {
    pub mirrors: &'static [&'static str],
    pub sha256: [&'static str; 4],
    /// The directory under the data root, as torchvision lays it out.
    pub subdir: &'static str,
}

pub const MNIST: Remote = Remote {
    mirrors: &["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    sha256: [
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ],
    subdir: "MNIST/raw",
};

pub const FASHION_MNIST: Remote = Remote {
    mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
    sha256: [
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ],
    subdir: "FashionMNIST/raw",
};

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
    for (file, sha) in DatasetId::FILES.iter().zip(remote.sha256).filter(|(f, _)| files.contains(f)) {
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
        for (file, sha) in DatasetId::FILES.iter().zip(MNIST.sha256) {
            let bytes = std::fs::read(dir.join(format!("{file}.gz"))).unwrap();
            verify(bytes, sha).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        let mut labels = std::fs::read(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        labels = decompress_if_gzip(labels).unwrap();
        labels[100] ^= 1;
        assert!(verify(labels, MNIST.sha256[3]).unwrap_err().to_string().contains("SHA-256"));
    }
}
