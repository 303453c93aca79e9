//! Data sets on disk: finding them, loading them, and turning a list of indices into a batch.

use std::path::{Path, PathBuf};

use super::idx::{
    IdxError, IdxImages, decompress_if_gzip, parse_images_owned, parse_labels, read_images, read_images_digest,
    read_labels, read_labels_digest,
};
use crate::base::{IMAGE_LEN, IMAGE_SIZE, Label, MAX_CLASSES, MIN_CLASSES, MNIST_CLASS_COUNT, MNIST_CLASSES};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// The four files of an IDX data set, as published (each may also carry a `.gz` suffix).
pub(crate) const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// What the four files of each data set are called in messages, in [`FILES`] order.
const FILE_ROLES: [&str; 4] = ["training images", "training labels", "test images", "test labels"];

/// The SHA-256 of the published files of MNIST and Fashion-MNIST (decompressed), in [`FILES`] order: a known data
/// set is identified by its content, not by where it lies.
const PUBLISHED: [(DatasetId, [&str; 4]); 2] = [
    (
        DatasetId::Mnist,
        [
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ],
    ),
    (
        DatasetId::FashionMnist,
        [
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ],
    ),
];

pub(crate) const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Which data set to use: a known one, found under the data root, or a directory holding the four files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetId {
    Mnist,
    FashionMnist,
    Dir(PathBuf),
}

impl DatasetId {
    /// The four IDX files of a data set: training images and labels, test images and labels (each raw or `.gz`).
    pub const FILES: [&'static str; 4] = FILES;
    /// The test split's two files.
    pub const TEST_FILES: [&'static str; 2] = TEST_FILES;

    /// `dir/name`, or `dir/name.gz`, whichever exists.
    pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
        find_file(dir, name)
    }

    /// The directory under `root` that holds `files` of this data set (see [`Dataset::load`] for where it looks).
    pub fn locate_files(&self, root: &Path, files: &'static [&'static str]) -> Result<PathBuf> {
        locate_files(self, root, files)
    }

    /// The hex SHA-256 of each of the published files of a known data set (decompressed), in [`Self::FILES`]
    /// order; `None` for a directory, whose files can be anything.
    pub fn sha256(&self) -> Option<[&'static str; 4]> {
        PUBLISHED.iter().find(|(id, _)| id == self).map(|(_, sums)| *sums)
    }

    /// `mnist`, `fashion-mnist`, or a path to a directory.
    pub fn parse(s: &str) -> DatasetId {
        match s.to_ascii_lowercase().as_str() {
            "mnist" => DatasetId::Mnist,
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => DatasetId::FashionMnist,
            _ => DatasetId::Dir(PathBuf::from(s)),
        }
    }

    /// How messages name the data set: `MNIST`, `Fashion-MNIST`, or the directory.
    fn title(&self) -> String {
        match self {
            DatasetId::Mnist => "MNIST".into(),
            DatasetId::FashionMnist => "Fashion-MNIST".into(),
            DatasetId::Dir(p) => p.display().to_string(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            DatasetId::Mnist => "mnist".into(),
            DatasetId::FashionMnist => "fashion-mnist".into(),
            DatasetId::Dir(p) => p.display().to_string(),
        }
    }

    pub fn class_names(&self) -> Vec<String> {
        let names: &[&str] = match self {
            DatasetId::FashionMnist => &FASHION_CLASSES,
            _ => &MNIST_CLASSES,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Directories searched under `root`, in order: torchvision's layout, then a named folder, then `root` itself.
    fn candidates(&self, root: &Path) -> Vec<PathBuf> {
        match self {
            DatasetId::Mnist => vec![root.join("MNIST/raw"), root.join("mnist"), root.to_path_buf()],
            DatasetId::FashionMnist => {
                vec![root.join("FashionMNIST/raw"), root.join("fashion-mnist"), root.to_path_buf()]
            }
            DatasetId::Dir(p) => vec![p.clone(), p.join("raw")],
        }
    }
}

/// The path of one of the four files in `dir`, raw or gzipped.
pub(crate) fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))].into_iter().find(|p| p.is_file())
}

/// The two files of the test split (of [`FILES`]).
pub(crate) const TEST_FILES: [&str; 2] = [FILES[2], FILES[3]];

