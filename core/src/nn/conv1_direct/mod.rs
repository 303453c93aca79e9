//! Direct convolution for the first layer (1 input channel, 5x5 kernel, padding 2, 28x28 images): each output
//! row is 25 shifted rows of the padded image times one weight each, accumulated in a 32-wide register block.
//! Faster than im2col + GEMM here because the GEMM would have only 6 rows and the column matrix would be 25
//! times the size of the input. [`super::conv`] is the general implementation it is tested against.
//!
//! Rows of the image that are entirely zero (MNIST's digits leave about 8 of 28 blank, at the top and bottom)
//! add nothing to either pass, so both skip the kernel rows that would meet them: padding an image notes which
//! of its rows hold a nonzero value ([`LiveRows`]).
//!
//! # Shapes
//! input `(n, 1, 28, 28)`, padded input `(n, 32, 36)` (kept for backward), weight `(6, 1, 5, 5)`,
//! output `(n, 6, 28, 28)` (image by image, like every conv activation), scratch `(n, 28, 32)`.

use std::ops::Range;

use crate::aligned::AlignedBuf;
use crate::simd::{BASELINE_FMA, mul_add, select};

const S: usize = 28;
const K: usize = 5;
/// Output channels.
const OC: usize = 6;
const P: usize = 2;
/// Output row as computed: 28 values rounded up to whole 8-lane vectors.
const W: usize = 32;
/// Padded image: rows of `W + K - 1` so every shifted 32-wide read stays inside the row.
const PW: usize = W + K - 1;
const PH: usize = S + 2 * P;
/// Values of one padded image.
const PADDED_LEN: usize = PH * PW;
/// Values of the backward scratch per image.
pub const SCRATCH_LEN: usize = S * W;

/// Whether these are the dimensions this kernel is written for.
#[cfg(test)]
pub fn supports(d: &super::Conv2dDims) -> bool {
    d.in_channels == 1 && d.out_channels == OC && d.in_size == S && d.kernel == K && d.padding == P
}

/// The padded rows `start..end` of one image hold all its nonzero values (none when `start == end`). A row
/// outside holds only zeros, whose products with finite weights and gradients add nothing (the sum comes out
/// the same, but for the sign of a zero), so the kernels leave it out. A NaN counts as nonzero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveRows {
    start: u8,
    end: u8,
}

impl LiveRows {
    /// The live rows of an image `(28, 28)`, in the padded image's numbering.
    fn of(img: &[f32]) -> LiveRows {
        // Every bit but the sign's, of every value, or-ed together: a whole row at a time, with no early exit
        // (the compiler makes vector code of it).
        let live = |y: &usize| img[y * S..(y + 1) * S].iter().fold(0, |bits, &v| bits | v.to_bits() << 1) != 0;
        match ((0..S).find(live), (0..S).rev().find(live)) {
            (Some(first), Some(last)) => LiveRows { start: (first + P) as u8, end: (last + P + 1) as u8 },
            _ => LiveRows::default(),
        }
    }

    /// The kernel rows `i` that meet a live row (`y + i`) when making output row `y`.
    fn taps(self, y: usize) -> Range<usize> {
        let (start, end) = (self.start as usize, self.end as usize);
        start.saturating_sub(y).min(K)..end.saturating_sub(y).min(K)
    }

    /// The output rows `y` whose kernel row `i` meets a live row (`y + i`).
    fn outputs(self, i: usize) -> Range<usize> {
        let (start, end) = (self.start as usize, self.end as usize);
        start.saturating_sub(i).min(S)..end.saturating_sub(i).min(S)
    }

    /// Whether row `row` is live (for the intrinsic kernels).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn contains(self, row: usize) -> bool {
        (self.start as usize..self.end as usize).contains(&row)
    }
}

/// Images zero-padded for the kernels, `(n, 32, 36)`, and the live rows of each. The padding is zeroed once,
/// when made: filling writes only the images.
pub struct PaddedImages {
    values: AlignedBuf,
    live: Vec<LiveRows>,
}

impl PaddedImages {
    /// Room for `capacity` images.
    pub fn new(capacity: usize) -> Self {
        PaddedImages { values: AlignedBuf::zeroed(capacity * PADDED_LEN), live: vec![LiveRows::default(); capacity] }
    }

    /// Copies `n` images `(n, 28, 28)` in.
    #[cfg(test)]
    pub fn fill(&mut self, n: usize, input: &[f32]) {
        self.as_mut().fill(n, input);
    }

