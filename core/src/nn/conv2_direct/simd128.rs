//! The three kernels with WebAssembly's SIMD128, with the portable kernels' bits: every output is the portable
//! code's sum, term by term in the same order (a multiply, then an add). Blocks are sized for the registers
//! the browser's compiler gives the code, not the 16 of x86: it keeps one for itself, and it loads all of a
//! block's broadcast values before their first use, so each of those takes a register too. Accumulators that do
//! not fit are kept in memory, a store and a load on every step of their sum (in headless Chromium the page
//! trained 12 - 20% faster once conv2's backward blocks fitted). Values broadcast to every lane are loaded that way
//! (`v128.load32_splat`) rather than loaded, then spread. The buffers passed the checks of the kernels' entry
//! points, so the loops index with pointers.

use core::arch::wasm32::*;

use super::{C, H, K, OC, OS, PLANE};

/// Pixels per block of the forward pass.
const XB: usize = 5;

/// `p[at..at + 4]`.
///
/// # Safety
/// The four values must be there.
#[inline(always)]
unsafe fn load(p: *const f32, at: usize) -> v128 {
    // SAFETY: the caller's promise.
    unsafe { v128_load(p.add(at) as *const v128) }
}

/// `p[at]` in every lane.
///
/// # Safety
/// The value must be there.
#[inline(always)]
unsafe fn splat(p: *const f32, at: usize) -> v128 {
    // SAFETY: the caller's promise.
    unsafe { v128_load32_splat(p.add(at) as *const u32) }
}

/// `acc + a * b`, rounded twice, as the portable code.
#[inline(always)]
fn mul_add(a: v128, b: v128, acc: v128) -> v128 {
    f32x4_add(f32x4_mul(a, b), acc)
}

/// As [`super::conv_relu_forward`]: five pixels of a row at a time, eight output channels at a time.
pub fn forward(n: usize, input: &[f32], packed: &[f32], bias: &[f32], out: &mut [f32]) {
    let zero = f32x4_splat(0.0);
    let (input, packed, out) = (input.as_ptr(), packed.as_ptr(), out.as_mut_ptr());
    // SAFETY (whole body): `check` proved `input` holds 6 planes of n images, `packed` 150 x 16 weights, the
    // bias 16 values and `out` n images of 10 x 10 x 16; every offset below is inside those.
    unsafe {
        for b in 0..n {
            for y in 0..OS {
                for half in 0..2 {
                    let channels = half * OC / 2;
                    let bias = [load(bias.as_ptr(), channels), load(bias.as_ptr(), channels + 4)];
                    for x0 in (0..OS).step_by(XB) {
                        let mut acc = [bias; XB];
                        for c in 0..C {
                            let plane = input.add((b * C + c) * PLANE);
                            for i in 0..K {
                                let row = plane.add((y + i) * H + x0);
                                for j in 0..K {
                                    let w = packed.add(((c * K + i) * K + j) * OC + channels);
                                    let (w0, w1) = (load(w, 0), load(w, 4));
                                    for (x, acc_x) in acc.iter_mut().enumerate() {
                                        let v = splat(row, x + j);
                                        acc_x[0] = mul_add(v, w0, acc_x[0]);
                                        acc_x[1] = mul_add(v, w1, acc_x[1]);
                                    }
                                }
                            }
                        }
                        for (x, acc_x) in acc.iter().enumerate() {
                            // Rust's `max(v, 0)`: zero for NaN and for either zero.
                            let dst = out.add(((b * OS + y) * OS + x0 + x) * OC + channels) as *mut v128;
                            v128_store(dst, f32x4_pmax(zero, acc_x[0]));
                            v128_store(dst.add(1), f32x4_pmax(zero, acc_x[1]));
                        }
                    }
                }
            }
        }
    }
}

