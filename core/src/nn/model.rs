//! LeNet-5 as in the reference recipe, with its parameters in one flat block.
//!
//! ```text
//! input               (N, 1, 28, 28)
//! conv1 5x5 pad 2     (N, 6, 28, 28)  + ReLU
//! avgpool 2/2         (N, 6, 14, 14)
//! conv2 5x5           (N, 16, 10, 10) + ReLU
//! avgpool 2/2         (N, 16, 5, 5)   -> flatten (N, 400)
//! linear1             (N, 120)        + ReLU
//! linear2             (N, 84)         + ReLU
//! output              (N, 10)         + Sigmoid (the recipe's head) or nothing (logits head)
//! ```
//! Cross-entropy is taken on the head's output, as the recipe does.

use std::ops::Range;

use super::activation::{relu_backward, relu_forward, sigmoid_backward, sigmoid_forward};
use super::conv::Conv2dDims;
use super::gemm::{MatRef, sgemm};
#[cfg(test)]
use super::linear::linear_input_grad;
use super::linear::{LinearDims, linear_backward, linear_forward};
use super::loss::cross_entropy_smoothed;
use super::params::{Param, Tensors};
use super::pool::{Pool2Dims, avgpool2_forward, avgpool2_pixel_major_flatten, avgpool2_relu_backward_in_place};
use super::{conv1_direct, conv2_direct, conv2_winograd};
use crate::aligned::AlignedBuf;

pub use crate::base::{IMAGE_LEN, IMAGE_SIZE};
pub(crate) use crate::base::{Label, MNIST_CLASS_COUNT};

pub const CONV1: Conv2dDims = Conv2dDims { in_channels: 1, out_channels: 6, in_size: 28, kernel: 5, padding: 2 };
pub const POOL1: Pool2Dims = Pool2Dims { channels: 6, in_size: CONV1.out_size() };
pub const CONV2: Conv2dDims =
    Conv2dDims { in_channels: 6, out_channels: 16, in_size: POOL1.out_size(), kernel: 5, padding: 0 };
pub const POOL2: Pool2Dims = Pool2Dims { channels: 16, in_size: CONV2.out_size() };
pub(crate) const LINEAR1: LinearDims = LinearDims { in_features: POOL2.out_len(), out_features: 120 };
pub(crate) const LINEAR2: LinearDims = LinearDims { in_features: 120, out_features: 84 };
/// The output layer of a network of `classes` classes.
pub(crate) const fn output(classes: usize) -> LinearDims {
    LinearDims { in_features: LINEAR2.out_features, out_features: classes }
}

/// LeNet-5's three linear layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinearLayer {
    Linear1,
    Linear2,
    Output,
}

impl LinearLayer {
    /// The layer's sizes in a network of `classes` classes.
    pub const fn dims(self, classes: usize) -> LinearDims {
        match self {
            LinearLayer::Linear1 => LINEAR1,
            LinearLayer::Linear2 => LINEAR2,
            LinearLayer::Output => output(classes),
        }
    }
    pub const fn weight(self) -> Param {
        match self {
            LinearLayer::Linear1 => Param::Linear1Weight,
            LinearLayer::Linear2 => Param::Linear2Weight,
            LinearLayer::Output => Param::OutputWeight,
        }
    }
    pub const fn bias(self) -> Param {
        match self {
            LinearLayer::Linear1 => Param::Linear1Bias,
            LinearLayer::Linear2 => Param::Linear2Bias,
            LinearLayer::Output => Param::OutputBias,
        }
    }
}

/// What follows the last linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Head {
    /// `Sigmoid` on the output, then cross-entropy on that: the reference recipe.
    #[default]
    Sigmoid,
    /// Cross-entropy directly on the last layer's output.
    Logits,
}

impl Head {
    pub fn name(self) -> &'static str {
        match self {
            Head::Sigmoid => "sigmoid",
            Head::Logits => "logits",
        }
    }
    pub fn parse(s: &str) -> Option<Head> {
        match s {
            "sigmoid" => Some(Head::Sigmoid),
            "logits" => Some(Head::Logits),
            _ => None,
        }
    }
}

/// The forward and backward stages, for per-layer timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Conv1,
    Pool1,
    Conv2,
    Pool2,
    Linear1,
    Linear2,
    Output,
    Loss,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Conv1,
        Stage::Pool1,
        Stage::Conv2,
        Stage::Pool2,
        Stage::Linear1,
        Stage::Linear2,
        Stage::Output,
        Stage::Loss,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Conv1 => "conv1+relu",
            Stage::Pool1 => "pool1",
            Stage::Conv2 => "conv2+relu",
            Stage::Pool2 => "pool2",
            Stage::Linear1 => "linear1+relu",
            Stage::Linear2 => "linear2+relu",
            Stage::Output => "output+head",
            Stage::Loss => "loss",
        }
    }
}

