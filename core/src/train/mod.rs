//! Training and evaluation: the recipe's loop, parallel over fixed slices of each batch.
//!
//! Determinism: a batch is cut into slices (see [`slice_len`]) that depend on the batch size only, never on the
//! thread count; each slice writes its own gradient buffer, the optimiser adds the buffers in slice order, and
//! the linear layers' weight gradients are summed over the slices in order, in blocks of rows that do not
//! depend on the thread count either. linear1 is computed by groups of its rows (see [`linear1_groups`], again a
//! function of the batch size alone), and its input gradient is the sum of the groups' parts in group order. So
//! `--threads` changes the speed and never the numbers. The shuffle of epoch `e` is drawn from `(seed, e)` alone, so a run resumed at an epoch
//! boundary continues exactly as if it had never stopped.

use serde::{Deserialize, Serialize};

use crate::aligned::AlignedBuf;
use crate::data::Split;
use crate::error::{Error, Result};
use crate::nn::loss::{argmax, cross_entropy};
use crate::nn::model::{
    CONV_PARAMS, Head, LINEAR_WEIGHTS, LINEAR1, NUM_CLASSES, NUM_PARAMS, Stage, StageClock, Workspace,
    backward_convolutions, backward_to_linear1, forward, forward_features, forward_head, linear1_forward_rows,
    linear1_input_grad_rows, loss_and_grad, param_ranges,
};
use crate::optim::{Sgd, add_assign};
use crate::parallel::{PhaseShared, PoisonOnPanic, SpinBarrier, Team, share};
use crate::rng::Rng;
use linear_step::{GradParts, STEP_ROWS, weight_grad_step_rows};
use std::sync::atomic::{AtomicUsize, Ordering};

mod linear_step;

/// Images per slice for batches up to 64: the unit of parallel work and of gradient reduction.
pub const MIN_SLICE: usize = 8;
/// Images per slice for larger batches: big enough to amortise the per-slice gradient buffer, small enough
/// that a slice's activations stay in the core's L2 cache.
pub const MAX_SLICE: usize = 16;

/// Images per slice for a batch of `batch` (a function of the batch size alone, never of the thread count).
pub fn slice_len(batch: usize) -> usize {
    if batch <= 64 { MIN_SLICE } else { MAX_SLICE }
}

/// Images per forward call during evaluation.
const EVAL_CHUNK: usize = 64;

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
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 50,
            batch_size: 16,
            sgd: Sgd::default(),
            seed: 0,
            head: Head::Sigmoid,
            train_limit: None,
            test_limit: None,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.epochs == 0 {
            return bad("--epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.batch_size > 65_536 {
            return bad(format!("--batch-size must be in 1..=65536, got {}", self.batch_size));
        }
        let Sgd { lr, momentum, weight_decay } = self.sgd;
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!("--lr must be a positive number, got {lr}"));
        }
        if !(momentum.is_finite() && (0.0..1.0).contains(&momentum)) {
            return bad(format!("--momentum must be in [0, 1), got {momentum}"));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad(format!("--weight-decay must be >= 0, got {weight_decay}"));
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return bad("--train-limit and --test-limit must be at least 1".into());
        }
        Ok(())
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
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    pub train_seconds: f64,
    pub val_seconds: f64,
}

/// Loss and accuracy over a split, as the recipe reports them: means of per-batch values.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub accuracy: f64,
    pub correct: usize,
    pub total: usize,
}

/// A team of `threads` workers (at least one), or the error that starting its threads gave.
fn start_team(threads: usize) -> Result<Team> {
    Team::new(threads).map_err(|e| Error::Config(format!("cannot start {threads} threads: {e}")))
}

/// Forward-only passes over a whole split, in parallel, with buffers kept between calls.
pub struct Evaluator {
    team: Team,
    workspaces: Vec<Workspace>,
    /// Per image: loss, and predicted class.
    pub losses: Vec<f32>,
    pub predictions: Vec<u8>,
    indices: Vec<u32>,
}

impl Evaluator {
    /// An evaluator that runs on `threads` workers.
    pub fn new(threads: usize) -> Result<Self> {
        let team = start_team(threads)?;
        Ok(Evaluator {
            workspaces: (0..team.workers()).map(|_| Workspace::new(EVAL_CHUNK)).collect(),
            team,
            losses: Vec::new(),
            predictions: Vec::new(),
            indices: Vec::new(),
        })
    }

