//! The int8 network, one image at a time, in plain integer loops: the definition the C export repeats line for
//! line, and the reference of any faster kernel.
//!
//! Activations are int8 with zero point -128 after every ReLU (their range is `[0, max]`), held here as their
//! offset from the zero point, `q + 128`, a `u8` in `0..=255`: the input pixels themselves (scale 1/255) and each
//! later activation. So every layer computes `acc = bias + sum(u8 activation * i8 weight)` in `i32`,
//! requantizes `acc` with its output channel's [`Requant`], and ReLU with int8 saturation is a clamp to
//! `0..=255`. A 2x2 average pool takes `(a + b + c + d + 2) >> 2` of four such values, at the same scale.
//!
//! # Shapes
//! pixels `(28, 28)` → conv1+ReLU+pool `(6, 14, 14)` → conv2+ReLU+pool `(16, 5, 5)` = 400 → linear1+ReLU 120 →
//! linear2+ReLU 84 → output K scores (`i32`, one scale for all classes).

use super::fixed::Requant;
use crate::base::IMAGE_LEN;

/// One layer: int8 weights `(outputs, inputs)` (a convolution's filter in PyTorch's `(C, kh, kw)` order), int32
/// biases at the scale of input times weight, and the requantization of each output.
#[derive(Clone, Debug, PartialEq)]
pub struct QLayer {
    pub weight: Vec<i8>,
    pub bias: Vec<i32>,
    pub requant: Vec<Requant>,
}

impl QLayer {
    pub fn outputs(&self) -> usize {
        self.bias.len()
    }

    pub fn inputs(&self) -> usize {
        self.weight.len() / self.outputs().max(1)
    }

    #[inline(always)]
    fn row(&self, o: usize) -> &[i8] {
        let n = self.inputs();
        &self.weight[o * n..(o + 1) * n]
    }
}

/// The kernel size of both convolutions.
const KERNEL: usize = 5;

/// The five layers of the int8 network, and their weights as the AVX2 kernels take them.
#[derive(Clone, Debug, PartialEq)]
pub struct QLayers {
    pub conv1: QLayer,
    pub conv2: QLayer,
    pub linear1: QLayer,
    pub linear2: QLayer,
    pub output: QLayer,
    /// `Packed::of` the layers above, made by [`QLayers::new`]: a change of a weight, bias or requantization must
    /// make the layers anew (the AVX2 kernels read the requantization from the layers at every call, the
    /// AVX-512 VNNI ones their packed copy).
    #[cfg(target_arch = "x86_64")]
    pub(super) packed: Option<super::avx2::Packed>,
}

impl QLayers {
    pub fn new([conv1, conv2, linear1, linear2, output]: [QLayer; 5]) -> QLayers {
        let layers = QLayers {
            conv1,
            conv2,
            linear1,
            linear2,
            output,
            #[cfg(target_arch = "x86_64")]
            packed: None,
        };
        #[cfg(target_arch = "x86_64")]
        let layers = QLayers { packed: super::avx2::Packed::of(&layers), ..layers };
        layers
    }

    /// The layers in order.
    pub fn all(&self) -> [&QLayer; 5] {
        [&self.conv1, &self.conv2, &self.linear1, &self.linear2, &self.output]
    }

    /// The scores of one image of 784 pixels (0..=255) into `scores` (one per class); returns the predicted
    /// class, the first of the highest scores. With the AVX2 or VNNI kernels where the CPU has them, else the
    /// plain engine compiled for the widest instruction set it has (the same integers on every one).
    pub fn predict(&self, pixels: &[u8], scores: &mut [i32]) -> usize {
        #[cfg(target_arch = "x86_64")]
        if let (Some(kernel), Some(packed)) = (super::avx2::Kernel::chosen(), &self.packed) {
            // SAFETY: `chosen` found the kernel's instructions on this CPU; `packed` is of these layers.
            if let Some(class) = unsafe { super::avx2::predict(kernel, self, packed, pixels, scores) } {
                return class;
            }
        }
        let mut class = 0;
        predict_dispatched(self, pixels, scores, &mut class);
        class
    }

    /// [`QLayers::predict`] of `classes.len()` images (`pixels`: 784 each) at once: `scores` receives each
    /// image's scores in turn, `classes` each image's class. The same integers as one image at a time; faster
    /// with AVX-512 VNNI, whose kernels take the linear layers' weights through a batch of images at once.
    pub(crate) fn predict_batch(&self, pixels: &[u8], scores: &mut [i32], classes: &mut [usize]) {
        let images = classes.len();
        assert!(pixels.len() == images * IMAGE_LEN && scores.len() == images * self.output.outputs());
        let k = self.output.outputs();
        #[cfg(target_arch = "x86_64")]
        if let (Some(super::avx2::Kernel::Avx512Vnni), Some(quads)) =
            (super::avx2::Kernel::chosen(), self.packed.as_ref().and_then(|p| p.quads()))
        {
            let batch = super::vnni::BATCH;
            let parts =
                pixels.chunks(batch * IMAGE_LEN).zip(scores.chunks_mut(batch * k)).zip(classes.chunks_mut(batch));
            for (chunk, ((images, scores), classes)) in parts.enumerate() {
                let next = pixels.get((chunk + 1) * batch * IMAGE_LEN..).and_then(|rest| rest.get(..IMAGE_LEN));
                // SAFETY: `chosen` found AVX-512 VNNI on this CPU; `quads` is of these layers, of `k` classes.
                unsafe { super::vnni::predict_batch(quads, images, scores, next) };
                for (class, scores) in classes.iter_mut().zip(scores.chunks_exact(k)) {
                    *class = super::avx2::argmax(scores);
                }
            }
            return;
        }
        let parts = pixels.chunks_exact(IMAGE_LEN).zip(scores.chunks_exact_mut(k));
        for ((pixels, scores), class) in parts.zip(classes.iter_mut()) {
            *class = self.predict(pixels, scores);
        }
    }
}

