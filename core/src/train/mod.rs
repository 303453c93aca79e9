//! Training: the recipe's step and epoch, parallel over fixed slices of each batch, and evaluation.
//!
//! Determinism: a batch is cut into slices (see `slice_len`) that depend on the batch size only, never on the
//! thread count; each slice writes its own gradient buffer, the optimiser adds the buffers in slice order, and
//! the linear layers' weight gradients are summed over the slices in order, in blocks of rows that do not
//! depend on the thread count either. linear1 is computed by groups of its rows (see `linear1_groups`, again a
//! function of the batch size alone), and its input gradient is the sum of the groups' parts in group order. So
//! the thread count changes the speed and never the numbers. The shuffle of epoch `e` is drawn from `(seed, e)`
//! alone, so a run resumed at an epoch boundary continues exactly as if it had never stopped.

mod eval;
mod linear_step;
mod plan;
mod step;

use serde::{Deserialize, Serialize};

use crate::aligned::AlignedBuf;
use crate::base::{MAX_CLASSES, MIN_CLASSES};
use crate::data::{Augment, Split};
use crate::error::{Error, Result};
use crate::nn::model::{CONV_PARAMS, Head, StageClock};
use crate::nn::params::FIXED_PARAMS;
use crate::optim::{LrSchedule, Sgd};
use crate::parallel::Team;
use crate::rng::Rng;
use linear_step::Round;
use plan::{MAX_BATCH_FOR_TAIL_COPIES, ROUND_SLICES, TailCopy, TailPart};
use step::{Buffers, EpochAugment, Step};

pub(crate) use eval::figures;
pub use eval::{EvalResult, Evaluator};
pub(crate) use plan::{linear1_groups, slice_len};

/// Everything that decides the numbers of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub sgd: Sgd,
    pub seed: u64,
    pub head: Head,
    /// Use only the first N training images (all when `None`).
    pub train_limit: Option<usize>,
    /// Use only the first N test images (all when `None`).
    pub test_limit: Option<usize>,
    /// The learning rate of each epoch, from `sgd.lr` (constant in the recipe).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Stop when val_acc has not improved for this many epochs (never in the recipe).
    #[serde(default)]
    pub patience: Option<usize>,
    /// A random affine transform of every training image, drawn anew each epoch (none in the recipe).
    #[serde(default)]
    pub augment: Option<Augment>,
    /// Training images held out to validate on, so that the test set decides nothing (none in the recipe,
    /// which validates on the test set).
    #[serde(default)]
    pub holdout: Option<Holdout>,
    /// Move the schedule's rate at every batch instead of every epoch (every epoch in the recipe).
    #[serde(default)]
    pub lr_per_batch: bool,
    /// Label smoothing of the training loss, as PyTorch's `CrossEntropyLoss(label_smoothing=...)` (none in the
    /// recipe). The validation and test figures stay plain cross-entropy.
    #[serde(default)]
    pub label_smoothing: f32,
    /// Evaluate after every this many epochs, and after the last; 0: after the last only (every epoch in the
    /// recipe). An epoch not evaluated has no val figures and cannot be the best.
    #[serde(default = "every_epoch")]
    pub eval_every: usize,
}

/// The recipe's `eval_every`, which runs recorded before the setting existed had too.
fn every_epoch() -> usize {
    1
}

/// A stratified, seeded share of the training images held out for validation ([`Split::stratified_holdout`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Holdout {
    pub share: f64,
    pub seed: u64,
}

impl TrainConfig {
    /// Largest batch a trainer takes.
    pub const MAX_BATCH_SIZE: usize = MAX_BATCH_SIZE;