/// Receives the end of each stage. `()` ignores them and costs nothing.
pub trait StageClock {
    fn lap(&mut self, _stage: Stage, _backward: bool) {}
    /// The time since the last lap belongs to no stage (other work ran in between).
    fn restart(&mut self) {}
}

impl StageClock for () {}

/// Activations and their gradients for up to `capacity` images, allocated once and reused every step.
/// The input, conv1 and pool1 are NCHW `(n, C, H, W)`: each image's values side by side, so that the images of a slice
/// can be shared out among workers. conv2 is pixel-major `(n, H, W, C)` (one pixel's 16 channels are one AVX-512
/// vector); [`Workspace::feature_maps`] reads one image's planes whatever the layout.
/// `backward` overwrites conv1, pool1 and conv2 with their gradients (the activations are not needed by then,
/// and the step's working set stays smaller), so read them after [`forward`], not after a training step.
pub(crate) struct Workspace {
    capacity: usize,
    classes: usize,
    /// Input images `(n, 1, 28, 28)`, scaled to [0, 1].
    pub input: AlignedBuf,
    /// The input zero-padded for conv1 `(n, 32, 36)`, with the rows of each image that are not blank.
    padded: conv1_direct::PaddedImages,
    conv1_scratch: AlignedBuf,
    /// After conv1 and ReLU `(n, 6, 28, 28)`.
    pub(crate) conv1: AlignedBuf,
    /// After the first pooling `(n, 6, 14, 14)`.
    pub(crate) pool1: AlignedBuf,
    /// conv2's weight with each tap's 16 output channels side by side `(150, 16)`.
    conv2_packed: AlignedBuf,
    /// conv2's weight transformed for [`conv2_winograd`] `(6, 6, 6, 16)`, when that runs.
    conv2_winograd_weight: AlignedBuf,
    /// conv2's input transformed for [`conv2_winograd`] `(n 6, 5, 6, 32)`, kept for the weight gradient.
    conv2_winograd_input: AlignedBuf,
    /// After conv2 and ReLU, pixel-major `(n, 10, 10, 16)`.
    pub(crate) conv2: AlignedBuf,
    /// After the second pooling, flattened per image as `nn.Flatten` does: `(n, 400)`, i.e. `(n, 16, 5, 5)`.
    pub(crate) flat: AlignedBuf,
    /// `(n, 120)` after ReLU.
    pub(crate) linear1: AlignedBuf,
    /// `(n, 84)` after ReLU.
    pub(crate) linear2: AlignedBuf,
    /// The last linear layer's output `(n, K)`, K classes.
    pub(crate) logits: AlignedBuf,
    /// The head's output `(n, K)`: sigmoid of the logits, or the logits themselves. Loss and argmax use it.
    pub scores: AlignedBuf,
    d_scores: AlignedBuf,
    d_linear2: AlignedBuf,
    d_linear1: AlignedBuf,
    d_flat: AlignedBuf,
    /// Scratch for conv2's input gradient on the portable path: its output gradient as padded rows `(n, 16, 10, 20)`.
    d_conv2_rows: AlignedBuf,
    /// Scratch for conv2's weight gradient with [`conv2_winograd`].
    d_conv2_winograd: AlignedBuf,
}

impl Workspace {
    /// Buffers for up to `capacity` images through a network of `classes` classes.
    pub fn new(capacity: usize, classes: usize) -> Self {
        let z = |per_image: usize| AlignedBuf::zeroed(capacity * per_image);
        Workspace {
            capacity,
            classes,
            input: z(IMAGE_LEN),
            padded: conv1_direct::PaddedImages::new(capacity),
            conv1_scratch: z(conv1_direct::SCRATCH_LEN),
            conv1: z(CONV1.out_len()),
            pool1: z(POOL1.out_len()),
            conv2_packed: AlignedBuf::zeroed(conv2_direct::PACKED_WEIGHT_LEN),
            conv2_winograd_weight: AlignedBuf::zeroed(conv2_winograd::WEIGHT_LEN),
            conv2_winograd_input: z(conv2_winograd::INPUT_LEN),
            conv2: z(conv2_direct::OUT_LEN),
            flat: z(POOL2.out_len()),
            linear1: z(LINEAR1.out_features),
            linear2: z(LINEAR2.out_features),
            logits: z(classes),
            scores: z(classes),
            d_scores: z(classes),
            d_linear2: z(LINEAR2.out_features),
            d_linear1: z(LINEAR1.out_features),
            d_flat: z(POOL2.out_len()),
            // Zero once: only the values inside the padding are ever written.
            d_conv2_rows: z(conv2_direct::GRAD_ROWS_LEN),
            d_conv2_winograd: AlignedBuf::zeroed(conv2_winograd::GRAD_SCRATCH_LEN),
        }
    }