    /// Runs every image of `split`; per-batch means use `batch_size` like a `DataLoader` without `drop_last`.
    pub fn evaluate(&mut self, params: &[f32], head: Head, split: &Split, batch_size: usize) -> EvalResult {
        let n = split.len();
        self.losses.resize(n, 0.0);
        self.predictions.resize(n, 0);
        if self.indices.len() != n {
            self.indices = (0..n as u32).collect();
        }
        // Worker w takes images w * per_worker.., in chunks of `EVAL_CHUNK`.
        let per_worker = n.div_ceil(self.workspaces.len()).max(1);
        let indices = &self.indices;
        let workspaces = PhaseShared::new(&mut self.workspaces);
        let all_losses = PhaseShared::new(&mut self.losses);
        let all_predictions = PhaseShared::new(&mut self.predictions);
        self.team.run(&|w| {
            let (start, end) = ((w * per_worker).min(n), ((w + 1) * per_worker).min(n));
            // SAFETY: worker w alone uses workspace w and images start..end.
            let (ws, losses, preds) = unsafe {
                (
                    &mut workspaces.get_mut(w..w + 1)[0],
                    all_losses.get_mut(start..end),
                    all_predictions.get_mut(start..end),
                )
            };
            let mut labels = [0u8; EVAL_CHUNK];
            for (c, (losses, preds)) in losses.chunks_mut(EVAL_CHUNK).zip(preds.chunks_mut(EVAL_CHUNK)).enumerate() {
                let idx = &indices[start + c * EVAL_CHUNK..start + c * EVAL_CHUNK + losses.len()];
                let m = idx.len();
                split.gather(idx, &mut ws.input, &mut labels[..m]);
                forward(params, head, ws, m, &mut ());
                for k in 0..m {
                    let s = &ws.scores[k * NUM_CLASSES..(k + 1) * NUM_CLASSES];
                    losses[k] = cross_entropy(s, labels[k] as usize, None).0;
                    preds[k] = argmax(s) as u8;
                }
            }
        });
        let mut loss_sum = 0.0f64;
        let mut acc_sum = 0.0f64;
        let mut correct = 0;
        let mut batches = 0;
        for (losses, (preds, labels)) in
            self.losses.chunks(batch_size).zip(self.predictions.chunks(batch_size).zip(split.labels.chunks(batch_size)))
        {
            let ok = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
            loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>() / losses.len() as f64;
            acc_sum += ok as f64 / losses.len() as f64;
            correct += ok;
            batches += 1;
        }
        let batches = batches.max(1) as f64;
        EvalResult { loss: loss_sum / batches, accuracy: acc_sum / batches, correct, total: n }
    }
}

/// Most row groups linear1 is split into (see [`Trainer::step_with_clock`]): each group's part of the input
/// gradient is a `(batch, 400)` buffer, summed per image at the end.
const MAX_LINEAR1_GROUPS: usize = 4;

/// How many row groups linear1 is split into for batches of `batch`: one per slice, up to
/// `MAX_LINEAR1_GROUPS` (a function of the batch size alone, never of the thread count).
pub fn linear1_groups(batch: usize) -> usize {
    batch.div_ceil(slice_len(batch)).min(MAX_LINEAR1_GROUPS)
}

/// Rows of linear1 in group `g` of `groups`: contiguous, in order, as even as they can be.
fn group_rows(g: usize, groups: usize) -> std::ops::Range<usize> {
    let o = LINEAR1.out_features;
    g * o / groups..(g + 1) * o / groups
}

/// A piece of the head (linear2 and the output layer) whose gradient is summed over the slices in slice order
/// and updated in one go: a block of rows of a weight, or a bias. The pieces never depend on the thread count.
#[derive(Clone, Debug)]
enum HeadPart {
    /// Rows `rows` of the weight of layer `layer` (an index into [`LINEAR_WEIGHTS`]).
    Rows { layer: usize, rows: std::ops::Range<usize> },
    /// The bias that is parameter tensor `param`.
    Bias { param: usize },
}

impl HeadPart {
    /// The head, piece by piece.
    fn all() -> Vec<HeadPart> {
        let weights = LINEAR_WEIGHTS.iter().enumerate().skip(1).flat_map(|(layer, (_, d))| {
            (0..d.out_features)
                .step_by(STEP_ROWS)
                .map(move |r| HeadPart::Rows { layer, rows: r..(r + STEP_ROWS).min(d.out_features) })
        });
        let biases = LINEAR_WEIGHTS.iter().skip(1).map(|&(param, _)| HeadPart::Bias { param: param + 1 });
        weights.chain(biases).collect()
    }

    /// Where the piece lives in the flat parameters.
    fn range(&self) -> std::ops::Range<usize> {
        match self {
            HeadPart::Rows { layer, rows } => {
                let (param, d) = LINEAR_WEIGHTS[*layer];
                let start = param_ranges()[param].start;
                start + rows.start * d.in_features..start + rows.end * d.in_features
            }
            HeadPart::Bias { param } => param_ranges()[*param].clone(),
        }
    }

