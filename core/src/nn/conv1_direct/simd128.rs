//! Both kernels with WebAssembly's SIMD128, with the portable kernels' bits: every output and every tap is the
//! portable code's sum, term by term in the same order (a multiply, then an add). Rows are done in blocks of
//! columns small enough that the accumulators stay in the registers of the machines that run the module.

use core::arch::wasm32::*;

use super::{K, LiveRows, OC, PADDED_LEN, PW, S, W};

/// `ptr[at..at + 4]` as a vector.
///
/// # Safety
/// The four values must be there.
unsafe fn load(ptr: *const f32, at: usize) -> v128 {
    // SAFETY: the caller's promise.
    unsafe { v128_load(ptr.add(at) as *const v128) }
}

/// As [`super::conv_relu_forward`], whose checks the buffers passed.
pub fn forward(n: usize, padded: &[f32], live: &[LiveRows], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    let zero = f32x4_splat(0.0);
    for (b, &live) in live[..n].iter().enumerate() {
        let img = &padded[b * PADDED_LEN..(b + 1) * PADDED_LEN];
        // Two output channels at a time, as the portable code; columns 0..16, then 16..28.
        for o in (0..OC).step_by(2) {
            for y in 0..S {
                for (x0, vectors) in [(0, 4), (16, 3)] {
                    let mut acc = [[f32x4_splat(bias[o]); 4], [f32x4_splat(bias[o + 1]); 4]];
                    for i in live.taps(y) {
                        let row = &img[(y + i) * PW..(y + i + 1) * PW];
                        for j in 0..K {
                            let (a, c) = (
                                f32x4_splat(weight[o * K * K + i * K + j]),
                                f32x4_splat(weight[(o + 1) * K * K + i * K + j]),
                            );
                            let [acc0, acc1] = &mut acc;
                            for (v, (acc0, acc1)) in acc0.iter_mut().zip(acc1).take(vectors).enumerate() {
                                // SAFETY: x0 + j + 4 v + 4 <= 16 + 4 + 12 + 4 = 36 = PW.
                                let src = unsafe { load(row.as_ptr(), x0 + j + 4 * v) };
                                *acc0 = f32x4_add(f32x4_mul(a, src), *acc0);
                                *acc1 = f32x4_add(f32x4_mul(c, src), *acc1);
                            }
                        }
                    }
                    for (q, acc_q) in acc.iter().enumerate() {
                        let dst = &mut out[(b * OC + o + q) * S * S + y * S + x0..][..4 * vectors];
                        for (v, &value) in acc_q.iter().take(vectors).enumerate() {
                            // Rust's `max(v, 0)`: zero for NaN and for either zero.
                            // SAFETY: four of the row's values are there.
                            unsafe { v128_store(dst.as_mut_ptr().add(4 * v) as *mut v128, f32x4_pmax(zero, value)) };
                        }
                    }
                }
            }
        }
    }
}