    /// Classes of the network the workspace is for: the scores of image `i` are `scores[i * K..(i + 1) * K]`.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Trades with `other` (of the same capacity) the buffers that a training step needs only from
    /// [`forward_features`] to [`backward_convolutions`] of the same images: the images and the convolutions'
    /// activations and gradients, almost all of its memory. Several workspaces that run one after the other
    /// can so take turns with one set of those buffers, which then stays in the core's cache.
    pub(crate) fn swap_convolution_buffers(&mut self, other: &mut Workspace) {
        assert_eq!(self.capacity, other.capacity);
        std::mem::swap(&mut self.input, &mut other.input);
        std::mem::swap(&mut self.padded, &mut other.padded);
        std::mem::swap(&mut self.conv1_scratch, &mut other.conv1_scratch);
        std::mem::swap(&mut self.conv1, &mut other.conv1);
        std::mem::swap(&mut self.pool1, &mut other.pool1);
        std::mem::swap(&mut self.conv2_packed, &mut other.conv2_packed);
        std::mem::swap(&mut self.conv2_winograd_weight, &mut other.conv2_winograd_weight);
        std::mem::swap(&mut self.conv2_winograd_input, &mut other.conv2_winograd_input);
        std::mem::swap(&mut self.conv2, &mut other.conv2);
        std::mem::swap(&mut self.d_flat, &mut other.d_flat);
        std::mem::swap(&mut self.d_conv2_rows, &mut other.d_conv2_rows);
        std::mem::swap(&mut self.d_conv2_winograd, &mut other.d_conv2_winograd);
    }

    /// After `backward` on `n` images: the input `(n, I)` and the output gradient `(n, O)` of linear layer
    /// `layer`, from which its weight gradient is made.
    pub(crate) fn linear_io(&self, layer: LinearLayer, n: usize) -> (&[f32], &[f32]) {
        let (input, grad, d) = match layer {
            LinearLayer::Linear1 => (&self.flat, &self.d_linear1, LINEAR1),
            LinearLayer::Linear2 => (&self.linear1, &self.d_linear2, LINEAR2),
            LinearLayer::Output => (&self.linear2, &self.d_scores, output(self.classes)),
        };
        (&input[..n * d.in_features], &grad[..n * d.out_features])
    }

    /// linear1's output gradient `(n, 120)` (after its ReLU), left by [`backward_to_linear1`].
    pub(crate) fn linear1_grad(&self, n: usize) -> &[f32] {
        &self.d_linear1[..n * LINEAR1.out_features]
    }

    /// The flattened features' gradient `(n, 400)`, which [`backward_convolutions`] reads: for a caller that
    /// makes it from parts (see [`linear1_input_grad_rows`]) instead of `backward`.
    pub(crate) fn features_grad_mut(&mut self, n: usize) -> &mut [f32] {
        &mut self.d_flat[..n * POOL2.out_len()]
    }

    /// What one layer produced for image `image` of the `n` last run through [`forward`], as `C` planes of
    /// `S x S` values `(C, S, S)`: `Conv1`, `Pool1`, `Conv2` or `Pool2`; `None` for the other stages.
    pub fn feature_maps(&self, stage: Stage, n: usize, image: usize) -> Option<Vec<f32>> {
        assert!(image < n && n <= self.capacity);
        let planes = |act: &[f32], channels: usize, size: usize| {
            let len = channels * size * size;
            act[image * len..(image + 1) * len].to_vec()
        };
        Some(match stage {
            Stage::Conv1 => planes(&self.conv1, CONV1.out_channels, CONV1.out_size()),
            Stage::Pool1 => planes(&self.pool1, POOL1.channels, POOL1.out_size()),
            Stage::Conv2 => {
                let (channels, pixels) = (CONV2.out_channels, CONV2.out_size() * CONV2.out_size());
                let img = &self.conv2[image * conv2_direct::OUT_LEN..(image + 1) * conv2_direct::OUT_LEN];
                (0..channels).flat_map(|c| (0..pixels).map(move |p| img[p * channels + c])).collect()
            }
            Stage::Pool2 => self.flat[image * POOL2.out_len()..(image + 1) * POOL2.out_len()].to_vec(),
            _ => return None,
        })
    }
}

