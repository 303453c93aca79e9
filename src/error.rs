//! The application's errors: the engine's, and those of what the application adds (images, downloads,
//! pictures). Each prints as one line that names the file and what was expected.

use std::path::PathBuf;

/// Result alias of the application's library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the engine (files, data sets, checkpoints, settings).
    #[error(transparent)]
    Core(#[from] lenet5_core::Error),

    /// An image file that cannot be used.
    #[error("{}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: ImageError,
    },

    /// Another process holds the run directory.
    #[error("{} is in use by another lenet5 process{}", dir.display(), if holder.is_empty() { String::new() } else { format!(" (pid {holder})") })]
    Locked { dir: PathBuf, holder: String },

    /// A known data set that could not be fetched from any of its mirrors.
    #[error(
        "could not download {dataset} ({}); put the four IDX files ({}, raw or .gz) in {}",
        attempts.join("; "),
        lenet5_core::data::DatasetId::FILES.join(", "),
        dir.display()
    )]
    Download { dataset: String, attempts: Vec<String>, dir: PathBuf },

    /// A data set that has no known source to download it from.
    #[error("{0} cannot be downloaded")]
    NotDownloadable(String),

    /// A picture was asked of nothing.
    #[error("nothing to draw: {0}")]
    NothingToDraw(&'static str),
}

pub use lenet5_core::digit::ImageError;
