//! One error type for the whole library. Every variant names the file (when there is one) and says what was
//! expected and what was found, so a program can print it as a single line. None names a command-line flag: a
//! front end that wants its own words matches on the variant.

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

    /// A data set cannot be found: none of the directories looked in holds its files.
    #[error(
        "data set {dataset} not found: looked for {} (or .gz) in {}",
        files.join(", "),
        looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DataNotFound { dataset: String, files: &'static [&'static str], looked_in: Vec<PathBuf> },

    /// A setting (named as in `spec::SETTINGS`) is out of range: `value` is not `expected`.
    #[error("invalid setting: {setting} must be {expected}, got {value}")]
    Setting { setting: &'static str, value: String, expected: &'static str },

    /// A name that is no setting of a run, with the setting it is closest to.
    #[error("unknown setting `{name}`{}", suggestion.map_or(String::new(), |s| format!(" (did you mean `{s}`?)")))]
    UnknownSetting { name: String, suggestion: Option<&'static str> },

    /// A setting given a value of the wrong type (text for a number, a list for a name).
    #[error("setting {name}: {reason}")]
    SettingValue { name: String, reason: String },

    /// An input tensor or image has the wrong size.
    #[error("shape mismatch: expected {expected}, found {found}")]
    Shape { expected: String, found: String },

    /// Image files of a data set that cannot be used: how many of how many, the first few named with why.
    #[error("{count} of {total} images cannot be used: {named}")]
    BadImages { count: usize, total: usize, named: String },

    /// A data set split that training or evaluation needs holds no image.
    #[error("data set {dataset} has an empty {split} split")]
    EmptySplit { dataset: String, split: &'static str },

    /// A new run would overwrite the run already in `dir`.
    #[error("{} already holds a training run", dir.display())]
    RunExists { dir: PathBuf },

    /// `dir` holds no resumable training state.
    #[error("{} holds no resumable run ({missing} is missing)", dir.display())]
    NotResumable { dir: PathBuf, missing: &'static str },

    /// Weights and a data set (or their class names) disagree on the number of classes.
    #[error("the network has {network} outputs, but the data set {dataset} has {data} classes")]
    ClassCount { dataset: String, network: usize, data: usize },

    /// A run is resumed on data other than the images and labels it was trained on.
    #[error("data set {dataset} in {} is not the data this run was trained on (its images or labels differ)", dir.display())]
    DataChanged { dataset: String, dir: PathBuf },

    /// Training diverged: the loss of a batch was not a finite number, and the weights are lost from there.
    #[error("training diverged at epoch {epoch}, batch {batch}: the loss is {loss}")]
    Diverged { epoch: usize, batch: usize, loss: f32 },

    /// The worker threads could not be started.
    #[error("cannot start {count} threads: {source}")]
    Threads {
        count: usize,
        #[source]
        source: std::io::Error,
    },

    /// Training stopped because the observer asked it to; the state of the last finished epoch is in `run_dir`.
    #[error("interrupted; the run in {} can be resumed", run_dir.display())]
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