/// The instructions [`QLayers::predict`] runs on this CPU (with `LENET5_SIMD`'s cap).
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = super::avx2::Kernel::chosen() {
        return kernel.name();
    }
    crate::simd::describe()
}

crate::simd::dispatch! {
    fn predict_dispatched(layers: &QLayers, pixels: &[u8], scores: &mut [i32], class: &mut usize) => predict_body
}

#[inline(always)]
fn predict_body<const FMA: bool>(layers: &QLayers, pixels: &[u8], scores: &mut [i32], class: &mut usize) {
    *class = layers.predict_portable(pixels, scores);
}

impl QLayers {
    /// [`QLayers::predict`] as the baseline target compiles it.
    #[inline(always)]
    pub(crate) fn predict_portable(&self, pixels: &[u8], scores: &mut [i32]) -> usize {
        let mut pool1 = [0u8; 6 * 14 * 14];
        let mut pool2 = [0u8; 16 * 5 * 5];
        let mut hidden1 = [0u8; 120];
        let mut hidden2 = [0u8; 84];
        conv_relu_pool(&self.conv1, pixels, 1, 28, 2, &mut pool1);
        conv_relu_pool(&self.conv2, &pool1, 6, 14, 0, &mut pool2);
        linear_relu(&self.linear1, &pool2, &mut hidden1);
        linear_relu(&self.linear2, &hidden1, &mut hidden2);
        for (o, score) in scores.iter_mut().enumerate() {
            *score = self.output.requant[o].apply(dot(&self.output, o, &hidden2));
        }
        let mut best = 0;
        for (k, &s) in scores.iter().enumerate() {
            if s > scores[best] {
                best = k;
            }
        }
        best
    }
}

/// `bias + sum(input * weight)` of output `o`.
#[inline(always)]
fn dot(layer: &QLayer, o: usize, input: &[u8]) -> i32 {
    layer.bias[o] + dot_u8_i8(input, layer.row(o))
}

/// `sum(a * b)` in `i32` (an int8 network's sums never come near its range: at most 400 x 255 x 127 a term).
/// Each product fits in `i16` (255 x 127 < 2^15), which lets the compiler multiply 16 lanes at once and add
/// neighbours into `i32` (`pmaddwd`).
#[inline(always)]
fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &w)| (x as i16 * w as i16) as i32).sum()
}

/// ReLU of a requantized accumulator, as the offset of an int8 with zero point -128.
#[inline(always)]
fn relu_requant(requant: Requant, acc: i32) -> u8 {
    requant.apply(acc).clamp(0, 255) as u8
}

/// Most values of a convolution's patch: conv2's 6 channels of 5x5.
const MAX_TAPS: usize = 6 * KERNEL * KERNEL;
/// Most pooled outputs of a convolution: conv1's 6 x 14 x 14.
const MAX_POOLED: usize = 6 * 14 * 14;

/// A 5x5 convolution of `input (channels, size, size)` zero-padded by `pad` (the padding is the zero point, a
/// real 0, which is offset 0), ReLU, and a 2x2 average pool: `out (outputs, s, s)`, `s = (size + 2 pad - 4) / 2`.
/// Each output position's patch `(channels, 5, 5)` is gathered once and multiplied by every filter. (The C export
/// computes the same sums term by term; integer sums do not depend on their order.)
#[inline(always)]
fn conv_relu_pool(layer: &QLayer, input: &[u8], channels: usize, size: usize, pad: usize, out: &mut [u8]) {
    let conv = size + 2 * pad - KERNEL + 1;
    let pooled = conv / 2;
    let taps = channels * KERNEL * KERNEL;
    let outputs = layer.outputs();
    assert!(taps <= MAX_TAPS && outputs * pooled * pooled <= MAX_POOLED);
    let mut patch = [0u8; MAX_TAPS];
    let mut sums = [0u32; MAX_POOLED];
    // The input with its zero padding around each plane, so that a patch's rows are plain copies.
    let padded_size = size + 2 * pad;
    let mut padded = [0u8; 6 * 32 * 32];
    assert!(channels * padded_size * padded_size <= padded.len());
    for c in 0..channels {
        for iy in 0..size {
            let to = (c * padded_size + iy + pad) * padded_size + pad;
            padded[to..to + size].copy_from_slice(&input[(c * size + iy) * size..][..size]);
        }
    }
    for y in 0..conv {
        for x in 0..conv {
            for c in 0..channels {
                for ky in 0..KERNEL {
                    let from = (c * padded_size + y + ky) * padded_size + x;
                    patch[(c * KERNEL + ky) * KERNEL..][..KERNEL].copy_from_slice(&padded[from..from + KERNEL]);
                }
            }
            for o in 0..outputs {
                let acc = layer.bias[o] + dot_u8_i8(&patch[..taps], layer.row(o));
                sums[(o * pooled + y / 2) * pooled + x / 2] += relu_requant(layer.requant[o], acc) as u32;
            }
        }
    }
    for (o, &sum) in out.iter_mut().zip(&sums[..outputs * pooled * pooled]) {
        *o = ((sum + 2) >> 2) as u8;
    }
}

/// A fully connected layer and ReLU.
#[inline(always)]
fn linear_relu(layer: &QLayer, input: &[u8], out: &mut [u8]) {
    for (o, y) in out.iter_mut().enumerate() {
        *y = relu_requant(layer.requant[o], dot(layer, o, input));
    }
}
