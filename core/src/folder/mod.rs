//! Image-folder data sets, laid out as torchvision's `ImageFolder` reads them: one folder per class, named after
//! the class, holding PNG, JPEG, BMP, GIF or PGM files (in subfolders too). Either `DIR/train/<class>/...` and
//! `DIR/test/<class>/...`, or one `DIR/<class>/...` split into training and validation images by a seeded,
//! stratified draw. Classes are sorted by name, as `ImageFolder` sorts them, and the images of a class by path.
//!
//! The files come from a directory, from a zip archive, or from memory (the files a browser page was given):
//! [`ImageFiles`] lists and reads all three the same way, so one folder gives the same data set, to the bit, on
//! the command line, in Python and in the page. Every image is decoded once and turned into 28x28 grey bytes by
//! a [`Preprocess`].

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::base::{IMAGE_LEN, Label, MAX_CLASSES, MIN_CLASSES};
use crate::data::{Dataset, Split};
use crate::digit::{GreyImage, ImageError, Preprocess};
use crate::error::{Error, Result};
use crate::spec::RunSpec;

mod archive;

/// File name extensions of the images a class folder may hold (any case).
const EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "gif", "pgm"];
/// Deepest folder read inside a class folder (which also ends any loop of links).
const MAX_DEPTH: usize = 16;
/// Longest class name, in bytes (as checkpoints hold them).
const MAX_CLASS_NAME: usize = 256;
/// Most images a data set may hold.
const MAX_IMAGES: usize = 10_000_000;
/// Most entries a zip archive, or the files handed over from memory, may hold.
const MAX_ENTRIES: usize = 1_000_000;
/// Most memory the decoder may take for one image: less in a browser tab, whose whole memory is a few GiB.
const MAX_DECODE_BYTES: u64 = if cfg!(target_arch = "wasm32") { 128 << 20 } else { 512 << 20 };
/// Most bytes the files of a zip archive may inflate to, in all: less in a browser tab.
const MAX_ZIP_INFLATED: u64 = if cfg!(target_arch = "wasm32") { 2 << 30 } else { 16 << 30 };
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
    /// Leave out files that cannot be decoded (they are returned, with why) instead of failing.
    pub skip_bad_images: bool,
    /// Decoding threads (one without the `threads` feature).
    pub threads: usize,
}

impl FolderOptions {
    /// How `spec` reads an image folder: its settings, else what `recorded` (a run's or a checkpoint's data
    /// options) says, else the defaults (resized, a fifth of each class held out, seed 0). It decodes on the
    /// run's threads (each may hold a large picture in memory).
    pub fn of(spec: &RunSpec, recorded: &BTreeMap<String, String>) -> FolderOptions {
        let preprocess = (spec.preprocess)
            .or_else(|| recorded.get("preprocess").and_then(|p| Preprocess::parse(p)))
            .unwrap_or(Preprocess::Resize);
        FolderOptions {
            preprocess,
            val_split: (spec.val_split)
                .or_else(|| recorded.get("val_split")?.parse().ok())
                .unwrap_or(RunSpec::FOLDER_HOLDOUT),
            split_seed: spec.split_seed.or_else(|| recorded.get("split_seed")?.parse().ok()).unwrap_or(0),
            // Weights trained on a folder read with bad files left out read it so again, to find its split.
            skip_bad_images: spec.skip_bad_images || recorded.get("skip_bad_images").is_some_and(|v| v == "true"),
            threads: crate::spec::thread_count(spec.threads).unwrap_or(1),
        }
    }
}

/// The files of an image folder: on disk, in a zip archive, or handed over in memory.
pub struct ImageFiles {
    source: Source,
}

enum Source {
    /// Not in a browser, which has no files of its own (and the module then needs no file system imports).
    #[cfg(not(target_arch = "wasm32"))]
    Disk,
    /// The folders of the archive or of the files (each path under the root name), and how to read a file.
    Listed { dirs: BTreeMap<PathBuf, BTreeSet<(PathBuf, bool)>>, files: Files },
}

