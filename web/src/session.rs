//! What the training page does, as plain Rust: load a data set from the bytes of its four IDX files, train the
//! recipe a few batches at a time, evaluate each epoch, predict a drawing, and hand out the weights. It is the
//! engine's own [`Training`], so a run here gives the bits a `lenet5 train --threads 1` run gives with the
//! same kernels.

use std::path::Path;

use serde::{Deserialize, Serialize};

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::Split;
use lenet5_core::data::dataset::{DatasetId, FILES};
use lenet5_core::digit::{GreyImage, frame};
use lenet5_core::infer::Predictor;
use lenet5_core::nn::Head;
use lenet5_core::nn::params::init_params;
use lenet5_core::optim::Sgd;
use lenet5_core::run::{Start, Training, limited};
use lenet5_core::train::{EpochMetrics, TrainConfig};

/// A data set, loaded.
struct Data {
    name: String,
    class_names: Vec<String>,
    train: Split,
    test: Split,
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

/// The page's settings: the recipe's by default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub seed: u64,
    pub head: String,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        let c = TrainConfig::default();
        Settings {
            epochs: c.epochs,
            batch_size: c.batch_size,
            lr: c.sgd.lr,
            momentum: c.sgd.momentum,
            seed: c.seed,
            head: c.head.name().into(),
            train_limit: None,
            test_limit: None,
        }
    }
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
    pub finished: bool,
    pub best_epoch: Option<usize>,
    pub best_val_acc: Option<f64>,
    pub history: Vec<EpochMetrics>,
}

/// What the page has loaded and trained.
#[derive(Default)]
pub struct Session {
    data: Option<Data>,
    run: Option<Run>,
}

impl Session {
    /// Loads a data set from its four files as fetched (gzipped or raw), in the order of [`FILES`]; returns how
    /// many training and test images it holds.
    pub fn load(&mut self, name: &str, files: [Vec<u8>; 4]) -> Result<(usize, usize), String> {
        let [train_images, train_labels, test_images, test_labels] = files;
        let path = |i: usize| Path::new(name).join(format!("{}.gz", FILES[i]));
        let split = |images, labels, i| {
            Split::from_idx_bytes(images, labels, &path(i), &path(i + 1)).map_err(|e| e.to_string())
        };
        let train = split(train_images, train_labels, 0)?;
        let test = split(test_images, test_labels, 2)?;
        if train.is_empty() || test.is_empty() {
            return Err(format!("data set {name} has an empty split"));
        }
        let class_names = DatasetId::parse(name).class_names();
        self.run = None;
        let sizes = (train.len(), test.len());
        self.data = Some(Data { name: name.to_string(), class_names, train, test });
        Ok(sizes)
    }

    /// The loaded data set's class names.
    pub fn class_names(&self) -> &[String] {
        self.data.as_ref().map_or(&[], |d| &d.class_names)
    }

    /// Starts a new run with `settings` (JSON, see [`Settings`]), from PyTorch's initialisation for its seed.
    pub fn configure(&mut self, settings: &str) -> Result<(), String> {
        let data = self.data.as_ref().ok_or("no data set is loaded")?;
        let s: Settings = serde_json::from_str(settings).map_err(|e| format!("settings: {e}"))?;
        let head = Head::parse(&s.head).ok_or_else(|| format!("the head must be sigmoid or logits, got {}", s.head))?;
        let config = TrainConfig {
            epochs: s.epochs,
            batch_size: s.batch_size,
            sgd: Sgd { lr: s.lr, momentum: s.momentum, weight_decay: 0.0 },
            seed: s.seed,
            head,
            train_limit: s.train_limit,
            test_limit: s.test_limit,
        };
        config.validate().map_err(|e| e.to_string())?;
        // Cut-short splits are copied once here, as `lenet5 train` cuts them.
        let cut = |split: &Split, limit| match limited(split, limit) {
            std::borrow::Cow::Owned(s) => Some(s),
            std::borrow::Cow::Borrowed(_) => None,
        };
        let (train, test) = (cut(&data.train, config.train_limit), cut(&data.test, config.test_limit));
        let start = Start::Fresh { params: init_params(config.seed) };
        let training = Training::new(config, &data.name, &data.class_names, start, 1).map_err(|e| e.to_string())?;
        self.run = Some(Run { training, train, test, epoch_seconds: 0.0, images_seen: 0 });
        Ok(())
    }

    fn run(&self) -> Result<(&Run, &Data), String> {
        match (&self.run, &self.data) {
            (Some(run), Some(data)) => Ok((run, data)),
            _ => Err("no run: start one first".into()),
        }
    }

    /// Trains at most `max_batches` batches of the epoch in progress (beginning the next one if none is);
    /// returns how many it trained. `now` is a clock in seconds.
    pub fn train(&mut self, max_batches: usize, now: &dyn Fn() -> f64) -> Result<usize, String> {
        let (Some(run), Some(data)) = (&mut self.run, &self.data) else { return Err("no run: start one first".into()) };
        let train = run.train.as_ref().unwrap_or(&data.train);
        let before = run.training.epoch_in_progress().map_or(0, |e| e.batches_done());
        let t0 = now();
        run.training.train_batches(train, max_batches, &mut ());
        run.epoch_seconds += now() - t0;
        let after = run.training.epoch_in_progress().map_or(0, |e| e.batches_done());
        let batch_size = run.training.state().config.batch_size;
        let images = |batches: usize| (batches * batch_size).min(train.len());
        run.images_seen += (images(after) - images(before)) as u64;
        Ok(after - before)
    }

    /// Evaluates the epoch whose batches are all done on the test images, and records it.
    pub fn finish_epoch(&mut self, now: &dyn Fn() -> f64) -> Result<EpochMetrics, String> {
        let (Some(run), Some(data)) = (&mut self.run, &self.data) else { return Err("no run: start one first".into()) };
        if !run.training.epoch_in_progress().is_some_and(|e| e.is_done()) {
            return Err("the epoch has batches left to train".into());
        }
        let test = run.test.as_ref().unwrap_or(&data.test);
        let outcome = run.training.finish_epoch(test, run.epoch_seconds, now);
        run.epoch_seconds = 0.0;
        Ok(outcome.metrics)
    }

    /// Where the run stands.
    pub fn status(&self) -> Result<Status, String> {
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
    pub fn predict(&self, grey: Vec<u8>, width: usize, height: usize) -> Result<Prediction, String> {
        let (run, _) = self.run()?;
        let picture = GreyImage::new(width, height, grey).ok_or("the drawing's size does not match its pixels")?;
        let image = frame(&picture).map_err(|e| e.to_string())?;
        let trainer = run.training.trainer();
        let checkpoint = Checkpoint::new(trainer.params().to_vec(), trainer.config().head);
        let p = Predictor::new(checkpoint).predict(&[image]).remove(0);
        Ok(Prediction { class: p.class, probabilities: p.probabilities.to_vec(), input: image.to_vec() })
    }

    /// The weights as a safetensors checkpoint: the best epoch's, as `lenet5 train` writes `best.safetensors`,
    /// or, before an epoch is finished, the current ones.
    pub fn checkpoint(&self) -> Result<Vec<u8>, String> {
        let (run, _) = self.run()?;
        let ck = run.training.best_checkpoint().unwrap_or_else(|| {
            let mut ck = run.training.state_checkpoint();
            ck.momentum = None;
            ck.metadata.retain(|k, _| k == "dataset");
            ck
        });
        ck.to_bytes().map_err(|e| e.to_string())
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
