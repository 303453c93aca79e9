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
//! output `(6, n, 28, 28)` (channel-major, like every conv activation), scratch `(n, 28, 32)`.

use std::ops::Range;

use super::conv::Conv2dDims;
use crate::aligned::AlignedBuf;
use crate::simd::{BASELINE_FMA, mul_add};

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
pub fn supports(d: &Conv2dDims) -> bool {
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
    pub fn fill(&mut self, n: usize, input: &[f32]) {
        let images = input[..n * S * S].chunks_exact(S * S);
        for ((img, pad), live) in images.zip(self.values.chunks_exact_mut(PADDED_LEN)).zip(&mut self.live) {
            for (y, row) in img.chunks_exact(S).enumerate() {
                pad[(y + P) * PW + P..(y + P) * PW + P + S].copy_from_slice(row);
            }
            *live = LiveRows::of(img);
        }
    }

    /// Whether `n` images fit.
    fn holds(&self, n: usize) -> bool {
        self.values.len() >= n * PADDED_LEN && self.live.len() >= n
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
                let row0 = (o * n + b) * S * S + y * S;
                let row1 = ((o + 1) * n + b) * S * S + y * S;
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

/// Convolution then ReLU: `padded (n, 32, 36)` -> `out (6, n, 28, 28)`.
pub fn conv_relu_forward(n: usize, padded: &PaddedImages, weight: &[f32], bias: &[f32], out: &mut [f32]) {
    check(
        padded.holds(n)
            && weight.len() >= bias.len() * K * K
            && out.len() >= bias.len() * n * S * S
            && bias.len() == OC,
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and `check` proved every buffer large enough.
        return unsafe { avx512::forward(n, &padded.values, &padded.live, weight, bias, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: as above.
        return unsafe { avx2::forward(n, &padded.values, &padded.live, weight, bias, out) };
    }
    forward_relu_body::<BASELINE_FMA>(n, &padded.values, &padded.live, weight, bias, out)
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
        let g = &out_grad[o * n * S * S..(o + 1) * n * S * S];
        let rows = &mut scratch[..n * S * W];
        let mut bias_sum = 0.0f32;
        for (dst, src) in rows.chunks_exact_mut(W).zip(g.chunks_exact(S)) {
            dst[..S].copy_from_slice(src);
            dst[S..].fill(0.0);
            bias_sum += src.iter().sum::<f32>();
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

/// Adds the weight and bias gradients of `n` images: `out_grad (6, n, 28, 28)` (after the ReLU mask),
/// `padded (n, 32, 36)` from forward, `scratch (n, 28, 32)` (used only by the portable code).
pub fn conv_backward(
    n: usize,
    padded: &PaddedImages,
    out_grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
    scratch: &mut [f32],
) {
    check(
        padded.holds(n) && out_grad.len() >= OC * n * S * S && weight_grad.len() >= OC * K * K && bias_grad.len() == OC,
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        let (values, live) = (&padded.values, &padded.live);
        // SAFETY: the CPU has the features, and `check` proved every buffer large enough.
        return unsafe {
            if crate::simd::amd() {
                avx512::backward::<false>(n, values, live, out_grad, weight_grad, bias_grad)
            } else {
                avx512::backward::<true>(n, values, live, out_grad, weight_grad, bias_grad)
            }
        };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: as above.
        return unsafe { avx2::backward(n, &padded.values, &padded.live, out_grad, weight_grad, bias_grad) };
    }
    backward_body::<BASELINE_FMA>(n, &padded.values, &padded.live, out_grad, weight_grad, bias_grad, scratch)
}

/// Both kernels with AVX-512 intrinsics: a 28-value row is two 16-lane vectors, the second one masked.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{K, LiveRows, OC, PADDED_LEN, PW, S};

    /// Lanes 16..28 of a row.
    const TAIL: __mmask16 = (1 << (S - 16)) - 1;

    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn forward(n: usize, padded: &[f32], live: &[LiveRows], weight: &[f32], bias: &[f32], out: &mut [f32]) {
        let (wp, op) = (weight.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved; a shifted 32-wide read of a
        // padded row stays inside its 36 values.
        unsafe {
            let zero = _mm512_setzero_ps();
            for (b, &live) in live[..n].iter().enumerate() {
                let img = padded.as_ptr().add(b * PADDED_LEN);
                for y in 0..S {
                    // All six channels of one output row: twelve accumulators, and each input vector loaded
                    // serves six FMAs.
                    let mut acc = [[zero; 2]; OC];
                    for (o, acc_o) in acc.iter_mut().enumerate() {
                        *acc_o = [_mm512_set1_ps(bias[o]); 2];
                    }
                    for i in live.taps(y) {
                        let row = img.add((y + i) * PW);
                        for j in 0..K {
                            let (lo, hi) = (_mm512_loadu_ps(row.add(j)), _mm512_loadu_ps(row.add(j + 16)));
                            for (o, acc_o) in acc.iter_mut().enumerate() {
                                let w = _mm512_set1_ps(*wp.add(o * K * K + i * K + j));
                                acc_o[0] = _mm512_fmadd_ps(w, lo, acc_o[0]);
                                acc_o[1] = _mm512_fmadd_ps(w, hi, acc_o[1]);
                            }
                        }
                    }
                    for (o, acc_o) in acc.iter().enumerate() {
                        let dst = op.add((o * n + b) * S * S + y * S);
                        _mm512_storeu_ps(dst, _mm512_max_ps(acc_o[0], zero));
                        _mm512_mask_storeu_ps(dst.add(16), TAIL, _mm512_max_ps(acc_o[1], zero));
                    }
                }
            }
        }
    }

    /// Lanes `J..16` of `lo` followed by lanes `0..J` of `hi`: the 16 values `J` places further along.
    #[inline(always)]
    fn shift<const J: i32>(lo: __m512, hi: __m512) -> __m512 {
        // SAFETY: only called from functions compiled with AVX-512F.
        unsafe { _mm512_castsi512_ps(_mm512_alignr_epi32::<J>(_mm512_castps_si512(hi), _mm512_castps_si512(lo))) }
    }

    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn backward<const SHIFT: bool>(
        n: usize,
        padded: &[f32],
        live: &[LiveRows],
        out_grad: &[f32],
        weight_grad: &mut [f32],
        bias_grad: &mut [f32],
    ) {
        // Three channels and one kernel row at a time: fifteen accumulators (3 channels x 5 taps), each half-row
        // of the image serves three channels and each gradient half-row five taps. Both halves of a row add into
        // the same accumulators; lanes are summed at the end. With `SHIFT`, the five shifted half-rows are made
        // from whole vectors with `valignd`; without, they are read directly, and four of them cross a cache line.
        // Which is faster depends on the CPU: measured alone, 8 images, the shifts on an Intel Xeon (20.5 ->
        // 17.8 us), the reads on an AMD EPYC (17.4 -> 13.2 us).
        const G: usize = 3;
        let gp = out_grad.as_ptr();
        // SAFETY (whole body): as in `forward`; the masked loads read only the 28 values of a gradient row (and
        // the last 4 of a padded row), and its lanes 28..32 are zero, so the padding columns they meet add
        // nothing.
        unsafe {
            for o0 in (0..OC).step_by(G) {
                let mut bias_acc = [_mm512_setzero_ps(); G];
                for i in 0..K {
                    let mut acc = [[_mm512_setzero_ps(); K]; G];
                    for (b, &live) in live[..n].iter().enumerate() {
                        let img = padded.as_ptr().add(b * PADDED_LEN);
                        // The first kernel row's pass also sums the bias gradient, which takes every output row.
                        for y in if i == 0 { 0..S } else { live.outputs(i) } {
                            let meets = live.contains(y + i);
                            let row = img.add((y + i) * PW);
                            // The row's 36 values: 16 + 16 + 4.
                            let whole = [
                                _mm512_loadu_ps(row),
                                _mm512_loadu_ps(row.add(16)),
                                _mm512_maskz_loadu_ps(0x000f, row.add(32)),
                            ];
                            for half in 0..2 {
                                let mut g = [_mm512_setzero_ps(); G];
                                for (c, g_c) in g.iter_mut().enumerate() {
                                    let src = gp.add(((o0 + c) * n + b) * S * S + y * S + 16 * half);
                                    *g_c =
                                        if half == 0 { _mm512_loadu_ps(src) } else { _mm512_maskz_loadu_ps(TAIL, src) };
                                }
                                if i == 0 {
                                    for (sum, g_c) in bias_acc.iter_mut().zip(g) {
                                        *sum = _mm512_add_ps(*sum, g_c);
                                    }
                                }
                                if !meets {
                                    continue;
                                }
                                // Values j + 16 * half .. j + 16 * half + 16 of the row, for j = 0..5.
                                let shifted = if SHIFT {
                                    let (lo, hi) = (whole[half], whole[half + 1]);
                                    [lo, shift::<1>(lo, hi), shift::<2>(lo, hi), shift::<3>(lo, hi), shift::<4>(lo, hi)]
                                } else {
                                    // A 16-wide read at `16 * half + j` stays inside the row's 36 values.
                                    std::array::from_fn(|j| _mm512_loadu_ps(row.add(16 * half + j)))
                                };
                                for (j, v) in shifted.into_iter().enumerate() {
                                    for (acc_c, g_c) in acc.iter_mut().zip(g) {
                                        acc_c[j] = _mm512_fmadd_ps(g_c, v, acc_c[j]);
                                    }
                                }
                            }
                        }
                    }
                    for (c, acc_c) in acc.iter().enumerate() {
                        for (j, v) in acc_c.iter().enumerate() {
                            weight_grad[(o0 + c) * K * K + i * K + j] += _mm512_reduce_add_ps(*v);
                        }
                    }
                }
                for (c, v) in bias_acc.iter().enumerate() {
                    bias_grad[o0 + c] += _mm512_reduce_add_ps(*v);
                }
            }
        }
    }
}

/// Both kernels with AVX2 intrinsics: a 28-value row is four 8-lane vectors, the last one half used.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{K, LiveRows, OC, PADDED_LEN, PW, S};
    use crate::simd::narrow::sum_lanes;

    /// Vectors per row.
    const Q: usize = 4;

    /// # Safety
    /// The CPU must have AVX2 and FMA; the buffers must have passed `check`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward(n: usize, padded: &[f32], live: &[LiveRows], weight: &[f32], bias: &[f32], out: &mut [f32]) {
        // Three channels of one output row at a time: twelve accumulators, and each input vector loaded serves
        // three FMAs.
        const G: usize = 3;
        let (wp, op) = (weight.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved; a shifted 32-wide read of a
        // padded row stays inside its 36 values, and only the 28 values of an output row are stored.
        unsafe {
            let zero = _mm256_setzero_ps();
            for (b, &live) in live[..n].iter().enumerate() {
                let img = padded.as_ptr().add(b * PADDED_LEN);
                for o0 in (0..OC).step_by(G) {
                    for y in 0..S {
                        let mut acc = [[zero; Q]; G];
                        for (c, acc_c) in acc.iter_mut().enumerate() {
                            *acc_c = [_mm256_set1_ps(bias[o0 + c]); Q];
                        }
                        for i in live.taps(y) {
                            let row = img.add((y + i) * PW);
                            for j in 0..K {
                                let mut w = [zero; G];
                                for (c, w_c) in w.iter_mut().enumerate() {
                                    *w_c = _mm256_broadcast_ss(&*wp.add((o0 + c) * K * K + i * K + j));
                                }
                                for q in 0..Q {
                                    let v = _mm256_loadu_ps(row.add(8 * q + j));
                                    for (acc_c, w_c) in acc.iter_mut().zip(w) {
                                        acc_c[q] = _mm256_fmadd_ps(w_c, v, acc_c[q]);
                                    }
                                }
                            }
                        }
                        for (c, acc_c) in acc.iter().enumerate() {
                            let dst = op.add(((o0 + c) * n + b) * S * S + y * S);
                            for (q, v) in acc_c[..Q - 1].iter().enumerate() {
                                _mm256_storeu_ps(dst.add(8 * q), _mm256_max_ps(*v, zero));
                            }
                            let last = _mm256_castps256_ps128(_mm256_max_ps(acc_c[Q - 1], zero));
                            _mm_storeu_ps(dst.add(8 * (Q - 1)), last);
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; the buffers must have passed `check`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn backward(
        n: usize,
        padded: &[f32],
        live: &[LiveRows],
        out_grad: &[f32],
        weight_grad: &mut [f32],
        bias_grad: &mut [f32],
    ) {
        // Two channels and one kernel row at a time: ten accumulators (2 channels x 5 taps); each image vector
        // loaded serves two channels and each gradient vector five taps. Lanes are summed at the end.
        const G: usize = 2;
        let gp = out_grad.as_ptr();
        // SAFETY (whole body): as in `forward`; the last vector of a gradient row is a masked load of its 4 values
        // (the other lanes zero, so the image values they meet add nothing).
        unsafe {
            let tail = _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0);
            for o0 in (0..OC).step_by(G) {
                let mut bias_acc = [_mm256_setzero_ps(); G];
                for i in 0..K {
                    let mut acc = [[_mm256_setzero_ps(); K]; G];
                    for (b, &live) in live[..n].iter().enumerate() {
                        let img = padded.as_ptr().add(b * PADDED_LEN);
                        // As in the AVX-512 kernel, the first kernel row's pass takes every output row.
                        for y in if i == 0 { 0..S } else { live.outputs(i) } {
                            let meets = live.contains(y + i);
                            let row = img.add((y + i) * PW);
                            for q in 0..Q {
                                let mut g = [_mm256_setzero_ps(); G];
                                for (c, g_c) in g.iter_mut().enumerate() {
                                    let src = gp.add(((o0 + c) * n + b) * S * S + y * S + 8 * q);
                                    *g_c = if q < Q - 1 { _mm256_loadu_ps(src) } else { _mm256_maskload_ps(src, tail) };
                                }
                                if i == 0 {
                                    for (sum, g_c) in bias_acc.iter_mut().zip(g) {
                                        *sum = _mm256_add_ps(*sum, g_c);
                                    }
                                }
                                if !meets {
                                    continue;
                                }
                                for j in 0..K {
                                    let v = _mm256_loadu_ps(row.add(8 * q + j));
                                    for (acc_c, g_c) in acc.iter_mut().zip(g) {
                                        acc_c[j] = _mm256_fmadd_ps(g_c, v, acc_c[j]);
                                    }
                                }
                            }
                        }
                    }
                    for (c, acc_c) in acc.iter().enumerate() {
                        for (j, v) in acc_c.iter().enumerate() {
                            weight_grad[(o0 + c) * K * K + i * K + j] += sum_lanes(*v);
                        }
                    }
                }
                for (c, v) in bias_acc.iter().enumerate() {
                    bias_grad[o0 + c] += sum_lanes(*v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::{conv2d_backward, conv2d_forward};
    use crate::nn::model::CONV1;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    /// Random images, some with blank rows: image 0 none, 1 its first six, 2 its last nine, 3 all of them, 4
    /// all but row 13, 5 its first and last (and a blank row in the middle, which the kernels do not skip).
    fn images_with_blank_rows(rng: &mut Rng) -> Vec<f32> {
        let mut input = random(rng, 6 * S * S);
        let blank: [&[usize]; 6] =
            [&[], &[0, 1, 2, 3, 4, 5], &[19, 20, 21, 22, 23, 24, 25, 26, 27], &[], &[], &[0, 14, 27]];
        for (b, img) in input.chunks_exact_mut(S * S).enumerate() {
            for (y, row) in img.chunks_exact_mut(S).enumerate() {
                if blank[b].contains(&y) || b == 3 || (b == 4 && y != 13) {
                    row.fill(0.0);
                }
            }
        }
        input
    }

    #[test]
    fn live_rows_are_the_rows_between_the_first_and_last_nonzero_ones() {
        let input = images_with_blank_rows(&mut Rng::new(3));
        let mut padded = PaddedImages::new(6);
        padded.fill(6, &input);
        let want = [(2, 30), (8, 30), (2, 21), (0, 0), (15, 16), (3, 29)];
        for (live, (start, end)) in padded.live.iter().zip(want) {
            assert_eq!(*live, LiveRows { start, end });
        }
        // Image 4 (row 13 only, padded row 15): output row 13 meets it with kernel row 2, row 11 with row 4.
        let live = padded.live[4];
        assert_eq!((live.taps(13), live.taps(11), live.taps(10), live.taps(16)), (2..3, 4..5, 5..5, 0..0));
        assert_eq!((live.outputs(0), live.outputs(4)), (15..16, 11..12));
        assert_eq!(padded.live[3].taps(5), 0..0);

        // A row of negative zeros is blank; a NaN is not.
        let mut img = vec![0.0f32; S * S];
        img[5 * S..6 * S].fill(-0.0);
        img[20 * S + 7] = f32::NAN;
        padded.fill(1, &img);
        assert_eq!(padded.live[0], LiveRows { start: 22, end: 23 });
    }

    #[test]
    fn matches_im2col_gemm_forward_and_backward() {
        assert!(supports(&CONV1));
        let d = CONV1;
        let n = 6;
        let mut rng = Rng::new(9);
        let input = images_with_blank_rows(&mut rng);
        let weight = random(&mut rng, d.weight_len());
        let bias = random(&mut rng, d.out_channels);
        let out_grad = random(&mut rng, n * d.out_len());

        let mut col = vec![0.0; n * d.col_len()];
        let mut want = vec![0.0; n * d.out_len()];
        conv2d_forward(&d, n, &input, &weight, &bias, &mut col, &mut want);
        crate::nn::activation::relu_forward(&mut want);
        let mut padded = PaddedImages::new(n);
        // Filled twice, so that the first images' values could show through if filling left any.
        padded.fill(n, &random(&mut rng, n * S * S));
        padded.fill(n, &input);
        let mut got = vec![f32::NAN; n * d.out_len()];
        conv_relu_forward(n, &padded, &weight, &bias, &mut got);
        assert_close(&got, &want);

        // Image 3 is blank: its outputs are the ReLU of the bias alone.
        for o in 0..6 {
            assert!(got[(o * n + 3) * S * S..][..S * S].iter().all(|&v| v == bias[o].max(0.0)));
        }

        let (mut gw_want, mut gb_want) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
        conv2d_backward(&d, n, &col, &weight, &out_grad, &mut gw_want, &mut gb_want, None);
        let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
        let mut scratch = vec![f32::NAN; n * SCRATCH_LEN];
        conv_backward(n, &padded, &out_grad, &mut gw, &mut gb, &mut scratch);
        assert_close(&gw, &gw_want);
        assert_close(&gb, &gb_want);

        // Both forms of the AVX-512 weight gradient, of which a CPU picks one.
        #[cfg(target_arch = "x86_64")]
        if crate::simd::avx512() {
            type Backward = unsafe fn(usize, &[f32], &[LiveRows], &[f32], &mut [f32], &mut [f32]);
            let forms: [Backward; 2] = [avx512::backward::<true>, avx512::backward::<false>];
            for backward in forms {
                let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
                // SAFETY: the CPU has AVX-512, and the buffers are the kernels' sizes.
                unsafe { backward(n, &padded.values, &padded.live, &out_grad, &mut gw, &mut gb) };
                assert_close(&gw, &gw_want);
                assert_close(&gb, &gb_want);
            }
        }

        // The AVX2 kernels, which a CPU with AVX-512 does not pick on its own.
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let mut got = vec![f32::NAN; n * d.out_len()];
            // SAFETY: the CPU has AVX2 and FMA, and the buffers are the kernels' sizes.
            unsafe { avx2::forward(n, &padded.values, &padded.live, &weight, &bias, &mut got) };
            assert_close(&got, &want);
            let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
            // SAFETY: as above.
            unsafe { avx2::backward(n, &padded.values, &padded.live, &out_grad, &mut gw, &mut gb) };
            assert_close(&gw, &gw_want);
            assert_close(&gb, &gb_want);
        }

        // The baseline (no AVX2/FMA) build of the same kernels.
        let mut got = vec![f32::NAN; n * d.out_len()];
        forward_relu_body::<false>(n, &padded.values, &padded.live, &weight, &bias, &mut got);
        assert_close(&got, &want);
        let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
        backward_body::<false>(n, &padded.values, &padded.live, &out_grad, &mut gw, &mut gb, &mut scratch);
        assert_close(&gw, &gw_want);
        assert_close(&gb, &gb_want);
    }
}