    /// Checks every setting's range, once: the only way to a [`ValidConfig`]. A front end checks a whole run
    /// with `spec::RunSpec::validate`, which comes here; a resumed run's recorded settings come here too.
    pub fn check(self) -> Result<ValidConfig> {
        let bad = |setting, value: &dyn std::fmt::Display, expected| {
            Err(Error::Setting { setting, value: value.to_string(), expected })
        };
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return bad("epochs", &self.epochs, "in 1..=1000000");
        }
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return bad("batch_size", &self.batch_size, "in 1..=65536");
        }
        let Sgd { lr, momentum, weight_decay } = self.sgd;
        if !(lr.is_finite() && lr > 0.0) {
            return bad("lr", &lr, "a positive number");
        }
        if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
            return bad("momentum", &momentum, "in [0, 1)");
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad("weight_decay", &weight_decay, ">= 0");
        }
        if self.train_limit == Some(0) {
            return bad("train_limit", &0, "at least 1");
        }
        if self.test_limit == Some(0) {
            return bad("test_limit", &0, "at least 1");
        }
        if self.patience == Some(0) {
            return bad("patience", &0, "at least 1");
        }
        if let Some(a) = self.augment {
            a.check()?;
        }
        if let Some(h) = self.holdout.filter(|h| !(h.share > 0.0 && h.share < 1.0)) {
            return bad("val_split", &h.share, "between 0 and 1 (exclusive)");
        }
        if !(self.label_smoothing.is_finite() && (0.0..1.0).contains(&self.label_smoothing)) {
            return bad("label_smoothing", &self.label_smoothing, "in [0, 1)");
        }
        if self.eval_every > MAX_EPOCHS {
            return bad("eval_every", &self.eval_every, "in 0..=1000000");
        }
        self.check_schedule()?;
        Ok(ValidConfig(self))
    }

    fn check_schedule(&self) -> Result<()> {
        let bad = |setting, value: &dyn std::fmt::Display, expected| {
            Err(Error::Setting { setting, value: value.to_string(), expected })
        };
        match self.lr_schedule {
            LrSchedule::Step { step_size: 0, .. } => bad("step_size", &0, "at least 1"),
            LrSchedule::Step { gamma, .. } if !(gamma.is_finite() && gamma > 0.0) => {
                bad("gamma", &gamma, "a positive number")
            }
            s if s.warmup() >= self.epochs && s.warmup() > 0 => {
                bad("warmup_epochs", &s.warmup(), "fewer than the number of epochs")
            }
            _ => Ok(()),
        }
    }
}

/// A [`TrainConfig`] whose every setting was checked ([`TrainConfig::check`]): what the engine takes.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidConfig(TrainConfig);

impl std::ops::Deref for ValidConfig {
    type Target = TrainConfig;
    fn deref(&self) -> &TrainConfig {
        &self.0
    }
}

impl ValidConfig {
    /// The same settings, running to `epochs` (as when a run is resumed with more), checked again.
    pub fn with_epochs(&self, epochs: usize) -> Result<ValidConfig> {
        TrainConfig { epochs, ..self.0.clone() }.check()
    }

    /// The same settings with no holdout: for data whose evaluation images were already held out of its
    /// training images as it was read (an image folder without `train/` and `test/`).
    pub fn without_holdout(&self) -> ValidConfig {
        ValidConfig(TrainConfig { holdout: None, ..self.0.clone() })
    }
}

impl Serialize for Head {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Head {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Head::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown head `{s}`")))
    }
}

/// The four figures of the recipe for one epoch, plus timings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based.
    pub epoch: usize,
    #[serde(with = "any_f64")]
    pub train_loss: f64,
    #[serde(with = "any_f64")]
    pub train_acc: f64,
    #[serde(with = "any_f64")]
    pub val_loss: f64,
    #[serde(with = "any_f64")]
    pub val_acc: f64,
    /// The learning rate of the epoch (absent in logs written before schedules).
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(with = "any_f64")]
    pub train_seconds: f64,
    #[serde(with = "any_f64")]
    pub val_seconds: f64,
}

/// An `f64` that may be NaN or infinite, in JSON, which has no number for those: finite values as numbers, the
/// others as the strings `"NaN"`, `"inf"` and `"-inf"`; `null` (as other programs write NaN) reads as NaN.
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *v {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("NaN"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Number(f64),
            Text(String),
            Null(()),
        }
        match Any::deserialize(d)? {
            Any::Number(v) => Ok(v),
            Any::Null(()) => Ok(f64::NAN),
            Any::Text(t) => match t.as_str() {
                "NaN" | "nan" => Ok(f64::NAN),
                "inf" | "Infinity" => Ok(f64::INFINITY),
                "-inf" | "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!("`{other}` is not a number"))),
            },
        }
    }
}

/// The mean loss and accuracy of one batch, and how many of its images were classified right.
#[derive(Clone, Copy, Debug)]
pub struct StepResult {
    pub loss: f32,
    pub accuracy: f32,
    pub correct: usize,
}