/// Checks that file `k` of [`FILES`], read from `path` with content `digest`, is the published file of `id` (any
/// content will do for a directory). A file of the other known data set is named as such.
fn check_published(id: &DatasetId, k: usize, path: &Path, digest: &str) -> Result<()> {
    let Some(expected) = id.sha256() else { return Ok(()) };
    if digest == expected[k] {
        return Ok(());
    }
    let reason = match PUBLISHED.iter().find(|(_, sums)| sums.contains(&digest)) {
        Some((other, sums)) => {
            let role = FILE_ROLES[sums.iter().position(|s| *s == digest).expect("found")];
            format!(
                "this is {}'s {role}, not {}'s {}: for {}, choose that data set (--dataset {})",
                other.title(),
                id.title(),
                FILE_ROLES[k],
                other.title(),
                other.name()
            )
        }
        None => format!(
            "not {}'s published {} (its SHA-256 is {digest}, expected {}); other IDX files are read by naming \
             their directory as the data set (--dataset DIR)",
            id.title(),
            FILE_ROLES[k],
            expected[k]
        ),
    };
    Err(Error::format(path, reason))
}

/// One split of a data set, files `k` and `k + 1` of [`FILES`] in `dir`, checked to be the published files
/// when `id` is a known data set.
fn load_split(id: &DatasetId, dir: &Path, k: usize) -> Result<Split> {
    let path = |f: usize| find_file(dir, FILES[f]).expect("located with every file");
    let (images, labels) = (path(k), path(k + 1));
    let (img, images_digest) = read_images_digest(&images)?;
    check_published(id, k, &images, &images_digest)?;
    let (lab, labels_digest) = read_labels_digest(&labels)?;
    check_published(id, k + 1, &labels, &labels_digest)?;
    Split::from_idx(img, lab, &images, &labels)
}

/// The first candidate directory that holds all four files.
pub(crate) fn locate(id: &DatasetId, root: &Path) -> Result<PathBuf> {
    locate_files(id, root, &FILES)
}

/// The first candidate directory that holds `files` (all four, or the test split's [`TEST_FILES`]).
pub(crate) fn locate_files(id: &DatasetId, root: &Path, files: &'static [&'static str]) -> Result<PathBuf> {
    let candidates = id.candidates(root);
    for dir in &candidates {
        if files.iter().all(|f| find_file(dir, f).is_some()) {
            return Ok(dir.clone());
        }
    }
    Err(Error::DataNotFound { dataset: id.name(), files, looked_in: candidates })
}