    #[cfg(test)]
    pub fn as_ref(&self) -> Padded<'_> {
        Padded { values: &self.values, live: &self.live }
    }

    pub fn as_mut(&mut self) -> PaddedMut<'_> {
        PaddedMut { values: &mut self.values, live: &mut self.live }
    }

    /// Where the images' values and their live rows start, for workers that each pad images of their own at
    /// the same time (the pointers stay valid as [`AlignedBuf::as_mut_ptr`]'s do).
    pub fn as_mut_ptrs(&mut self) -> (*mut f32, *mut LiveRows) {
        (self.values.as_mut_ptr(), self.live.as_mut_ptr())
    }
}

/// Padded images, as the kernels read them: all of a [`PaddedImages`], or some of its images.
#[derive(Clone, Copy)]
pub struct Padded<'a> {
    values: &'a [f32],
    live: &'a [LiveRows],
}

impl Padded<'_> {
    /// Whether `n` images fit.
    fn holds(&self, n: usize) -> bool {
        self.values.len() >= n * PADDED_LEN && self.live.len() >= n
    }
}

/// Some images of a [`PaddedImages`], to fill.
pub struct PaddedMut<'a> {
    values: &'a mut [f32],
    live: &'a mut [LiveRows],
}

impl<'a> PaddedMut<'a> {
    /// `n` images' padded values and live rows at `values` and `live`.
    ///
    /// # Safety
    /// As `std::slice::from_raw_parts_mut` for `n * PADDED_LEN` values and `n` live rows.
    pub unsafe fn from_raw(values: *mut f32, live: *mut LiveRows, n: usize) -> Self {
        // SAFETY: the caller's promise.
        unsafe {
            PaddedMut {
                values: std::slice::from_raw_parts_mut(values, n * PADDED_LEN),
                live: std::slice::from_raw_parts_mut(live, n),
            }
        }
    }

    /// Values per image, for a caller that places the images of [`PaddedMut::from_raw`].
    pub const IMAGE_LEN: usize = PADDED_LEN;

    /// Copies `n` images `(n, 28, 28)` in.
    pub fn fill(&mut self, n: usize, input: &[f32]) {
        let images = input[..n * S * S].chunks_exact(S * S);
        for ((img, pad), live) in images.zip(self.values.chunks_exact_mut(PADDED_LEN)).zip(&mut *self.live) {
            for (y, row) in img.chunks_exact(S).enumerate() {
                pad[(y + P) * PW + P..(y + P) * PW + P + S].copy_from_slice(row);
            }
            *live = LiveRows::of(img);
        }
    }

    pub fn as_ref(&self) -> Padded<'_> {
        Padded { values: self.values, live: self.live }
    }
}

#[inline(always)]
fn forward_relu_body<const FMA: bool>(
    n: usize,
    padded: &[f32],
    live: &[LiveRows],
    weight: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    let out_channels = bias.len();
    debug_assert!(out_channels.is_multiple_of(2));
    for (b, &live) in live[..n].iter().enumerate() {
        let img: &[f32; PADDED_LEN] = padded[b * PADDED_LEN..(b + 1) * PADDED_LEN].try_into().unwrap();
        // Two output channels at a time: eight independent accumulator vectors hide the FMA latency, and each
        // input row loaded serves both.
        for o in (0..out_channels).step_by(2) {
            let w0: &[f32; K * K] = weight[o * K * K..(o + 1) * K * K].try_into().unwrap();
            let w1: &[f32; K * K] = weight[(o + 1) * K * K..(o + 2) * K * K].try_into().unwrap();
            for y in 0..S {
                let mut acc0 = [bias[o]; W];
                let mut acc1 = [bias[o + 1]; W];
                for i in live.taps(y) {
                    let row: &[f32; PW] = img[(y + i) * PW..(y + i + 1) * PW].try_into().unwrap();
                    for j in 0..K {
                        let (a, c) = (w0[i * K + j], w1[i * K + j]);
                        let src: &[f32; W] = row[j..j + W].try_into().unwrap();
                        for x in 0..W {
                            acc0[x] = mul_add::<FMA>(a, src[x], acc0[x]);
                            acc1[x] = mul_add::<FMA>(c, src[x], acc1[x]);
                        }
                    }
                }
                let row0 = (b * OC + o) * S * S + y * S;
                let row1 = (b * OC + o + 1) * S * S + y * S;
                for x in 0..S {
                    out[row0 + x] = acc0[x].max(0.0);
                    out[row1 + x] = acc1[x].max(0.0);
                }
            }
        }
    }
}

/// Internal invariant: the workspace sizes every buffer from the same constants. The AVX-512 and AVX2 kernels index
/// with pointers after this one check.
fn check(fits: bool) {
    assert!(fits, "conv1: buffer too small");
}