enum Files {
    Memory(BTreeMap<PathBuf, Vec<u8>>),
    /// The archive, and each path's entry in it.
    Zip {
        bytes: Vec<u8>,
        index: BTreeMap<PathBuf, archive::Entry>,
    },
}

/// One image to read: its file and its class.
#[derive(Clone)]
struct Sample {
    path: PathBuf,
    label: Label,
}

impl ImageFiles {
    /// Larger image files are refused before they are read.
    pub const MAX_FILE_BYTES: u64 = 32 << 20;
    /// Larger images are refused by the decoder, before it allocates for them.
    pub const MAX_SIDE: u32 = 8192;

    /// The files on disk.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn disk() -> ImageFiles {
        ImageFiles { source: Source::Disk }
    }

    /// `files`, as (path, bytes) with `/` between folders, read as the folder `root`. A leading folder that all
    /// the paths share (a folder dropped whole) is left out, as is anything under `__MACOSX/`; a path that ends
    /// in `/` is an empty folder.
    pub fn from_memory(root: &Path, files: Vec<(String, Vec<u8>)>) -> Result<ImageFiles> {
        if files.len() > MAX_ENTRIES {
            return Err(Error::format(root, format!("more than {MAX_ENTRIES} files")));
        }
        let (dirs, files) = listing(root, files)?;
        Ok(ImageFiles { source: Source::Listed { dirs, files: Files::Memory(files) } })
    }

    /// The zip archive `bytes` (named `root` in messages and in the data set), read as a folder: its files are
    /// inflated one at a time, as they are decoded, each checked against its size and CRC-32. None may be larger
    /// than [`Self::MAX_FILE_BYTES`], and an archive whose files would inflate to more than 16 GiB in all (2 GiB
    /// in a browser) is refused before any is read.
    pub fn from_zip(root: &Path, bytes: Vec<u8>) -> Result<ImageFiles> {
        let bad = |why: String| Error::format(root, format!("not a zip archive that can be read: {why}"));
        let entries = archive::entries(&bytes, MAX_ENTRIES).map_err(bad)?;
        let inflated = entries.iter().fold(0u64, |sum, e| sum.saturating_add(e.size));
        if inflated > MAX_ZIP_INFLATED {
            let reason = format!("its files inflate to {inflated} bytes, more than the {MAX_ZIP_INFLATED}-byte limit");
            return Err(Error::format(root, reason));
        }
        let (dirs, index) = listing(root, entries.into_iter().map(|e| (e.name.clone(), e)).collect())?;
        Ok(ImageFiles { source: Source::Listed { dirs, files: Files::Zip { bytes, index } } })
    }

    /// Whether `dir` is a folder here.
    fn is_dir(&self, dir: &Path) -> bool {
        match &self.source {
            #[cfg(not(target_arch = "wasm32"))]
            Source::Disk => dir.is_dir(),
            Source::Listed { dirs, .. } => dirs.contains_key(dir),
        }
    }

    /// What `dir` holds: each entry's path, and whether it is a folder.
    fn entries(&self, dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
        match &self.source {
            #[cfg(not(target_arch = "wasm32"))]
            Source::Disk => {
                let io = |e| Error::io(dir, e);
                let mut out = Vec::new();
                for entry in std::fs::read_dir(dir).map_err(io)? {
                    let path = entry.map_err(io)?.path();
                    let is_dir = path.is_dir();
                    out.push((path, is_dir));
                }
                Ok(out)
            }
            Source::Listed { dirs, .. } => match dirs.get(dir) {
                Some(entries) => Ok(entries.iter().cloned().collect()),
                None => Err(Error::format(dir, "no such folder")),
            },
        }
    }

    /// The bytes of the file at `path` (those held in memory lent, not copied), refusing an empty one and one
    /// over [`Self::MAX_FILE_BYTES`].
    fn read(&self, path: &Path) -> std::result::Result<Cow<'_, [u8]>, ImageError> {
        let unreadable = |e: &dyn std::fmt::Display| ImageError::Unreadable(e.to_string());
        let checked = |len: u64| match len {
            0 => Err(ImageError::EmptyFile),
            len if len > ImageFiles::MAX_FILE_BYTES => {
                Err(ImageError::TooLarge { len, limit: ImageFiles::MAX_FILE_BYTES })
            }
            _ => Ok(()),
        };
        match &self.source {
            #[cfg(not(target_arch = "wasm32"))]
            Source::Disk => {
                checked(std::fs::metadata(path).map_err(|e| unreadable(&e))?.len())?;
                Ok(Cow::Owned(std::fs::read(path).map_err(|e| unreadable(&e))?))
            }
            Source::Listed { files: Files::Memory(files), .. } => {
                let bytes = files.get(path).ok_or_else(|| unreadable(&"no such file"))?;
                checked(bytes.len() as u64)?;
                Ok(Cow::Borrowed(bytes))
            }
            Source::Listed { files: Files::Zip { bytes, index }, .. } => {
                let entry = index.get(path).ok_or_else(|| unreadable(&"no such file"))?;
                // The size the directory gives; the reader holds the file to it.
                checked(entry.size)?;
                let bytes = archive::read(bytes, entry, ImageFiles::MAX_FILE_BYTES).map_err(|e| unreadable(&e))?;
                Ok(Cow::Owned(bytes))
            }
        }
    }

    /// Whether `dir` here holds an image folder: a folder that holds folders.
    pub fn holds_folders(&self, dir: &Path) -> bool {
        self.entries(dir).is_ok_and(|entries| entries.iter().any(|(_, is_dir)| *is_dir))
    }

    /// How many files named as images `dir` holds itself (not in its folders).
    pub fn images_in(&self, dir: &Path) -> usize {
        let entries = self.entries(dir).unwrap_or_default();
        entries.iter().filter(|(path, is_dir)| !is_dir && is_image_name(path)).count()
    }

    /// Reads the image folder `dir` with `options`; `progress` is told each time another image is decoded (from
    /// any thread), with the number done and the total. Returns the data set and the files left out, with why.
    pub fn load(
        &self,
        dir: &Path,
        options: &FolderOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(Dataset, Vec<(PathBuf, String)>)> {
        let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
        let split = !(self.is_dir(&train_dir) && self.is_dir(&test_dir));
        if split && !(options.val_split > 0.0 && options.val_split < 1.0) {
            let reason = format!("a validation share of {} is not between 0 and 1", options.val_split);
            return Err(Error::format(dir, reason));
        }
        let (class_names, parts) = match split {
            true => {
                let (names, samples) = self.class_samples(dir)?;
                (names, vec![samples])
            }
            false => self.train_and_test(dir, &train_dir, &test_dir)?,
        };
        let samples = parts.concat();
        let decoded = self.decode_all(&samples, options, progress);
        let bad: Vec<(PathBuf, String)> = samples
            .iter()
            .zip(&decoded)
            .filter_map(|(s, d)| d.as_ref().err().map(|e| (s.path.clone(), e.to_string())))
            .collect();
        if !bad.is_empty() && !options.skip_bad_images {
            return Err(Error::BadImages { total: samples.len(), named: name_some(&bad), count: bad.len() });
        }
        let mut splits = assemble(&parts, decoded);
        let (train, test) = match split {
            true => splits[0].stratified_holdout(class_names.len(), options.val_split, options.split_seed),
            false => {
                let test = splits.pop().expect("two parts");
                (splits.pop().expect("two parts"), test)
            }
        };
        for (name, s) in [("training", &train), ("validation", &test)] {
            if s.is_empty() {
                return Err(Error::format(dir, format!("no usable {name} image")));
            }
        }
        let mut data_options = BTreeMap::from([("preprocess".to_string(), options.preprocess.name().to_string())]);
        if split {
            data_options.insert("val_split".into(), options.val_split.to_string());
            data_options.insert("split_seed".into(), options.split_seed.to_string());
        }
        if options.skip_bad_images {
            data_options.insert("skip_bad_images".into(), "true".into());
        }
        let name = dir.display().to_string();
        Ok((Dataset { name, dir: dir.to_path_buf(), class_names, train, test, options: data_options }, bad))
    }

    /// The classes and the two parts of a folder with `train/` and `test/`, whose classes must agree.
    fn train_and_test(&self, dir: &Path, train: &Path, test: &Path) -> Result<(Vec<String>, Vec<Vec<Sample>>)> {
        let (names, train) = self.class_samples(train)?;
        let (test_names, test) = self.class_samples(test)?;
        if names != test_names {
            let only = |a: &[String], b: &[String]| a.iter().filter(|n| !b.contains(n)).cloned().collect::<Vec<_>>();
            let (only_train, only_test) = (only(&names, &test_names), only(&test_names, &names));
            let reason = format!(
                "train/ and test/ hold different classes: only in train/ {only_train:?}, only in test/ {only_test:?}"
            );
            return Err(Error::format(dir, reason));
        }
        Ok((names, vec![train, test]))
    }

    /// The class folders of `dir`, sorted by name, and every image in them, class by class, each class's sorted
    /// by path.
    fn class_samples(&self, dir: &Path) -> Result<(Vec<String>, Vec<Sample>)> {
        let mut names = Vec::new();
        for (path, is_dir) in self.entries(dir)? {
            if is_dir {
                let name = path.file_name().and_then(|n| n.to_str()).map(str::to_string);
                let name = name.ok_or_else(|| Error::format(&path, "a class folder's name must be UTF-8"))?;
                if name.len() > MAX_CLASS_NAME {
                    return Err(Error::format(
                        &path,
                        format!("a class folder's name is at most {MAX_CLASS_NAME} bytes"),
                    ));
                }
                names.push(name);
            }
        }
        names.sort();
        // Listed again only when it has no class folder, to say why.
        let loose = if names.is_empty() { self.images_in(dir) } else { 0 };
        if loose > 0 {
            let reason = format!(
                "{loose} image(s) but no class folder: put each class's images in a folder named after the class \
                 ({}/<class>/<image>), 2 to {MAX_CLASSES} of them",
                dir.display()
            );
            return Err(Error::format(dir, reason));
        }
        if names.len() < MIN_CLASSES || names.len() > MAX_CLASSES {
            let reason = format!(
                "{} class folder(s) {names:?}; expected {MIN_CLASSES} to {MAX_CLASSES}, one per class, each holding its \
                 images",
                names.len()
            );
            return Err(Error::format(dir, reason));
        }
        let mut samples = Vec::new();
        for (label, name) in names.iter().enumerate() {
            let class_dir = dir.join(name);
            let mut files = Vec::new();
            self.images_under(&class_dir, 0, &mut files)?;
            if files.is_empty() {
                let kinds = EXTENSIONS.join(", ");
                return Err(Error::format(&class_dir, format!("class `{name}` holds no image ({kinds})")));
            }
            files.sort();
            samples.extend(files.into_iter().map(|path| Sample { path, label: label as Label }));
            if samples.len() > MAX_IMAGES {
                return Err(Error::format(dir, format!("more than {MAX_IMAGES} images")));
            }
        }
        Ok((names, samples))
    }

    /// Adds the image files under `dir` (at `depth` below its class folder) to `files`.
    fn images_under(&self, dir: &Path, depth: usize, files: &mut Vec<PathBuf>) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::format(dir, format!("folders nested more than {MAX_DEPTH} deep in a class folder")));
        }
        for (path, is_dir) in self.entries(dir)? {
            if is_dir {
                self.images_under(&path, depth + 1, files)?;
            } else if is_image_name(&path) {
                files.push(path);
                if files.len() > MAX_IMAGES {
                    return Err(Error::format(dir, format!("more than {MAX_IMAGES} images")));
                }
            }
        }
        Ok(())
    }

    /// Every sample decoded, on at most `options.threads` threads, each taking the next image not yet taken.
    fn decode_all(
        &self,
        samples: &[Sample],
        options: &FolderOptions,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Vec<std::result::Result<[u8; IMAGE_LEN], ImageError>> {
        let decode = |sample: &Sample| {
            let bytes = self.read(&sample.path)?;
            options.preprocess.bytes(&GreyImage::decode(&bytes, ImageFiles::MAX_SIDE, MAX_DECODE_BYTES)?)
        };
        let threads = if cfg!(feature = "threads") { options.threads.clamp(1, samples.len().max(1)) } else { 1 };
        if threads == 1 {
            let done = |(i, sample)| (decode(sample), progress(i + 1, samples.len())).0;
            return samples.iter().enumerate().map(done).collect();
        }
        decode_on_threads(samples, threads, &decode, progress)
    }
}