    /// Sums the piece's gradient over the slices and takes an SGD step on `p` and `v`, the piece's parameters and
    /// momentum. `scratch` holds at least a bias.
    fn update(&self, slices: &[SliceState], sgd: Sgd, p: &mut [f32], v: &mut [f32], scratch: &mut [f32]) {
        match self {
            HeadPart::Rows { layer, rows } => {
                let d = LINEAR_WEIGHTS[*layer].1;
                weight_grad_step_rows(&d, &HeadParts { slices, layer: *layer }, rows.clone(), sgd, p, v);
            }
            HeadPart::Bias { param } => {
                let range = param_ranges()[*param].clone();
                let g = &mut scratch[..range.len()];
                g.copy_from_slice(&slices[0].grads[range.clone()]);
                for st in &slices[1..] {
                    add_assign(g, &st.grads[range.clone()]);
                }
                sgd.step(p, v, g);
            }
        }
    }
}

/// linear1's input and output gradient in every slice's workspace.
struct Linear1Parts<'a>(&'a [SliceState]);

impl GradParts for Linear1Parts<'_> {
    fn parts(&self) -> usize {
        self.0.len()
    }
    fn part(&self, s: usize) -> (&[f32], &[f32]) {
        let st = &self.0[s];
        (&st.ws.flat[..st.n * LINEAR1.in_features], st.ws.linear1_grad(st.n))
    }
}

/// One of the head's linear layers' input and output gradient in every slice's workspace.
struct HeadParts<'a> {
    slices: &'a [SliceState],
    /// An index into [`LINEAR_WEIGHTS`].
    layer: usize,
}

impl GradParts for HeadParts<'_> {
    fn parts(&self) -> usize {
        self.slices.len()
    }
    fn part(&self, s: usize) -> (&[f32], &[f32]) {
        let st = &self.slices[s];
        st.ws.linear_io(self.layer, st.n)
    }
}

struct SliceState {
    ws: Workspace,
    grads: AlignedBuf,
    targets: Vec<u8>,
    /// Images in this slice at the last step.
    n: usize,
    loss: f32,
    correct: usize,
}

/// A worker's private copy of the head's parameters and momentum. The head is small (11k weights) and read by
/// every slice: for small batches, updating one copy per worker, each on its own core, is cheaper than moving
/// one shared copy between the cores' caches twice a step. For large ones the gradient costs more than the
/// move, and the workers share the head's update instead.
struct HeadCopy {
    /// All the parameters, of which only the head's are kept up to date.
    params: AlignedBuf,
    /// Momentum; as `params`.
    velocity: AlignedBuf,
}

/// Where linear1's weight starts in the flat parameters (right after the convolutions'): the parameters and
/// momentum are laid out so that it starts a cache line, and with it each of its rows (400 values), which the
/// kernels read as vectors more than any other.
const LINEAR1_WEIGHT_AT: usize = CONV_PARAMS;

/// Largest batch for which every worker keeps a copy of the head (measured, 2 threads: the copies make
/// batch 16 faster, and batches 32, 64 and 256 slower).
const MAX_BATCH_FOR_HEAD_COPIES: usize = 16;

/// Parameters, momentum and every buffer a training step needs, allocated once.
pub struct Trainer {
    /// Fixed at construction but for `epochs`: the buffers are sized for its batch size.
    config: TrainConfig,
    params: AlignedBuf,
    velocity: AlignedBuf,
    /// Worker t's own copy of the head (linear2 and the output layer) for t >= 1; worker 0 uses `params` and
    /// `velocity`. Every worker updates its copy with the same arithmetic, so the copies stay equal.
    head_copies: Vec<HeadCopy>,
    slices: Vec<SliceState>,
    /// Row groups of linear1 (see [`linear1_groups`]).
    groups: usize,
    /// linear1's output, written by the groups and read by the slices.
    linear1_exchange: AlignedBuf,
    /// Each group's part of linear1's input gradient, for every image.
    linear1_partials: AlignedBuf,
    head_parts: Vec<HeadPart>,
    /// Whether each worker keeps its own copy of the head (see [`HeadCopy`]): for batches of up to
    /// [`MAX_BATCH_FOR_HEAD_COPIES`] images.
    copy_head: bool,
    order: Vec<u32>,
    /// The workers that run the steps.
    team: Team,
}

/// The mean loss and accuracy of one batch.
#[derive(Clone, Copy, Debug)]
pub struct StepResult {
    pub loss: f32,
    pub accuracy: f32,
}

