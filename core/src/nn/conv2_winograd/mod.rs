//! Winograd's minimal filtering for conv2 (6 -> 16 channels, 5x5 kernel, 14x14 -> 10x10), where most of a training
//! step's multiply-adds are: the forward pass as F(2x2, 5x5) and the weight gradient as F(5x5, 2x2). Both split the
//! input into the same 25 overlapping 6x6 patches (one per 2x2 block of the output) and transform each patch the
//! same way, `B^T P B`, so the forward pass's transformed input is kept and the weight gradient reads it again.
//! A 2x2 output block then costs 36 multiply-adds per input channel instead of 100, and a 2x2 block of the output
//! gradient adds into the weight gradient's 5x5 taps with 36 instead of 100; the transforms around them are
//! additions and multiplications by small constants.
//!
//! The interpolation points are 0, 1, -1, 1/2, -2 and infinity: against 0, ±1, ±2 this halves the rounding error
//! (about 1e-6 of the output's scale in the forward pass, 2e-6 in the weight gradient, from rounding alone).
//! The input gradient stays direct ([`super::conv2_direct::input_grad`]): as a transposed convolution it would
//! save too little to pay for its transforms.
//!
//! The AVX-512 kernels vectorise over the 16 output channels (one vector), as conv2's direct kernels do; the
//! plain-Rust functions in `mod reference` follow the formulas one matrix at a time and are what the tests check the
//! fast ones against. Without AVX-512, the direct kernels run instead ([`enabled`]).
//!
//! # Shapes
//! input `(n, 6, 14, 14)` (image by image, as pooling writes it); transformed input `(n 6, 5, 6, 32)`: per plane,
//! tile row `ty` and patch row `xi`, 32 values of which lane `nu * 5 + tx` is `(B^T P B)[xi][nu]` of the patch of
//! tile `(ty, tx)` (lanes 30 and 31 zero); packed weight `(150, 16)` as [`super::conv2_direct::pack_weight`] makes
//! it; transformed weight `(6, 6, 6, 16)`: `[xi][nu][c][o]`; output and output gradient pixel-major `(n, 10, 10, 16)`.

// The transforms index their small matrices by subscript, as the formulas write them.
#![allow(clippy::needless_range_loop)]

use crate::simd::{dispatch, mul_add, select};

const C: usize = 6;
const OC: usize = 16;
const H: usize = 14;
const K: usize = 5;
const OS: usize = H - K + 1;
/// Points per side of a transformed patch.
const A: usize = 6;
/// Tiles per side: each covers a 2x2 block of the output.
const T: usize = OS / 2;
/// Values per (tile row, patch row) of a transformed plane: `A * T = 30`, padded to two vectors.
const LANES: usize = 32;
/// Values of one transformed input plane.
const PLANE_LEN: usize = T * A * LANES;
/// Values of one image's transformed input.
pub const INPUT_LEN: usize = C * PLANE_LEN;
/// Values of the transformed weight.
pub const WEIGHT_LEN: usize = A * A * C * OC;
/// Scratch of the weight gradient: its sums in the transformed domain `(6, 6, 6, 16)`, then one image's output
/// gradient transformed along rows `(25, 2, 6, 16)`.
pub const GRAD_SCRATCH_LEN: usize = WEIGHT_LEN + T * T * 2 * A * OC;

/// The finite interpolation points; the sixth is infinity.
const POINTS: [f32; A - 1] = [0.0, 1.0, -1.0, 0.5, -2.0];

/// `B^T`, the input transform: the transposed inverse of the 6x6 Vandermonde matrix of the points, each row scaled by
/// [`BT_SCALE`] to keep its entries small.
const BT: [[f32; A]; A] = [
    [1.0, -1.5, -2.0, 1.5, 1.0, 0.0],
    [0.0, -2.0, 1.0, 5.0, 2.0, 0.0],
    [0.0, -2.0, 5.0, -1.0, -2.0, 0.0],
    [0.0, 1.0, 0.5, -1.0, -0.5, 0.0],
    [0.0, 1.0, -2.0, -1.0, 2.0, 0.0],
    [0.0, 1.0, -1.5, -2.0, 1.5, 1.0],
];
/// The factor each row of [`BT`] carries, which the kernel's transform divides out again.
const BT_SCALE: [f32; A] = [1.0, 6.0, 6.0, 15.0 / 32.0, 30.0, 1.0];