impl Workspace {
    /// The workspace taken apart for its first `n` images.
    fn parts(&mut self, n: usize) -> WorkspaceParts<'_> {
        WorkspaceParts {
            weights: Conv2Weights { packed: &self.conv2_packed, winograd: &self.conv2_winograd_weight },
            images: ImageBuffers {
                input: &mut self.input[..n * IMAGE_LEN],
                padded: self.padded.as_mut(),
                conv1: &mut self.conv1[..n * CONV1.out_len()],
                pool1: &mut self.pool1[..n * POOL1.out_len()],
                winograd_input: &mut self.conv2_winograd_input[..n * conv2_winograd::INPUT_LEN],
                conv2: &mut self.conv2[..n * conv2_direct::OUT_LEN],
                flat: &mut self.flat[..n * POOL2.out_len()],
                d_flat: &mut self.d_flat[..n * POOL2.out_len()],
                d_conv2_rows: &mut self.d_conv2_rows[..n * conv2_direct::GRAD_ROWS_LEN],
            },
            scratch: GradScratch { conv1: &mut self.conv1_scratch, winograd: &mut self.d_conv2_winograd },
        }
    }

    /// The scratch of the convolutions' weight gradients.
    pub(crate) fn grad_scratch(&mut self) -> GradScratch<'_> {
        GradScratch { conv1: &mut self.conv1_scratch, winograd: &mut self.d_conv2_winograd }
    }

    /// conv2's weight as the last [`prepare_conv2`] left it.
    pub(crate) fn conv2_weights(&self) -> Conv2Weights<'_> {
        Conv2Weights { packed: &self.conv2_packed, winograd: &self.conv2_winograd_weight }
    }

    /// Where the per-image buffers start, for workers that take images of this workspace at the same time
    /// (see [`ImagePtrs`]). The addresses hold until the workspace is dropped or trades its buffers
    /// ([`Workspace::swap_convolution_buffers`]).
    pub(crate) fn image_ptrs(&mut self) -> ImagePtrs {
        let (padded, live) = self.padded.as_mut_ptrs();
        ImagePtrs {
            capacity: self.capacity,
            input: self.input.as_mut_ptr(),
            padded,
            live,
            conv1: self.conv1.as_mut_ptr(),
            pool1: self.pool1.as_mut_ptr(),
            winograd_input: self.conv2_winograd_input.as_mut_ptr(),
            conv2: self.conv2.as_mut_ptr(),
            flat: self.flat.as_mut_ptr(),
            d_flat: self.d_flat.as_mut_ptr(),
            d_conv2_rows: self.d_conv2_rows.as_mut_ptr(),
        }
    }
}

/// A workspace taken apart: conv2's prepared weight, its images' buffers, and the weight gradients' scratch.
struct WorkspaceParts<'a> {
    weights: Conv2Weights<'a>,
    images: ImageBuffers<'a>,
    scratch: GradScratch<'a>,
}

/// conv2's weight as [`prepare_conv2`] leaves it: packed `(150, 16)`, and transformed for Winograd's.
#[derive(Clone, Copy)]
pub(crate) struct Conv2Weights<'a> {
    packed: &'a [f32],
    winograd: &'a [f32],
}

/// The scratch of the convolutions' weight gradients (see [`conv1_weight_grad`] and [`conv2_weight_grad`]).
pub(crate) struct GradScratch<'a> {
    conv1: &'a mut [f32],
    winograd: &'a mut [f32],
}

/// Some images of a workspace: their values in each buffer that holds one set per image, from the input to the
/// flattened features and back. The convolutions and pooling take every image apart from the others (only the
/// weight gradients sum over images), so the images of a slice can go through them in parts, on different
/// workers, with the bits of all at once.
pub(crate) struct ImageBuffers<'a> {
    /// The images `(k, 784)`, scaled to [0, 1].
    pub input: &'a mut [f32],
    padded: conv1_direct::PaddedMut<'a>,
    conv1: &'a mut [f32],
    pool1: &'a mut [f32],
    winograd_input: &'a mut [f32],
    conv2: &'a mut [f32],
    flat: &'a mut [f32],
    /// The features' gradient `(k, 400)`, from which [`conv2_output_grad`] starts.
    pub d_flat: &'a mut [f32],
    d_conv2_rows: &'a mut [f32],
}

/// Where the per-image buffers of a workspace start ([`Workspace::image_ptrs`]): from these, each of the
/// workers sharing a slice's images takes the images it was given ([`ImagePtrs::images`]).
#[derive(Clone, Copy)]
pub(crate) struct ImagePtrs {
    capacity: usize,
    input: *mut f32,
    padded: *mut f32,
    live: *mut conv1_direct::LiveRows,
    conv1: *mut f32,
    pool1: *mut f32,
    winograd_input: *mut f32,
    conv2: *mut f32,
    flat: *mut f32,
    d_flat: *mut f32,
    d_conv2_rows: *mut f32,
}

// SAFETY: addresses only; `images`' callers promise that no two threads use the same image at once.
unsafe impl Send for ImagePtrs {}
unsafe impl Sync for ImagePtrs {}

impl Default for ImagePtrs {
    /// No images.
    fn default() -> Self {
        let none = std::ptr::null_mut();
        ImagePtrs {
            capacity: 0,
            input: none,
            padded: none,
            live: std::ptr::null_mut(),
            conv1: none,
            pool1: none,
            winograd_input: none,
            conv2: none,
            flat: none,
            d_flat: none,
            d_conv2_rows: none,
        }
    }
}

