//! Both kernels with AVX2 intrinsics: a 28-value row is four 8-lane vectors, the last one half used.

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
                        let dst = op.add((b * OC + o0 + c) * S * S + y * S);
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
    // loaded serves two channels and each gradient vector five taps. Lanes are summed at the end. The bias
    // gradient takes a pass of its own: kept beside the ten, its sums left too few registers, and the
    // accumulators went to the stack and back every row.
    const G: usize = 2;
    let gp = out_grad.as_ptr();
    // SAFETY (whole body): as in `forward`; the last vector of a gradient row is a masked load of its 4 values
    // (the other lanes zero, so the image values they meet add nothing).
    unsafe {
        let tail = _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0);
        let load =
            |src: *const f32, q: usize| if q < Q - 1 { _mm256_loadu_ps(src) } else { _mm256_maskload_ps(src, tail) };
        for o0 in (0..OC).step_by(G) {
            for c in 0..G {
                let mut sum = _mm256_setzero_ps();
                for b in 0..n {
                    for y in 0..S {
                        let row = gp.add((b * OC + o0 + c) * S * S + y * S);
                        for q in 0..Q {
                            sum = _mm256_add_ps(sum, load(row.add(8 * q), q));
                        }
                    }
                }
                bias_grad[o0 + c] += sum_lanes(sum);
            }
            for i in 0..K {
                let mut acc = [[_mm256_setzero_ps(); K]; G];
                for (b, &live) in live[..n].iter().enumerate() {
                    let img = padded.as_ptr().add(b * PADDED_LEN);
                    for y in live.outputs(i) {
                        let row = img.add((y + i) * PW);
                        for q in 0..Q {
                            let g: [__m256; G] =
                                std::array::from_fn(|c| load(gp.add((b * OC + o0 + c) * S * S + y * S + 8 * q), q));
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
        }
    }
}