/// One split: 28x28 grey images kept as bytes, and their labels.
#[derive(Clone, Debug, Default)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<Label>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A 64-bit digest of the images and labels, in order: a run records it, so that it can tell when it is
    /// resumed on other data. Not cryptographic; any change of a pixel, a label or the order shows.
    pub fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ self.len() as u64;
        let mut mix = |word: u64| {
            h = (h ^ word).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29);
        };
        let labels: Vec<u8> = self.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        for bytes in [&self.images, &labels] {
            let mut chunks = bytes.chunks_exact(8);
            for c in &mut chunks {
                mix(u64::from_le_bytes(c.try_into().expect("8 bytes")));
            }
            let mut tail = [0u8; 8];
            tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
            mix(u64::from_le_bytes(tail) ^ (bytes.len() as u64).rotate_left(32));
        }
        h
    }

    /// The raw bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]
    }

    /// The split cut into the images kept and those held out: from each of the `classes` classes, `share` of
    /// its images (rounded, at least one and never all of a class of two or more) drawn by `seed`. Both parts
    /// keep this split's order.
    pub fn stratified_holdout(&self, classes: usize, share: f64, seed: u64) -> (Split, Split) {
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); classes];
        for (i, &label) in self.labels.iter().enumerate() {
            if let Some(class) = members.get_mut(label as usize) {
                class.push(i as u32);
            }
        }
        let mut held_out = vec![false; self.len()];
        for (class, members) in members.iter_mut().enumerate() {
            let n = members.len();
            let take = if n < 2 { 0 } else { ((n as f64 * share).round() as usize).clamp(1, n - 1) };
            Rng::derived(seed, 7, class as u64).shuffle(members);
            for &i in &members[..take] {
                held_out[i as usize] = true;
            }
        }
        let (mut kept, mut out) = (Split::default(), Split::default());
        for (i, &is_out) in held_out.iter().enumerate() {
            let part = if is_out { &mut out } else { &mut kept };
            part.images.extend_from_slice(self.image(i));
            part.labels.push(self.labels[i]);
        }
        (kept, out)
    }

    /// The split as the bytes of two IDX files: its images (`N x 28 x 28`, magic 2051) and its labels (magic
    /// 2049; every label must fit a byte, as in the IDX format).
    pub fn to_idx(&self) -> (Vec<u8>, Vec<u8>) {
        let labels: Vec<u8> = self.labels.iter().map(|&l| l as u8).collect();
        (
            super::idx::encode_images(self.len(), IMAGE_SIZE, IMAGE_SIZE, &self.images),
            super::idx::encode_labels(&labels),
        )
    }

    /// Every label is a class of `0..classes` (the labels read from `labels`, named in the error), and `classes` is
    /// a number of classes the network takes.
    pub fn check_labels(&self, classes: usize, labels: &Path) -> Result<()> {
        check_labels(self, classes, labels)
    }

    /// The first `limit` images of the split (all of them when `None`), copied only when cut.
    pub fn limited(&self, limit: Option<usize>) -> std::borrow::Cow<'_, Split> {
        match limit {
            Some(n) if n < self.len() => {
                let mut s = self.clone();
                s.truncate(n);
                std::borrow::Cow::Owned(s)
            }
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

    /// Keeps only the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            self.labels.truncate(n);
            self.images.truncate(n * IMAGE_LEN);
        }
    }

    /// Asks the CPU to start loading the images at `indices` into this core's caches, for a [`Split::gather`] a
    /// little later: a batch's images lie anywhere in the data set, and waiting for them costs more than
    /// converting them. Only a hint (nothing on targets without one); out-of-range indices are skipped.
    pub fn prefetch(&self, indices: &[u32]) {
        #[cfg(target_arch = "x86_64")]
        for &i in indices {
            if i as usize >= self.len() {
                continue;
            }
            let bytes = self.image(i as usize);
            // One hint per cache line, and one for the last byte, which may start another line.
            for at in (0..IMAGE_LEN).step_by(64).chain([IMAGE_LEN - 1]) {
                // SAFETY: a prefetch never faults, and the address is inside `bytes` anyway.
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(at).cast());
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = indices;
    }

    /// Writes the images at `indices` scaled to [0, 1] (like torchvision's `ToTensor`) into `x (n, 1, 28, 28)`,
    /// and their labels into `y (n)`.
    pub fn gather(&self, indices: &[u32], x: &mut [f32], y: &mut [Label]) {
        self.gather_images(indices, x);
        self.gather_labels(indices, y);
    }

    /// The images of [`Split::gather`] alone.
    pub fn gather_images(&self, indices: &[u32], x: &mut [f32]) {
        for (&i, x) in indices.iter().zip(x.chunks_exact_mut(IMAGE_LEN)) {
            to_unit_range(self.image(i as usize), x);
        }
    }

    /// The labels of [`Split::gather`] alone.
    pub fn gather_labels(&self, indices: &[u32], y: &mut [Label]) {
        for (&i, y) in indices.iter().zip(y) {
            *y = self.labels[i as usize];
        }
    }

    pub fn load(images: &Path, labels: &Path) -> Result<Split> {
        Split::from_idx(read_images(images)?, read_labels(labels)?, images, labels)
    }

    /// A split from the contents of its two IDX files, raw or gzipped (`images` and `labels` name them in
    /// errors): images of 28x28, as many labels as images, each a class.
    pub fn from_idx_bytes(images: Vec<u8>, labels: Vec<u8>, images_name: &Path, labels_name: &Path) -> Result<Split> {
        let img = decompress_if_gzip(images)
            .and_then(parse_images_owned)
            .map_err(|e: IdxError| Error::format(images_name, e.to_string()))?;
        let lab = decompress_if_gzip(labels)
            .and_then(|b| parse_labels(&b))
            .map_err(|e: IdxError| Error::format(labels_name, e.to_string()))?;
        Split::from_idx(img, lab, images_name, labels_name)
    }

    fn from_idx(img: IdxImages, lab: Vec<u8>, images: &Path, labels: &Path) -> Result<Split> {
        if img.rows != IMAGE_SIZE || img.cols != IMAGE_SIZE {
            return Err(Error::format(
                images,
                format!("images are {}x{}, expected {IMAGE_SIZE}x{IMAGE_SIZE}", img.rows, img.cols),
            ));
        }
        if lab.len() != img.count {
            return Err(Error::format(
                labels,
                format!("{} labels, but {} holds {} images", lab.len(), images.display(), img.count),
            ));
        }
        Ok(Split { images: img.pixels, labels: lab.into_iter().map(Label::from).collect() })
    }
}

/// A loaded data set.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub dir: PathBuf,
    pub class_names: Vec<String>,
    pub train: Split,
    pub test: Split,
    /// How the images were read, where there was a choice (for an image folder: its preprocessing and
    /// validation split), as `name -> value`. A run keeps them, checkpoints carry them as `data.<name>`
    /// metadata, and a resumed run reads its data the same way.
    pub options: std::collections::BTreeMap<String, String>,
}

