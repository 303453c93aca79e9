//! A training run: [`Training`] in memory (the trainer, the evaluator and the run's record, an epoch or a few
//! batches at a time), and [`train_run`], the same on disk, with its directory, the best weights, the resumable
//! state written every epoch, and the metrics log.
//!
//! ```text
//! RUN_DIR/best.safetensors   weights with the best val_acc so far (PyTorch state_dict names)
//! RUN_DIR/last.safetensors   resumable state: weights, momentum, config, history (after every epoch)
//! RUN_DIR/metrics.jsonl      one JSON object per finished epoch
//! ```

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::data::{Dataset, Split};
use crate::error::{Error, IoContext, Result};
use crate::fs::{create_dir, write_atomic};
use crate::train::{
    EpochMetrics, EpochProgress, EvalResult, Evaluator, TrainConfig, TrainObserver, Trainer, ValidConfig,
};

const BEST_FILE: &str = "best.safetensors";
pub(crate) const STATE_FILE: &str = "last.safetensors";
const METRICS_FILE: &str = "metrics.jsonl";

/// What a resumable state holds besides tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub config: TrainConfig,
    pub dataset: String,
    pub class_names: Vec<String>,
    /// Epochs finished.
    pub epoch: usize,
    pub best_val_acc: Option<f64>,
    pub best_epoch: Option<usize>,
    pub history: Vec<EpochMetrics>,
    /// The directory the data set was read from, for a resume that is not told it again.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// [`Split::fingerprint`] of the training and the test images used (after any limit).
    #[serde(default)]
    pub data_fingerprint: Option<[u64; 2]>,
    /// [`Dataset::options`]: how the data were read.
    #[serde(default)]
    pub data_options: std::collections::BTreeMap<String, String>,
    /// The best epoch's figures on the test set, measured once when a run that validates on held-out training
    /// images ([`TrainConfig::holdout`]) finishes.
    #[serde(default)]
    pub test: Option<EvalResult>,
}

impl TrainState {
    /// Whether val_acc has gone `config.patience` epochs without improving, which ends the run early.
    pub fn stopped_early(&self) -> bool {
        match (self.config.patience, self.best_epoch) {
            (Some(patience), Some(best)) => self.epoch < self.config.epochs && self.epoch - best >= patience,
            _ => false,
        }
    }
}

/// The result of a finished run.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub state: TrainState,
    pub run_dir: PathBuf,
}

/// The files of a run directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunDir { dir: dir.into() }
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST_FILE)
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }

    /// Whether the directory already holds (part of) a run.
    pub fn holds_run(&self) -> bool {
        [self.best(), self.state(), self.metrics()].iter().any(|p| p.exists())
    }

    /// Prepares a new run: refuses to overwrite a previous one unless `force`, and then removes its files, so
    /// that none of them outlives it. Like every output, a file that is not a regular file (a directory, a FIFO,
    /// a link to one of those) is refused, before anything is removed, and a link to a regular file is kept: the
    /// new run writes through it.
    pub fn create(&self, force: bool) -> Result<()> {
        if self.holds_run() && !force {
            return Err(Error::RunExists { dir: self.dir.clone() });
        }
        create_dir(&self.dir)?;
        let files = [self.best(), self.state(), self.metrics()];
        for p in &files {
            crate::fs::check_output(p)?;
        }
        for p in &files {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file()) {
                std::fs::remove_file(p).at(p)?;
            }
        }
        Ok(())
    }

    /// Whether the directory holds a resumable state; the error says what is missing.
    pub fn check_resumable(&self) -> Result<()> {
        match self.state().exists() {
            true => Ok(()),
            false => Err(Error::NotResumable { dir: self.dir.clone(), missing: STATE_FILE }),
        }
    }

    /// Reads the resumable state: the state itself, the weights and the momentum.
    pub fn load_state(&self) -> Result<(TrainState, Vec<f32>, Vec<f32>)> {
        let path = self.state();
        if !path.exists() {
            return Err(Error::NotResumable { dir: self.dir.clone(), missing: STATE_FILE });
        }
        let ck = Checkpoint::load(&path)?;
        let state: TrainState = ck
            .metadata
            .get("train_state")
            .ok_or_else(|| Error::format(&path, "no train_state in metadata: not a resumable state"))
            .and_then(|s| {
                serde_json::from_str(s).map_err(|e| Error::format(&path, format!("bad train_state metadata ({e})")))
            })?;
        let momentum = ck.momentum.ok_or_else(|| Error::format(&path, "no momentum tensors: not a resumable state"))?;
        if state.epoch > crate::train::MAX_EPOCHS || state.history.len() > state.epoch {
            let (epoch, records) = (state.epoch, state.history.len());
            return Err(Error::format(&path, format!("train_state: epoch {epoch} with {records} epoch records")));
        }
        Ok((state, ck.params, momentum))
    }

    /// Rewrites the whole log from the history, so it always agrees with the state.
    fn write_metrics(&self, history: &[EpochMetrics]) -> Result<()> {
        let mut text = String::new();
        for m in history {
            text.push_str(&serde_json::to_string(m).expect("serialisable"));
            text.push('\n');
        }
        write_atomic(&self.metrics(), text.as_bytes())
    }
}