/// As [`super::weight_grad`]: the bias gradient summed pixel by pixel, then, per input channel and kernel row,
/// the five taps' sums over every output pixel, four output channels (one vector) at a time (eight need more
/// registers than the browser gives: see the module's note).
pub fn weight_grad(n: usize, input: &[f32], grad: &[f32], weight_grad: &mut [f32], bias_grad: &mut [f32]) {
    let (input, grad) = (input.as_ptr(), grad.as_ptr());
    let mut sums = [[0.0f32; 4]; K];
    // SAFETY (whole body): `check` proved `input` holds 6 planes of n images and `grad` n images of
    // 10 x 10 x 16; every offset below is inside those.
    unsafe {
        let mut bias = [f32x4_splat(0.0); 4];
        for px in 0..n * OS * OS {
            for (q, sum) in bias.iter_mut().enumerate() {
                *sum = f32x4_add(*sum, load(grad, px * OC + 4 * q));
            }
        }
        for (q, sum) in bias.iter().enumerate() {
            let mut lanes = [0.0f32; 4];
            v128_store(lanes.as_mut_ptr() as *mut v128, *sum);
            for (l, v) in lanes.iter().enumerate() {
                bias_grad[4 * q + l] += v;
            }
        }
        for c in 0..C {
            for i in 0..K {
                for quarter in 0..4 {
                    let channels = 4 * quarter;
                    let mut acc = [f32x4_splat(0.0); K];
                    for b in 0..n {
                        let plane = input.add((b * C + c) * PLANE);
                        for y in 0..OS {
                            let row = plane.add((y + i) * H);
                            let g = grad.add((b * OS + y) * OS * OC + channels);
                            for x in 0..OS {
                                let gx = load(g, x * OC);
                                for (j, acc_j) in acc.iter_mut().enumerate() {
                                    *acc_j = mul_add(splat(row, x + j), gx, *acc_j);
                                }
                            }
                        }
                    }
                    for (sums_j, acc_j) in sums.iter_mut().zip(&acc) {
                        v128_store(sums_j.as_mut_ptr() as *mut v128, *acc_j);
                    }
                    for (j, sums_j) in sums.iter().enumerate() {
                        for (o, v) in sums_j.iter().enumerate() {
                            weight_grad[(channels + o) * C * K * K + (c * K + i) * K + j] += v;
                        }
                    }
                }
            }
        }
    }
}