/// Row `k` of the Vandermonde matrix of the points with `m` columns: `p^0 .. p^(m-1)`, or `e_(m-1)` at infinity.
const fn vandermonde(k: usize, j: usize, m: usize) -> f32 {
    if k == A - 1 {
        return if j == m - 1 { 1.0 } else { 0.0 };
    }
    let mut v = 1.0;
    let mut i = 0;
    while i < j {
        v *= POINTS[k];
        i += 1;
    }
    v
}

/// `(6, 5)`: [`vandermonde`] with five columns, each row divided by the scale of the same row of [`BT`]. As `G`,
/// the kernel's transform in the forward pass; transposed, as `A^T`, the weight gradient's output transform.
const V5_SCALED: [[f32; K]; A] = {
    let mut t = [[0.0; K]; A];
    let mut k = 0;
    while k < A {
        let mut j = 0;
        while j < K {
            t[k][j] = vandermonde(k, j, K) / BT_SCALE[k];
            j += 1;
        }
        k += 1;
    }
    t
};

/// Whether conv2 runs with these kernels on this CPU (AVX-512); otherwise the direct ones run.
pub fn enabled() -> bool {
    select! {
        avx512 => true,
        portable => false,
    }
}

fn check(fits: bool) {
    assert!(fits, "conv2 (Winograd): buffer too small");
}

#[inline(always)]
fn transform_weight_body<const FMA: bool>(packed: &[f32], u: &mut [f32]) {
    check(packed.len() >= C * K * K * OC && u.len() >= WEIGHT_LEN);
    for c in 0..C {
        let w = |i: usize, j: usize| -> &[f32] { &packed[((c * K + i) * K + j) * OC..][..OC] };
        // G W: (6, 5) of 16 channels.
        let mut gw = [[[0.0f32; OC]; K]; A];
        for (xi, row) in gw.iter_mut().enumerate() {
            for (j, acc) in row.iter_mut().enumerate() {
                for i in 0..K {
                    let g = V5_SCALED[xi][i];
                    for (a, v) in acc.iter_mut().zip(w(i, j)) {
                        *a = mul_add::<FMA>(g, *v, *a);
                    }
                }
            }
        }
        for xi in 0..A {
            for nu in 0..A {
                let dst = &mut u[((xi * A + nu) * C + c) * OC..][..OC];
                dst.fill(0.0);
                for (j, gw_j) in gw[xi].iter().enumerate() {
                    let g = V5_SCALED[nu][j];
                    for (d, v) in dst.iter_mut().zip(gw_j) {
                        *d = mul_add::<FMA>(g, *v, *d);
                    }
                }
            }
        }
    }
}

dispatch! {
    /// `packed (150, 16)` -> `u (6, 6, 6, 16)`: `u[xi][nu][c] = (G W_c G^T)[xi][nu]`, 16 output channels at a time.
    pub fn transform_weight(packed: &[f32], u: &mut [f32]) => transform_weight_body
}

/// `input (n, 6, 14, 14)` -> `v (n 6, 5, 6, 32)`: every patch's `B^T P B`.
pub fn transform_input(n: usize, input: &[f32], v: &mut [f32]) {
    check(input.len() >= C * n * H * H && v.len() >= n * INPUT_LEN);
    // The SIMD kernel indexes with pointers: `check` proved both buffers large enough.
    select! {
        avx512 => avx512::transform_input(n, input, v),
        portable => reference::transform_input(n, input, v),
    }
}

/// Convolution then ReLU from the transformed input and weight: `v` from [`transform_input`], `u` from
/// [`transform_weight`] -> `out (n, 10, 10, 16)`.
pub fn conv_relu_forward(n: usize, v: &[f32], u: &[f32], bias: &[f32], out: &mut [f32]) {
    check(v.len() >= n * INPUT_LEN && u.len() >= WEIGHT_LEN && bias.len() >= OC && out.len() >= n * OS * OS * OC);
    // The SIMD kernel indexes with pointers: `check` proved every buffer large enough.
    select! {
        avx512 => avx512::forward(n, v, u, bias, out),
        portable => reference::forward(n, v, u, bias, out),
    }
}