impl Trainer {
    /// A trainer for `config` from `params` (and `velocity`, when resuming), whose steps run on `threads`
    /// workers. The thread count never changes a number.
    pub fn new(config: TrainConfig, params: Vec<f32>, velocity: Option<Vec<f32>>, threads: usize) -> Result<Self> {
        config.validate()?;
        let team = start_team(threads)?;
        assert_eq!(params.len(), NUM_PARAMS);
        let len = slice_len(config.batch_size);
        let groups = linear1_groups(config.batch_size);
        let copy_head = config.batch_size <= MAX_BATCH_FOR_HEAD_COPIES;
        // Images in all the slices.
        let capacity = config.batch_size.div_ceil(len) * len;
        let slices = (0..config.batch_size.div_ceil(len))
            .map(|_| SliceState {
                ws: Workspace::new(len),
                grads: AlignedBuf::zeroed(NUM_PARAMS),
                targets: vec![0; len],
                n: 0,
                loss: 0.0,
                correct: 0,
            })
            .collect();
        let params = AlignedBuf::from_slice_at(&params, LINEAR1_WEIGHT_AT);
        let velocity = velocity.map_or_else(
            || AlignedBuf::zeroed_at(NUM_PARAMS, LINEAR1_WEIGHT_AT),
            |v| AlignedBuf::from_slice_at(&v, LINEAR1_WEIGHT_AT),
        );
        let copies = if copy_head { team.workers() - 1 } else { 0 };
        let head_copies =
            (0..copies).map(|_| HeadCopy { params: params.clone(), velocity: velocity.clone() }).collect();
        Ok(Trainer {
            velocity,
            config,
            params,
            head_copies,
            slices,
            groups,
            linear1_exchange: AlignedBuf::zeroed(capacity * LINEAR1.out_features),
            linear1_partials: AlignedBuf::zeroed(groups * capacity * LINEAR1.in_features),
            head_parts: HeadPart::all(),
            copy_head,
            order: Vec::new(),
            team,
        })
    }

    /// What the trainer was built with (the number of epochs as last set).
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Changes the number of epochs a run goes to (as when a run is resumed with a new `--epochs`).
    pub fn set_epochs(&mut self, epochs: usize) {
        self.config.epochs = epochs;
    }

    /// The parameters, in the order of [`param_ranges`].
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The momentum buffer, laid out as [`Trainer::params`].
    pub fn velocity(&self) -> &[f32] {
        &self.velocity
    }

    /// One SGD step on the images of `split` at `indices` (at most `batch_size` of them).
    pub fn step(&mut self, split: &Split, indices: &[u32]) -> StepResult {
        self.step_with_clock(split, indices, &[], &mut ())
    }

    /// [`Trainer::step`], and meanwhile each worker starts loading into its core's caches the images of `next`
    /// it will need at the next step (if that is a step on `next`; the numbers never depend on it).
    pub fn step_prefetching(&mut self, split: &Split, indices: &[u32], next: &[u32]) -> StepResult {
        self.step_with_clock(split, indices, next, &mut ())
    }