/// Convolution then ReLU: `padded (n, 32, 36)` -> `out (n, 6, 28, 28)`.
pub fn conv_relu_forward(n: usize, padded: Padded, weight: &[f32], bias: &[f32], out: &mut [f32]) {
    check(
        padded.holds(n)
            && weight.len() >= bias.len() * K * K
            && out.len() >= bias.len() * n * S * S
            && bias.len() == OC,
    );
    let (values, live) = (padded.values, padded.live);
    // The SIMD kernels index with pointers: `check` proved every buffer large enough.
    select! {
        avx512 => avx512::forward(n, values, live, weight, bias, out),
        avx2 => avx2::forward(n, values, live, weight, bias, out),
        simd128 => simd128::forward(n, values, live, weight, bias, out),
        portable => forward_relu_body::<BASELINE_FMA>(n, values, live, weight, bias, out),
    }
}

#[inline(always)]
fn backward_body<const FMA: bool>(
    n: usize,
    padded: &[f32],
    live: &[LiveRows],
    out_grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
    scratch: &mut [f32],
) {
    let out_channels = bias_grad.len();
    for o in 0..out_channels {
        // This channel's gradient rows, widened to 32 with zeros so each row is whole vectors.
        let rows = &mut scratch[..n * S * W];
        let mut bias_sum = 0.0f32;
        for (b, image_rows) in rows.chunks_exact_mut(S * W).enumerate() {
            let g = &out_grad[(b * OC + o) * S * S..][..S * S];
            for (dst, src) in image_rows.chunks_exact_mut(W).zip(g.chunks_exact(S)) {
                dst[..S].copy_from_slice(src);
                dst[S..].fill(0.0);
                bias_sum += src.iter().sum::<f32>();
            }
        }
        bias_grad[o] += bias_sum;
        // For each kernel row, all five kernel columns at once, over half a padded row (16 lanes) at a time:
        // ten independent accumulators, and each gradient vector loaded once serves five taps.
        const HALF: usize = W / 2;
        for i in 0..K {
            let mut taps = [0.0f32; K];
            for half in 0..2 {
                let mut acc = [[0.0f32; HALF]; K];
                for b in 0..n {
                    let img: &[f32; PADDED_LEN] = padded[b * PADDED_LEN..(b + 1) * PADDED_LEN].try_into().unwrap();
                    for y in live[b].outputs(i) {
                        let start = (b * S + y) * W + half * HALF;
                        let gr: &[f32; HALF] = rows[start..start + HALF].try_into().unwrap();
                        let base = (y + i) * PW + half * HALF;
                        let src: &[f32; HALF + K - 1] = img[base..base + HALF + K - 1].try_into().unwrap();
                        for j in 0..K {
                            for x in 0..HALF {
                                acc[j][x] = mul_add::<FMA>(gr[x], src[j + x], acc[j][x]);
                            }
                        }
                    }
                }
                for j in 0..K {
                    taps[j] += acc[j].iter().sum::<f32>();
                }
            }
            for j in 0..K {
                weight_grad[o * K * K + i * K + j] += taps[j];
            }
        }
    }
}

/// Adds the weight and bias gradients of `n` images: `out_grad (n, 6, 28, 28)` (after the ReLU mask),
/// `padded (n, 32, 36)` from forward, `scratch (n, 28, 32)` (used only by the portable code).
pub fn conv_backward(
    n: usize,
    padded: Padded,
    out_grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
    scratch: &mut [f32],
) {
    check(
        padded.holds(n) && out_grad.len() >= OC * n * S * S && weight_grad.len() >= OC * K * K && bias_grad.len() == OC,
    );
    let (values, live) = (padded.values, padded.live);
    // The SIMD kernels index with pointers: `check` proved every buffer large enough. On AMD's AVX-512 the
    // kernel reads its shifted rows directly (see `avx512::backward`).
    select! {
        avx512 => match crate::simd::amd() {
            true => avx512::backward::<false>(n, values, live, out_grad, weight_grad, bias_grad),
            false => avx512::backward::<true>(n, values, live, out_grad, weight_grad, bias_grad),
        },
        avx2 => avx2::backward(n, values, live, out_grad, weight_grad, bias_grad),
        simd128 => simd128::backward(n, values, live, out_grad, weight_grad, bias_grad, scratch),
        portable => backward_body::<BASELINE_FMA>(n, values, live, out_grad, weight_grad, bias_grad, scratch),
    }
}

/// Both kernels with AVX-512 intrinsics: a 28-value row is two 16-lane vectors, the second one masked.
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Both kernels with AVX2 intrinsics: a 28-value row is four 8-lane vectors, the last one half used.
#[cfg(target_arch = "x86_64")]
mod avx2;

/// Both kernels with WebAssembly's SIMD128, with the portable ones' bits.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

#[cfg(test)]
mod tests;
