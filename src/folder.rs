//! Image-folder data sets, laid out as torchvision's `ImageFolder` reads them: one folder per class, named after
//! the class, holding PNG, JPEG, BMP, GIF or PGM files (in subfolders too). Either `DIR/train/<class>/...` and
//! `DIR/test/<class>/...`, or one `DIR/<class>/...` split into training and validation images by a seeded,
//! stratified draw. Classes are sorted by name, as `ImageFolder` sorts them, and the images of a class by path.
//!
//! Every image is decoded once, on several threads, and turned into 28x28 grey bytes by a [`Preprocess`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lenet5_core::base::{IMAGE_LEN, Label, MAX_CLASSES, MIN_CLASSES};
use lenet5_core::data::{Dataset, Split};

use crate::error::ImageError;
use crate::error::{Error, Result};
pub use crate::preprocess::Preprocess;
use crate::preprocess::{MAX_FILE_BYTES, Prepare, decode};

/// File name extensions of the images a class folder may hold (any case).
pub const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "gif", "pgm"];
/// Deepest folder read inside a class folder (which also ends any loop of links).
const MAX_DEPTH: usize = 16;
/// Longest class name, in bytes (as checkpoints hold them).
const MAX_CLASS_NAME: usize = 256;
/// Most images a data set may hold.
pub const MAX_IMAGES: usize = 10_000_000;
/// Bad files named in an error before "and N more".
const NAMED_BAD_FILES: usize = 5;

/// How to read an image folder.
#[derive(Clone, Debug)]
pub struct FolderOptions {
    pub preprocess: Preprocess,
    /// The share of each class held out for validation when the folder has no `train/` and `test/`.
    pub val_split: f64,
    /// Seeds that split.
    pub split_seed: u64,
    /// Leave out files that cannot be decoded (they are counted in [`FolderReport`]) instead of failing.
    pub skip_bad_images: bool,
    /// Decoding threads.
    pub threads: usize,
}