impl ImagePtrs {
    /// Images `images` of the workspace.
    ///
    /// # Safety
    /// The workspace must outlive the result and keep its buffers (no trade) meanwhile, and nothing else may
    /// use these images' values while the result lives (other images may be used, by any thread).
    pub(crate) unsafe fn images<'a>(&self, images: Range<usize>) -> ImageBuffers<'a> {
        assert!(images.start <= images.end && images.end <= self.capacity, "images {images:?} of {}", self.capacity);
        let (at, k) = (images.start, images.len());
        // SAFETY: each buffer holds `capacity` images of `per_image` values side by side; these are in bounds
        // (checked), and nothing else uses them (the caller's promise).
        let part = |base: *mut f32, per_image: usize| unsafe {
            std::slice::from_raw_parts_mut(base.add(at * per_image), k * per_image)
        };
        let padded_len = conv1_direct::PaddedMut::IMAGE_LEN;
        ImageBuffers {
            input: part(self.input, IMAGE_LEN),
            // SAFETY: as above, for the padded images and their live rows.
            padded: unsafe {
                conv1_direct::PaddedMut::from_raw(self.padded.add(at * padded_len), self.live.add(at), k)
            },
            conv1: part(self.conv1, CONV1.out_len()),
            pool1: part(self.pool1, POOL1.out_len()),
            winograd_input: part(self.winograd_input, conv2_winograd::INPUT_LEN),
            conv2: part(self.conv2, conv2_direct::OUT_LEN),
            flat: part(self.flat, POOL2.out_len()),
            d_flat: part(self.d_flat, POOL2.out_len()),
            d_conv2_rows: part(self.d_conv2_rows, conv2_direct::GRAD_ROWS_LEN),
        }
    }
}

/// Runs the network on the first `n` images of `ws.input`; the head's output lands in `ws.scores`.
pub(crate) fn forward(params: &[f32], head: Head, ws: &mut Workspace, n: usize, clock: &mut dyn StageClock) {
    forward_features(params, ws, n, clock);
    let p = Tensors::of(params);
    linear_forward(&LINEAR1, n, &ws.flat, p.linear1_weight, p.linear1_bias, &mut ws.linear1);
    relu_forward(&mut ws.linear1[..n * LINEAR1.out_features]);
    clock.lap(Stage::Linear1, false);
    forward_tail(params, head, ws, n, clock);
}

/// The first part of [`forward`]: the convolutions and pooling, leaving the flattened features in `ws.flat`.
pub(crate) fn forward_features(params: &[f32], ws: &mut Workspace, n: usize, clock: &mut dyn StageClock) {
    assert!(n <= ws.capacity);
    prepare_conv2(params, ws);
    let WorkspaceParts { weights, images, .. } = ws.parts(n);
    forward_images(params, weights, images, n, clock);
}

/// conv2's weight as its kernels take it: packed, and transformed where Winograd's runs. Once a step, before
/// [`forward_images`].
pub(crate) fn prepare_conv2(params: &[f32], ws: &mut Workspace) {
    let p = Tensors::of(params);
    conv2_direct::pack_weight(p.conv2_weight, &mut ws.conv2_packed);
    if conv2_winograd::enabled() {
        conv2_winograd::transform_weight(&ws.conv2_packed, &mut ws.conv2_winograd_weight);
    }
}

/// `k` images (`images.input`) through the convolutions and pooling, up to their flattened features
/// (`images.flat`), with conv2's weight as [`prepare_conv2`] left it.
pub(crate) fn forward_images(
    params: &[f32],
    weights: Conv2Weights,
    images: ImageBuffers,
    k: usize,
    clock: &mut dyn StageClock,
) {
    let p = Tensors::of(params);
    let ImageBuffers { input, mut padded, conv1, pool1, winograd_input, conv2, flat, .. } = images;
    padded.fill(k, input);
    conv1_direct::conv_relu_forward(k, padded.as_ref(), p.conv1_weight, p.conv1_bias, conv1);
    clock.lap(Stage::Conv1, false);
    avgpool2_forward(&POOL1, k, conv1, pool1);
    clock.lap(Stage::Pool1, false);
    if conv2_winograd::enabled() {
        conv2_winograd::transform_input(k, pool1, winograd_input);
        conv2_winograd::conv_relu_forward(k, winograd_input, weights.winograd, p.conv2_bias, conv2);
    } else {
        conv2_direct::conv_relu_forward(k, pool1, weights.packed, p.conv2_bias, conv2);
    }
    clock.lap(Stage::Conv2, false);
    avgpool2_pixel_major_flatten(&POOL2, k, conv2, flat);
    clock.lap(Stage::Pool2, false);
}

