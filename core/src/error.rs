//! One error type for the whole library. Every variant names the file (when there is one) and says what was
//! expected and what was found, so the binary can print it as a single line.

use std::path::{Path, PathBuf};

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file was read but its contents are not what the format requires.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },

    /// A checkpoint misses a tensor or holds one of the wrong shape or type.
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor { path: PathBuf, name: String, reason: String },

    /// A data set cannot be found.
    #[error("{0}")]
    DataNotFound(String),

    /// A setting given by the user is out of range or inconsistent.
    #[error("invalid setting: {0}")]
    Config(String),

    /// An input tensor or image has the wrong size.
    #[error("shape mismatch: expected {expected}, found {found}")]
    Shape { expected: String, found: String },

    /// Training stopped because a signal asked it to; the resumable checkpoint was written.
    #[error("interrupted; resume with: lenet5 train --resume {}", run_dir.display())]
    Interrupted { run_dir: PathBuf },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    pub fn format(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().to_path_buf(), reason: reason.into() }
    }

    pub fn tensor(path: impl AsRef<Path>, name: &str, reason: impl Into<String>) -> Self {
        Error::Tensor { path: path.as_ref().to_path_buf(), name: name.to_string(), reason: reason.into() }
    }
}

/// Adds the file path to an `std::io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
