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
//! input `(6, n, 14, 14)` (channel-major, as pooling writes it); transformed input `(6 n, 5, 6, 32)`: per plane,
//! tile row `ty` and patch row `xi`, 32 values of which lane `nu * 5 + tx` is `(B^T P B)[xi][nu]` of the patch of
//! tile `(ty, tx)` (lanes 30 and 31 zero); packed weight `(150, 16)` as [`super::conv2_direct::pack_weight`] makes
//! it; transformed weight `(6, 6, 6, 16)`: `[xi][nu][c][o]`; output and output gradient pixel-major `(n, 10, 10, 16)`.

// The transforms index their small matrices by subscript, as the formulas write them.
#![allow(clippy::needless_range_loop)]

use crate::simd::{dispatch, mul_add};

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
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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

/// `input (6, n, 14, 14)` -> `v (6 n, 5, 6, 32)`: every patch's `B^T P B`.
pub fn transform_input(n: usize, input: &[f32], v: &mut [f32]) {
    check(input.len() >= C * n * H * H && v.len() >= n * INPUT_LEN);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and `check` proved both buffers large enough.
        return unsafe { avx512::transform_input(n, input, v) };
    }
    reference::transform_input(n, input, v)
}

/// Convolution then ReLU from the transformed input and weight: `v` from [`transform_input`], `u` from
/// [`transform_weight`] -> `out (n, 10, 10, 16)`.
pub fn conv_relu_forward(n: usize, v: &[f32], u: &[f32], bias: &[f32], out: &mut [f32]) {
    check(v.len() >= n * INPUT_LEN && u.len() >= WEIGHT_LEN && bias.len() >= OC && out.len() >= n * OS * OS * OC);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and `check` proved every buffer large enough.
        return unsafe { avx512::forward(n, v, u, bias, out) };
    }
    reference::forward(n, v, u, bias, out)
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
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and `check` proved every buffer large enough.
        return unsafe {
            avx512::weight_grad_sums(n, v, grad, rows, sums, bias_grad);
            avx512::untransform_weight_grad(sums, weight_grad)
        };
    }
    let _ = rows;
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
mod reference {
    use super::*;

    pub fn transform_input(n: usize, input: &[f32], v: &mut [f32]) {
        for p in 0..C * n {
            let plane = &input[p * H * H..(p + 1) * H * H];
            let dst = &mut v[p * PLANE_LEN..(p + 1) * PLANE_LEN];
            dst.fill(0.0);
            for ty in 0..T {
                for tx in 0..T {
                    for xi in 0..A {
                        for nu in 0..A {
                            let mut s = 0.0;
                            for k in 0..A {
                                for l in 0..A {
                                    s += BT[xi][k] * plane[(2 * ty + k) * H + 2 * tx + l] * BT[nu][l];
                                }
                            }
                            dst[(ty * A + xi) * LANES + nu * T + tx] = s;
                        }
                    }
                }
            }
        }
    }

    /// `(B^T P B)[xi][nu]` of tile `(ty, tx)` of plane `p`.
    pub fn at(v: &[f32], p: usize, ty: usize, tx: usize, xi: usize, nu: usize) -> f32 {
        v[p * PLANE_LEN + (ty * A + xi) * LANES + nu * T + tx]
    }