/// Adds the weight and bias gradients of `n` images: `v` the transformed input (from [`transform_input`], as the
/// forward pass left it), `grad (n, 10, 10, 16)` the output gradient after the ReLU mask, `weight_grad (16, 6, 5, 5)`.
/// `scratch` holds [`GRAD_SCRATCH_LEN`] values.
pub fn weight_grad(
    n: usize,
    v: &[f32],
    grad: &[f32],
    scratch: &mut [f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    check(
        v.len() >= n * INPUT_LEN
            && grad.len() >= n * OS * OS * OC
            && scratch.len() >= GRAD_SCRATCH_LEN
            && weight_grad.len() >= OC * C * K * K
            && bias_grad.len() >= OC,
    );
    let (sums, rows) = scratch.split_at_mut(WEIGHT_LEN);
    // The SIMD kernels index with pointers: `check` proved every buffer large enough. (The portable path needs
    // no rows.)
    select! {
        avx512 => {
            avx512::weight_grad_sums(n, v, grad, rows, sums, bias_grad);
            avx512::untransform_weight_grad(sums, weight_grad)
        },
        portable => {
            let _ = rows;
            weight_grad_portable(n, v, grad, sums, weight_grad, bias_grad)
        },
    }
}

/// [`weight_grad`] with the reference transforms, and the bias gradient summed apart.
fn weight_grad_portable(
    n: usize,
    v: &[f32],
    grad: &[f32],
    sums: &mut [f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    let mut bias_sum = [0.0f32; OC];
    for px in grad[..n * OS * OS * OC].chunks_exact(OC) {
        for (s, g) in bias_sum.iter_mut().zip(px) {
            *s += g;
        }
    }
    for (g, s) in bias_grad.iter_mut().zip(bias_sum) {
        *g += s;
    }
    reference::weight_grad_sums(n, v, grad, sums);
    untransform_weight_grad(sums, weight_grad)
}

#[inline(always)]
fn untransform_weight_grad_body<const FMA: bool>(sums: &[f32], weight_grad: &mut [f32]) {
    for c in 0..C {
        let m = |xi: usize, nu: usize| -> &[f32] { &sums[((xi * A + nu) * C + c) * OC..][..OC] };
        // A^T M: (5, 6) of 16 channels.
        let mut am = [[[0.0f32; OC]; A]; K];
        for (i, row) in am.iter_mut().enumerate() {
            for (nu, acc) in row.iter_mut().enumerate() {
                for xi in 0..A {
                    let a = V5_SCALED[xi][i];
                    for (d, v) in acc.iter_mut().zip(m(xi, nu)) {
                        *d = mul_add::<FMA>(a, *v, *d);
                    }
                }
            }
        }
        for i in 0..K {
            for j in 0..K {
                let mut tap = [0.0f32; OC];
                for (nu, am_nu) in am[i].iter().enumerate() {
                    let a = V5_SCALED[nu][j];
                    for (d, v) in tap.iter_mut().zip(am_nu) {
                        *d = mul_add::<FMA>(a, *v, *d);
                    }
                }
                for (o, t) in tap.iter().enumerate() {
                    weight_grad[((o * C + c) * K + i) * K + j] += t;
                }
            }
        }
    }
}

dispatch! {
    /// The weight gradient's sums in the transformed domain `sums (6, 6, 6, 16)` -> added into `weight_grad
    /// (16, 6, 5, 5)`: `A^T M A`, where `A^T` also divides out the scale of the two `B^T`.
    pub(crate) fn untransform_weight_grad(sums: &[f32], weight_grad: &mut [f32]) => untransform_weight_grad_body
}

/// The transforms as matrix products, one value at a time: the reference the AVX-512 kernels are tested against,
/// and the path of a CPU without them (then only in tests: [`enabled`] sends it to the direct kernels).
mod reference;

/// The kernels with AVX-512 intrinsics.
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests;
