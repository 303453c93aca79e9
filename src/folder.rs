//! Image-folder data sets on disk or in a zip archive (see [`lenet5_core::folder`], which reads them the same way
//! for every front end): whether a path holds one, and reading it.

use std::path::{Path, PathBuf};

use lenet5_core::data::Dataset;
use lenet5_core::error::IoContext;
pub use lenet5_core::folder::{FolderOptions, ImageFiles};

use crate::error::Result;
pub use crate::preprocess::Preprocess;

/// Largest zip archive read as a data set (it is held in memory while its images are decoded).
pub const MAX_ZIP_BYTES: u64 = 4 << 30;

/// What loading found besides the data set.
#[derive(Clone, Debug)]
pub struct FolderReport {
    /// Files left out, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Whether `path` is a zip archive to read as an image folder (by its name).
pub fn is_zip(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) && path.is_file()
}

/// Whether `dir` holds an image folder: a zip archive, or a folder that holds folders (or images, which are
/// then said to need class folders) and no IDX data set.
pub fn is_image_folder(dir: &Path) -> bool {
    let idx = lenet5_core::data::DatasetId::FILES
        .iter()
        .any(|f| dir.join(f).is_file() || dir.join(format!("{f}.gz")).is_file());
    let files = ImageFiles::disk();
    is_zip(dir) || (!idx && (files.holds_folders(dir) || files.images_in(dir) > 0))
}

/// Loads the image folder (or zip archive) `dir`; `progress` is told each time another image is decoded (from any
/// thread), with the number done and the total.
pub fn load_folder(
    dir: &Path,
    options: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Dataset, FolderReport)> {
    let files = match is_zip(dir) {
        true => {
            let len = std::fs::metadata(dir).at(dir)?.len();
            if len > MAX_ZIP_BYTES {
                let reason = format!("{len} bytes is larger than the {MAX_ZIP_BYTES}-byte limit of a zip data set");
                return Err(lenet5_core::Error::format(dir, reason).into());
            }
            ImageFiles::from_zip(dir, std::fs::read(dir).at(dir)?)?
        }
        false => ImageFiles::disk(),
    };
    let (dataset, skipped) = files.load(dir, options, progress)?;
    Ok((dataset, FolderReport { skipped }))
}