    pub fn forward(n: usize, v: &[f32], u: &[f32], bias: &[f32], out: &mut [f32]) {
        for b in 0..n {
            for ty in 0..T {
                for tx in 0..T {
                    for o in 0..OC {
                        let mut m = [[0.0f32; A]; A];
                        for (xi, m_xi) in m.iter_mut().enumerate() {
                            for (nu, m_xn) in m_xi.iter_mut().enumerate() {
                                for c in 0..C {
                                    *m_xn += u[((xi * A + nu) * C + c) * OC + o] * at(v, c * n + b, ty, tx, xi, nu);
                                }
                            }
                        }
                        for i in 0..2 {
                            for j in 0..2 {
                                let mut y = bias[o];
                                for xi in 0..A {
                                    for nu in 0..A {
                                        y += vandermonde(xi, i, 2) * m[xi][nu] * vandermonde(nu, j, 2);
                                    }
                                }
                                out[((b * OS + 2 * ty + i) * OS + 2 * tx + j) * OC + o] = y.max(0.0);
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn weight_grad_sums(n: usize, v: &[f32], grad: &[f32], sums: &mut [f32]) {
        sums[..WEIGHT_LEN].fill(0.0);
        for b in 0..n {
            for ty in 0..T {
                for tx in 0..T {
                    for o in 0..OC {
                        let g = |a: usize, e: usize| grad[((b * OS + 2 * ty + a) * OS + 2 * tx + e) * OC + o];
                        for xi in 0..A {
                            for nu in 0..A {
                                let mut d = 0.0;
                                for a in 0..2 {
                                    for e in 0..2 {
                                        d += vandermonde(xi, a, 2) * g(a, e) * vandermonde(nu, e, 2);
                                    }
                                }
                                for c in 0..C {
                                    sums[((xi * A + nu) * C + c) * OC + o] += d * at(v, c * n + b, ty, tx, xi, nu);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The kernels with AVX-512 intrinsics.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{A, BT, C, H, K, LANES, OC, OS, PLANE_LEN, POINTS, T, V5_SCALED, WEIGHT_LEN};

    /// A vector's worth of values per half of a patch row and term of the row pass.
    type PerTerm<V> = [[[V; 16]; A]; 2];

    /// The row pass of the input transform, for lane `l` of the 32 per patch row (`nu = l / 5`, `tx = l % 5`) in
    /// half `h` (lanes `16 h..16 h + 16`) and term `k`: which value of the image row it reads, `2 tx + k`
    /// (`ROW_INDEX[h][k]`), and its coefficient, `B^T[nu][k]` (`ROW_COEF[h][k]`, zero in the padding lanes).
    const ROW_TERMS: (PerTerm<i32>, PerTerm<f32>) = {
        let (mut index, mut coef) = ([[[0; 16]; A]; 2], [[[0.0; 16]; A]; 2]);
        let mut lane = 0;
        while lane < A * T {
            let (h, l) = (lane / 16, lane % 16);
            let mut k = 0;
            while k < A {
                index[h][k][l] = (2 * (lane % T) + k) as i32;
                coef[h][k][l] = BT[lane / T][k];
                k += 1;
            }
            lane += 1;
        }
        (index, coef)
    };
    const ROW_INDEX: PerTerm<i32> = ROW_TERMS.0;
    const ROW_COEF: PerTerm<f32> = ROW_TERMS.1;

    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        // SAFETY: register operation only.
        unsafe { _mm512_set1_ps(x) }
    }

    /// `B^T d` for six vectors, with the rows of [`BT`] written out and their common terms shared.
    #[inline(always)]
    unsafe fn bt_times(d: [__m512; A]) -> [__m512; A] {
        // SAFETY: register operations only.
        unsafe {
            let a = _mm512_sub_ps(d[1], d[3]);
            let b = _mm512_sub_ps(d[2], d[4]);
            [
                _mm512_fmadd_ps(splat(-1.5), a, _mm512_fmadd_ps(splat(-2.0), d[2], _mm512_add_ps(d[0], d[4]))),
                _mm512_fmadd_ps(splat(2.0), _mm512_sub_ps(d[4], d[1]), _mm512_fmadd_ps(splat(5.0), d[3], d[2])),
                _mm512_fmadd_ps(splat(-2.0), _mm512_add_ps(d[1], d[4]), _mm512_fmsub_ps(splat(5.0), d[2], d[3])),
                _mm512_fmadd_ps(splat(0.5), b, a),
                _mm512_fmadd_ps(splat(-2.0), b, a),
                _mm512_fmadd_ps(splat(-1.5), b, _mm512_fmadd_ps(splat(-2.0), d[3], _mm512_add_ps(d[1], d[5]))),
            ]
        }
    }

    /// Each plane's rows in turn: one image row (14 values) becomes the 30 values `(B^T P)` along the row for all five
    /// tiles, in lanes `nu * 5 + tx` of two vectors, by permuting the row five times per vector; then the columns
    /// pass combines six of those rows per tile row.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn transform_input(n: usize, input: &[f32], v: &mut [f32]) {
        let (ip, vp) = (input.as_ptr(), v.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved; the row loads are masked to 14.
        unsafe {
            let mut index = [[_mm512_setzero_si512(); A]; 2];
            let mut coef = [[_mm512_setzero_ps(); A]; 2];
            for h in 0..2 {
                for k in 0..A {
                    index[h][k] = _mm512_loadu_si512(ROW_INDEX[h][k].as_ptr().cast());
                    coef[h][k] = _mm512_loadu_ps(ROW_COEF[h][k].as_ptr());
                }
            }
            for p in 0..C * n {
                let plane = ip.add(p * H * H);
                let dst = vp.add(p * PLANE_LEN);
                let mut rows = [[_mm512_setzero_ps(); 2]; H];
                for (y, row) in rows.iter_mut().enumerate() {
                    let r = _mm512_maskz_loadu_ps((1 << H) - 1, plane.add(y * H));
                    // B^T[nu][0] is zero for nu >= 3 and B^T[nu][5] for nu < 5: five terms per half.
                    for (h, ks) in [(0, 0..A - 1), (1, 1..A)] {
                        let mut acc = _mm512_setzero_ps();
                        for k in ks {
                            acc = _mm512_fmadd_ps(coef[h][k], _mm512_permutexvar_ps(index[h][k], r), acc);
                        }
                        row[h] = acc;
                    }
                }
                for ty in 0..T {
                    for h in 0..2 {
                        let d = std::array::from_fn(|k| rows[2 * ty + k][h]);
                        for (xi, out) in bt_times(d).iter().enumerate() {
                            _mm512_storeu_ps(dst.add((ty * A + xi) * LANES + 16 * h), *out);
                        }
                    }
                }
            }
        }
    }

    /// `TILES` neighbouring tiles of one tile row of one image: per patch row `xi`, the 6 products `M[xi][nu]` of
    /// each tile (6 multiply-adds each, one per input channel), folded at once into the tile's 2x2 outputs through
    /// `A^T`, whose rows are `1, 1, 1, 1, 1, 0` and `0, 1, -1, 1/2, -2, 1`.
    ///
    /// # Safety
    /// AVX-512F; `planes[c]` the transformed plane of channel `c` of the image, `u` the transformed weight, `dst`
    /// the image's output, `ty < 5`, `tx0 + TILES <= 5`.
    #[inline(always)]
    unsafe fn forward_tiles<const TILES: usize>(
        planes: &[*const f32; C],
        u: *const f32,
        bias: __m512,
        ty: usize,
        tx0: usize,
        dst: *mut f32,
    ) {
        // SAFETY (whole body): offsets stay inside the planes, the weight and the image's output.
        unsafe {
            let zero = _mm512_setzero_ps();
            // y[t][2 i + j]: output (2 ty + i, 2 (tx0 + t) + j).
            let mut y = [[zero; 4]; TILES];
            for xi in 0..A {
                let mut m = [[zero; A]; TILES];
                for (c, plane) in planes.iter().enumerate() {
                    let src = plane.add((ty * A + xi) * LANES + tx0);
                    for nu in 0..A {
                        let w = _mm512_loadu_ps(u.add(((xi * A + nu) * C + c) * OC));
                        for (t, m_t) in m.iter_mut().enumerate() {
                            m_t[nu] = _mm512_fmadd_ps(_mm512_set1_ps(*src.add(nu * T + t)), w, m_t[nu]);
                        }
                    }
                }
                for (m_t, y_t) in m.iter().zip(y.iter_mut()) {
                    let s0 = _mm512_add_ps(_mm512_add_ps(m_t[0], m_t[1]), _mm512_add_ps(m_t[2], m_t[3]));
                    let t0 = _mm512_add_ps(s0, m_t[4]);
                    let s1 = _mm512_fmadd_ps(splat(0.5), m_t[3], _mm512_sub_ps(m_t[1], m_t[2]));
                    let t1 = _mm512_add_ps(_mm512_fmadd_ps(splat(-2.0), m_t[4], s1), m_t[5]);
                    if xi < A - 1 {
                        y_t[0] = _mm512_add_ps(y_t[0], t0);
                        y_t[1] = _mm512_add_ps(y_t[1], t1);
                    }
                    // A^T[1][xi]: the point, or 1 at infinity.
                    let a = if xi < A - 1 { POINTS[xi] } else { 1.0 };
                    if a != 0.0 {
                        y_t[2] = _mm512_fmadd_ps(splat(a), t0, y_t[2]);
                        y_t[3] = _mm512_fmadd_ps(splat(a), t1, y_t[3]);
                    }
                }
            }
            for (t, y_t) in y.iter().enumerate() {
                for (q, y_q) in y_t.iter().enumerate() {
                    let (i, j) = (q / 2, q % 2);
                    let px = (2 * ty + i) * OS + 2 * (tx0 + t) + j;
                    _mm512_storeu_ps(dst.add(px * OC), _mm512_max_ps(_mm512_add_ps(*y_q, bias), zero));
                }
            }
        }
    }

    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn forward(n: usize, v: &[f32], u: &[f32], bias: &[f32], out: &mut [f32]) {
        let (vp, up, op) = (v.as_ptr(), u.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved.
        unsafe {
            let bias = _mm512_loadu_ps(bias.as_ptr());
            for b in 0..n {
                let planes: [*const f32; C] = std::array::from_fn(|c| vp.add((c * n + b) * PLANE_LEN));
                let dst = op.add(b * OS * OS * OC);
                for ty in 0..T {
                    forward_tiles::<3>(&planes, up, bias, ty, 0, dst);
                    forward_tiles::<2>(&planes, up, bias, ty, 3, dst);
                }
            }
        }
    }

    /// The weight gradient's sums in the transformed domain, `sums[xi][nu][c] = Σ D[xi][nu] (B^T P_c B)[xi][nu]` over
    /// every tile of every image, where `D = V G V^T` of the tile's 2x2 output gradient `G` (`V` the Vandermonde
    /// matrix of the points with two columns: rows `1, p` and `0, 1` at infinity). Per image, `rows` first holds
    /// `G V^T` of every tile; then per `(xi, nu)` pair of pairs, 12 sums stay in registers over the 25 tiles.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn weight_grad_sums(
        n: usize,
        v: &[f32],
        grad: &[f32],
        rows: &mut [f32],
        sums: &mut [f32],
        bias_grad: &mut [f32],
    ) {
        sums[..WEIGHT_LEN].fill(0.0);
        let (vp, gp, rp, sp) = (v.as_ptr(), grad.as_ptr(), rows.as_mut_ptr(), sums.as_mut_ptr());
        // SAFETY (whole body): every offset is below the lengths `check` proved.
        unsafe {
            // The bias gradient, from the pairs of pixels `h[1]` below adds up anyway.
            let mut bias_sum = _mm512_setzero_ps();
            for b in 0..n {
                let g_img = gp.add(b * OS * OS * OC);
                // rows[(tile * 2 + a) * 6 + nu]: Σ_e G[a][e] V[nu][e] for the tile's gradient row a.
                for tile in 0..T * T {
                    let (ty, tx) = (tile / T, tile % T);
                    for a in 0..2 {
                        let px = g_img.add(((2 * ty + a) * OS + 2 * tx) * OC);
                        let (g0, g1) = (_mm512_loadu_ps(px), _mm512_loadu_ps(px.add(OC)));
                        let h = [
                            g0,
                            _mm512_add_ps(g0, g1),
                            _mm512_sub_ps(g0, g1),
                            _mm512_fmadd_ps(splat(POINTS[3]), g1, g0),
                            _mm512_fmadd_ps(splat(POINTS[4]), g1, g0),
                            g1,
                        ];
                        bias_sum = _mm512_add_ps(bias_sum, h[1]);
                        for (nu, h_nu) in h.iter().enumerate() {
                            _mm512_storeu_ps(rp.add(((tile * 2 + a) * A + nu) * OC), *h_nu);
                        }
                    }
                }
                let planes: [*const f32; C] = std::array::from_fn(|c| vp.add((c * n + b) * PLANE_LEN));
                for xi in 0..A {
                    const NU: usize = 3;
                    for nu0 in (0..A).step_by(NU) {
                        let mut acc = [[_mm512_setzero_ps(); C]; NU];
                        for (j, acc_j) in acc.iter_mut().enumerate() {
                            for (c, a) in acc_j.iter_mut().enumerate() {
                                *a = _mm512_loadu_ps(sp.add(((xi * A + nu0 + j) * C + c) * OC));
                            }
                        }
                        for tile in 0..T * T {
                            let (ty, tx) = (tile / T, tile % T);
                            for (j, acc_j) in acc.iter_mut().enumerate() {
                                let nu = nu0 + j;
                                let h0 = _mm512_loadu_ps(rp.add(((tile * 2) * A + nu) * OC));
                                let h1 = _mm512_loadu_ps(rp.add(((tile * 2 + 1) * A + nu) * OC));
                                // D[xi][nu] = V[xi][0] h0 + V[xi][1] h1.
                                let d = match xi {
                                    0 => h0,
                                    1 => _mm512_add_ps(h0, h1),
                                    2 => _mm512_sub_ps(h0, h1),
                                    5 => h1,
                                    _ => _mm512_fmadd_ps(splat(POINTS[xi]), h1, h0),
                                };
                                let off = (ty * A + xi) * LANES + nu * T + tx;
                                for (c, a) in acc_j.iter_mut().enumerate() {
                                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*planes[c].add(off)), d, *a);
                                }
                            }
                        }
                        for (j, acc_j) in acc.iter().enumerate() {
                            for (c, a) in acc_j.iter().enumerate() {
                                _mm512_storeu_ps(sp.add(((xi * A + nu0 + j) * C + c) * OC), *a);
                            }
                        }
                    }
                }
            }
            let mut lanes = [0.0f32; OC];
            _mm512_storeu_ps(lanes.as_mut_ptr(), bias_sum);
            for (g, s) in bias_grad.iter_mut().zip(lanes) {
                *g += s;
            }
        }
    }

    /// As `untransform_weight_grad_body`, with the zero coefficients of `A^T` skipped.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the buffers must have passed `check`.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn untransform_weight_grad(sums: &[f32], weight_grad: &mut [f32]) {
        let sp = sums.as_ptr();
        // SAFETY (whole body): every offset is below the lengths `check` proved.
        unsafe {
            for c in 0..C {
                // A^T M: (5, 6) of 16 channels.
                let mut am = [[_mm512_setzero_ps(); A]; K];
                for xi in 0..A {
                    for nu in 0..A {
                        let m = _mm512_loadu_ps(sp.add(((xi * A + nu) * C + c) * OC));
                        for (i, am_i) in am.iter_mut().enumerate() {
                            if V5_SCALED[xi][i] != 0.0 {
                                am_i[nu] = _mm512_fmadd_ps(splat(V5_SCALED[xi][i]), m, am_i[nu]);
                            }
                        }
                    }
                }
                let mut taps = [[0.0f32; OC]; K * K];
                for (i, am_i) in am.iter().enumerate() {
                    for j in 0..K {
                        let mut tap = _mm512_setzero_ps();
                        for (nu, am_in) in am_i.iter().enumerate() {
                            if V5_SCALED[nu][j] != 0.0 {
                                tap = _mm512_fmadd_ps(splat(V5_SCALED[nu][j]), *am_in, tap);
                            }
                        }
                        _mm512_storeu_ps(taps[i * K + j].as_mut_ptr(), tap);
                    }
                }
                for o in 0..OC {
                    let dst = &mut weight_grad[(o * C + c) * K * K..][..K * K];
                    for (d, tap) in dst.iter_mut().zip(&taps) {
                        *d += tap[o];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv2_direct;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize, lo: f32) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(lo, 1.0)).collect()
    }

    /// Within `tol` of the reference, relative to the reference's largest value.
    fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{what}");
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in got.iter().zip(want).enumerate() {
            assert!((x - y).abs() <= tol * scale, "{what}[{i}]: {x} vs {y} (scale {scale})");
        }
    }

    #[test]
    fn transforms_reproduce_the_direct_convolution() {
        for n in [1, 3, 8] {
            let mut rng = Rng::new(40 + n as u64);
            // Inputs as pooling of a ReLU leaves them (non-negative), weights and gradients of either sign.
            let input = random(&mut rng, C * n * H * H, 0.0);
            let weight = random(&mut rng, OC * C * K * K, -1.0);
            let bias = random(&mut rng, OC, -1.0);
            let mut packed = vec![0.0; conv2_direct::PACKED_WEIGHT_LEN];
            conv2_direct::pack_weight(&weight, &mut packed);
            let mut u = vec![0.0; WEIGHT_LEN];
            transform_weight(&packed, &mut u);

            let mut v_ref = vec![f32::NAN; n * INPUT_LEN];
            reference::transform_input(n, &input, &mut v_ref);
            let mut v = vec![f32::NAN; n * INPUT_LEN];
            transform_input(n, &input, &mut v);
            assert_close(&format!("transformed input n={n}"), &v, &v_ref, 1e-6);

            let mut want = vec![0.0; n * conv2_direct::OUT_LEN];
            conv2_direct::conv_relu_forward(n, &input, &packed, &bias, &mut want);
            let mut got_ref = vec![f32::NAN; n * conv2_direct::OUT_LEN];
            reference::forward(n, &v_ref, &u, &bias, &mut got_ref);
            assert_close(&format!("reference forward n={n}"), &got_ref, &want, 4e-6);
            let mut got = vec![f32::NAN; n * conv2_direct::OUT_LEN];
            conv_relu_forward(n, &v, &u, &bias, &mut got);
            assert_close(&format!("forward n={n}"), &got, &want, 4e-6);

            // The gradient as the ReLU mask leaves it.
            let mut grad = random(&mut rng, n * conv2_direct::OUT_LEN, -1.0);
            for (g, o) in grad.iter_mut().zip(&want) {
                if *o <= 0.0 {
                    *g = 0.0;
                }
            }
            let (mut gw_want, mut gb_want) = (vec![0.5; OC * C * K * K], vec![0.5; OC]);
            conv2_direct::weight_grad(n, &input, &grad, &mut gw_want, &mut gb_want);
            let mut scratch = vec![f32::NAN; GRAD_SCRATCH_LEN];
            let (mut gw, mut gb) = (vec![0.5; OC * C * K * K], vec![0.5; OC]);
            weight_grad(n, &v, &grad, &mut scratch, &mut gw, &mut gb);
            assert_close(&format!("weight grad n={n}"), &gw, &gw_want, 4e-6);
            assert_close(&format!("bias grad n={n}"), &gb, &gb_want, 1e-6);
            let mut sums = vec![f32::NAN; WEIGHT_LEN];
            reference::weight_grad_sums(n, &v_ref, &grad, &mut sums);
            let mut gw_ref = vec![0.5; OC * C * K * K];
            untransform_weight_grad(&sums, &mut gw_ref);
            assert_close(&format!("reference weight grad n={n}"), &gw_ref, &gw_want, 4e-6);
        }
    }
}