/// `decode` of every sample on `threads` threads; `progress` is told the count done.
fn decode_on_threads(
    samples: &[Sample],
    threads: usize,
    decode: &(dyn Fn(&Sample) -> std::result::Result<[u8; IMAGE_LEN], ImageError> + Sync),
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Vec<std::result::Result<[u8; IMAGE_LEN], ImageError>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (next, done) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut results: Vec<_> = (0..samples.len()).map(|_| Err(ImageError::EmptyFile)).collect();
    let slots: Vec<Mutex<&mut std::result::Result<[u8; IMAGE_LEN], ImageError>>> =
        results.iter_mut().map(Mutex::new).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(sample) = samples.get(i) else { break };
                    let image = decode(sample);
                    **slots[i].lock().unwrap_or_else(|e| e.into_inner()) = image;
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, samples.len());
                }
            });
        }
    });
    drop(slots);
    results
}

impl GreyImage {
    /// Decodes PNG, JPEG, BMP, GIF or PNM bytes to grey levels (transparency composited over white paper, as
    /// drawings often have a transparent background), refusing, before it allocates for them, images larger than
    /// `max_side` on a side or needing more than `max_bytes` of memory.
    pub fn decode(bytes: &[u8], max_side: u32, max_bytes: u64) -> std::result::Result<GreyImage, ImageError> {
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageError::Unreadable(e.to_string()))?;
        if reader.format().is_none() {
            return Err(ImageError::UnknownFormat);
        }
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(max_side);
        limits.max_image_height = Some(max_side);
        limits.max_alloc = Some(max_bytes);
        reader.limits(limits);
        let decoded = reader.decode().map_err(|e| ImageError::Undecodable(e.to_string()))?;
        let la = decoded.to_luma_alpha8();
        let pixels = la
            .pixels()
            .map(|p| {
                let (l, a) = (p[0] as f32, p[1] as f32 / 255.0);
                (a * l + (1.0 - a) * 255.0).round() as u8
            })
            .collect();
        Ok(GreyImage::new(la.width() as usize, la.height() as usize, pixels).expect("one byte per pixel"))
    }
}

