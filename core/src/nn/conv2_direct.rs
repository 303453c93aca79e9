//! Direct convolution for the second layer (6 -> 16 channels, 5x5 kernel, no padding, 14x14 -> 10x10), with
//! no column matrix. The 16 output channels of one pixel are exactly one AVX-512 vector, so the layer keeps its
//! output pixel-major and each kernel is a chain of vector FMAs whose other operand is one broadcast value:
//! - forward: a row of 10 output pixels in 10 accumulators; per tap, one weight vector times 10 input values;
//! - weight gradient: per input channel, the 25 taps in 25 accumulators; per output pixel, its gradient vector
//!   times 25 input values;
//! - input gradient: per input row of one channel, its 14 values as 14 vectors of per-output-channel partial
//!   sums, summed across lanes at the end (the portable path vectorises over the columns of an input row
//!   instead, reading the gradient as padded rows).
//!
//! On a CPU with AVX-512 the forward pass and the weight gradient run as Winograd convolutions instead
//! ([`super::conv2_winograd`], which these kernels are also the reference for); the input gradient runs here.
//!
//! With AVX2 a pixel's channels are two 8-lane vectors and there are 16 registers instead of 32, so the
//! blocks are smaller (see `mod avx2`); the portable code, for CPUs with neither, is the plain-Rust reference.
//!
//! Against im2col + GEMM ([`super::conv`], which it is tested against) this never writes or reads the 150 x 100
//! column matrix per image, which cost as much as the products themselves.
//!
//! # Shapes
//! input `(6, n, 14, 14)` (channel-major, as pooling writes it), weight `(16, 6, 5, 5)` (PyTorch's), packed
//! weight `(150, 16)`, output `(n, 10, 10, 16)` (pixel-major), output gradient pixel-major `(n, 10, 10, 16)`
//! (and, on the portable path, as padded rows `(n, 16, 10, 20)`), input gradient `(6, n, 14, 14)`.

use super::conv::Conv2dDims;
use crate::simd::{BASELINE_FMA, dispatch, mul_add, relu_mask};

const C: usize = 6;
const OC: usize = 16;
const H: usize = 14;
const K: usize = 5;
const OS: usize = H - K + 1;
/// Weights of one filter: `(c, i, j)`.
const TAPS: usize = C * K * K;
/// Values of one image's input plane.
const PLANE: usize = H * H;
/// A padded gradient row: `K - 1` zeros, the 10 values, zeros up to 20, so that a 16-wide read starting at any
/// of the first `K` positions stays inside the row and reads zeros wherever it is past an edge.
const ROW: usize = 20;
const ROW_PAD: usize = K - 1;

/// Values of the packed weight.
pub const PACKED_WEIGHT_LEN: usize = TAPS * OC;
/// Values of one image's output (and pixel-major output gradient).
pub const OUT_LEN: usize = OS * OS * OC;
/// Values of one image's padded gradient rows.
pub const GRAD_ROWS_LEN: usize = OC * OS * ROW;

/// Whether these are the dimensions this kernel is written for.
pub fn supports(d: &Conv2dDims) -> bool {
    d.in_channels == C && d.out_channels == OC && d.in_size == H && d.kernel == K && d.padding == 0
}

/// `weight (16, 150)` -> `packed (150, 16)`: each tap's 16 output channels side by side.
pub fn pack_weight(weight: &[f32], packed: &mut [f32]) {
    for (o, filter) in weight[..OC * TAPS].chunks_exact(TAPS).enumerate() {
        for (t, &w) in filter.iter().enumerate() {
            packed[t * OC + o] = w;
        }
    }
}