/// Largest batch a trainer takes.
const MAX_BATCH_SIZE: usize = 65_536;
/// Longest run, in epochs: far beyond any use, and small enough that no count of epochs, batches or images can
/// overflow.
pub(crate) const MAX_EPOCHS: usize = 1_000_000;

/// A team of `threads` workers (at least one), or the error that starting its threads gave.
fn start_team(threads: usize) -> Result<Team> {
    if threads == 0 {
        return Err(Error::Setting { setting: "threads", value: "0".into(), expected: "at least 1" });
    }
    Team::new(threads).map_err(|source| Error::Threads { count: threads, source })
}

/// Where linear1's weight starts in the flat parameters (right after the convolutions'): the parameters and
/// momentum are laid out so that it starts a cache line, and with it each of its rows (400 values), which the
/// kernels read as vectors more than any other.
const LINEAR1_WEIGHT_AT: usize = CONV_PARAMS;

/// The number of classes of a parameter block of `len` values, or the error that says it is not one.
pub(crate) fn block_classes(len: usize) -> Result<usize> {
    crate::nn::params::block_classes(len).ok_or_else(|| Error::Shape {
        expected: format!("a parameter block of {FIXED_PARAMS} + 85 K values, {MIN_CLASSES} <= K <= {MAX_CLASSES}"),
        found: format!("{len} values"),
    })
}

/// Parameters, momentum and every buffer a training step needs, allocated once, and the team of threads that
/// runs the steps.
pub struct Trainer {
    /// Fixed at construction but for `epochs`: the buffers are sized for its batch size.
    config: TrainConfig,
    /// The learning rate of the steps: `config.sgd.lr` moved by the schedule at each epoch's first batch.
    lr: f32,
    /// The epoch being trained (1-based; 0 before any), which draws the augmentation.
    epoch: usize,
    buffers: Buffers,
    team: Team,
}

impl Trainer {
    /// A trainer for `config` from `params` (and `velocity`, when resuming), whose steps run on `threads`
    /// workers. The thread count never changes a number.
    pub fn new(config: ValidConfig, params: Vec<f32>, velocity: Option<Vec<f32>>, threads: usize) -> Result<Self> {
        let config = config.0;
        let classes = block_classes(params.len())?;
        if velocity.as_ref().is_some_and(|v| v.len() != params.len()) {
            return Err(Error::Shape {
                expected: format!("momentum of {} values, as the weights", params.len()),
                found: format!("{} values", velocity.as_ref().map_or(0, Vec::len)),
            });
        }
        let team = start_team(threads)?;
        let groups = linear1_groups(config.batch_size);
        let copy_tail = config.batch_size <= MAX_BATCH_FOR_TAIL_COPIES;
        let params = AlignedBuf::from_slice_at(&params, LINEAR1_WEIGHT_AT);
        let velocity = velocity.map_or_else(
            || AlignedBuf::zeroed_at(params.len(), LINEAR1_WEIGHT_AT),
            |v| AlignedBuf::from_slice_at(&v, LINEAR1_WEIGHT_AT),
        );
        let copies = if copy_tail { team.workers() - 1 } else { 0 };
        let tail_copies =
            (0..copies).map(|_| TailCopy { params: params.clone(), velocity: velocity.clone() }).collect();
        let buffers = Buffers {
            params,
            velocity,
            tail_copies,
            copy_tail,
            // Made for the images of the steps as they come (see `Buffers::reserve`): a batch size larger than the
            // data set costs only the memory its images need.
            slices: Vec::new(),
            slice_ptrs: Vec::new(),
            slice_counts: Vec::new(),
            groups,
            linear1_exchange: AlignedBuf::zeroed(0),
            linear1_partials: AlignedBuf::zeroed(0),
            tail_parts: TailPart::all(classes),
            round_slices: ROUND_SLICES,
            carry: AlignedBuf::zeroed(0),
            #[cfg(test)]
            hold_back: None,
        };
        Ok(Trainer { lr: config.sgd.lr, epoch: 0, config, buffers, team })
    }

    /// The trainer holding at most `slices` slices at once, so that a test can run a batch in rounds.
    #[cfg(test)]
    pub(crate) fn with_round_slices(mut self, slices: usize) -> Self {
        self.buffers.round_slices = slices;
        self
    }