/// What loading found besides the data set.
#[derive(Clone, Debug)]
pub struct FolderReport {
    /// Files left out, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Whether `dir` holds an image folder: a folder that holds folders and no IDX data set.
pub fn is_image_folder(dir: &Path) -> bool {
    let idx = lenet5_core::data::DatasetId::FILES
        .iter()
        .any(|f| dir.join(f).is_file() || dir.join(format!("{f}.gz")).is_file());
    !idx && std::fs::read_dir(dir).is_ok_and(|mut entries| entries.any(|e| e.is_ok_and(|e| e.path().is_dir())))
}

/// One image to read: its file and its class.
#[derive(Clone)]
struct Sample {
    path: PathBuf,
    label: Label,
}

/// Loads the image folder `dir`; `progress` is told each time another image is decoded (from any thread), with
/// the number done and the total.
pub fn load_folder(
    dir: &Path,
    options: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<(Dataset, FolderReport)> {
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let split = !(train_dir.is_dir() && test_dir.is_dir());
    if split && !(options.val_split > 0.0 && options.val_split < 1.0) {
        return Err(folder_error(dir, format!("a validation share of {} is not between 0 and 1", options.val_split)));
    }
    let (class_names, parts) = if split { one_part(dir)? } else { train_and_test(dir, &train_dir, &test_dir)? };
    let samples = parts.concat();
    let decoded = decode_all(&samples, options, progress);
    let bad: Vec<(PathBuf, String)> = samples
        .iter()
        .zip(&decoded)
        .filter_map(|(s, d)| d.as_ref().err().map(|e| (s.path.clone(), e.to_string())))
        .collect();
    if !bad.is_empty() && !options.skip_bad_images {
        return Err(Error::BadImages { total: samples.len(), named: name_some(&bad), count: bad.len() });
    }
    let mut splits = assemble(&parts, decoded);
    let (train, test) = if split {
        splits[0].stratified_holdout(class_names.len(), options.val_split, options.split_seed)
    } else {
        let test = splits.pop().expect("two parts");
        (splits.pop().expect("two parts"), test)
    };
    for (name, s) in [("training", &train), ("validation", &test)] {
        if s.is_empty() {
            return Err(folder_error(dir, format!("no usable {name} image")));
        }
    }
    let mut data_options = BTreeMap::from([("preprocess".to_string(), options.preprocess.name().to_string())]);
    if split {
        data_options.insert("val_split".into(), options.val_split.to_string());
        data_options.insert("split_seed".into(), options.split_seed.to_string());
    }
    let name = dir.display().to_string();
    let dataset = Dataset { name, dir: dir.to_path_buf(), class_names, train, test, options: data_options };
    Ok((dataset, FolderReport { skipped: bad }))
}

/// The classes and images of a folder that is one part, to be split.
fn one_part(dir: &Path) -> Result<(Vec<String>, Vec<Vec<Sample>>)> {
    let (names, samples) = class_samples(dir)?;
    Ok((names, vec![samples]))
}

/// The classes and the two parts of a folder with `train/` and `test/`, whose classes must agree.
fn train_and_test(dir: &Path, train_dir: &Path, test_dir: &Path) -> Result<(Vec<String>, Vec<Vec<Sample>>)> {
    let (names, train) = class_samples(train_dir)?;
    let (test_names, test) = class_samples(test_dir)?;
    if names != test_names {
        let only = |a: &[String], b: &[String]| a.iter().filter(|n| !b.contains(n)).cloned().collect::<Vec<_>>();
        let (only_train, only_test) = (only(&names, &test_names), only(&test_names, &names));
        return Err(folder_error(
            dir,
            format!(
                "train/ and test/ hold different classes: only in train/ {only_train:?}, only in test/ {only_test:?}"
            ),
        ));
    }
    Ok((names, vec![train, test]))
}

/// One split per part, of the images that were decoded (in `decoded`, the parts' images one after the other).
fn assemble(parts: &[Vec<Sample>], decoded: Vec<std::result::Result<[u8; IMAGE_LEN], ImageError>>) -> Vec<Split> {
    let mut decoded = decoded.into_iter();
    parts
        .iter()
        .map(|samples| {
            let mut s = Split::default();
            for (sample, image) in samples.iter().zip(decoded.by_ref()) {
                if let Ok(pixels) = image {
                    s.images.extend_from_slice(&pixels);
                    s.labels.push(sample.label);
                }
            }
            s
        })
        .collect()
}

fn folder_error(dir: &Path, reason: String) -> Error {
    Error::Core(lenet5_core::Error::format(dir, reason))
}

/// The first few bad files, with why, for an error's one line.
fn name_some(bad: &[(PathBuf, String)]) -> String {
    let mut text: Vec<String> =
        bad.iter().take(NAMED_BAD_FILES).map(|(p, why)| format!("{} ({why})", p.display())).collect();
    if bad.len() > NAMED_BAD_FILES {
        text.push(format!("and {} more", bad.len() - NAMED_BAD_FILES));
    }
    text.join("; ")
}

/// The class folders of `dir`, sorted by name, and every image in them, class by class, each class's sorted by
/// path.
fn class_samples(dir: &Path) -> Result<(Vec<String>, Vec<Sample>)> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::Core(lenet5_core::Error::io(dir, e)))? {
        let path = entry.map_err(|e| Error::Core(lenet5_core::Error::io(dir, e)))?.path();
        if path.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).map(str::to_string);
            let name = name.ok_or_else(|| folder_error(&path, "a class folder's name must be UTF-8".into()))?;
            if name.len() > MAX_CLASS_NAME {
                return Err(folder_error(&path, format!("a class folder's name is at most {MAX_CLASS_NAME} bytes")));
            }
            names.push(name);
        }
    }
    names.sort();
    if names.len() < MIN_CLASSES || names.len() > MAX_CLASSES {
        return Err(folder_error(
            dir,
            format!(
                "{} class folder(s) {names:?}; expected {MIN_CLASSES} to {MAX_CLASSES}, one per class, each holding \
                 its images",
                names.len()
            ),
        ));
    }
    let mut samples = Vec::new();
    for (label, name) in names.iter().enumerate() {
        let class_dir = dir.join(name);
        let mut files = Vec::new();
        images_under(&class_dir, 0, &mut files)?;
        if files.is_empty() {
            let kinds = EXTENSIONS.join(", ");
            return Err(folder_error(&class_dir, format!("class `{name}` holds no image ({kinds})")));
        }
        files.sort();
        samples.extend(files.into_iter().map(|path| Sample { path, label: label as Label }));
        if samples.len() > MAX_IMAGES {
            return Err(folder_error(dir, format!("more than {MAX_IMAGES} images")));
        }
    }
    Ok((names, samples))
}

