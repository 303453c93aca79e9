//! Both kernels with AVX-512 intrinsics: a 28-value row is two 16-lane vectors, the second one masked.

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
                    let dst = op.add((b * OC + o) * S * S + y * S);
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
                                let src = gp.add((b * OC + o0 + c) * S * S + y * S + 16 * half);
                                *g_c = if half == 0 { _mm512_loadu_ps(src) } else { _mm512_maskz_loadu_ps(TAIL, src) };
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
