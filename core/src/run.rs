//! A training run on disk: its directory, the best weights, the resumable state written every epoch, and the
//! metrics log.
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
use crate::train::{EpochMetrics, Evaluator, TrainConfig, TrainObserver, Trainer};

pub const BEST_FILE: &str = "best.safetensors";
pub const STATE_FILE: &str = "last.safetensors";
pub const METRICS_FILE: &str = "metrics.jsonl";

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

    /// Prepares a new run: refuses to overwrite a previous one unless `force`.
    pub fn create(&self, force: bool) -> Result<()> {
        if self.holds_run() && !force {
            return Err(Error::RunExists { dir: self.dir.clone() });
        }
        create_dir(&self.dir)?;
        for p in [self.best(), self.state(), self.metrics()] {
            if p.exists() {
                std::fs::remove_file(&p).at(&p)?;
            }
        }
        Ok(())
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
        Ok((state, ck.params, momentum))
    }

    fn save_state(&self, state: &TrainState, trainer: &Trainer) -> Result<()> {
        let mut ck = Checkpoint::new(trainer.params().to_vec(), state.config.head);
        ck.class_names = state.class_names.clone();
        ck.momentum = Some(trainer.velocity().to_vec());
        ck.metadata.insert("train_state".into(), serde_json::to_string(state).expect("serialisable"));
        ck.metadata.insert("dataset".into(), state.dataset.clone());
        ck.metadata.insert("epoch".into(), state.epoch.to_string());
        ck.save(&self.state())
    }

    fn save_best(&self, state: &TrainState, params: &[f32], metrics: &EpochMetrics) -> Result<()> {
        let mut ck = Checkpoint::new(params.to_vec(), state.config.head);
        ck.class_names = state.class_names.clone();
        ck.metadata.insert("dataset".into(), state.dataset.clone());
        ck.metadata.insert("epoch".into(), metrics.epoch.to_string());
        ck.metadata.insert("metrics".into(), serde_json::to_string(metrics).expect("serialisable"));
        ck.metadata.insert("config".into(), serde_json::to_string(&state.config).expect("serialisable"));
        ck.save(&self.best())
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

fn limited(split: &Split, limit: Option<usize>) -> Cow<'_, Split> {
    match limit {
        Some(n) if n < split.len() => {
            let mut s = split.clone();
            s.truncate(n);
            Cow::Owned(s)
        }
        _ => Cow::Borrowed(split),
    }
}

/// Where a run starts from.
pub enum Start {
    /// A new run with these weights.
    Fresh { params: Vec<f32> },
    /// A run resumed from its state.
    Resume { state: Box<TrainState>, params: Vec<f32>, momentum: Vec<f32> },
}

/// Trains to the end of `config.epochs`, writing the run's files after every epoch. Returns
/// [`Error::Interrupted`] when the observer asks to stop; the state of the last finished epoch is then on disk.
pub fn train_run(
    run: &RunDir,
    config: TrainConfig,
    data: &Dataset,
    start: Start,
    threads: usize,
    observer: &mut dyn TrainObserver,
) -> Result<RunSummary> {
    config.validate()?;
    let train = limited(&data.train, config.train_limit);
    let test = limited(&data.test, config.test_limit);
    for (split, images) in [("training", &train), ("test", &test)] {
        if images.is_empty() {
            return Err(Error::EmptySplit { dataset: data.name.clone(), split });
        }
    }
    let (mut state, mut trainer) = match start {
        Start::Fresh { params } => {
            let state = TrainState {
                config: config.clone(),
                dataset: data.name.clone(),
                class_names: data.class_names.clone(),
                epoch: 0,
                best_val_acc: None,
                best_epoch: None,
                history: Vec::new(),
            };
            let trainer = Trainer::new(config, params, None, threads)?;
            // A state from the start, so that even an interrupted first epoch can be resumed.
            run.save_state(&state, &trainer)?;
            (state, trainer)
        }
        Start::Resume { state, params, momentum } => {
            let mut trainer = Trainer::new(state.config.clone(), params, Some(momentum), threads)?;
            trainer.set_epochs(config.epochs);
            // The state is written before the log, so a run killed between the two has a log one epoch short.
            run.write_metrics(&state.history)?;
            (*state, trainer)
        }
    };
    state.config.epochs = trainer.config().epochs;
    let mut evaluator = Evaluator::new(threads)?;
    let batches = train.len().div_ceil(trainer.config().batch_size);
    for epoch in state.epoch + 1..=trainer.config().epochs {
        observer.on_epoch_start(epoch, trainer.config().epochs, batches);
        let t0 = Instant::now();
        let Some((train_loss, train_acc)) = trainer.train_epoch(&train, epoch, observer) else {
            return Err(Error::Interrupted { run_dir: run.dir.clone() });
        };
        let train_seconds = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let val = evaluator.evaluate(trainer.params(), trainer.config().head, &test, trainer.config().batch_size);
        let metrics = EpochMetrics {
            epoch,
            train_loss,
            train_acc,
            val_loss: val.loss,
            val_acc: val.accuracy,
            train_seconds,
            val_seconds: t1.elapsed().as_secs_f64(),
        };
        let new_best = state.best_val_acc.is_none_or(|b| metrics.val_acc > b);
        if new_best {
            state.best_val_acc = Some(metrics.val_acc);
            state.best_epoch = Some(epoch);
            run.save_best(&state, trainer.params(), &metrics)?;
        }
        state.epoch = epoch;
        state.history.push(metrics.clone());
        run.save_state(&state, &trainer)?;
        run.write_metrics(&state.history)?;
        observer.on_epoch_end(&metrics, new_best);
    }
    Ok(RunSummary { state, run_dir: run.dir.clone() })
}