    /// [`Trainer::step_prefetching`], reporting the time of each layer of the first slice to `clock`.
    pub fn step_with_clock(
        &mut self,
        split: &Split,
        indices: &[u32],
        next: &[u32],
        clock: &mut (impl StageClock + Send),
    ) -> StepResult {
        let b = indices.len();
        assert!(b > 0 && b <= self.config.batch_size);
        let len = slice_len(self.config.batch_size);
        let used = b.div_ceil(len);
        let groups = self.groups;
        let (head, sgd) = (self.config.head, self.config.sgd);
        // One job for the team. Worker t runs slices t, t + workers, ... and linear1's row groups t, t + workers,
        // ..., always the same ones. When every worker has one slice at most (batch 16 with two threads), the
        // step runs in phases that wait for each other through counters, so that a slice's activations stay in
        // one core's cache from step to step, and so does each block of linear1's weight, which only its
        // group's worker ever reads or writes. (Shared between the cores, the 192 KB of that weight had to
        // cross from one core's cache to the other's every step, and writing it meant taking every line back
        // from the other core first: at batch 16, measured, that cost more than the arithmetic.)
        //   (1) own slices: the convolutions, up to the flattened features;
        //   (2) own groups: their rows of linear1, for every slice;
        //   (3) own slices: the rest of the forward pass, the loss, backward down to linear1's output
        //       (leaving in the slice's workspace what the linear weights' gradients are made from);
        //   (4) own groups: their part of linear1's input gradient, for every slice; then their rows of linear1's
        //       weight, the gradient summed over the slices in order, updated;
        //   (5) the head's gradients summed over the slices in order and updated: at batch 16, by every worker
        //       on its own copy of the head; beyond, piece by piece, first come first served;
        //   (6) own slices: linear1's input gradient parts summed in group order, then backward through the
        //       convolutions;
        //   (7) after a barrier, each sums the slices' other gradients in slice order and updates its own fixed
        //       share of the other parameters.
        // With more slices than workers (or one worker), each worker runs (1), (2), (3), (4) without the update,
        // and (6) for one slice after the other, then (4)'s update of its groups, (5) and (7): see `step` below.
        // The slices and groups depend on the batch size alone, so which worker does what never changes a number.
        let team = &mut self.team;
        let workers = team.workers();
        let barrier = SpinBarrier::new(workers);
        let [slices_done, features_done, linear1_done, dense_done, input_grads_done, next_head_part] =
            std::array::from_fn(|_| AtomicUsize::new(0));
        let params = PhaseShared::new(&mut self.params);
        let velocity = PhaseShared::new(&mut self.velocity);
        let slices = PhaseShared::new(&mut self.slices[..used]);
        let (exchange_len, partials_len) = (self.linear1_exchange.len(), self.linear1_partials.len());
        let exchange = PhaseShared::new(&mut self.linear1_exchange);
        let partials = PhaseShared::new(&mut self.linear1_partials);
        let head_copies = PhaseShared::new(&mut self.head_copies);
        let (head_parts, copy_head) = (&self.head_parts, self.copy_head);
        let clock = std::sync::Mutex::new(clock);
        let ranges = param_ranges();
        // The parameters whose gradients the slices compute themselves (all but the linear layers' weights),
        // as runs of adjacent ones.
        let slice_ranges = [0..CONV_PARAMS, ranges[5].clone(), ranges[7].clone(), ranges[9].clone()];
        // Those of them that (7) updates (the head's are updated in (5)).
        let shared_ranges = &slice_ranges[..2];
        let (i_len, o_len) = (LINEAR1.in_features, LINEAR1.out_features);
        // Where slice s's linear1 output from group g lives in the exchange buffer: the slice's `len x 120`
        // values, cut into the groups' `len x rows` blocks.
        let exchange_at = |g: usize, s: usize| s * len * o_len + len * group_rows(g, groups).start;
        // Where rows `rows` of linear1's weight and bias live in the flat parameters.
        let weight_rows =
            |rows: &std::ops::Range<usize>| ranges[4].start + rows.start * i_len..ranges[4].start + rows.end * i_len;
        let bias_rows = |rows: &std::ops::Range<usize>| ranges[5].start + rows.start..ranges[5].start + rows.end;
        // Where group g's part of slice s's input gradient lives.
        let partial_at = |g: usize, s: usize| (g * used + s) * len * i_len;
        // The work of a step, piece by piece, numbered as the phases above; `step` below says who runs which
        // piece when.
        // (1) Slice s's convolutions, up to the flattened features.
        let forward_slice = |s: usize, clock: &mut dyn StageClockDyn| {
            // SAFETY: nobody writes a parameter while any slice is in this piece; one worker runs slice s.
            let (params, st) = unsafe { (params.get(0..NUM_PARAMS), &mut slices.get_mut(s..s + 1)[0]) };
            let idx = &indices[s * len..((s + 1) * len).min(b)];
            let n = idx.len();
            split.gather(idx, &mut st.ws.input, &mut st.targets[..n]);
            split.prefetch(next.get(s * len..((s + 1) * len).min(next.len())).unwrap_or_default());
            forward_features(params, &mut st.ws, n, &mut DynClock(clock));
            st.n = n;
        };
        // (2) Group g's rows of linear1 for slice s.
        let linear1_forward = |g: usize, s: usize| {
            let rows = group_rows(g, groups);
            // SAFETY: nobody writes linear1's parameters while any slice is in this piece, nor slice s; each
            // group writes its own blocks of the exchange buffer.
            let (weight, bias, st) =
                unsafe { (params.get(weight_rows(&rows)), params.get(bias_rows(&rows)), &slices.get(s..s + 1)[0]) };
            let out = unsafe { exchange.get_mut(exchange_at(g, s)..exchange_at(g, s) + st.n * rows.len()) };
            linear1_forward_rows(weight, bias, &st.ws.flat, st.n, out);
        };
        // (3) Slice s: the rest of the forward pass, the loss, and backward down to linear1's output (leaving in
        // the slice's workspace what the linear weights' gradients are made from). Worker t reads the head from
        // its own copy when there are copies.
        let head_slice = |t: usize, s: usize, clock: &mut dyn StageClockDyn| {
            // SAFETY: nobody writes the head while any slice is in this piece, nor the exchange buffer's blocks
            // of slice s; one worker runs slice s.
            let (params, st, exchange) = unsafe {
                (
                    match t {
                        0 => params.get(0..NUM_PARAMS),
                        _ if !copy_head => params.get(0..NUM_PARAMS),
                        _ => &head_copies.get(t - 1..t)[0].params[..],
                    },
                    &mut slices.get_mut(s..s + 1)[0],
                    exchange.get(0..exchange_len),
                )
            };
            let n = st.n;
            for g in 0..groups {
                let rows = group_rows(g, groups);
                let block = &exchange[exchange_at(g, s)..][..n * rows.len()];
                for (dst, src) in st.ws.linear1.chunks_exact_mut(o_len).zip(block.chunks_exact(rows.len())) {
                    dst[rows.clone()].copy_from_slice(src);
                }
            }
            forward_head(params, head, &mut st.ws, n, &mut DynClock(clock));
            let (loss, correct) = loss_and_grad(&mut st.ws, &st.targets[..n], b);
            st.loss = loss;
            st.correct = correct;
            for r in &slice_ranges {
                st.grads[r.clone()].fill(0.0);
            }
            backward_to_linear1(params, head, &mut st.ws, n, &mut st.grads, false, &mut DynClock(clock));
        };
        // (4a) Group g's part of slice s's input gradient.
        let linear1_input_grad = |g: usize, s: usize| {
            let rows = group_rows(g, groups);
            // SAFETY: linear1's weight is not written while any slice is in this piece; slice s is only read;
            // each group writes its own parts.
            let (weight, st) = unsafe { (params.get(weight_rows(&rows)), &slices.get(s..s + 1)[0]) };
            let out = unsafe { partials.get_mut(partial_at(g, s)..partial_at(g, s) + st.n * i_len) };
            linear1_input_grad_rows(weight, st.ws.linear1_grad(st.n), st.n, rows, out);
        };
        // (4b) Group g's rows of linear1's weight: the gradient summed over the slices in order, updated. After
        // every slice's (3) and every (4a) of the group.
        let linear1_update = |g: usize| {
            let rows = group_rows(g, groups);
            // SAFETY: the slices are only read while any group is in this piece.
            let all_slices = unsafe { slices.get(0..used) };
            for r in rows.clone().step_by(STEP_ROWS) {
                let block = r..(r + STEP_ROWS).min(rows.end);
                let range = weight_rows(&block);
                // SAFETY: one worker runs group g, and nobody reads these rows again this step.
                let (p, v) = unsafe { (params.get_mut(range.clone()), velocity.get_mut(range)) };
                weight_grad_step_rows(&LINEAR1, &Linear1Parts(all_slices), block, sgd, p, v);
            }
        };
        // (5) The head: each piece's gradient summed over the slices in slice order, then an SGD step, on every
        // worker's own copy, or on the one shared head by whichever worker takes the piece. After every slice's
        // (3), and while no slice's (6) runs: (6) does not change what this reads, but it borrows the slice.
        let head_update = |t: usize, scratch: &mut [f32]| {
            // SAFETY: the slices are only read while any worker is in this piece.
            let all_slices = unsafe { slices.get(0..used) };
            if copy_head {
                for part in head_parts {
                    let r = part.range();
                    // SAFETY: after (3) worker 0's head in `params`, and each copy, is touched by its worker alone.
                    let (p, v) = unsafe {
                        match t {
                            0 => (params.get_mut(r.clone()), velocity.get_mut(r)),
                            _ => {
                                let copy = &mut head_copies.get_mut(t - 1..t)[0];
                                (&mut copy.params[r.clone()], &mut copy.velocity[r])
                            }
                        }
                    };
                    part.update(all_slices, sgd, p, v, scratch);
                }
            } else {
                while let Some(part) = head_parts.get(next_head_part.fetch_add(1, Ordering::Relaxed)) {
                    let r = part.range();
                    // SAFETY: this worker alone took the piece, and after (3) nobody else reads the head.
                    let (p, v) = unsafe { (params.get_mut(r.clone()), velocity.get_mut(r)) };
                    part.update(all_slices, sgd, p, v, scratch);
                }
            }
        };
        // (6) Slice s: linear1's input gradient parts summed in group order, then backward through the
        // convolutions. After every group's (4a) for the slice.
        let backward_slice = |s: usize, clock: &mut dyn StageClockDyn| {
            // SAFETY: one worker runs slice s; the partial input gradients are no longer written; the
            // convolutions read no parameter (conv2's weight as the slice's forward pass packed it).
            let (st, partials) = unsafe { (&mut slices.get_mut(s..s + 1)[0], partials.get(0..partials_len)) };
            let n = st.n;
            let d_flat = st.ws.features_grad_mut(n);
            d_flat.copy_from_slice(&partials[partial_at(0, s)..][..n * i_len]);
            for g in 1..groups {
                add_assign(d_flat, &partials[partial_at(g, s)..][..n * i_len]);
            }
            DynClock(&mut *clock).lap(Stage::Linear1, true);
            backward_convolutions(&mut st.ws, n, &mut st.grads[..CONV_PARAMS], &mut DynClock(clock));
        };
        // (7) Worker t's fixed share of everything else: the slices' gradients summed in slice order, a piece at a
        // time (the piece staying in L1), and updated. After every slice's (6).
        let rest_update = |t: usize, scratch: &mut [f32]| {
            // SAFETY: the slices are finished; each part of these parameters is given to one worker.
            let parts = unsafe { slices.get(0..used) };
            for range in shared_ranges {
                let mine = share(range.len(), workers, t, 16);
                let range = range.start + mine.start..range.start + mine.end;
                for start in range.clone().step_by(scratch.len()) {
                    let range = start..(start + scratch.len()).min(range.end);
                    let (p, v) = unsafe { (params.get_mut(range.clone()), velocity.get_mut(range.clone())) };
                    let g = &mut scratch[..p.len()];
                    g.copy_from_slice(&parts[0].grads[range.clone()]);
                    for part in &parts[1..] {
                        add_assign(g, &part.grads[range.clone()]);
                    }
                    sgd.step(p, v, g);
                }
            }
        };
        // Worker t's part of the step. Slice 0 is worker 0's first, and the one timed.
        let step = |t: usize| {
            // A worker that panics must not leave the others waiting for it.
            let _guard = PoisonOnPanic(&barrier);
            // Worker 0 holds the caller's clock; the others, and every slice but slice 0, time nothing.
            let mut timed = if t == 0 { clock.try_lock().ok() } else { None };
            let (mut no_clock, mut untimed) = ((), ());
            let clock: &mut dyn StageClockDyn = match timed.as_deref_mut() {
                Some(c) => *c,
                None => &mut no_clock,
            };
            // The clock for slice s's work.
            macro_rules! clock_for {
                ($s:expr) => {
                    if $s == 0 { &mut *clock as &mut dyn StageClockDyn } else { &mut untimed as &mut dyn StageClockDyn }
                };
            }
            // For gradients summed over the slices, a piece at a time.
            let mut scratch = [0.0f32; 1024];
            let own_slices = || (t..used).step_by(workers);
            let own_groups = || (t..groups).step_by(workers);
            let wait_for = |counter: &AtomicUsize, target: usize| {
                let mut spins = 0u32;
                while counter.load(Ordering::Acquire) < target {
                    barrier.check();
                    if spins < 1 << 14 {
                        std::hint::spin_loop();
                        spins += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
            };
            if used > workers || workers == 1 {
                // Several slices per worker (or one worker): each takes its slices one at a time from their images
                // to their convolutions' backward pass, the batch's parameters staying as they were, and the
                // updates wait for every slice: the same arithmetic in the same order as the phases below, with
                // one slice's activations in the core's caches at a time instead of all of the worker's, and no
                // waiting mid-step. To that end each of a worker's slices borrows the convolution buffers of its
                // first one for its turn: one set of them (half a megabyte for 8 images) then serves all its
                // slices from this core's cache, where a batch of 64 would need 4 MB. Each worker reads all of
                // linear1's weight, and takes the rows the other updated from its cache once a step: at these
                // batch sizes that costs less than a wait per phase.
                let trade_convolution_buffers = |s: usize| {
                    if s != t {
                        // SAFETY: slices t and s are this worker's, and distinct.
                        let (own, other) =
                            unsafe { (&mut slices.get_mut(t..t + 1)[0], &mut slices.get_mut(s..s + 1)[0]) };
                        own.ws.swap_convolution_buffers(&mut other.ws);
                    }
                };
                for s in own_slices() {
                    trade_convolution_buffers(s);
                    forward_slice(s, clock_for!(s));
                    DynClock(clock_for!(s)).restart();
                    for g in 0..groups {
                        linear1_forward(g, s);
                    }
                    DynClock(clock_for!(s)).lap(Stage::Linear1, false);
                    head_slice(t, s, clock_for!(s));
                    for g in 0..groups {
                        linear1_input_grad(g, s);
                    }
                    backward_slice(s, clock_for!(s));
                    trade_convolution_buffers(s);
                    slices_done.fetch_add(1, Ordering::Release);
                }
                wait_for(&slices_done, used);
                for g in own_groups() {
                    linear1_update(g);
                }
                head_update(t, &mut scratch);
                barrier.wait();
                rest_update(t, &mut scratch);
                return;
            }
            // One slice per worker at most: the phases above.
            for s in own_slices() {
                forward_slice(s, clock_for!(s));
                features_done.fetch_add(1, Ordering::Release);
            }
            wait_for(&features_done, used);
            // Group 0 is worker 0's first, and the one timed (at batch 16, half the rows for all sixteen images:
            // as much work as one slice).
            DynClock(clock_for!(0)).restart();
            for g in own_groups() {
                for s in 0..used {
                    linear1_forward(g, s);
                }
                if g == 0 {
                    DynClock(clock_for!(0)).lap(Stage::Linear1, false);
                }
                linear1_done.fetch_add(1, Ordering::Release);
            }
            wait_for(&linear1_done, groups);
            for s in own_slices() {
                DynClock(clock_for!(s)).restart();
                head_slice(t, s, clock_for!(s));
                dense_done.fetch_add(1, Ordering::Release);
            }
            wait_for(&dense_done, used);
            // The groups' update right after their input gradients, with the slices' inputs and output gradients
            // still in this core's cache; then the head, while the other groups finish.
            for g in own_groups() {
                for s in 0..used {
                    linear1_input_grad(g, s);
                }
                linear1_update(g);
                input_grads_done.fetch_add(1, Ordering::Release);
            }
            head_update(t, &mut scratch);
            wait_for(&input_grads_done, groups);
            for s in own_slices() {
                DynClock(clock_for!(s)).restart();
                backward_slice(s, clock_for!(s));
            }
            barrier.wait();
            rest_update(t, &mut scratch);
        };
        team.run(&step);
        let loss = self.slices[..used].iter().map(|s| s.loss).sum::<f32>() / b as f32;
        let correct: usize = self.slices[..used].iter().map(|s| s.correct).sum();
        StepResult { loss, accuracy: correct as f32 / b as f32 }
    }

    /// The order in which epoch `epoch` (1-based) visits the `n` training images.
    pub fn epoch_order(seed: u64, epoch: usize, n: usize, order: &mut Vec<u32>) {
        order.clear();
        order.extend(0..n as u32);
        Rng::derived(seed, 2, epoch as u64).shuffle(order);
    }

    /// Trains one epoch (1-based number); returns the mean per-batch loss and accuracy, or `None` when
    /// `observer` asked to stop part-way.
    pub fn train_epoch(&mut self, split: &Split, epoch: usize, observer: &mut dyn TrainObserver) -> Option<(f64, f64)> {
        let mut order = std::mem::take(&mut self.order);
        Self::epoch_order(self.config.seed, epoch, split.len(), &mut order);
        let batches = split.len().div_ceil(self.config.batch_size);
        let (mut loss_sum, mut acc_sum) = (0.0f64, 0.0f64);
        let mut stopped = false;
        // The steps run on the trainer's own team of threads (the calling thread is its worker 0).
        let mut batches_ahead = order.chunks(self.config.batch_size).skip(1);
        for (i, indices) in order.chunks(self.config.batch_size).enumerate() {
            if observer.should_stop() {
                stopped = true;
                break;
            }
            let r = self.step_prefetching(split, indices, batches_ahead.next().unwrap_or_default());
            loss_sum += r.loss as f64;
            acc_sum += r.accuracy as f64;
            observer.on_batch(i + 1, batches, indices.len(), r);
        }
        self.order = order;
        if stopped {
            return None;
        }
        Some((loss_sum / batches as f64, acc_sum / batches as f64))
    }
}

/// Object-safe view of a [`StageClock`], so one closure serves the timed and untimed slices.
trait StageClockDyn {
    fn lap_dyn(&mut self, stage: crate::nn::model::Stage, backward: bool);
    fn restart_dyn(&mut self);
}

impl<T: StageClock> StageClockDyn for T {
    fn lap_dyn(&mut self, stage: crate::nn::model::Stage, backward: bool) {
        self.lap(stage, backward)
    }
    fn restart_dyn(&mut self) {
        self.restart()
    }
}

struct DynClock<'a>(&'a mut dyn StageClockDyn);

impl StageClock for DynClock<'_> {
    fn lap(&mut self, stage: crate::nn::model::Stage, backward: bool) {
        self.0.lap_dyn(stage, backward)
    }
    fn restart(&mut self) {
        self.0.restart_dyn()
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
    /// Polled before each batch: `true` stops training at the next boundary.
    fn should_stop(&self) -> bool {
        false
    }
}

/// An observer that ignores everything.
impl TrainObserver for () {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::model::init_params;

    #[test]
    fn linear1_weight_starts_a_cache_line_in_the_trainer() {
        assert_eq!(LINEAR1_WEIGHT_AT, param_ranges()[4].start);
        let params = init_params(3);
        let trainer = Trainer::new(TrainConfig::default(), params.clone(), None, 1).unwrap();
        assert_eq!(trainer.params(), &params[..]);
        for buf in [trainer.params(), trainer.velocity()] {
            assert_eq!(buf[LINEAR1_WEIGHT_AT..].as_ptr() as usize % 64, 0);
        }
    }
}