/// Some rows of linear1 and its ReLU for `n` flattened feature vectors `flat (n, 400)`: those rows of its weight
/// `weight_rows (rows, 400)` and bias `bias_rows (rows)` -> `out (n, rows)`. [`forward`] computes all the rows at
/// once; a training step splits them among its workers, so that each block of linear1's weight is only ever
/// read and written by one core.
pub(crate) fn linear1_forward_rows(weight_rows: &[f32], bias_rows: &[f32], flat: &[f32], n: usize, out: &mut [f32]) {
    let rows = bias_rows.len();
    let d = LinearDims { in_features: LINEAR1.in_features, out_features: rows };
    assert_eq!(weight_rows.len(), d.weight_len());
    linear_forward(&d, n, flat, weight_rows, bias_rows, out);
    relu_forward(&mut out[..n * rows]);
}

/// The tail of [`forward`]: linear2, the output layer and the head, from linear1's output after ReLU in
/// `ws.linear1`.
pub(crate) fn forward_tail(params: &[f32], head: Head, ws: &mut Workspace, n: usize, clock: &mut dyn StageClock) {
    assert!(n <= ws.capacity);
    let p = Tensors::of(params);
    linear_forward(&LINEAR2, n, &ws.linear1, p.linear2_weight, p.linear2_bias, &mut ws.linear2);
    relu_forward(&mut ws.linear2[..n * LINEAR2.out_features]);
    clock.lap(Stage::Linear2, false);
    linear_forward(&output(ws.classes), n, &ws.linear2, p.output_weight, p.output_bias, &mut ws.logits);
    let k = n * ws.classes;
    match head {
        Head::Sigmoid => sigmoid_forward(&ws.logits[..k], &mut ws.scores[..k]),
        Head::Logits => ws.scores[..k].copy_from_slice(&ws.logits[..k]),
    }
    clock.lap(Stage::Output, false);
}

/// Cross-entropy of `ws.scores` against `targets` (one per image), smoothed by `label_smoothing` (0: none).
/// Returns the *sum* of the per-image losses and the number classified right; stores `d loss / d scores` for a
/// batch mean over `batch_size` images.
pub(crate) fn loss_and_grad(
    ws: &mut Workspace,
    targets: &[Label],
    batch_size: usize,
    label_smoothing: f32,
) -> (f32, usize) {
    let scale = 1.0 / batch_size as f32;
    let mut loss = 0.0;
    let mut correct = 0;
    for (i, &t) in targets.iter().enumerate() {
        let s = &ws.scores[i * ws.classes..(i + 1) * ws.classes];
        let g = &mut ws.d_scores[i * ws.classes..(i + 1) * ws.classes];
        let (l, ok) = cross_entropy_smoothed(s, t as usize, label_smoothing, Some((g, scale)));
        loss += l;
        correct += ok as usize;
    }
    (loss, correct)
}

/// Back-propagates the gradient left by [`loss_and_grad`] through the first `n` images, *adding* every
/// parameter's gradient into `grads` (flat, same layout as `params`).
#[cfg(test)]
pub(crate) fn backward(
    params: &[f32],
    head: Head,
    ws: &mut Workspace,
    n: usize,
    grads: &mut [f32],
    clock: &mut dyn StageClock,
) {
    backward_to_linear1(params, head, ws, n, grads, true, clock);
    let l1w = &params[Param::Linear1Weight.fixed_range()];
    linear_input_grad(&LINEAR1, n, &ws.d_linear1, l1w, &mut ws.d_flat);
    clock.lap(Stage::Linear1, true);
    backward_convolutions(ws, n, &mut grads[..CONV_PARAMS], clock);
}

/// The convolutions' parameters, which come first in the flat block: conv1's and conv2's weights and biases.
pub(crate) const CONV_PARAMS: usize = Param::Conv2Bias.fixed_range().end;

/// The first part of `backward`: the head and the linear layers, down to linear1's output gradient
/// (`d_linear1`, see [`Workspace::linear1_grad`]). Adds the linear layers' gradients into `grads`, their weights'
/// only if `linear_weights`: otherwise the caller makes those from [`Workspace::linear_io`], for all the slices
/// of a batch at once (as a training step does, fused with the update).
pub(crate) fn backward_to_linear1(
    params: &[f32],
    head: Head,
    ws: &mut Workspace,
    n: usize,
    grads: &mut [f32],
    linear_weights: bool,
    clock: &mut dyn StageClock,
) {
    assert!(n <= ws.capacity);
    let p = Tensors::of(params);
    let g = Tensors::of_mut(grads);
    clock.lap(Stage::Loss, true);
    let k = n * ws.classes;
    if head == Head::Sigmoid {
        sigmoid_backward(&ws.scores[..k], &mut ws.d_scores[..k]);
    }
    let (g_ow, g_l2w, g_l1w) = match linear_weights {
        true => (Some(g.output_weight), Some(g.linear2_weight), Some(g.linear1_weight)),
        false => (None, None, None),
    };
    let (ow, l2w) = (p.output_weight, p.linear2_weight);
    linear_backward(
        &output(ws.classes),
        n,
        &ws.linear2,
        ow,
        &ws.d_scores,
        g_ow,
        g.output_bias,
        Some(&mut ws.d_linear2),
    );
    relu_backward(&ws.linear2[..n * LINEAR2.out_features], &mut ws.d_linear2[..n * LINEAR2.out_features]);
    clock.lap(Stage::Output, true);
    linear_backward(&LINEAR2, n, &ws.linear1, l2w, &ws.d_linear2, g_l2w, g.linear2_bias, Some(&mut ws.d_linear1));
    relu_backward(&ws.linear1[..n * LINEAR1.out_features], &mut ws.d_linear1[..n * LINEAR1.out_features]);
    clock.lap(Stage::Linear2, true);
    linear_backward(&LINEAR1, n, &ws.flat, &[], &ws.d_linear1, g_l1w, g.linear1_bias, None);
}