    /// The most workers a step on batches of `batch_size` keeps busy: one per slice of its images (8 images a
    /// slice up to batch 64, 16 above), at most a round's. More only wait for them at each of the step's meeting
    /// points, holding a core (or the other half of one, on a core that runs two threads) while they wait.
    pub fn useful_workers(batch_size: usize) -> usize {
        batch_size.div_ceil(slice_len(batch_size)).clamp(1, ROUND_SLICES)
    }

    /// The workers that share each step (the threads asked for, or one without the `threads` feature).
    pub fn workers(&self) -> usize {
        self.team.workers()
    }

    /// What the trainer was built with (the number of epochs as last set).
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The learning rate of epoch `epoch` (1-based) under the run's schedule: of its first batch, when the rate
    /// moves at every batch.
    pub fn epoch_lr(&self, epoch: usize, batches: usize) -> f32 {
        self.batch_lr(epoch, 0, batches)
    }

    /// The learning rate of batch `batch` (0-based) of epoch `epoch` (1-based), of `batches`.
    fn batch_lr(&self, epoch: usize, batch: usize, batches: usize) -> f32 {
        let TrainConfig { lr_schedule, sgd, epochs, .. } = self.config;
        if self.config.lr_per_batch {
            let step = (epoch.saturating_sub(1)).saturating_mul(batches).saturating_add(batch);
            lr_schedule.rate_at(sgd.lr, step, epochs.saturating_mul(batches), batches)
        } else {
            lr_schedule.rate(sgd.lr, epoch, epochs)
        }
    }

    /// The parameters, in [`crate::nn::params::Param::ALL`] order.
    pub fn params(&self) -> &[f32] {
        &self.buffers.params
    }

    /// The momentum buffer, laid out as [`Trainer::params`].
    pub fn velocity(&self) -> &[f32] {
        &self.buffers.velocity
    }

    /// One SGD step on the images of `split` at `indices` (at most `batch_size` of them).
    pub fn step(&mut self, split: &Split, indices: &[u32]) -> StepResult {
        self.step_timed(split, indices, &[], &mut ())
    }

    /// [`Trainer::step`], and meanwhile each worker starts loading into its core's caches the images of `next`
    /// it will need at the next step (if that is a step on `next`; the numbers never depend on it).
    pub fn step_prefetching(&mut self, split: &Split, indices: &[u32], next: &[u32]) -> StepResult {
        self.step_timed(split, indices, next, &mut ())
    }

    /// [`Trainer::step_prefetching`], reporting the time of each layer of the first slice to `clock`.
    pub fn step_timed(
        &mut self,
        split: &Split,
        indices: &[u32],
        next: &[u32],
        clock: &mut (dyn StageClock + Send),
    ) -> StepResult {
        self.step_rounds(split, indices, next, clock, &mut || false).expect("a step nothing stops")
    }

    /// The step, its rounds run one after the other (see `plan::ROUND_SLICES`); `stop` is asked before each
    /// round after the first, and `true` abandons the step (`None`): the parameters and momentum are as before
    /// it, as only the last round updates them. So a step of any size can be stopped within a round's time.
    fn step_rounds(
        &mut self,
        split: &Split,
        indices: &[u32],
        next: &[u32],
        clock: &mut (dyn StageClock + Send),
        stop: &mut dyn FnMut() -> bool,
    ) -> Option<StepResult> {
        assert!(!indices.is_empty() && indices.len() <= self.config.batch_size);
        let TrainConfig { batch_size, head, sgd, .. } = self.config;
        let sgd = Sgd { lr: self.lr, ..sgd };
        let workers = self.team.workers();
        let len = slice_len(batch_size);
        self.buffers.reserve(indices.len(), len);
        let augmentation =
            self.config.augment.map(|augment| EpochAugment { augment, seed: self.config.seed, epoch: self.epoch });
        // A batch of more slices than the buffers hold runs in rounds of them (see `plan::ROUND_SLICES`).
        let round_images = self.buffers.round_slices * len;
        let rounds = indices.len().div_ceil(round_images);
        let (mut loss, mut correct) = (None, 0);
        let (mut clock, mut silent) = (Some(clock), ());
        for (k, images) in indices.chunks(round_images).enumerate() {
            if k > 0 && stop() {
                return None;
            }
            // Prefetched: the next round's images, or the next step's first.
            let upcoming = indices.chunks(round_images).nth(k + 1).unwrap_or(&next[..next.len().min(round_images)]);
            // The first round's first slice is timed.
            let clock: &mut (dyn StageClock + Send) = match clock.take() {
                Some(clock) => clock,
                None => &mut silent,
            };
            let step = Step::new(&mut self.buffers, batch_size, head, sgd, workers, split, images, upcoming, clock);
            let step = step.augmented(augmentation).smoothed(self.config.label_smoothing);
            let step = step.in_round(Round::of(k, rounds), indices.len());
            self.team.run(&|t| step.run(t));
            let (sum, right) = step.results(loss);
            (loss, correct) = (Some(sum), correct + right);
        }
        let b = indices.len() as f32;
        let loss = loss.expect("a step has a round") / b;
        Some(StepResult { loss, accuracy: correct as f32 / b, correct })
    }

