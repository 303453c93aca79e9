//! The three kernels with AVX-512 intrinsics: one 16-lane vector per pixel's channels (or per input row).

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
                    let plane = ip.add((b * C + c) * PLANE);
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
                let plane = ip.add((b * C + c) * PLANE);
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
                    let dst = dp.add(((b * C + c) * H + y_in) * H);
                    _mm512_mask_storeu_ps(dst, mask, reduce_4x4(&acc));
                }
            }
        }
    }
}