/// The part of linear1's input gradient that comes from its rows `rows` (whose weights are `weight_rows
/// (rows, 400)`), for `n` images: `out (n, 400) = d_linear1[:, rows] @ weight_rows`, from linear1's output
/// gradient `d_linear1 (n, 120)`. The sum of these parts over rows that cover 0..120 is the whole input gradient.
pub(crate) fn linear1_input_grad_rows(
    weight_rows: &[f32],
    d_linear1: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let (i_len, o_len) = (LINEAR1.in_features, LINEAR1.out_features);
    assert_eq!(weight_rows.len(), rows.len() * i_len);
    let g =
        MatRef { data: &d_linear1[rows.start..n * o_len], rows: n, cols: rows.len(), row_stride: o_len, col_stride: 1 };
    sgemm(1.0, g, MatRef::new(weight_rows, rows.len(), i_len), 0.0, &mut out[..n * i_len]);
}

/// The last part of `backward`, after linear1's input gradient: pooling and the convolutions. Reads no parameter
/// (conv2's weight as [`forward`] packed it into the workspace); adds into `conv_grads`, the first
/// [`CONV_PARAMS`] values of a flat gradient.
pub(crate) fn backward_convolutions(ws: &mut Workspace, n: usize, conv_grads: &mut [f32], clock: &mut dyn StageClock) {
    assert!(n <= ws.capacity);
    let WorkspaceParts { weights, mut images, mut scratch } = ws.parts(n);
    // From here on each activation's buffer receives its own gradient once nothing reads the activation again:
    // conv2's, then pool1's (after conv2's weight gradient has read it), then conv1's.
    conv2_output_grad(&mut images, n);
    clock.lap(Stage::Pool2, true);
    conv2_weight_grad(&images, n, &mut scratch, conv_grads);
    input_grads(weights, &mut images, n, clock);
    conv1_weight_grad(&images, n, &mut scratch, conv_grads);
    clock.lap(Stage::Conv1, true);
}

/// conv2's output gradient (over its output, which it overwrites) from the features' gradient
/// (`images.d_flat`) of `k` images, through the second pooling and conv2's ReLU.
pub(crate) fn conv2_output_grad(images: &mut ImageBuffers, k: usize) {
    conv2_direct::output_grad_from_pooled(k, images.d_flat, images.conv2);
}

/// Adds conv2's weight and bias gradients over `n` images into `conv_grads` (the first [`CONV_PARAMS`] values of
/// a flat gradient). After [`conv2_output_grad`], and before [`input_grads`] overwrites conv2's input.
pub(crate) fn conv2_weight_grad(images: &ImageBuffers, n: usize, scratch: &mut GradScratch, conv_grads: &mut [f32]) {
    let [_, _, c2, c2b] = conv_grad_parts(conv_grads);
    if conv2_winograd::enabled() {
        conv2_winograd::weight_grad(n, images.winograd_input, images.conv2, scratch.winograd, c2, c2b);
    } else {
        conv2_direct::weight_grad(n, images.pool1, images.conv2, c2, c2b);
    }
}

/// The input gradients of `k` images, each over the activation it belongs to: pool1's (conv2's input gradient),
/// then conv1's output's, through the first pooling and conv1's ReLU. After [`conv2_weight_grad`].
pub(crate) fn input_grads(weights: Conv2Weights, images: &mut ImageBuffers, k: usize, clock: &mut dyn StageClock) {
    conv2_direct::input_grad(k, images.conv2, images.d_conv2_rows, weights.packed, images.pool1);
    clock.lap(Stage::Conv2, true);
    avgpool2_relu_backward_in_place(&POOL1, k, images.pool1, images.conv1);
    clock.lap(Stage::Pool1, true);
}

/// Adds conv1's weight and bias gradients over `n` images into `conv_grads`. After [`input_grads`].
pub(crate) fn conv1_weight_grad(images: &ImageBuffers, n: usize, scratch: &mut GradScratch, conv_grads: &mut [f32]) {
    let [c1, c1b, ..] = conv_grad_parts(conv_grads);
    conv1_direct::conv_backward(n, images.padded.as_ref(), images.conv1, c1, c1b, scratch.conv1);
}

