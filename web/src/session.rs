//! What the training page does, as plain Rust: load a data set from the bytes of its four IDX files, train the
//! recipe a few batches at a time, evaluate each epoch, predict a drawing, and hand out the weights. It is the
//! engine's own [`Training`], so a run here gives the bits a `lenet5 train --threads 1` run gives with the
//! same kernels.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::{Dataset, DatasetId, Split};
use lenet5_core::digit::{GreyImage, ImageError, Preprocess};
use lenet5_core::folder::{FolderOptions, ImageFiles};
use lenet5_core::infer::Predictor;
use lenet5_core::nn::params::init_params_for;
use lenet5_core::run::{Start, Training};
use lenet5_core::spec::RunSpec;
use lenet5_core::train::{EpochMetrics, Trainer};

/// Most workers a run in the page takes: past the cores of common machines, and each costs its stack and slice
/// buffers in the page's memory.
pub const MAX_WORKERS: usize = 16;
/// Most bytes of image files (a folder's, or a zip archive's) the page reads as one data set: with the decoded
/// images and a run, the page then stays under the 1 GiB its module's memory may grow to.
pub const MAX_FOLDER_BYTES: usize = 256 << 20;
/// Most files of a folder the page reads as one data set.
pub const MAX_FOLDER_FILES: usize = 200_000;
/// Bad files a load names (the rest are counted).
const NAMED_BAD_FILES: usize = 20;