    /// The order in which epoch `epoch` (1-based) visits the `n` training images.
    pub fn epoch_order(seed: u64, epoch: usize, n: usize, order: &mut Vec<u32>) {
        order.clear();
        order.extend(0..n as u32);
        Rng::derived(seed, 2, epoch as u64).shuffle(order);
    }

    /// Epoch `epoch` (1-based) over `images` training images, ready to train a few batches at a time.
    pub fn begin_epoch(&self, epoch: usize, images: usize) -> EpochProgress {
        let mut order = Vec::new();
        Self::epoch_order(self.config.seed, epoch, images, &mut order);
        let batch_size = self.config.batch_size;
        EpochProgress { epoch, order, batch_size, done: 0, loss_sum: 0.0, correct: 0 }
    }

    /// Trains the next batches of `progress`, at most `max_batches`, on the images of `split` (the split the
    /// epoch was begun for). Returns `false` when `observer` asked to stop before a batch, and
    /// [`Error::Diverged`] when a batch's loss is not a finite number (the weights are then lost).
    pub fn train_batches(
        &mut self,
        split: &Split,
        progress: &mut EpochProgress,
        max_batches: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<bool> {
        let end = progress.done.saturating_add(max_batches).min(progress.batches());
        self.epoch = progress.epoch;
        while progress.done < end {
            if observer.should_stop() {
                return Ok(false);
            }
            self.lr = self.batch_lr(progress.epoch, progress.done, progress.batches());
            // While this batch trains, each worker prefetches its share of the next one's images.
            let (this, next) = (progress.batch(progress.done), progress.batch(progress.done + 1));
            let images = this.len();
            let Some(r) = self.step_rounds(split, this, next, &mut (), &mut || observer.should_stop()) else {
                return Ok(false);
            };
            if !r.loss.is_finite() {
                // The weights are lost from here on; the caller keeps the last ones it saved.
                return Err(Error::Diverged { epoch: progress.epoch, batch: progress.done + 1, loss: r.loss });
            }
            progress.loss_sum += r.loss as f64;
            progress.correct += r.correct;
            progress.done += 1;
            observer.on_batch(progress.done, progress.batches(), images, r);
        }
        Ok(true)
    }

    /// Trains one epoch (1-based number); returns its loss and accuracy ([`EpochProgress::means`]), or `None` when
    /// `observer` asked to stop part-way.
    pub fn train_epoch(
        &mut self,
        split: &Split,
        epoch: usize,
        observer: &mut dyn TrainObserver,
    ) -> Result<Option<(f64, f64)>> {
        let mut progress = self.begin_epoch(epoch, split.len());
        Ok(self.train_batches(split, &mut progress, usize::MAX, observer)?.then(|| progress.means()))
    }
}

/// An epoch being trained a few batches at a time: the order of its images, how many batches are done, the sum
/// of their losses and the count of images they classified right. The same steps in the same order as one call of
/// [`Trainer::train_epoch`], whatever the batches are trained in.
#[derive(Clone, Debug)]
pub struct EpochProgress {
    /// 1-based.
    pub epoch: usize,
    order: Vec<u32>,
    batch_size: usize,
    done: usize,
    loss_sum: f64,
    correct: usize,
}

impl EpochProgress {
    /// Batches in the epoch.
    pub fn batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// Batches trained so far.
    pub fn batches_done(&self) -> usize {
        self.done
    }

    /// Whether every batch is trained.
    pub fn is_done(&self) -> bool {
        self.done == self.batches()
    }

