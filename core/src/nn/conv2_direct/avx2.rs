//! The three kernels with AVX2 intrinsics: a pixel's 16 channels are two 8-lane vectors, and with 16 registers
//! the blocks are smaller than on AVX-512 (five pixels in forward, one kernel row in the weight gradient, seven
//! columns of an input row in the input gradient).

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
                        let plane = ip.add((b * C + c) * PLANE);
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
                    let plane = ip.add((b * C + c) * PLANE);
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
                    let dst = dp.add(((b * C + c) * H + y_in) * H);
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