/// Reads a metrics log.
pub fn read_metrics(path: &Path) -> Result<Vec<EpochMetrics>> {
    let text = std::fs::read_to_string(path).at(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::format(path, format!("line {}: not an epoch record ({e})", i + 1)))
        })
        .collect()
}

/// Where a run starts from.
pub enum Start {
    /// A new run with these weights.
    Fresh { params: Vec<f32> },
    /// A run resumed from its state.
    Resume { state: Box<TrainState>, params: Vec<f32>, momentum: Vec<f32> },
}

/// A training run in memory: the trainer and the evaluator, and the run's record (its settings, the epochs
/// finished, the best one and its weights, the history). Its data are the caller's: every call takes the
/// training or the test split, which must be the same ones throughout (see `limited`).
pub struct Training {
    state: TrainState,
    trainer: Trainer,
    evaluator: Evaluator,
    /// The epoch being trained, if one was begun and not yet finished.
    epoch: Option<EpochProgress>,
    /// The weights of the best epoch so far.
    best: Option<Vec<f32>>,
}

/// A finished epoch: its figures, and whether its val_acc is the best so far.
#[derive(Clone, Debug)]
pub struct EpochOutcome {
    pub metrics: EpochMetrics,
    pub new_best: bool,
}

impl Training {
    /// A run of `config` on a data set called `dataset`, from `start`, on `threads` workers. A resumed run keeps
    /// its recorded settings but for the number of epochs, which is `config`'s.
    pub fn new(
        config: ValidConfig,
        dataset: &str,
        class_names: &[String],
        start: Start,
        threads: usize,
    ) -> Result<Self> {
        let params = match &start {
            Start::Fresh { params } | Start::Resume { params, .. } => params,
        };
        let network = crate::train::block_classes(params.len())?;
        if network != class_names.len() {
            return Err(Error::ClassCount { dataset: dataset.to_string(), network, data: class_names.len() });
        }
        let (state, trainer) = match start {
            Start::Fresh { params } => {
                let state = TrainState {
                    config: TrainConfig::clone(&config),
                    dataset: dataset.to_string(),
                    class_names: class_names.to_vec(),
                    epoch: 0,
                    best_val_acc: None,
                    best_epoch: None,
                    history: Vec::new(),
                    data_dir: None,
                    data_fingerprint: None,
                    data_options: Default::default(),
                    test: None,
                };
                (state, Trainer::new(config, params, None, threads)?)
            }
            Start::Resume { mut state, params, momentum } => {
                let recorded = state.config.clone().check()?.with_epochs(config.epochs)?;
                state.config = TrainConfig::clone(&recorded);
                (*state, Trainer::new(recorded, params, Some(momentum), threads)?)
            }
        };
        Ok(Training { state, trainer, evaluator: Evaluator::new(threads)?, epoch: None, best: None })
    }

    /// The run's record so far.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The current weights and momentum.
    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    /// Whether the run is over: every epoch finished, or stopped early (see [`Training::stopped_early`]).
    pub fn is_finished(&self) -> bool {
        self.state.epoch >= self.state.config.epochs || self.stopped_early()
    }

    /// Whether val_acc has not improved for the run's patience (its `patience` epochs since the best).
    pub fn stopped_early(&self) -> bool {
        self.state.stopped_early()
    }

