//! How a batch is shared out, and the buffers each share works in. Every cut here is a function of the batch
//! size alone, never of the thread count: slices of images, groups of linear1's rows, and pieces of the tail.

use std::ops::Range;

use super::linear_step::{Carry, GradParts, STEP_ROWS, weight_grad_step_rows};
use crate::aligned::AlignedBuf;
use crate::base::Label;
use crate::nn::LinearDims;
use crate::nn::model::{CONV_PARAMS, LINEAR1, LinearLayer, Workspace};
use crate::nn::params::{Param, num_params};
use crate::optim::{Sgd, add_assign};

/// Images per slice for batches up to 64: the unit of parallel work and of gradient reduction.
pub const MIN_SLICE: usize = 8;
/// Images per slice for larger batches: big enough to amortise the per-slice gradient buffer, small enough
/// that a slice's activations stay in the core's L2 cache.
pub const MAX_SLICE: usize = 16;

/// Images per slice for a batch of `batch` (a function of the batch size alone, never of the thread count).
pub fn slice_len(batch: usize) -> usize {
    if batch <= 64 { MIN_SLICE } else { MAX_SLICE }
}

/// Most slices a step holds at once: a larger batch runs in rounds of this many slices, one after the other,
/// each adding to the gradient the rounds before it summed (in the same order: the bits are those of one round),
/// and the last one updating. So a step's memory is bounded whatever the batch size (about 80 MB of slices),
/// while a round is long enough that starting it costs nothing measurable.
pub const ROUND_SLICES: usize = 64;

/// Most row groups linear1 is split into: each group's part of the input gradient is a `(batch, 400)` buffer,
/// summed per image at the end.
const MAX_LINEAR1_GROUPS: usize = 4;

/// How many row groups linear1 is split into for batches of `batch`: one per slice, up to
/// `MAX_LINEAR1_GROUPS` (a function of the batch size alone, never of the thread count).
pub fn linear1_groups(batch: usize) -> usize {
    batch.div_ceil(slice_len(batch)).min(MAX_LINEAR1_GROUPS)
}

/// Rows of linear1 in group `g` of `groups`: contiguous, in order, as even as they can be.
pub(super) fn group_rows(g: usize, groups: usize) -> Range<usize> {
    let o = LINEAR1.out_features;
    g * o / groups..(g + 1) * o / groups
}

/// The tail of the network: linear2 and the output layer, whose weights are small (11k) and read by every
/// slice.
pub(super) const TAIL_LAYERS: [LinearLayer; 2] = [LinearLayer::Linear2, LinearLayer::Output];

/// The parameters whose gradients each slice computes in its own buffer (all but the linear layers' weights,
/// whose gradients are summed over the slices as they are updated), as runs of adjacent ones, for a network of
/// `classes` classes.
pub(super) fn slice_gradients(classes: usize) -> [Range<usize>; 4] {
    let biases = [Param::Linear1Bias, Param::Linear2Bias, Param::OutputBias].map(|p| p.range(classes));
    [0..CONV_PARAMS, biases[0].clone(), biases[1].clone(), biases[2].clone()]
}

/// Those of [`slice_gradients`] that the workers update in fixed shares at the end of a step: the convolutions'
/// and linear1's bias (the tail's biases are updated with the tail).
pub(super) const SHARED_UPDATES: [Range<usize>; 2] = [0..CONV_PARAMS, Param::Linear1Bias.fixed_range()];

/// A piece of the tail whose gradient is summed over the slices in slice order and updated in one go: a block
/// of rows of a weight, or a bias.
#[derive(Clone, Debug)]
pub(super) enum TailPart {
    /// Rows `rows` of `layer`'s weight, at `range` in the flat parameters.
    Rows { layer: LinearLayer, dims: LinearDims, rows: Range<usize>, range: Range<usize> },
    /// A bias, at `range`.
    Bias { range: Range<usize> },
}

impl TailPart {
    /// The tail of a network of `classes` classes, piece by piece: the weights' rows in blocks of
    /// [`STEP_ROWS`], then the biases.
    pub fn all(classes: usize) -> Vec<TailPart> {
        let weights = TAIL_LAYERS.iter().flat_map(|&layer| {
            let dims = layer.dims(classes);
            let (out, start) = (dims.out_features, layer.weight().start(classes));
            (0..out).step_by(STEP_ROWS).map(move |r| {
                let rows = r..(r + STEP_ROWS).min(out);
                let range = start + rows.start * dims.in_features..start + rows.end * dims.in_features;
                TailPart::Rows { layer, dims, rows, range }
            })
        });
        let biases = TAIL_LAYERS.iter().map(|layer| TailPart::Bias { range: layer.bias().range(classes) });
        weights.chain(biases).collect()
    }