/// The gradients of conv1's weight and bias and conv2's, from the first [`CONV_PARAMS`] values of a flat gradient.
fn conv_grad_parts(conv_grads: &mut [f32]) -> [&mut [f32]; 4] {
    let (c1, rest) = conv_grads[..CONV_PARAMS].split_at_mut(Param::Conv1Weight.fixed_range().len());
    let (c1b, rest) = rest.split_at_mut(Param::Conv1Bias.fixed_range().len());
    let (c2, c2b) = rest.split_at_mut(Param::Conv2Weight.fixed_range().len());
    [c1, c1b, c2, c2b]
}

/// Whether conv2 runs with Winograd's minimal filtering on this CPU (AVX-512), which does fewer multiply-adds
/// than the direct convolution the FLOP counts describe, and rounds differently.
pub fn conv2_runs_winograd() -> bool {
    conv2_winograd::enabled()
}

/// Forward multiply-adds (x2) of one image: about 0.83 MFLOP.
pub(crate) const fn forward_flops_per_image() -> usize {
    CONV1.forward_flops()
        + CONV2.forward_flops()
        + LINEAR1.forward_flops()
        + LINEAR2.forward_flops()
        + output(MNIST_CLASS_COUNT).forward_flops()
}

/// Forward plus backward FLOPs of one training image (conv1 needs no input gradient): about 2.26 MFLOP.
pub(crate) const fn train_flops_per_image() -> usize {
    3 * forward_flops_per_image() - CONV1.forward_flops()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// What a training step's workers rely on when they share a slice's images out: each image taken through
    /// the convolutions alone, forward and back, by a workspace of its own weights, gives the bits of all the
    /// slice's images at once, and the weight gradients made from them too.
    #[test]
    fn images_one_at_a_time_give_the_bits_of_all_at_once() {
        let n = 8;
        let params = crate::nn::params::init_params(3);
        let mut rng = Rng::new(4);
        // Digits' blank rows, in some images only: the kernels skip them.
        let input: Vec<f32> = (0..n * IMAGE_LEN)
            .map(|i| if (i % IMAGE_LEN) / IMAGE_SIZE < (i / IMAGE_LEN) % 5 { 0.0 } else { rng.uniform(0.0, 1.0) })
            .collect();
        let features_grad: Vec<f32> = (0..n * POOL2.out_len()).map(|_| rng.uniform(-0.1, 0.1)).collect();

        let mut whole = Workspace::new(n, MNIST_CLASS_COUNT);
        whole.input[..n * IMAGE_LEN].copy_from_slice(&input);
        forward_features(&params, &mut whole, n, &mut ());
        whole.features_grad_mut(n).copy_from_slice(&features_grad);
        let mut want = vec![0.0; CONV_PARAMS];
        backward_convolutions(&mut whole, n, &mut want, &mut ());

        // The slice's images, each through another workspace's prepared weight, as another worker's.
        let (mut slice, mut other) = (Workspace::new(n, MNIST_CLASS_COUNT), Workspace::new(1, MNIST_CLASS_COUNT));
        prepare_conv2(&params, &mut other);
        let ptrs = slice.image_ptrs();
        for i in 0..n {
            // SAFETY: `slice` outlives the images and is not otherwise used meanwhile.
            let images = unsafe { ptrs.images(i..i + 1) };
            images.input.copy_from_slice(&input[i * IMAGE_LEN..(i + 1) * IMAGE_LEN]);
            forward_images(&params, other.conv2_weights(), images, 1, &mut ());
        }
        let features = |ws: &Workspace| ws.flat[..n * POOL2.out_len()].iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(features(&slice), features(&whole));
        let mut got = vec![0.0; CONV_PARAMS];
        // SAFETY: as above.
        let mut images = unsafe { ptrs.images(0..n) };
        images.d_flat.copy_from_slice(&features_grad);
        conv2_output_grad(&mut images, n);
        conv2_weight_grad(&images, n, &mut slice.grad_scratch(), &mut got);
        for i in 0..n {
            // SAFETY: as above.
            input_grads(other.conv2_weights(), &mut unsafe { ptrs.images(i..i + 1) }, 1, &mut ());
        }
        // SAFETY: as above.
        conv1_weight_grad(&unsafe { ptrs.images(0..n) }, n, &mut slice.grad_scratch(), &mut got);
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&want));
        assert_eq!(bits(&slice.conv1[..n * CONV1.out_len()]), bits(&whole.conv1[..n * CONV1.out_len()]));
    }

    #[test]
    fn flop_counts_match_the_known_figures() {
        assert_eq!(forward_flops_per_image(), 2 * (117_600 + 240_000 + 48_000 + 10_080 + 840));
        let train = train_flops_per_image() as f64 / 1e6;
        assert!((2.2..2.3).contains(&train), "{train}");
    }
}