impl Dataset {
    /// Finds and loads both splits. MNIST and Fashion-MNIST must be their published files (checked by SHA-256:
    /// other files under their name are an error that says what they are) and have ten classes; an IDX directory
    /// of other data has as many as its largest label says (labels `0..K`, with `2 <= K <= 1000`).
    pub fn load(id: &DatasetId, root: &Path) -> Result<Dataset> {
        let dir = locate(id, root)?;
        let path = |f: &str| find_file(&dir, f).expect("locate checked every file");
        let (train, test) = (load_split(id, &dir, 0)?, load_split(id, &dir, 2)?);
        let largest = train.labels.iter().chain(&test.labels).copied().max().unwrap_or(0) as usize;
        let classes = match id {
            DatasetId::Mnist | DatasetId::FashionMnist => MNIST_CLASS_COUNT,
            DatasetId::Dir(_) => (largest + 1).max(MIN_CLASSES),
        };
        for (split, f) in [(&train, FILES[1]), (&test, FILES[3])] {
            check_labels(split, classes, &path(f))?;
        }
        let class_names = match id {
            DatasetId::Dir(_) if classes != MNIST_CLASS_COUNT => (0..classes).map(|k| k.to_string()).collect(),
            _ => id.class_names(),
        };
        Ok(Dataset { name: id.name(), class_names, train, test, dir, options: Default::default() })
    }

    /// Loads only the test split (for evaluation and prediction), whose labels must be below `classes`.
    pub fn load_test(id: &DatasetId, root: &Path, classes: usize) -> Result<Split> {
        let dir = locate_files(id, root, &TEST_FILES)?;
        let path = |f: &str| find_file(&dir, f).expect("locate checked every file");
        let test = load_split(id, &dir, 2)?;
        check_labels(&test, classes, &path(FILES[3]))?;
        Ok(test)
    }

    /// The data set with every label lowered by `offset`, for IDX sets that number their classes from another
    /// value (EMNIST's letters: 1 to 26), and its classes counted again (named by their labels as stored).
    pub fn with_label_offset(mut self, offset: Label) -> Result<Dataset> {
        for split in [&mut self.train, &mut self.test] {
            if let Some(low) = split.labels.iter().find(|&&l| l < offset) {
                return Err(Error::format(&self.dir, format!("label {low} is below the label offset {offset}")));
            }
            split.labels.iter_mut().for_each(|l| *l -= offset);
        }
        let largest = self.train.labels.iter().chain(&self.test.labels).copied().max().unwrap_or(0) as usize;
        let classes = (largest + 1).max(MIN_CLASSES);
        check_labels(&self.train, classes, &self.dir)?;
        self.class_names = (0..classes).map(|k| (k + offset as usize).to_string()).collect();
        self.options.insert("label_offset".into(), offset.to_string());
        Ok(self)
    }

    /// Classes of the data set (K): its labels are `0..K`.
    pub fn classes(&self) -> usize {
        self.class_names.len()
    }
}

/// Every label of `split` (read from `labels`) is a class of `0..classes`, and `classes` is a number of classes
/// the network takes.
pub(crate) fn check_labels(split: &Split, classes: usize, labels: &Path) -> Result<()> {
    if !(MIN_CLASSES..=MAX_CLASSES).contains(&classes) {
        return Err(Error::format(labels, format!("{classes} classes; expected {MIN_CLASSES} to {MAX_CLASSES}")));
    }
    if let Some(bad) = split.labels.iter().find(|&&l| l as usize >= classes) {
        return Err(Error::format(labels, format!("label {bad} is out of range 0..{classes}")));
    }
    Ok(())
}

#[inline(always)]
fn to_unit_range_body<const FMA: bool>(pixels: &[u8], out: &mut [f32]) {
    for (dst, &p) in out.iter_mut().zip(pixels) {
        *dst = p as f32 / 255.0;
    }
}

crate::simd::dispatch! {
    /// `pixel / 255` for each pixel, as `ToTensor` divides (vectorised where the CPU allows).
    fn to_unit_range(pixels: &[u8], out: &mut [f32]) => to_unit_range_body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_scales_pixels_and_prefetch_skips_what_is_not_there() {
        let split = Split { images: (0..2 * IMAGE_LEN).map(|i| (i % 256) as u8).collect(), labels: vec![3, 7] };
        split.prefetch(&[1, 0, 2, u32::MAX]);
        let (mut x, mut y) = (vec![0.0; IMAGE_LEN], [0 as Label]);
        split.gather(&[1], &mut x, &mut y);
        assert_eq!(y, [7]);
        assert_eq!(x[0], (IMAGE_LEN % 256) as f32 / 255.0);
        assert_eq!(x[255 - IMAGE_LEN % 256], 1.0);
    }
}