/// Copies the pixel-major output gradient `(n, 10, 10, 16)` into padded rows `(n, 16, 10, 20)`. Only the
/// values are written: the padding of `rows` must be zero (it stays so, as nothing else writes there).
pub fn pad_grad_rows(n: usize, grad: &[f32], rows: &mut [f32]) {
    for (img, dst) in grad[..n * OUT_LEN].chunks_exact(OUT_LEN).zip(rows.chunks_exact_mut(GRAD_ROWS_LEN)) {
        for (p, px) in img.chunks_exact(OC).enumerate() {
            let (y, x) = (p / OS, p % OS);
            for (o, &g) in px.iter().enumerate() {
                dst[(o * OS + y) * ROW + ROW_PAD + x] = g;
            }
        }
    }
}

/// Internal invariant: the workspace sizes every buffer from the same constants. The kernels index with
/// pointers after this one check.
#[inline(always)]
fn output_grad_body<const FMA: bool>(n: usize, pooled_grad: &[f32], out_grad: &mut [f32]) {
    const POOLED: usize = OS / 2;
    for b in 0..n {
        let g = &pooled_grad[b * OC * POOLED * POOLED..(b + 1) * OC * POOLED * POOLED];
        // A quarter of each pooled pixel's gradient, its 16 channels side by side.
        let mut quarter = [[0.0f32; OC]; POOLED * POOLED];
        for (o, g_o) in g.chunks_exact(POOLED * POOLED).enumerate() {
            for (q, v) in quarter.iter_mut().zip(g_o) {
                q[o] = v / 4.0;
            }
        }
        let dst = &mut out_grad[b * OUT_LEN..(b + 1) * OUT_LEN];
        for y in 0..OS {
            for x in 0..OS {
                let p = (y * OS + x) * OC;
                let q = &quarter[(y / 2) * POOLED + x / 2];
                let d: &mut [f32; OC] = (&mut dst[p..p + OC]).try_into().unwrap();
                for o in 0..OC {
                    d[o] = relu_mask(d[o], q[o]);
                }
            }
        }
    }
}

dispatch! {
    /// Backward of ReLU, 2x2 average pooling and flattening: from `pooled_grad (n, 16 * 5 * 5)` (flattened, as
    /// `nn.Flatten` orders it) into `out_grad (n, 10, 10, 16)`, which holds the layer's ReLU output on entry and
    /// its gradient on return. The same values as `pool::avgpool2_pixel_major_relu_backward`.
    pub fn output_grad_from_pooled(n: usize, pooled_grad: &[f32], out_grad: &mut [f32]) => output_grad_body
}

fn check(fits: bool) {
    assert!(fits, "conv2: buffer too small");
}

#[inline(always)]
fn forward_body<const FMA: bool>(n: usize, input: &[f32], packed: &[f32], bias: &[f32], out: &mut [f32]) {
    // Five pixels at a time: ten accumulators of 16 values.
    const XB: usize = 5;
    let bias: &[f32; OC] = bias[..OC].try_into().unwrap();
    for b in 0..n {
        for y in 0..OS {
            for x0 in (0..OS).step_by(XB) {
                let mut acc = [*bias; XB];
                for c in 0..C {
                    let plane = &input[(c * n + b) * PLANE..(c * n + b + 1) * PLANE];
                    for i in 0..K {
                        let row: &[f32; H] = plane[(y + i) * H..(y + i + 1) * H].try_into().unwrap();
                        for j in 0..K {
                            let t = (c * K + i) * K + j;
                            let w: &[f32; OC] = packed[t * OC..(t + 1) * OC].try_into().unwrap();
                            for (x, acc_x) in acc.iter_mut().enumerate() {
                                let v = row[x0 + x + j];
                                for o in 0..OC {
                                    acc_x[o] = mul_add::<FMA>(v, w[o], acc_x[o]);
                                }
                            }
                        }
                    }
                }
                for (x, acc_x) in acc.iter().enumerate() {
                    let dst = &mut out[((b * OS + y) * OS + x0 + x) * OC..][..OC];
                    for o in 0..OC {
                        dst[o] = acc_x[o].max(0.0);
                    }
                }
            }
        }
    }
}