/// As [`super::conv_backward`] on the portable path: `scratch` receives each channel's gradient rows widened
/// to 32 with zeros, as there.
pub fn backward(
    n: usize,
    padded: &[f32],
    live: &[LiveRows],
    out_grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
    scratch: &mut [f32],
) {
    const HALF: usize = W / 2;
    for o in 0..OC {
        let rows = &mut scratch[..n * S * W];
        let mut bias_sum = 0.0f32;
        for (b, image_rows) in rows.chunks_exact_mut(S * W).enumerate() {
            bias_sum = widen_and_sum_rows(&out_grad[(b * OC + o) * S * S..][..S * S], image_rows, bias_sum);
        }
        bias_grad[o] += bias_sum;
        let rows = &*rows;
        for i in 0..K {
            let mut taps = [0.0f32; K];
            for half in 0..2 {
                // The half-row's 16 lanes per tap, eight at a time, then summed lane by lane as there.
                let mut lanes = [[0.0f32; HALF]; K];
                for quarter in 0..2 {
                    let mut acc = [[f32x4_splat(0.0); 2]; K];
                    for b in 0..n {
                        let img = &padded[b * PADDED_LEN..(b + 1) * PADDED_LEN];
                        for y in live[b].outputs(i) {
                            let x0 = half * HALF + quarter * 8;
                            let gr = &rows[(b * S + y) * W + x0..][..8];
                            let src = &img[(y + i) * PW + x0..][..8 + K - 1];
                            // SAFETY: eight values of the row and twelve of the image row are there.
                            let (g0, g1) = unsafe { (load(gr.as_ptr(), 0), load(gr.as_ptr(), 4)) };
                            for (j, acc_j) in acc.iter_mut().enumerate() {
                                // SAFETY: j + 8 <= 12.
                                let (s0, s1) = unsafe { (load(src.as_ptr(), j), load(src.as_ptr(), j + 4)) };
                                acc_j[0] = f32x4_add(f32x4_mul(g0, s0), acc_j[0]);
                                acc_j[1] = f32x4_add(f32x4_mul(g1, s1), acc_j[1]);
                            }
                        }
                    }
                    for (lanes_j, acc_j) in lanes.iter_mut().zip(&acc) {
                        // SAFETY: eight values are there.
                        unsafe {
                            v128_store(lanes_j.as_mut_ptr().add(quarter * 8) as *mut v128, acc_j[0]);
                            v128_store(lanes_j.as_mut_ptr().add(quarter * 8 + 4) as *mut v128, acc_j[1]);
                        }
                    }
                }
                for (tap, lanes_j) in taps.iter_mut().zip(&lanes) {
                    *tap += lanes_j.iter().sum::<f32>();
                }
            }
            for j in 0..K {
                weight_grad[o * K * K + i * K + j] += taps[j];
            }
        }
    }
}

/// Copies the rows of 28 values of `g` into `rows` widened to 32 with zeros, and returns `total` plus the rows'
/// sums, in order, each row's taken value by value from the left as `iter().sum()` takes it (four rows at a
/// time, one per lane), as the portable code adds them.
fn widen_and_sum_rows(g: &[f32], rows: &mut [f32], mut total: f32) -> f32 {
    let count = g.len() / S;
    let mut sums = [0.0f32; 4];
    let zero = f32x4_splat(0.0);
    for (r, (dst, src)) in rows.chunks_exact_mut(W).zip(g.chunks_exact(S)).enumerate() {
        for v in 0..S / 4 {
            // SAFETY: four of the row's 28 values, and of the widened row's 32.
            unsafe { v128_store(dst.as_mut_ptr().add(4 * v) as *mut v128, load(src.as_ptr(), 4 * v)) };
        }
        // SAFETY: the widened row's last four values.
        unsafe { v128_store(dst.as_mut_ptr().add(S) as *mut v128, zero) };
        if r % 4 == 3 {
            // Rows r - 3..=r: each lane adds its row's values in order, starting from -0.0 as `sum` does.
            let mut acc = f32x4_splat(-0.0);
            let base = (r - 3) * S;
            for x0 in (0..S).step_by(4) {
                // SAFETY: four values of each of the four rows.
                let [a, b, c, d] = [0, 1, 2, 3].map(|k| unsafe { load(g.as_ptr(), base + k * S + x0) });
                // Transpose: column x0 + q of the four rows, then the next column.
                let (ab_lo, ab_hi) = (i32x4_shuffle::<0, 4, 1, 5>(a, b), i32x4_shuffle::<2, 6, 3, 7>(a, b));
                let (cd_lo, cd_hi) = (i32x4_shuffle::<0, 4, 1, 5>(c, d), i32x4_shuffle::<2, 6, 3, 7>(c, d));
                let columns = [
                    i64x2_shuffle::<0, 2>(ab_lo, cd_lo),
                    i64x2_shuffle::<1, 3>(ab_lo, cd_lo),
                    i64x2_shuffle::<0, 2>(ab_hi, cd_hi),
                    i64x2_shuffle::<1, 3>(ab_hi, cd_hi),
                ];
                for column in columns {
                    acc = f32x4_add(acc, column);
                }
            }
            // SAFETY: four sums.
            unsafe { v128_store(sums.as_mut_ptr() as *mut v128, acc) };
            for sum in sums {
                total += sum;
            }
        }
    }
    for r in count - count % 4..count {
        total += g[r * S..(r + 1) * S].iter().sum::<f32>();
    }
    total
}