/// Whether `path` names an image file by its extension.
fn is_image_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// `path` (from an archive or a page, `/` between folders) as a relative path of plain names; one that climbs
/// out (`..`) or starts at a root is refused.
fn relative(root: &Path, path: &str) -> Result<PathBuf> {
    let out: PathBuf = Path::new(path).components().filter(|c| !matches!(c, Component::CurDir)).collect();
    if out.as_os_str().is_empty() || out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::format(root, format!("{path:?} is not a path inside the folder")));
    }
    Ok(out)
}

/// The folders and files of `entries` (each a path with `/` between names, a folder's ending in `/`, and what
/// to read it by), under `root`: without the leading folder they all share (an archive or a drop of one folder)
/// and without what a Mac's archiver adds (`__MACOSX/`).
#[allow(clippy::type_complexity)]
fn listing<T>(
    root: &Path,
    entries: Vec<(String, T)>,
) -> Result<(BTreeMap<PathBuf, BTreeSet<(PathBuf, bool)>>, BTreeMap<PathBuf, T>)> {
    let mut named = Vec::with_capacity(entries.len());
    for (path, what) in entries {
        let is_dir = path.ends_with('/');
        named.push((relative(root, &path)?, is_dir, what));
    }
    let top = shared_top_folder(named.iter().filter(|(_, is_dir, _)| !is_dir).map(|(p, _, _)| p));
    let mut dirs: BTreeMap<PathBuf, BTreeSet<(PathBuf, bool)>> =
        BTreeMap::from([(root.to_path_buf(), BTreeSet::new())]);
    let mut files = BTreeMap::new();
    for (path, is_dir, what) in named {
        let Some(path) = kept(&path, top.as_deref()) else { continue };
        if path.as_os_str().is_empty() {
            continue;
        }
        let path = root.join(path);
        add_to_folders(&mut dirs, root, (path.clone(), is_dir));
        if is_dir {
            dirs.entry(path).or_default();
        } else {
            files.insert(path, what);
        }
    }
    Ok((dirs, files))
}