/// Convolution then ReLU: `input (6, n, 14, 14)`, `packed` from [`pack_weight`] -> `out (n, 10, 10, 16)`.
pub fn conv_relu_forward(n: usize, input: &[f32], packed: &[f32], bias: &[f32], out: &mut [f32]) {
    check(
        input.len() >= C * n * PLANE
            && out.len() >= n * OUT_LEN
            && packed.len() >= PACKED_WEIGHT_LEN
            && bias.len() >= OC,
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and `check` proved every buffer large enough.
        return unsafe { avx512::forward(n, input, packed, bias, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: as above.
        return unsafe { avx2::forward(n, input, packed, bias, out) };
    }
    forward_body::<BASELINE_FMA>(n, input, packed, bias, out)
}

#[inline(always)]
fn weight_grad_body<const FMA: bool>(
    n: usize,
    input: &[f32],
    grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    let mut bias_sum = [0.0f32; OC];
    for px in grad[..n * OUT_LEN].chunks_exact(OC) {
        for o in 0..OC {
            bias_sum[o] += px[o];
        }
    }
    for o in 0..OC {
        bias_grad[o] += bias_sum[o];
    }
    // One kernel row (five taps) of one input channel at a time.
    for c in 0..C {
        for i in 0..K {
            let mut acc = [[0.0f32; OC]; K];
            for b in 0..n {
                let plane = &input[(c * n + b) * PLANE..(c * n + b + 1) * PLANE];
                for y in 0..OS {
                    let row: &[f32; H] = plane[(y + i) * H..(y + i + 1) * H].try_into().unwrap();
                    for x in 0..OS {
                        let g: &[f32; OC] = grad[((b * OS + y) * OS + x) * OC..][..OC].try_into().unwrap();
                        for (j, acc_j) in acc.iter_mut().enumerate() {
                            let v = row[x + j];
                            for o in 0..OC {
                                acc_j[o] = mul_add::<FMA>(v, g[o], acc_j[o]);
                            }
                        }
                    }
                }
            }
            for (j, acc_j) in acc.iter().enumerate() {
                for o in 0..OC {
                    weight_grad[o * TAPS + (c * K + i) * K + j] += acc_j[o];
                }
            }
        }
    }
}

/// Adds the weight and bias gradients of `n` images: `input (6, n, 14, 14)` as in forward, `grad (n, 10, 10, 16)`
/// the output gradient after the ReLU mask, `weight_grad (16, 6, 5, 5)`.
pub fn weight_grad(n: usize, input: &[f32], grad: &[f32], weight_grad: &mut [f32], bias_grad: &mut [f32]) {
    check(
        input.len() >= C * n * PLANE
            && grad.len() >= n * OUT_LEN
            && weight_grad.len() >= OC * TAPS
            && bias_grad.len() >= OC,
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and `check` proved every buffer large enough.
        return unsafe { avx512::weight_grad(n, input, grad, weight_grad, bias_grad) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: as above.
        return unsafe { avx2::weight_grad(n, input, grad, weight_grad, bias_grad) };
    }
    weight_grad_body::<BASELINE_FMA>(n, input, grad, weight_grad, bias_grad)
}

#[inline(always)]
fn input_grad_body<const FMA: bool>(n: usize, rows: &[f32], packed: &[f32], input_grad: &mut [f32]) {
    input_grad[..C * n * PLANE].fill(0.0);
    const L: usize = 16;
    for b in 0..n {
        for y in 0..OS {
            // Gradient row y reaches input rows y..y+5; one input row at a time on the portable path.
            for i in 0..K {
                let mut acc = [[0.0f32; L]; C];
                for o in 0..OC {
                    let row: &[f32; ROW] = rows[((b * OC + o) * OS + y) * ROW..][..ROW].try_into().unwrap();
                    for j in 0..K {
                        let src: &[f32; L] = row[ROW_PAD - j..ROW_PAD - j + L].try_into().unwrap();
                        for (c, acc_c) in acc.iter_mut().enumerate() {
                            let w = packed[((c * K + i) * K + j) * OC + o];
                            for l in 0..L {
                                acc_c[l] = mul_add::<FMA>(w, src[l], acc_c[l]);
                            }
                        }
                    }
                }
                for (c, acc_c) in acc.iter().enumerate() {
                    let dst = &mut input_grad[((c * n + b) * H + y + i) * H..][..H];
                    for x in 0..H {
                        dst[x] += acc_c[x];
                    }
                }
            }
        }
    }
}

/// Overwrites `input_grad (6, n, 14, 14)` with the gradient of the input, from the pixel-major output gradient
/// `grad (n, 10, 10, 16)` and the packed weight `(150, 16)` (see [`pack_weight`]). `rows (n, 16, 10, 20)` is
/// scratch for the portable path, which reads the gradient as padded rows: its padding must be zero, as for
/// [`pad_grad_rows`].
pub fn input_grad(n: usize, grad: &[f32], rows: &mut [f32], packed: &[f32], input_grad: &mut [f32]) {
    check(
        grad.len() >= n * OUT_LEN
            && rows.len() >= n * GRAD_ROWS_LEN
            && packed.len() >= PACKED_WEIGHT_LEN
            && input_grad.len() >= C * n * PLANE,
    );
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and `check` proved every buffer large enough.
        return unsafe { avx512::input_grad(n, grad, packed, input_grad) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: as above.
        return unsafe { avx2::input_grad(n, grad, packed, input_grad) };
    }
    pad_grad_rows(n, grad, rows);
    input_grad_body::<BASELINE_FMA>(n, rows, packed, input_grad)
}

/// The three kernels with AVX-512 intrinsics: one 16-lane vector per pixel's channels (or per input row).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{C, H, K, OC, OS, OUT_LEN, PLANE, TAPS};
    use crate::simd::wide::reduce_4x4;

    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn forward(n: usize, input: &[f32], packed: &[f32], bias: &[f32], out: &mut [f32]) {
        let (ip, wp, op) = (input.as_ptr(), packed.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved.
        unsafe {
            let bias = _mm512_loadu_ps(bias.as_ptr());
            let zero = _mm512_setzero_ps();
            for b in 0..n {
                for y in 0..OS {
                    let mut acc = [bias; OS];
                    for c in 0..C {
                        let plane = ip.add((c * n + b) * PLANE);
                        for i in 0..K {
                            let row = plane.add((y + i) * H);
                            for j in 0..K {
                                let w = _mm512_loadu_ps(wp.add(((c * K + i) * K + j) * OC));
                                for (x, acc_x) in acc.iter_mut().enumerate() {
                                    *acc_x = _mm512_fmadd_ps(_mm512_set1_ps(*row.add(x + j)), w, *acc_x);
                                }
                            }
                        }
                    }
                    let dst = op.add((b * OS + y) * OS * OC);
                    for (x, acc_x) in acc.iter().enumerate() {
                        _mm512_storeu_ps(dst.add(x * OC), _mm512_max_ps(*acc_x, zero));
                    }
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn weight_grad(n: usize, input: &[f32], grad: &[f32], weight_grad: &mut [f32], bias_grad: &mut [f32]) {
        let (ip, gp) = (input.as_ptr(), grad.as_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved.
        unsafe {
            let mut bias_sum = _mm512_setzero_ps();
            for p in 0..n * OS * OS {
                bias_sum = _mm512_add_ps(bias_sum, _mm512_loadu_ps(gp.add(p * OC)));
            }
            let mut lanes = [0.0f32; OC];
            _mm512_storeu_ps(lanes.as_mut_ptr(), bias_sum);
            for (g, s) in bias_grad.iter_mut().zip(lanes) {
                *g += s;
            }
            for c in 0..C {
                // All 25 taps of this input channel: each gradient vector loaded once serves 25 FMAs.
                let mut acc = [_mm512_setzero_ps(); K * K];
                for b in 0..n {
                    let plane = ip.add((c * n + b) * PLANE);
                    let g_img = gp.add(b * OUT_LEN);
                    for y in 0..OS {
                        // Two neighbouring pixels at a time: their taps read 6 input values per kernel row
                        // instead of 2 x 5, each broadcast once.
                        for x in (0..OS).step_by(2) {
                            let g0 = _mm512_loadu_ps(g_img.add((y * OS + x) * OC));
                            let g1 = _mm512_loadu_ps(g_img.add((y * OS + x + 1) * OC));
                            for i in 0..K {
                                let row = plane.add((y + i) * H + x);
                                let mut v = _mm512_set1_ps(*row);
                                for j in 0..K {
                                    let next = _mm512_set1_ps(*row.add(j + 1));
                                    let t = _mm512_fmadd_ps(v, g0, acc[i * K + j]);
                                    acc[i * K + j] = _mm512_fmadd_ps(next, g1, t);
                                    v = next;
                                }
                            }
                        }
                    }
                }
                for (t, v) in acc.iter().enumerate() {
                    _mm512_storeu_ps(lanes.as_mut_ptr(), *v);
                    for (o, s) in lanes.iter().enumerate() {
                        weight_grad[o * TAPS + c * K * K + t] += s;
                    }
                }
            }
        }
    }

    /// Vectorised over the 16 output channels, as the other two kernels are: each input value's gradient is a
    /// sum over the output channels of the taps that reach it, so one input row of one channel is 14 vectors
    /// of per-channel partial sums, summed across their lanes at the end. Every multiply-add is one that counts
    /// (vectorising over the input columns instead, a gradient row of 10 values reaches 14 columns: 1.6 times
    /// the multiply-adds).
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn input_grad(n: usize, grad: &[f32], packed: &[f32], input_grad: &mut [f32]) {
        let (gp, wp, dp) = (grad.as_ptr(), packed.as_ptr(), input_grad.as_mut_ptr());
        // The 14 columns of an input row.
        let mask: __mmask16 = (1 << H) - 1;
        // SAFETY (whole body): every offset is below the lengths `check` proved; the masked stores touch only
        // the 14 values of an input row.
        unsafe {
            for b in 0..n {
                let g_img = gp.add(b * OUT_LEN);
                for c in 0..C {
                    for y_in in 0..H {
                        // Column x of the input row in acc[x / 4][x % 4]; columns 14 and 15 stay zero.
                        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
                        // Kernel rows i whose gradient row y_in - i exists.
                        for i in y_in.saturating_sub(OS - 1)..=y_in.min(K - 1) {
                            let row = g_img.add((y_in - i) * OS * OC);
                            let mut g = [_mm512_setzero_ps(); OS];
                            for (x, g_x) in g.iter_mut().enumerate() {
                                *g_x = _mm512_loadu_ps(row.add(x * OC));
                            }
                            for j in 0..K {
                                let w = _mm512_loadu_ps(wp.add(((c * K + i) * K + j) * OC));
                                for (x, g_x) in g.iter().enumerate() {
                                    let at = &mut acc[(x + j) / 4][(x + j) % 4];
                                    *at = _mm512_fmadd_ps(w, *g_x, *at);
                                }
                            }
                        }
                        let dst = dp.add(((c * n + b) * H + y_in) * H);
                        _mm512_mask_storeu_ps(dst, mask, reduce_4x4(&acc));
                    }
                }
            }
        }
    }
}

/// The three kernels with AVX2 intrinsics: a pixel's 16 channels are two 8-lane vectors, and with 16 registers
/// the blocks are smaller than on AVX-512 (five pixels in forward, one kernel row in the weight gradient, seven
/// columns of an input row in the input gradient).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{C, H, K, OC, OS, OUT_LEN, PLANE, TAPS};
    use crate::simd::narrow::sum_lanes_8;

    /// # Safety
    /// The CPU must have AVX2 and FMA; the buffers must have passed `check`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward(n: usize, input: &[f32], packed: &[f32], bias: &[f32], out: &mut [f32]) {
        // Five pixels of a row at a time: ten accumulators, two weight vectors and a broadcast value.
        const XB: usize = 5;
        let (ip, wp, op) = (input.as_ptr(), packed.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved.
        unsafe {
            let bias = [_mm256_loadu_ps(bias.as_ptr()), _mm256_loadu_ps(bias.as_ptr().add(8))];
            let zero = _mm256_setzero_ps();
            for b in 0..n {
                for y in 0..OS {
                    for x0 in (0..OS).step_by(XB) {
                        let mut acc = [bias; XB];
                        for c in 0..C {
                            let plane = ip.add((c * n + b) * PLANE);
                            for i in 0..K {
                                let row = plane.add((y + i) * H + x0);
                                for j in 0..K {
                                    let w = wp.add(((c * K + i) * K + j) * OC);
                                    let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                                    for (x, acc_x) in acc.iter_mut().enumerate() {
                                        let v = _mm256_broadcast_ss(&*row.add(x + j));
                                        acc_x[0] = _mm256_fmadd_ps(v, w0, acc_x[0]);
                                        acc_x[1] = _mm256_fmadd_ps(v, w1, acc_x[1]);
                                    }
                                }
                            }
                        }
                        let dst = op.add(((b * OS + y) * OS + x0) * OC);
                        for (x, acc_x) in acc.iter().enumerate() {
                            _mm256_storeu_ps(dst.add(x * OC), _mm256_max_ps(acc_x[0], zero));
                            _mm256_storeu_ps(dst.add(x * OC + 8), _mm256_max_ps(acc_x[1], zero));
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; the buffers must have passed `check`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_grad(n: usize, input: &[f32], grad: &[f32], weight_grad: &mut [f32], bias_grad: &mut [f32]) {
        let (ip, gp) = (input.as_ptr(), grad.as_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved.
        unsafe {
            let mut bias_sum = [_mm256_setzero_ps(); 2];
            for p in 0..n * OS * OS {
                bias_sum[0] = _mm256_add_ps(bias_sum[0], _mm256_loadu_ps(gp.add(p * OC)));
                bias_sum[1] = _mm256_add_ps(bias_sum[1], _mm256_loadu_ps(gp.add(p * OC + 8)));
            }
            let mut lanes = [0.0f32; OC];
            _mm256_storeu_ps(lanes.as_mut_ptr(), bias_sum[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), bias_sum[1]);
            for (g, s) in bias_grad.iter_mut().zip(lanes) {
                *g += s;
            }
            for c in 0..C {
                // One kernel row (five taps) at a time: ten accumulators; each gradient vector loaded serves five
                // FMAs.
                for i in 0..K {
                    let mut acc = [[_mm256_setzero_ps(); 2]; K];
                    for b in 0..n {
                        let plane = ip.add((c * n + b) * PLANE);
                        let g_img = gp.add(b * OUT_LEN);
                        for y in 0..OS {
                            let row = plane.add((y + i) * H);
                            for x in 0..OS {
                                let g = g_img.add((y * OS + x) * OC);
                                let (g0, g1) = (_mm256_loadu_ps(g), _mm256_loadu_ps(g.add(8)));
                                for (j, acc_j) in acc.iter_mut().enumerate() {
                                    let v = _mm256_broadcast_ss(&*row.add(x + j));
                                    acc_j[0] = _mm256_fmadd_ps(v, g0, acc_j[0]);
                                    acc_j[1] = _mm256_fmadd_ps(v, g1, acc_j[1]);
                                }
                            }
                        }
                    }
                    for (j, acc_j) in acc.iter().enumerate() {
                        _mm256_storeu_ps(lanes.as_mut_ptr(), acc_j[0]);
                        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc_j[1]);
                        for (o, s) in lanes.iter().enumerate() {
                            weight_grad[o * TAPS + (c * K + i) * K + j] += s;
                        }
                    }
                }
            }
        }
    }

    /// Vectorised over the output channels, as on AVX-512: each input value's gradient is a sum over the output
    /// channels, so an input row is accumulated as vectors of per-channel partial sums (both halves of the 16
    /// channels add into the same ones), summed across their lanes at the end. A row is two parts of seven
    /// columns, each with its seven accumulators and a kernel row's five weight vectors in registers (all 14
    /// columns at once would need 20 registers; AVX2 has 16).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the buffers must have passed `check`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input_grad(n: usize, grad: &[f32], packed: &[f32], input_grad: &mut [f32]) {
        let (gp, wp, dp) = (grad.as_ptr(), packed.as_ptr(), input_grad.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved; the masked stores write the 14
        // values of an input row.
        unsafe {
            let seven = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0);
            for b in 0..n {
                let g_img = gp.add(b * OUT_LEN);
                for c in 0..C {
                    for y_in in 0..H {
                        let dst = dp.add(((c * n + b) * H + y_in) * H);
                        _mm256_maskstore_ps(dst, seven, input_row_part::<0>(g_img, wp, c, y_in));
                        _mm256_maskstore_ps(dst.add(PART), seven, input_row_part::<PART>(g_img, wp, c, y_in));
                    }
                }
            }
        }
    }

    /// Columns of an input row computed together.
    const PART: usize = H / 2;

    /// Columns `X0..X0 + 7` of input row `y_in` of channel `c` of one image, in lanes 0..7 (lane 7 zero).
    ///
    /// # Safety
    /// AVX2 and FMA; `g_img` one image's output gradient, `wp` the packed weight, `c < 6`, `y_in < 14`.
    #[inline(always)]
    unsafe fn input_row_part<const X0: usize>(g_img: *const f32, wp: *const f32, c: usize, y_in: usize) -> __m256 {
        // SAFETY (whole body): offsets stay inside one image's gradient and the packed weight.
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            // Kernel rows i whose gradient row y_in - i exists.
            for i in y_in.saturating_sub(OS - 1)..=y_in.min(K - 1) {
                let row = g_img.add((y_in - i) * OS * OC);
                for half in 0..2 {
                    let mut w = [_mm256_setzero_ps(); K];
                    for (j, w_j) in w.iter_mut().enumerate() {
                        *w_j = _mm256_loadu_ps(wp.add(((c * K + i) * K + j) * OC + 8 * half));
                    }
                    // Gradient column x reaches input column x + j.
                    for x in X0.saturating_sub(K - 1)..(X0 + PART).min(OS) {
                        let g = _mm256_loadu_ps(row.add(x * OC + 8 * half));
                        for (j, w_j) in w.iter().enumerate() {
                            if (X0..X0 + PART).contains(&(x + j)) {
                                acc[x + j - X0] = _mm256_fmadd_ps(*w_j, g, acc[x + j - X0]);
                            }
                        }
                    }
                }
            }
            sum_lanes_8(&acc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::{conv2d_backward, conv2d_forward};
    use crate::nn::model::CONV2;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
        }
    }

    /// `(C, n, S, S)` -> `(n, S, S, C)`.
    fn to_pixel_major(x: &[f32], channels: usize, n: usize, plane: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for c in 0..channels {
            for b in 0..n {
                for p in 0..plane {
                    out[(b * plane + p) * channels + c] = x[(c * n + b) * plane + p];
                }
            }
        }
        out
    }

    type Kernels = (
        fn(usize, &[f32], &[f32], &[f32], &mut [f32]),
        fn(usize, &[f32], &[f32], &mut [f32], &mut [f32]),
        fn(usize, &[f32], &mut [f32], &[f32], &mut [f32]),
    );

    #[test]
    fn matches_im2col_gemm_forward_and_backward() {
        assert!(supports(&CONV2));
        let d = CONV2;
        // The dispatched kernels (AVX-512 here when the CPU has it), then the portable ones as compiled for the
        // baseline target, which a CPU with AVX2 never picks on its own.
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut kernels: Vec<(&str, Kernels)> = vec![
            ("dispatched", (conv_relu_forward, weight_grad, input_grad)),
            (
                "baseline",
                (forward_body::<false>, weight_grad_body::<false>, |n, grad, rows, packed, gi| {
                    pad_grad_rows(n, grad, rows);
                    input_grad_body::<false>(n, rows, packed, gi)
                }),
            ),
        ];
        // The AVX2 kernels, which a CPU with AVX-512 does not pick on its own.
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            kernels.push((
                "avx2",
                (
                    // SAFETY: the CPU has AVX2 and FMA, and the test's buffers are the kernels' sizes.
                    |n, input, packed, bias, out| unsafe { avx2::forward(n, input, packed, bias, out) },
                    |n, input, grad, gw, gb| unsafe { avx2::weight_grad(n, input, grad, gw, gb) },
                    |n, grad, _, packed, gi| unsafe { avx2::input_grad(n, grad, packed, gi) },
                ),
            ));
        }
        for n in [1, 3, 8] {
            let mut rng = Rng::new(5 + n as u64);
            let input = random(&mut rng, n * d.in_len());
            let weight = random(&mut rng, d.weight_len());
            let bias = random(&mut rng, d.out_channels);
            let mut out_grad = random(&mut rng, n * d.out_len());

            let mut col = vec![0.0; n * d.col_len()];
            let mut want = vec![0.0; n * d.out_len()];
            conv2d_forward(&d, n, &input, &weight, &bias, &mut col, &mut want);
            crate::nn::activation::relu_forward(&mut want);
            // The gradient as the ReLU mask leaves it.
            crate::nn::activation::relu_backward(&want, &mut out_grad);
            let (mut gw_want, mut gb_want) = (vec![0.5; d.weight_len()], vec![0.5; OC]);
            let mut gi_want = vec![0.0; n * d.in_len()];
            let mut col_grad = vec![0.0; n * d.col_len()];
            conv2d_backward(
                &d,
                n,
                &col,
                &weight,
                &out_grad,
                &mut gw_want,
                &mut gb_want,
                Some((&mut gi_want, &mut col_grad)),
            );

            let mut packed = vec![0.0; PACKED_WEIGHT_LEN];
            pack_weight(&weight, &mut packed);
            let grad_px = to_pixel_major(&out_grad, OC, n, OS * OS);

            // The fused pooling backward gives the same two layouts as the pooling backward and the padding.
            let pool = crate::nn::model::POOL2;
            let pooled_grad = random(&mut rng, n * pool.out_len());
            let relu_out = to_pixel_major(&want, OC, n, OS * OS);
            let mut want_px = vec![0.0; n * OUT_LEN];
            crate::nn::pool::avgpool2_pixel_major_relu_backward(&pool, n, &pooled_grad, &relu_out, &mut want_px);
            let mut got_px = relu_out.clone();
            output_grad_from_pooled(n, &pooled_grad, &mut got_px);
            assert_eq!(got_px, want_px);
            for &(name, (forward, weight_grad, input_grad)) in &kernels {
                let mut got = vec![f32::NAN; n * OUT_LEN];
                forward(n, &input, &packed, &bias, &mut got);
                assert_close(&format!("{name} forward n={n}"), &got, &to_pixel_major(&want, OC, n, OS * OS));
                let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; OC]);
                weight_grad(n, &input, &grad_px, &mut gw, &mut gb);
                assert_close(&format!("{name} weight grad n={n}"), &gw, &gw_want);
                assert_close(&format!("{name} bias grad n={n}"), &gb, &gb_want);
                let mut gi = vec![f32::NAN; n * d.in_len()];
                let mut rows = vec![0.0; n * GRAD_ROWS_LEN];
                input_grad(n, &grad_px, &mut rows, &packed, &mut gi);
                assert_close(&format!("{name} input grad n={n}"), &gi, &gi_want);
            }
        }
    }
}