    /// Where the piece lives in the flat parameters.
    pub fn range(&self) -> Range<usize> {
        match self {
            TailPart::Rows { range, .. } | TailPart::Bias { range } => range.clone(),
        }
    }

    /// Sums the piece's gradient over the slices and takes an SGD step on `p` and `v`, the piece's parameters and
    /// momentum (or, in a round that does not update, leaves the sum in `carry`). `scratch` holds at least a bias.
    pub fn update(
        &self,
        slices: &[SliceState],
        sgd: Sgd,
        p: &mut [f32],
        v: &mut [f32],
        scratch: &mut [f32],
        carry: Carry<'_>,
    ) {
        match self {
            TailPart::Rows { layer, dims, rows, .. } => {
                let parts = LayerParts { slices, layer: *layer };
                weight_grad_step_rows(dims, &parts, rows.clone(), sgd, p, v, carry);
            }
            TailPart::Bias { range } => {
                sum_and_step(slices, range.clone(), sgd, p, v, &mut scratch[..range.len()], carry);
            }
        }
    }
}

/// The gradient of the parameters at `range` summed over the slices in slice order into `sum` (going on from
/// the carried sum in a round after the first), then an SGD step on `p` and `v`, their values and momentum; or,
/// in a round that does not update, the sum left in the carry.
pub(super) fn sum_and_step(
    slices: &[SliceState],
    range: Range<usize>,
    sgd: Sgd,
    p: &mut [f32],
    v: &mut [f32],
    sum: &mut [f32],
    carry: Carry<'_>,
) {
    let rest = if carry.round.continues() {
        sum.copy_from_slice(carry.sum);
        slices
    } else {
        sum.copy_from_slice(&slices[0].grads[range.clone()]);
        &slices[1..]
    };
    for st in rest {
        add_assign(sum, &st.grads[range.clone()]);
    }
    if carry.round.updates() {
        sgd.step(p, v, sum);
    } else {
        carry.sum.copy_from_slice(sum);
    }
}

/// A linear layer's input and output gradient in every slice's workspace, from which its weight gradient is
/// made.
pub(super) struct LayerParts<'a> {
    pub slices: &'a [SliceState],
    pub layer: LinearLayer,
}

impl GradParts for LayerParts<'_> {
    fn parts(&self) -> usize {
        self.slices.len()
    }
    fn part(&self, s: usize) -> (&[f32], &[f32]) {
        let st = &self.slices[s];
        st.ws.linear_io(self.layer, st.n)
    }
}

/// One slice's activations, gradients and results.
pub(super) struct SliceState {
    pub ws: Workspace,
    /// Gradients of the parameters of [`slice_gradients`] (the rest of the buffer is unused).
    pub grads: AlignedBuf,
    pub targets: Vec<Label>,
    /// Images in this slice at the last step.
    pub n: usize,
    /// The sum of the slice's losses at the last step.
    pub loss: f32,
    pub correct: usize,
}

impl SliceState {
    /// A slice of `len` images through a network of `classes` classes.
    pub fn new(len: usize, classes: usize) -> Self {
        SliceState {
            ws: Workspace::new(len, classes),
            grads: AlignedBuf::zeroed(num_params(classes)),
            targets: vec![0; len],
            n: 0,
            loss: 0.0,
            correct: 0,
        }
    }
}

/// A worker's private copy of the tail's parameters and momentum. The tail is read by every slice: for small
/// batches, updating one copy per worker, each on its own core, is cheaper than moving one shared copy between
/// the cores' caches twice a step. For large ones the gradient costs more than the move, and the workers share
/// the tail's update instead.
pub(super) struct TailCopy {
    /// All the parameters, of which only the tail's are kept up to date.
    pub params: AlignedBuf,
    /// Momentum; as `params`.
    pub velocity: AlignedBuf,
}

/// Largest batch for which every worker keeps a copy of the tail (measured, 2 threads: the copies make
/// batch 16 faster, and batches 32, 64 and 256 slower).
pub(super) const MAX_BATCH_FOR_TAIL_COPIES: usize = 16;