/// The one folder every path starts with, when there is one and it is not a file's only component.
fn shared_top_folder<'a>(mut paths: impl Iterator<Item = &'a PathBuf>) -> Option<PathBuf> {
    let top = |p: &Path| {
        let mut c = p.components();
        let first = c.next()?;
        c.next().map(|_| PathBuf::from(first.as_os_str()))
    };
    let first = top(paths.next()?)?;
    paths.all(|p| top(p).as_ref() == Some(&first) || p.starts_with("__MACOSX")).then_some(first)
}

/// `path` without the shared top folder `strip`; `None` for what a folder's archive adds besides its files.
fn kept(path: &Path, strip: Option<&Path>) -> Option<PathBuf> {
    if path.starts_with("__MACOSX") {
        return None;
    }
    Some(match strip {
        Some(top) => path.strip_prefix(top).ok()?.to_path_buf(),
        None => path.to_path_buf(),
    })
}

/// Adds `entry` (a path under `root`, and whether it is a folder) to its folder, and that folder to its own, up
/// to `root`.
fn add_to_folders(dirs: &mut BTreeMap<PathBuf, BTreeSet<(PathBuf, bool)>>, root: &Path, entry: (PathBuf, bool)) {
    let mut child = entry;
    while let Some(parent) = child.0.parent().filter(|p| p.starts_with(root)).map(Path::to_path_buf) {
        let new = dirs.entry(parent.clone()).or_default().insert(child);
        // A folder listed before has its own folders listed too.
        if !new || parent == root {
            break;
        }
        child = (parent, true);
    }
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

/// The first few bad files, with why, for an error's one line.
fn name_some(bad: &[(PathBuf, String)]) -> String {
    let mut text: Vec<String> =
        bad.iter().take(NAMED_BAD_FILES).map(|(p, why)| format!("{} ({why})", p.display())).collect();
    if bad.len() > NAMED_BAD_FILES {
        text.push(format!("and {} more", bad.len() - NAMED_BAD_FILES));
    }
    text.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::IMAGE_LEN;

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

    /// The engine's resize (which frames a digit in 28x28 in every front end) against the `image` crate's
    /// `imageops::resize`, which the application used before: the same bytes for random pictures, sizes and both
    /// filters.
    #[test]
    fn resize_gives_the_bytes_of_the_image_crate() {
        use crate::digit::{Filter, resize};
        use image::imageops::FilterType;
        use image::{GrayImage, Luma};
        let mut rng = crate::rng::Rng::new(5);
        for case in 0..600 {
            let (w, h) = (1 + rng.below(120) as u32, 1 + rng.below(120) as u32);
            let img = GrayImage::from_fn(w, h, |_, _| Luma([rng.below(256) as u8]));
            let (nw, nh) = (1 + rng.below(40) as u32, 1 + rng.below(40) as u32);
            let grey = GreyImage::new(w as usize, h as usize, img.as_raw().clone()).unwrap();
            for (theirs, ours) in
                [(FilterType::Triangle, Filter::Triangle), (FilterType::CatmullRom, Filter::CatmullRom)]
            {
                let want = image::imageops::resize(&img, nw, nh, theirs);
                let got = resize(&grey, nw as usize, nh as usize, ours);
                assert_eq!((got.width, got.height), (nw as usize, nh as usize));
                assert_eq!(want.as_raw(), &got.pixels, "case {case}: {w}x{h} -> {nw}x{nh}, {ours:?}");
            }
        }
    }

    /// A PNG of a `class`-wide bar, `side` pixels square.
    fn png(class: u32, side: u32) -> Vec<u8> {
        let img = image::GrayImage::from_fn(side, side, |x, _| image::Luma([if x / 4 == class { 255 } else { 0 }]));
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    fn options() -> FolderOptions {
        FolderOptions { skip_bad_images: true, threads: 1, ..FolderOptions::of(&RunSpec::default(), &BTreeMap::new()) }
    }

    #[test]
    fn paths_that_climb_out_of_the_folder_are_refused() {
        for bad in ["../a/1.png", "/a/1.png", "a/../../1.png"] {
            let files = vec![(bad.to_string(), png(0, 28)), ("b/1.png".to_string(), png(1, 28))];
            let e = ImageFiles::from_memory(Path::new("drop"), files).err().expect(bad).to_string();
            assert!(e.starts_with("drop: ") && e.contains("not a path inside the folder"), "{e}");
        }
    }

    #[test]
    fn a_zip_entry_that_inflates_past_the_limit_is_left_out_and_says_why() {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in [("a/1.png", png(0, 28)), ("a/2.png", png(0, 28)), ("b/1.png", png(1, 28))] {
            zip.start_file(name, deflated).unwrap();
            zip.write_all(&bytes).unwrap();
        }
        zip.start_file("b/bomb.png", deflated).unwrap();
        zip.write_all(&vec![0; ImageFiles::MAX_FILE_BYTES as usize + 1]).unwrap();
        let bytes = zip.finish().unwrap().into_inner();
        assert!(bytes.len() < 1 << 20, "a small archive: {}", bytes.len());
        let files = ImageFiles::from_zip(Path::new("bomb.zip"), bytes).unwrap();
        let (data, skipped) = files.load(Path::new("bomb.zip"), &options(), &|_, _| {}).unwrap();
        assert_eq!(data.train.len() + data.test.len(), 3);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].0.ends_with("b/bomb.png") && skipped[0].1.contains("larger than"), "{skipped:?}");
    }

    #[test]
    fn an_empty_class_folder_in_an_archive_is_named_as_on_disk() {
        let files = vec![
            ("set/a/1.png".to_string(), png(0, 28)),
            ("set/b/1.png".to_string(), png(1, 28)),
            ("set/c/".to_string(), Vec::new()),
            ("set/c/notes.txt".to_string(), b"no image here".to_vec()),
        ];
        let files = ImageFiles::from_memory(Path::new("set"), files).unwrap();
        let e = files.load(Path::new("set"), &options(), &|_, _| {}).unwrap_err().to_string();
        assert_eq!(e, "set/c: class `c` holds no image (png, jpg, jpeg, bmp, gif, pgm)");
    }
}
