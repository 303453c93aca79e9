//! A training run as every front end starts it: the recipe's settings (each of which may be changed), the data,
//! and the run directory; new, resumed, or from given weights. [`prepare`] checks the settings, takes the run
//! directory and reads the data; [`PreparedRun::run`] trains. The command line and the Python package both
//! start runs here, so a run means the same thing in both.

use std::path::{Path, PathBuf};

use lenet5_core::data::{Augment, Dataset, DatasetId};
use lenet5_core::fs::create_dir;
use lenet5_core::nn::Head;
use lenet5_core::nn::params::init_params_for;
use lenet5_core::optim::{LrSchedule, Sgd};
use lenet5_core::run::{RunDir, RunSummary, STATE_FILE, Start, TrainState, train_run};
use lenet5_core::train::{TrainConfig, TrainObserver};

use crate::error::Result;
use crate::lock::{DirLock, lock_dir, remove_stale_temporaries};
use crate::source::{DataSource, Notices};

/// The epochs of a new run that names none: the recipe's.
pub const RECIPE_EPOCHS: usize = 50;

/// Most worker threads a run takes: far more than any use needs. Where the system cannot start that many the
/// run says so; asking for 100,000 once left the command hanging after that error instead.
pub const MAX_THREADS: usize = 256;

/// The worker threads to use: `asked`, else every core.
pub fn threads(asked: Option<usize>) -> Result<usize> {
    match asked {
        Some(n) if n == 0 || n > MAX_THREADS => Err(lenet5_core::Error::Setting {
            setting: lenet5_core::Setting::Threads,
            value: n.to_string(),
            expected: "between 1 and 256",
        }
        .into()),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The kind of learning-rate schedule; its lengths come from [`TrainOptions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    /// One rate throughout (the recipe).
    Constant,
    /// Times `gamma` every `step_size` epochs.
    Step,
    /// Cosine annealing after the warm-up epochs.
    Cosine,
    /// PyTorch's OneCycleLR, one step per epoch.
    OneCycle,
}

impl ScheduleKind {
    /// `constant`, `step`, `cosine` or `onecycle`.
    pub fn parse(name: &str) -> Option<ScheduleKind> {
        match name {
            "constant" => Some(ScheduleKind::Constant),
            "step" => Some(ScheduleKind::Step),
            "cosine" => Some(ScheduleKind::Cosine),
            "onecycle" => Some(ScheduleKind::OneCycle),
            _ => None,
        }
    }
}

/// Everything a run can be told. [`TrainOptions::default`] is the recipe, on MNIST, into `save_model`.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Passes over the training set (`None`: 50, or a resumed run's own).
    pub epochs: Option<usize>,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Seeds the initial weights, the shuffles and the augmentation.
    pub seed: u64,
    pub head: Head,
    pub lr_schedule: ScheduleKind,
    /// Epochs between two cuts of the `step` schedule.
    pub step_size: usize,
    /// Factor of each cut of the `step` schedule.
    pub gamma: f32,
    /// Warm-up epochs of `cosine` (`None`: 0) and `onecycle` (`None`: 30% of the epochs).
    pub warmup_epochs: Option<usize>,
    /// The random affine transform of each training image, if any.
    pub augment: Option<Augment>,
    /// Stop when val_acc has not improved for this many epochs.
    pub patience: Option<usize>,
    /// Train on only the first N training images.
    pub train_limit: Option<usize>,
    /// Evaluate on only the first N test images.
    pub test_limit: Option<usize>,
    pub data: DataSource,
    /// The run directory of a new run.
    pub out: PathBuf,
    /// Overwrite a run already in `out`.
    pub force: bool,
    /// Continue the run in this directory (its settings are kept; `epochs` may extend it).
    pub resume: Option<PathBuf>,
    /// Start from these weights (.safetensors or a PyTorch .pth) instead of a fresh initialisation.
    pub init_weights: Option<PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        let recipe = TrainConfig::default();
        TrainOptions {
            epochs: None,
            batch_size: recipe.batch_size,
            lr: recipe.sgd.lr,
            momentum: recipe.sgd.momentum,
            weight_decay: recipe.sgd.weight_decay,
            seed: recipe.seed,
            head: recipe.head,
            lr_schedule: ScheduleKind::Constant,
            step_size: 10,
            gamma: 0.1,
            warmup_epochs: None,
            augment: None,
            patience: None,
            train_limit: None,
            test_limit: None,
            data: DataSource::default(),
            out: PathBuf::from("save_model"),
            force: false,
            resume: None,
            init_weights: None,
        }
    }
}

impl TrainOptions {
    /// The settings of a new run.
    pub fn config(&self) -> TrainConfig {
        let epochs = self.epochs.unwrap_or(RECIPE_EPOCHS);
        TrainConfig {
            epochs,
            batch_size: self.batch_size,
            sgd: Sgd { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay },
            seed: self.seed,
            head: self.head,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            lr_schedule: self.schedule(epochs),
            patience: self.patience,
            augment: self.augment,
        }
    }

    /// The schedule asked for, over a run of `epochs`.
    fn schedule(&self, epochs: usize) -> LrSchedule {
        match self.lr_schedule {
            ScheduleKind::Constant => LrSchedule::Constant,
            ScheduleKind::Step => LrSchedule::Step { step_size: self.step_size, gamma: self.gamma },
            ScheduleKind::Cosine => LrSchedule::Cosine { warmup: self.warmup_epochs.unwrap_or(0) },
            ScheduleKind::OneCycle => LrSchedule::OneCycle {
                warmup: self.warmup_epochs.unwrap_or(((epochs as f64 * 0.3).round() as usize).max(1)),
            },
        }
    }
}

/// A run about to start: its directory (this process's alone until the run is dropped), settings, start and
/// data.
pub struct PreparedRun {
    pub run_dir: RunDir,
    pub config: TrainConfig,
    pub start: Start,
    pub data: Dataset,
    _lock: DirLock,
}

impl PreparedRun {
    /// Whether the run continues one that stopped.
    pub fn is_resumed(&self) -> bool {
        matches!(self.start, Start::Resume { .. })
    }

    /// Trains on `threads` workers to the end of the run, writing its files after every epoch and telling
    /// `observer` as it goes. Returns [`lenet5_core::Error::Interrupted`] when the observer asks to stop.
    pub fn run(self, threads: usize, observer: &mut dyn TrainObserver) -> Result<RunSummary> {
        let PreparedRun { run_dir, config, start, data, _lock } = self;
        if matches!(start, Start::Fresh { .. }) {
            run_dir.create(true)?;
        }
        Ok(train_run(&run_dir, config, &data, start, threads, observer)?)
    }
}

/// Checks the settings, takes the run directory (new or resumed) and reads the data and the weights to start
/// from.
pub fn prepare(options: &TrainOptions, notices: &dyn Notices) -> Result<PreparedRun> {
    prepare_on(options, None, notices)
}

/// [`prepare`], on `data` when given (a data set the caller holds in memory) instead of what `options.data`
/// names. A resumed run must be given the data it was trained on again, which the run checks.
pub fn prepare_on(options: &TrainOptions, data: Option<Dataset>, notices: &dyn Notices) -> Result<PreparedRun> {
    match &options.resume {
        Some(dir) => resumed_run(options, dir, data, notices),
        None => new_run(options, data, notices),
    }
}

/// The run directory `dir` as this process's alone, from before its state or data is read to the end of the
/// run; and without the temporary files a process killed while writing there may have left.
fn take_run_dir(dir: &Path, notices: &dyn Notices) -> Result<DirLock> {
    let lock = lock_dir(dir)?;
    for stale in remove_stale_temporaries(dir) {
        notices.removed_stale(&stale);
    }
    Ok(lock)
}

/// A resumed run: its directory, settings (only the length may change), state and data.
fn resumed_run(
    options: &TrainOptions,
    dir: &Path,
    data: Option<Dataset>,
    notices: &dyn Notices,
) -> Result<PreparedRun> {
    let run_dir = RunDir::new(dir);
    if !run_dir.state().exists() {
        return Err(lenet5_core::Error::NotResumable { dir: dir.to_path_buf(), missing: STATE_FILE }.into());
    }
    let lock = take_run_dir(dir, notices)?;
    let (state, params, momentum) = run_dir.load_state()?;
    let mut config = state.config.clone();
    if let Some(epochs) = options.epochs {
        config.epochs = epochs;
    }
    let data = match data {
        Some(data) => data,
        None => resume_data(&options.data, &state).load(None, &state.data_options, notices)?,
    };
    let start = Start::Resume { state: Box::new(state), params, momentum };
    Ok(PreparedRun { run_dir, config, start, data, _lock: lock })
}

/// A new run of the options' settings, from PyTorch's initialisation (for the data set's classes) or the given
/// weights.
fn new_run(options: &TrainOptions, data: Option<Dataset>, notices: &dyn Notices) -> Result<PreparedRun> {
    let config = options.config();
    config.validate()?;
    create_dir(&options.out)?;
    let lock = take_run_dir(&options.out, notices)?;
    let run_dir = RunDir::new(&options.out);
    if run_dir.holds_run() && !options.force {
        return Err(lenet5_core::Error::RunExists { dir: options.out.clone() }.into());
    }
    let data = match data {
        Some(data) => data,
        None => options.data.load(None, &Default::default(), notices)?,
    };
    let params = match &options.init_weights {
        Some(path) => crate::interop::pth::load_weights(path, options.head)?.params,
        None => init_params_for(options.seed, data.classes()),
    };
    Ok(PreparedRun { run_dir, config, start: Start::Fresh { params }, data, _lock: lock })
}

/// Where a resumed run's data are: the source's where given, else the directory and the data set the run
/// recorded (read from there, never downloaded: it must be the same data, which `train_run` checks).
fn resume_data(source: &DataSource, state: &TrainState) -> DataSource {
    let mut data = source.clone();
    if source.dataset.is_none() {
        data.dataset = Some(state.dataset.clone());
    }
    if let (None, None, Some(dir)) = (&source.root, &source.dataset, &state.data_dir) {
        data.root = Some(dir.clone());
        if let DatasetId::Dir(_) = DatasetId::parse(&state.dataset) {
            data.dataset = Some(dir.display().to_string());
        }
        data.download = false;
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_options_are_the_recipe() {
        assert_eq!(TrainOptions::default().config(), TrainConfig::default());
        assert_eq!(TrainConfig::default().epochs, RECIPE_EPOCHS);
    }

    #[test]
    fn schedules_take_their_lengths_from_the_options() {
        let options = |kind, warmup_epochs| TrainOptions {
            epochs: Some(20),
            lr_schedule: kind,
            warmup_epochs,
            step_size: 5,
            gamma: 0.5,
            ..TrainOptions::default()
        };
        let schedule = |kind, warmup| options(kind, warmup).config().lr_schedule;
        assert_eq!(schedule(ScheduleKind::Step, None), LrSchedule::Step { step_size: 5, gamma: 0.5 });
        assert_eq!(schedule(ScheduleKind::Cosine, None), LrSchedule::Cosine { warmup: 0 });
        assert_eq!(schedule(ScheduleKind::OneCycle, None), LrSchedule::OneCycle { warmup: 6 });
        assert_eq!(schedule(ScheduleKind::OneCycle, Some(2)), LrSchedule::OneCycle { warmup: 2 });
        for name in ["constant", "step", "cosine", "onecycle"] {
            assert!(ScheduleKind::parse(name).is_some(), "{name}");
        }
        assert_eq!(ScheduleKind::parse("linear"), None);
    }

    #[test]
    fn thread_counts_are_bounded() {
        assert_eq!(threads(Some(1)).unwrap(), 1);
        assert_eq!(threads(Some(MAX_THREADS)).unwrap(), MAX_THREADS);
        assert!(threads(None).unwrap() >= 1);
        for bad in [0, MAX_THREADS + 1, usize::MAX] {
            let message = threads(Some(bad)).unwrap_err().to_string();
            assert!(message.contains(&format!("between 1 and {MAX_THREADS}, got {bad}")), "{message}");
        }
    }
}