/// What a session refuses, and why; the page shows the message.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The engine's: a data set's files, a setting out of range, a checkpoint.
    #[error(transparent)]
    Engine(#[from] lenet5_core::Error),
    #[error("no data set is loaded")]
    NoData,
    #[error("no run: start one first")]
    NoRun,
    #[error("the epoch has batches left to train")]
    EpochUnfinished,
    #[error("the drawing's size does not match its pixels")]
    DrawingSize,
    #[error(transparent)]
    Drawing(#[from] ImageError),
    #[error("{name}: more than {limit} {what}; the page reads at most that much as one data set")]
    FolderTooLarge { name: String, what: &'static str, limit: usize },
    #[error("no image files were given")]
    NoFiles,
}

/// A session's result.
pub type Result<T, E = SessionError> = std::result::Result<T, E>;

/// An image folder, read: its size, its classes, and the files left out.
#[derive(Clone, Debug, Serialize)]
pub struct FolderLoaded {
    pub dataset: String,
    pub train: usize,
    pub test: usize,
    pub classes: Vec<String>,
    /// How many files were left out, and the first few, each as `path (why)`.
    pub skipped: usize,
    pub bad: Vec<String>,
    /// The data options (`preprocess`, and `val_split` and `split_seed` when validation images were held out).
    pub options: BTreeMap<String, String>,
}

/// A run: the engine's training, and the splits it trains on when they are cut short.
struct Run {
    training: Training,
    /// The first `train_limit` training images, when there is a limit.
    train: Option<Split>,
    test: Option<Split>,
    /// Seconds spent training the epoch in progress (not counting pauses).
    epoch_seconds: f64,
    images_seen: u64,
}

/// Where a run stands, for the page.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The epoch in progress, or the next one (1-based).
    pub epoch: usize,
    pub epochs: usize,
    /// Batches of that epoch done, and in all.
    pub batch: usize,
    pub batches: usize,
    /// Mean loss and accuracy of the epoch's batches so far.
    pub loss: f64,
    pub accuracy: f64,
    pub images_seen: u64,
    /// The workers that share each step.
    pub workers: usize,
    pub finished: bool,
    pub best_epoch: Option<usize>,
    pub best_val_acc: Option<f64>,
    pub history: Vec<EpochMetrics>,
}

/// What the page has loaded and trained.
#[derive(Default)]
pub struct Session {
    data: Option<Dataset>,
    run: Option<Run>,
    /// The files of a folder being handed over, and their bytes in all.
    staged: Vec<(String, Vec<u8>)>,
    staged_bytes: usize,
}

impl Session {
    /// Loads a data set from its four files as fetched (gzipped or raw), in the order of [`DatasetId::FILES`]; returns how
    /// many training and test images it holds.
    pub fn load(&mut self, name: &str, files: [Vec<u8>; 4]) -> Result<(usize, usize)> {
        let [train_images, train_labels, test_images, test_labels] = files;
        let path = |i: usize| Path::new(name).join(format!("{}.gz", DatasetId::FILES[i]));
        let class_names = DatasetId::parse(name).class_names();
        let split = |images, labels, i, split| {
            let s = Split::from_idx_bytes(images, labels, &path(i), &path(i + 1))?;
            s.check_labels(class_names.len(), &path(i + 1))?;
            match s.is_empty() {
                true => Err(lenet5_core::Error::EmptySplit { dataset: name.to_string(), split }),
                false => Ok(s),
            }
        };
        let train = split(train_images, train_labels, 0, "training")?;
        let test = split(test_images, test_labels, 2, "test")?;
        self.run = None;
        let sizes = (train.len(), test.len());
        let (name, dir) = (name.to_string(), name.into());
        self.data = Some(Dataset { name, dir, class_names, train, test, options: BTreeMap::new() });
        Ok(sizes)
    }

    /// Takes one file of a folder (its path inside the folder, `/` between names, and its bytes), for
    /// [`Session::load_folder`]; refused past [`MAX_FOLDER_FILES`] files or [`MAX_FOLDER_BYTES`] bytes.
    pub fn stage_file(&mut self, path: String, bytes: Vec<u8>) -> Result<()> {
        let too_large = |what, limit| SessionError::FolderTooLarge { name: "the folder".into(), what, limit };
        if self.staged.len() >= MAX_FOLDER_FILES {
            return Err(too_large("files", MAX_FOLDER_FILES));
        }
        self.staged_bytes += bytes.len();
        if self.staged_bytes > MAX_FOLDER_BYTES {
            self.clear_staged();
            return Err(too_large("bytes", MAX_FOLDER_BYTES));
        }
        self.staged.push((path, bytes));
        Ok(())
    }

    /// Forgets the files staged so far (a hand-over that failed part way).
    pub fn clear_staged(&mut self) {
        self.staged = Vec::new();
        self.staged_bytes = 0;
    }

    /// Reads the files staged so far as the image folder `name`, as `lenet5 train --dataset DIR` reads a folder,
    /// with the folder settings of `settings` (a run specification's JSON: `preprocess`, `val_split`,
    /// `split_seed`, `skip_bad_images`).
    pub fn load_folder(&mut self, name: &str, settings: &str) -> Result<FolderLoaded> {
        let files = std::mem::take(&mut self.staged);
        self.clear_staged();
        if files.is_empty() {
            return Err(SessionError::NoFiles);
        }
        self.load_images(name, ImageFiles::from_memory(Path::new(name), files)?, settings)
    }

    /// Reads the zip archive `bytes` (named `name`) as an image folder; see [`Session::load_folder`].
    pub fn load_zip(&mut self, name: &str, bytes: Vec<u8>, settings: &str) -> Result<FolderLoaded> {
        if bytes.len() > MAX_FOLDER_BYTES {
            return Err(SessionError::FolderTooLarge { name: name.into(), what: "bytes", limit: MAX_FOLDER_BYTES });
        }
        self.load_images(name, ImageFiles::from_zip(Path::new(name), bytes)?, settings)
    }

    fn load_images(&mut self, name: &str, files: ImageFiles, settings: &str) -> Result<FolderLoaded> {
        let spec = RunSpec::from_json_text(settings)?.validate()?;
        let options = FolderOptions { threads: 1, ..FolderOptions::of(spec.spec(), &BTreeMap::new()) };
        let (data, skipped) = files.load(Path::new(name), &options, &|_, _| {})?;
        self.run = None;
        let bad = skipped.iter().take(NAMED_BAD_FILES).map(|(p, why)| format!("{} ({why})", p.display())).collect();
        let loaded = FolderLoaded {
            dataset: name.to_string(),
            train: data.train.len(),
            test: data.test.len(),
            classes: data.class_names.clone(),
            skipped: skipped.len(),
            bad,
            options: data.options.clone(),
        };
        self.data = Some(data);
        Ok(loaded)
    }

    /// The loaded data set's class names.
    pub fn class_names(&self) -> &[String] {
        self.data.as_ref().map_or(&[], |d| &d.class_names)
    }

    /// Starts a new run with `settings`, the JSON of a run specification ([`RunSpec`]: the recipe, with the
    /// object's settings in place of its own), from PyTorch's initialisation for its seed. The page holds its
    /// data in memory: the settings of data on disk have no effect here. `threads` (one by default, at most
    /// [`MAX_WORKERS`]) are the Web Workers that share each step, in the module built with the `threads` feature;
    /// the other module runs one thread whatever it is told. A run takes no more than its batch size keeps busy
    /// ([`Trainer::useful_workers`]: 2 at the recipe's 16): in WebAssembly a waiting worker cannot hand its
    /// core back, and a browser counts both threads of a core as cores. The number never changes a result.
    pub fn configure(&mut self, settings: &str) -> Result<()> {
        let data = self.data.as_ref().ok_or(SessionError::NoData)?;
        let spec = RunSpec::from_json_text(settings)?.validate()?;
        // A folder without train/ and test/ held its validation images out as it was read, as on the command line.
        let config = match data.options.contains_key("val_split") {
            true => spec.config().without_holdout(),
            false => spec.config().clone(),
        };
        // Cut-short splits are copied once here, as `lenet5 train` cuts them.
        let cut = |split: &Split, limit| match split.limited(limit) {
            std::borrow::Cow::Owned(s) => Some(s),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let (train, test) = (cut(&data.train, config.train_limit), cut(&data.test, config.test_limit));
        let start = Start::Fresh { params: init_params_for(config.seed, data.class_names.len()) };
        // The last run's threads end first: the page has helper threads for one run's.
        self.run = None;
        let workers = spec.spec().threads.unwrap_or(1).min(MAX_WORKERS).min(Trainer::useful_workers(config.batch_size));
        let training = Training::new(config, &data.name, &data.class_names, start, workers)?;
        self.run = Some(Run { training, train, test, epoch_seconds: 0.0, images_seen: 0 });
        Ok(())
    }

    fn run(&self) -> Result<(&Run, &Dataset)> {
        match (&self.run, &self.data) {
            (Some(run), Some(data)) => Ok((run, data)),
            _ => Err(SessionError::NoRun),
        }
    }

    /// Trains at most `max_batches` batches of the epoch in progress (beginning the next one if none is);
    /// returns how many it trained. `now` is a clock in seconds.
    pub fn train(&mut self, max_batches: usize, now: &dyn Fn() -> f64) -> Result<usize> {
        let (Some(run), Some(data)) = (&mut self.run, &self.data) else { return Err(SessionError::NoRun) };
        let train = run.train.as_ref().unwrap_or(&data.train);
        let before = run.training.epoch_in_progress().map_or(0, |e| e.batches_done());
        let t0 = now();
        run.training.train_batches(train, max_batches, &mut ())?;
        run.epoch_seconds += now() - t0;
        let after = run.training.epoch_in_progress().map_or(0, |e| e.batches_done());
        let batch_size = run.training.state().config.batch_size;
        let images = |batches: usize| (batches * batch_size).min(train.len());
        run.images_seen += (images(after) - images(before)) as u64;
        Ok(after - before)
    }

    /// Evaluates the epoch whose batches are all done on the test images, and records it.
    pub fn finish_epoch(&mut self, now: &dyn Fn() -> f64) -> Result<EpochMetrics> {
        let (Some(run), Some(data)) = (&mut self.run, &self.data) else { return Err(SessionError::NoRun) };
        if !run.training.epoch_in_progress().is_some_and(|e| e.is_done()) {
            return Err(SessionError::EpochUnfinished);
        }
        let test = run.test.as_ref().unwrap_or(&data.test);
        let outcome = run.training.finish_epoch(test, run.epoch_seconds, now);
        run.epoch_seconds = 0.0;
        Ok(outcome.metrics)
    }

    /// Where the run stands.
    pub fn status(&self) -> Result<Status> {
        let (run, data) = self.run()?;
        let state = run.training.state();
        let train_len = run.train.as_ref().unwrap_or(&data.train).len();
        let batches = train_len.div_ceil(state.config.batch_size);
        let (epoch, batch, (loss, accuracy)) = match (run.training.epoch_in_progress(), state.history.last()) {
            (Some(e), _) => (e.epoch, e.batches_done(), e.means()),
            // Finished: the last epoch, whole.
            (None, Some(m)) if run.training.is_finished() => (m.epoch, batches, (m.train_loss, m.train_acc)),
            (None, _) => (state.epoch + 1, 0, (0.0, 0.0)),
        };
        Ok(Status {
            epoch,
            epochs: state.config.epochs,
            batch,
            batches,
            loss,
            accuracy,
            images_seen: run.images_seen,
            workers: run.training.trainer().workers(),
            finished: run.training.is_finished(),
            best_epoch: state.best_epoch,
            best_val_acc: state.best_val_acc,
            history: state.history.clone(),
        })
    }

    /// The current parameters, in the engine's flat layout (conv1's six 5x5 kernels first).
    pub fn params(&self) -> Option<&[f32]> {
        Some(self.run.as_ref()?.training.trainer().params())
    }

    /// The momentum, laid out as the parameters.
    pub fn velocity(&self) -> Option<&[f32]> {
        Some(self.run.as_ref()?.training.trainer().velocity())
    }

    /// Reads a drawing (`width x height` grey bytes, light ink on dark or the reverse) with the weights as they
    /// are now: the class, every class's probability, and the 28x28 image the network saw.
    pub fn predict(&self, grey: Vec<u8>, width: usize, height: usize) -> Result<Prediction> {
        let (run, data) = self.run()?;
        let picture = GreyImage::new(width, height, grey).ok_or(SessionError::DrawingSize)?;
        let preprocess = data.options.get("preprocess").and_then(|p| Preprocess::parse(p)).unwrap_or(Preprocess::Mnist);
        let image = preprocess.input(&picture)?;
        let trainer = run.training.trainer();
        let checkpoint = Checkpoint::new(trainer.params().to_vec(), trainer.config().head);
        let p = Predictor::new(checkpoint).predict(&[image]).remove(0);
        Ok(Prediction { class: p.class, probabilities: p.probabilities.to_vec(), input: image.to_vec() })
    }

    /// The weights as a safetensors checkpoint: the best epoch's, as `lenet5 train` writes `best.safetensors`,
    /// or, before an epoch is finished, the current ones.
    pub fn checkpoint(&self) -> Result<Vec<u8>> {
        let (run, data) = self.run()?;
        let mut ck = run.training.best_checkpoint().unwrap_or_else(|| {
            let mut ck = run.training.state_checkpoint();
            ck.momentum = None;
            ck.metadata.retain(|k, _| k == "dataset");
            ck
        });
        // How the images were made, so that `lenet5 predict` and `serve` prepare pictures the same way.
        for (name, value) in &data.options {
            ck.metadata.insert(format!("data.{name}"), value.clone());
        }
        Ok(ck.to_bytes()?)
    }

    /// Runs two training steps and an evaluation on a few made-up images in a session of their own, on one
    /// worker and then, where `workers` is more, on two, and returns how many images each trained on. The page
    /// calls it once, as soon as the module is ready: a browser first runs each function with a quick baseline
    /// compiler and compiles its fast code in the background only once the function has run a while, and with
    /// every core training (two workers on two cores) that compilation waited for a core while the workers ran
    /// the slow code (the second epoch of 20,000 images trained 8 - 25% more images a second than the first).
    /// Called while the page still loads its data, the compilation has a core to itself. Two or more workers
    /// share a step by other code than one runs alone (its parts in phases), so both are warmed: with one only,
    /// a two-worker run in Chromium still compiled 87 functions with the baseline compiler and 24 with the
    /// optimizing one after it started; now 18 and 20. Nothing of it is kept.
    pub fn warm_up(workers: usize) -> Result<usize> {
        const IMAGES: usize = 32;
        let idx = |magic: u8, dims: &[u32], values: Vec<u8>| {
            let mut bytes = vec![0, 0, 8, magic];
            bytes.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
            bytes.extend(values);
            bytes
        };
        // Every image lit somewhere else, so that no kernel takes a shortcut over blank rows throughout.
        let images = |n: usize| {
            let pixels = (0..n * 28 * 28).map(|i| ((i * 37 + i / 784 * 101) % 256) as u8).collect();
            idx(3, &[n as u32, 28, 28], pixels)
        };
        let labels = |n: usize| idx(1, &[n as u32], (0..n).map(|i| (i % 10) as u8).collect());
        let mut session = Session::default();
        let files = [images(IMAGES), labels(IMAGES), images(IMAGES / 2), labels(IMAGES / 2)];
        session.load(&DatasetId::Mnist.name(), files)?;
        let runs: &[usize] = if workers > 1 { &[1, 2] } else { &[1] };
        for threads in runs {
            session.configure(&format!("{{\"threads\": {threads}}}"))?;
            let clock = || 0.0;
            session.train(usize::MAX, &clock)?;
            session.finish_epoch(&clock)?;
        }
        Ok(IMAGES)
    }
}

/// A drawing, read.
#[derive(Clone, Debug, Serialize)]
pub struct Prediction {
    pub class: usize,
    pub probabilities: Vec<f32>,
    /// The 28x28 image the network saw, in [0, 1].
    pub input: Vec<f32>,
}