    /// The epoch being trained, if any.
    pub fn epoch_in_progress(&self) -> Option<&EpochProgress> {
        self.epoch.as_ref()
    }

    /// Trains at most `max_batches` batches of `train`, beginning the next epoch if none is in progress (and
    /// telling `observer`). Returns `false` when the observer asked to stop, [`Error::Diverged`] when training
    /// diverged (the weights are then lost: keep the last saved ones); `true` otherwise (the epoch is done
    /// when [`EpochProgress::is_done`]; see [`Training::finish_epoch`]).
    pub fn train_batches(
        &mut self,
        train: &Split,
        max_batches: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<bool> {
        if self.is_finished() {
            return Ok(true);
        }
        let progress = self.epoch.get_or_insert_with(|| {
            let epoch = self.trainer.begin_epoch(self.state.epoch + 1, train.len());
            observer.on_epoch_start(epoch.epoch, self.state.config.epochs, epoch.batches());
            epoch
        });
        self.trainer.train_batches(train, progress, max_batches, observer)
    }

    /// Evaluates the epoch whose batches are all trained on `test` (when the run's `eval_every` asks for it),
    /// and records it. `train_seconds` is the time its training took; `now` is a clock in seconds, for the
    /// evaluation's. The caller saves what it keeps.
    pub fn finish_epoch(&mut self, test: &Split, train_seconds: f64, now: &dyn Fn() -> f64) -> EpochOutcome {
        let progress = self.epoch.take().expect("an epoch whose batches are all trained");
        assert!(progress.is_done(), "epoch {} has batches left", progress.epoch);
        let (train_loss, train_acc) = progress.means();
        let t0 = now();
        let config = self.trainer.config();
        let (val_loss, val_acc) = if self.evaluates(progress.epoch) {
            let val = self.evaluator.evaluate(self.trainer.params(), config.head, test, config.batch_size);
            (val.loss, val.accuracy)
        } else {
            (f64::NAN, f64::NAN)
        };
        let metrics = EpochMetrics {
            epoch: progress.epoch,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            lr: Some(self.trainer.epoch_lr(progress.epoch, progress.batches()) as f64),
            train_seconds,
            val_seconds: now() - t0,
        };
        // An epoch not evaluated (NaN) is never the best.
        let new_best = !val_acc.is_nan() && self.state.best_val_acc.is_none_or(|b| metrics.val_acc > b);
        if new_best {
            self.state.best_val_acc = Some(metrics.val_acc);
            self.state.best_epoch = Some(metrics.epoch);
            self.best = Some(self.trainer.params().to_vec());
        }
        self.state.epoch = metrics.epoch;
        self.state.history.push(metrics.clone());
        EpochOutcome { metrics, new_best }
    }

    /// Whether epoch `epoch` (1-based) is evaluated: every `eval_every` epochs, and the last.
    fn evaluates(&self, epoch: usize) -> bool {
        let TrainConfig { eval_every, epochs, .. } = self.state.config;
        epoch >= epochs || (eval_every > 0 && epoch.is_multiple_of(eval_every))
    }

    /// Measures the best epoch's weights (`params`) on `test`, and records the figures as the run's test
    /// figures.
    pub fn record_test(&mut self, params: &[f32], test: &Split) -> &EvalResult {
        let config = self.trainer.config();
        self.state.test.insert(self.evaluator.evaluate(params, config.head, test, config.batch_size))
    }

    /// The best epoch's weights as `best.safetensors` holds them (metadata: the data set, the epoch, its metrics
    /// and the run's settings), or `None` before an epoch is finished (in this process).
    pub fn best_checkpoint(&self) -> Option<Checkpoint> {
        let (params, epoch) = (self.best.as_ref()?, self.state.best_epoch?);
        let metrics = self.state.history.iter().find(|m| m.epoch == epoch)?;
        let mut ck = self.checkpoint(params.clone());
        ck.metadata.insert("epoch".into(), epoch.to_string());
        ck.metadata.insert("metrics".into(), serde_json::to_string(metrics).expect("serialisable"));
        ck.metadata.insert("config".into(), serde_json::to_string(&self.state.config).expect("serialisable"));
        Some(ck)
    }

    /// The resumable state as `last.safetensors` holds it: the weights, the momentum and the record.
    pub fn state_checkpoint(&self) -> Checkpoint {
        let mut ck = self.checkpoint(self.trainer.params().to_vec());
        ck.momentum = Some(self.trainer.velocity().to_vec());
        ck.metadata.insert("train_state".into(), serde_json::to_string(&self.state).expect("serialisable"));
        ck.metadata.insert("epoch".into(), self.state.epoch.to_string());
        ck
    }

    fn checkpoint(&self, params: Vec<f32>) -> Checkpoint {
        let mut ck = Checkpoint::new(params, self.state.config.head);
        ck.class_names = self.state.class_names.clone();
        ck.metadata.insert("dataset".into(), self.state.dataset.clone());
        for (name, value) in &self.state.data_options {
            ck.metadata.insert(format!("data.{name}"), value.clone());
        }
        ck
    }
}

/// Trains to the end of `config.epochs`, writing the run's files after every epoch. Returns
/// [`Error::Interrupted`] when the observer asks to stop; the state of the last finished epoch is then on disk.
pub fn train_run(
    run: &RunDir,
    config: ValidConfig,
    data: &Dataset,
    start: Start,
    threads: usize,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary> {
    // Held out of the training images before any limit, so the validation images do not depend on it.
    let (train, val) = match config.holdout {
        Some(h) => {
            let (kept, held_out) = data.train.stratified_holdout(data.classes(), h.share, h.seed);
            (Cow::Owned(kept), Some(held_out))
        }
        None => (Cow::Borrowed(&data.train), None),
    };
    let train = train.limited(config.train_limit);
    let test = data.test.limited(config.test_limit);
    let val = val.as_ref().map(|v| v.limited(config.test_limit));
    let splits = [("training", &train), ("validation", val.as_ref().unwrap_or(&test)), ("test", &test)];
    for (split, images) in splits {
        if images.is_empty() {
            return Err(Error::EmptySplit { dataset: data.name.clone(), split });
        }
        images.check_labels(data.classes(), &data.dir)?;
    }
    let validation = val.as_ref().unwrap_or(&test);
    let fingerprint = [train.fingerprint(), validation.fingerprint()];
    if let Start::Resume { state, .. } = &start
        && state.data_fingerprint.is_some_and(|f| f != fingerprint)
    {
        return Err(Error::DataChanged { dataset: data.name.clone(), dir: data.dir.clone() });
    }
    let resumed = matches!(start, Start::Resume { .. });
    let mut training = Training::new(config, &data.name, &data.class_names, start, threads)?;
    training.state.data_fingerprint = Some(fingerprint);
    training.state.data_options = data.options.clone();
    training.state.data_dir = Some(std::path::absolute(&data.dir).unwrap_or_else(|_| data.dir.clone()));
    if resumed {
        // The state is written before the log, so a run killed between the two has a log one epoch short.
        run.write_metrics(&training.state().history)?;
    } else {
        // A state from the start, so that even an interrupted first epoch can be resumed.
        training.state_checkpoint().save(&run.state())?;
    }
    let clock = Instant::now();
    let now = || clock.elapsed().as_secs_f64();
    while !training.is_finished() {
        let t0 = now();
        // On divergence the state of the last finished epoch is on disk, and stays as it is.
        if !training.train_batches(&train, usize::MAX, observer)? {
            return Err(Error::Interrupted { run_dir: run.dir.clone() });
        }
        let outcome = training.finish_epoch(validation, now() - t0, &now);
        if outcome.new_best {
            training.best_checkpoint().expect("the epoch just finished is the best").save(&run.best())?;
        }
        training.state_checkpoint().save(&run.state())?;
        run.write_metrics(&training.state().history)?;
        observer.on_epoch_end(&outcome.metrics, outcome.new_best);
    }
    if val.is_some() {
        // The test set's one use in a run that validates on held-out images: the best weights, once, at the end.
        let best = match training.best.clone() {
            Some(params) => params,
            None => Checkpoint::load(&run.best())?.params,
        };
        training.record_test(&best, &test);
        training.state_checkpoint().save(&run.state())?;
    }
    Ok(RunSummary { state: training.state().clone(), run_dir: run.dir.clone() })
}