/// Adds the image files under `dir` (at `depth` below its class folder) to `files`.
fn images_under(dir: &Path, depth: usize, files: &mut Vec<PathBuf>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(folder_error(dir, format!("folders nested more than {MAX_DEPTH} deep in a class folder")));
    }
    let io = |e| Error::Core(lenet5_core::Error::io(dir, e));
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            images_under(&path, depth + 1, files)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(path);
            if files.len() > MAX_IMAGES {
                return Err(folder_error(dir, format!("more than {MAX_IMAGES} images")));
            }
        }
    }
    Ok(())
}

/// Decodes every sample on `options.threads` threads, each taking the next image not yet taken.
fn decode_all(
    samples: &[Sample],
    options: &FolderOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<std::result::Result<[u8; IMAGE_LEN], ImageError>> {
    let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut results: Vec<_> = (0..samples.len()).map(|_| Err(ImageError::EmptyFile)).collect();
    let slots: Vec<std::sync::Mutex<&mut std::result::Result<[u8; IMAGE_LEN], ImageError>>> =
        results.iter_mut().map(std::sync::Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..options.threads.clamp(1, samples.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(sample) = samples.get(i) else { break };
                    let image = read_image(&sample.path, options.preprocess);
                    **slots[i].lock().unwrap_or_else(|e| e.into_inner()) = image;
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, samples.len());
                }
            });
        }
    });
    drop(slots);
    results
}

/// One file, read and preprocessed.
fn read_image(path: &Path, preprocess: Preprocess) -> std::result::Result<[u8; IMAGE_LEN], ImageError> {
    let len = std::fs::metadata(path).map_err(|e| ImageError::Unreadable(e.to_string()))?.len();
    if len == 0 {
        return Err(ImageError::EmptyFile);
    }
    if len > MAX_FILE_BYTES {
        return Err(ImageError::TooLarge { len, limit: MAX_FILE_BYTES });
    }
    let bytes = std::fs::read(path).map_err(|e| ImageError::Unreadable(e.to_string()))?;
    preprocess.apply(&decode(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_stratified_reproducible_and_keeps_the_order() {
        let labels: Vec<Label> = (0..100).map(|i| if i < 80 { 0 } else { 1 + (i % 2) as Label }).collect();
        let all = Split { images: (0..100 * IMAGE_LEN).map(|i| (i / IMAGE_LEN) as u8).collect(), labels };
        let (train, test) = all.stratified_holdout(3, 0.25, 5);
        let count = |s: &Split, k: Label| s.labels.iter().filter(|&&l| l == k).count();
        assert_eq!((count(&test, 0), count(&test, 1), count(&test, 2)), (20, 3, 3)); // 25% of 80, 10 and 10, rounded
        assert_eq!(train.len() + test.len(), 100);
        let firsts = |s: &Split| (0..s.len()).map(|i| s.image(i)[0]).collect::<Vec<u8>>();
        assert!(firsts(&train).is_sorted() && firsts(&test).is_sorted());
        let again = all.stratified_holdout(3, 0.25, 5);
        assert_eq!((firsts(&again.0), firsts(&again.1)), (firsts(&train), firsts(&test)));
        assert_ne!(firsts(&all.stratified_holdout(3, 0.25, 6).1), firsts(&test));
    }
}