    /// The images of batch `i` (none past the last batch).
    fn batch(&self, i: usize) -> &[u32] {
        let start = (i * self.batch_size).min(self.order.len());
        &self.order[start..(start + self.batch_size).min(self.order.len())]
    }

    /// The figures of the batches trained so far (the epoch's, once it is done), as every front end reports
    /// them: the loss is the mean of the batches' mean losses (the recipe's running loss over its `DataLoader`),
    /// the accuracy the images classified right over the images seen.
    pub fn means(&self) -> (f64, f64) {
        let n = self.done.max(1) as f64;
        let seen = (self.done * self.batch_size).min(self.order.len()).max(1);
        (self.loss_sum / n, self.correct as f64 / seen as f64)
    }
}

/// Receives progress from the training loop; the library itself never prints.
pub trait TrainObserver: Send {
    /// An epoch (1-based) is about to start.
    fn on_epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A batch (1-based) of `images` images finished.
    fn on_batch(&mut self, _batch: usize, _batches: usize, _images: usize, _result: StepResult) {}
    /// The epoch was trained, evaluated and saved.
    fn on_epoch_end(&mut self, _metrics: &EpochMetrics, _new_best: bool) {}
    /// Polled before each batch, and between the rounds of a large one: `true` stops training there (a batch
    /// stopped part-way leaves the weights as they were before it).
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
impl TrainObserver for () {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::{IMAGE_LEN, Label};
    use crate::nn::params::{Param, init_params};

    /// The phased schedule's workers take each other's images and slices' weight gradients when one is held up:
    /// with either of two workers held back every step until the other has taken its work, the numbers stay
    /// those of one worker.
    #[test]
    fn work_taken_from_a_held_up_worker_keeps_the_numbers() {
        let mut rng = crate::rng::Rng::new(5);
        let images = (0..64 * IMAGE_LEN).map(|_| (rng.uniform(0.0, 1.0) * 255.0) as u8).collect();
        let split = Split { images, labels: (0..64).map(|i| (i % 10) as Label).collect() };
        let config = crate::spec::ValidSpec::default().config().clone();
        let run = |threads: usize, held: Option<usize>| {
            let mut trainer = Trainer::new(config.clone(), init_params(3), None, threads).unwrap();
            trainer.buffers.hold_back =
                held.map(|worker| step::HoldBack { worker, taken_from_others: Default::default() });
            for s in 0..3u32 {
                let idx: Vec<u32> = (0..16).map(|i| (i * 5 + s * 16) % 64).collect();
                trainer.step(&split, &idx);
            }
            let taken = trainer.buffers.hold_back.take().map(|h| h.taken_from_others.into_inner());
            (trainer.params().to_vec(), taken)
        };
        let (one, _) = run(1, None);
        for worker in [0, 1] {
            let (two, taken) = run(2, Some(worker));
            assert_eq!(one, two, "worker {worker} held back");
            // Every step: the held-back slice's 8 images forward, its (6a), its 8 images backward, its (6c). (A build
            // without threads has one worker, which takes nothing from others.)
            let pieces = if cfg!(feature = "threads") { 3 * 18 } else { 0 };
            assert_eq!(taken, Some(pieces), "worker {worker} held back");
        }
    }

    #[test]
    fn linear1_weight_starts_a_cache_line_in_the_trainer() {
        assert_eq!(LINEAR1_WEIGHT_AT, Param::Linear1Weight.fixed_range().start);
        let params = init_params(3);
        let trainer =
            Trainer::new(crate::spec::ValidSpec::default().config().clone(), params.clone(), None, 1).unwrap();
        assert_eq!(trainer.params(), &params[..]);
        for buf in [trainer.params(), trainer.velocity()] {
            assert_eq!(buf[LINEAR1_WEIGHT_AT..].as_ptr() as usize % 64, 0);
        }
    }

    #[test]
    fn a_batch_keeps_busy_one_worker_a_slice_up_to_a_round() {
        let busy = [1, 7, 8, 9, 16, 24, 64, 65, 1024, 1025, 60_000].map(Trainer::useful_workers);
        // Slices of 8 images up to batch 64, of 16 above; at most a round's 64.
        assert_eq!(busy, [1, 1, 1, 2, 2, 3, 8, 5, 64, 64, 64]);
    }
}