/// As [`super::input_grad`] on the portable path: from the gradient as padded rows `(n, 16, 10, 20)` (see
/// [`super::pad_grad_rows`]), each input row of three channels at a time as lanes over its columns, eight at a
/// time (six channels' accumulators would not stay in registers: see the module's note).
pub fn input_grad(n: usize, rows: &[f32], packed: &[f32], input_grad: &mut [f32]) {
    const ROW: usize = super::ROW;
    input_grad[..C * n * PLANE].fill(0.0);
    let (rows, packed) = (rows.as_ptr(), packed.as_ptr());
    let mut sums = [[0.0f32; 8]; C / 2];
    // SAFETY (whole body): `check` proved `rows` holds n images of 16 x 10 padded rows of 20, `packed` 150 x 16
    // weights; a read of eight values at ROW_PAD - j + 8 stays inside a row of 20.
    unsafe {
        for b in 0..n {
            for y in 0..OS {
                for i in 0..K {
                    // Columns 0..8, then 8..16 (of which 14 exist).
                    for (half, first) in (0..2).flat_map(|half| [(half, 0), (half, C / 2)]) {
                        let mut acc = [[f32x4_splat(0.0); 2]; C / 2];
                        for o in 0..OC {
                            let row = rows.add(((b * OC + o) * OS + y) * ROW + 8 * half);
                            // A vector that reads only the row's zero padding (columns 0..4 with j = 4; columns 12..16
                            // with j < 3) would add w * 0 to every lane, which changes no finite sum (a sum that
                            // starts at +0 never becomes -0), so it is left out.
                            let w = packed.add((first * K + i) * K * OC + o);
                            if half == 0 {
                                for j in 0..K - 1 {
                                    taps::<true, true>(&mut acc, row, j, w);
                                }
                                taps::<false, true>(&mut acc, row, K - 1, w);
                            } else {
                                for j in 0..3 {
                                    taps::<true, false>(&mut acc, row, j, w);
                                }
                                for j in 3..K {
                                    taps::<true, true>(&mut acc, row, j, w);
                                }
                            }
                        }
                        for (sums_c, acc_c) in sums.iter_mut().zip(&acc) {
                            v128_store(sums_c.as_mut_ptr() as *mut v128, acc_c[0]);
                            v128_store(sums_c.as_mut_ptr().add(4) as *mut v128, acc_c[1]);
                        }
                        for (c, sums_c) in sums.iter().enumerate().map(|(c, s)| (first + c, s)) {
                            let dst = &mut input_grad[((b * C + c) * H + y + i) * H..][..H];
                            for (x, v) in dst.iter_mut().enumerate().skip(8 * half).take(8) {
                                *v += sums_c[x - 8 * half];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// As [`super::pad_grad_rows`]: four pixels' sixteen channels at a time, turned into the channels' rows by 4x4
/// transposes; the last two pixels of a row one value at a time.
pub fn pad_grad_rows(n: usize, grad: &[f32], rows: &mut [f32]) {
    const ROW: usize = super::ROW;
    const ROW_PAD: usize = super::ROW_PAD;
    let (g, r) = (grad.as_ptr(), rows.as_mut_ptr());
    for b in 0..n {
        for y in 0..OS {
            let pixel = |x: usize| (b * OS + y) * OS + x;
            let row = |o: usize| ((b * OC + o) * OS + y) * ROW + ROW_PAD;
            for x0 in [0, 4] {
                for q in 0..OC / 4 {
                    // SAFETY: `check` proved `grad` holds n images of 10 x 10 x 16 and `rows` n images of 16 x 10
                    // rows of 20; x0 + 4 <= 8 stays inside a row after its padding.
                    unsafe {
                        let [a, bb, c, d] = [0, 1, 2, 3].map(|k| load(g, pixel(x0 + k) * OC + 4 * q));
                        let (ab_lo, ab_hi) = (i32x4_shuffle::<0, 4, 1, 5>(a, bb), i32x4_shuffle::<2, 6, 3, 7>(a, bb));
                        let (cd_lo, cd_hi) = (i32x4_shuffle::<0, 4, 1, 5>(c, d), i32x4_shuffle::<2, 6, 3, 7>(c, d));
                        let channels = [
                            i64x2_shuffle::<0, 2>(ab_lo, cd_lo),
                            i64x2_shuffle::<1, 3>(ab_lo, cd_lo),
                            i64x2_shuffle::<0, 2>(ab_hi, cd_hi),
                            i64x2_shuffle::<1, 3>(ab_hi, cd_hi),
                        ];
                        for (m, channel) in channels.into_iter().enumerate() {
                            v128_store(r.add(row(4 * q + m) + x0) as *mut v128, channel);
                        }
                    }
                }
            }
            for x in 8..OS {
                for o in 0..OC {
                    rows[row(o) + x] = grad[pixel(x) * OC + o];
                }
            }
        }
    }
}

/// One tap `j` of one output channel for three input channels (`w` at the first one's weight) in
/// [`input_grad`]: the gradient row shifted by `j` (its first and second vector, where `FIRST` and `SECOND`)
/// times each channel's weight, into `acc`.
///
/// # Safety
/// `row` must be a padded gradient row (from its eighth value on, for the second half of the columns), `w` the
/// packed weight at the kernel row and output channel.
#[inline(always)]
unsafe fn taps<const FIRST: bool, const SECOND: bool>(
    acc: &mut [[v128; 2]; C / 2],
    row: *const f32,
    j: usize,
    w: *const f32,
) {
    const ROW_PAD: usize = super::ROW_PAD;
    // SAFETY: the caller's promise.
    unsafe {
        let (s0, s1) = (load(row, ROW_PAD - j), load(row, ROW_PAD - j + 4));
        for (c, acc_c) in acc.iter_mut().enumerate() {
            let wc = splat(w, c * K * K * OC + j * OC);
            if FIRST {
                acc_c[0] = mul_add(wc, s0, acc_c[0]);
            }
            if SECOND {
                acc_c[1] = mul_add(wc, s1, acc_c[1]);
            }
        }
    }
}
