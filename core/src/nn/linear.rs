//! Fully connected layer (`nn.Linear`): `out = in @ weight^T + bias`.
//!
//! # Shapes
//! input `(N, I)`, weight `(O, I)` (PyTorch's layout), bias `(O)`, output `(N, O)`.

use super::gemm::{MatRef, sgemm};
use crate::optim::Sgd;

/// The static description of a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDims {
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearDims {
    pub const fn weight_len(&self) -> usize {
        self.in_features * self.out_features
    }
    pub const fn forward_flops(&self) -> usize {
        2 * self.weight_len()
    }
}

/// `input (n, I)` -> `out (n, O)`.
pub fn linear_forward(d: &LinearDims, n: usize, input: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    for row in out[..n * d.out_features].chunks_exact_mut(d.out_features) {
        row.copy_from_slice(bias);
    }
    let x = MatRef::new(&input[..n * d.in_features], n, d.in_features);
    let w = MatRef::new(weight, d.out_features, d.in_features);
    sgemm(1.0, x, w.t(), 1.0, &mut out[..n * d.out_features]);
}

/// Adds to `weight_grad (O, I)` when given (see [`linear_weight_grad_rows`] for computing it elsewhere) and to
/// `bias_grad (O)`; overwrites `input_grad (n, I)` when given (`weight` is read only then).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    d: &LinearDims,
    n: usize,
    input: &[f32],
    weight: &[f32],
    out_grad: &[f32],
    weight_grad: Option<&mut [f32]>,
    bias_grad: &mut [f32],
    input_grad: Option<&mut [f32]>,
) {
    for row in out_grad[..n * d.out_features].chunks_exact(d.out_features) {
        for (b, v) in bias_grad.iter_mut().zip(row) {
            *b += v;
        }
    }
    if let Some(weight_grad) = weight_grad {
        linear_weight_grad_rows(d, n, input, out_grad, 0..d.out_features, 1.0, weight_grad);
    }
    if let Some(input_grad) = input_grad {
        linear_input_grad(d, n, out_grad, weight, input_grad);
    }
}

/// Overwrites `input_grad (n, I) = out_grad (n, O) @ weight (O, I)`.
pub fn linear_input_grad(d: &LinearDims, n: usize, out_grad: &[f32], weight: &[f32], input_grad: &mut [f32]) {
    let g = MatRef::new(&out_grad[..n * d.out_features], n, d.out_features);
    let w = MatRef::new(weight, d.out_features, d.in_features);
    sgemm(1.0, g, w, 0.0, &mut input_grad[..n * d.in_features]);
}

/// Rows `rows` of the weight gradient of `n` images, `dW[rows] (rows, I) = dOut^T[rows] (rows, n) @ in (n, I)`,
/// written into `out` as `out = dW[rows] + beta * out`. Summing images in batches this way, the gradient of a
/// row never needs to exist for the whole matrix at once.
pub fn linear_weight_grad_rows(
    d: &LinearDims,
    n: usize,
    input: &[f32],
    out_grad: &[f32],
    rows: std::ops::Range<usize>,
    beta: f32,
    out: &mut [f32],
) {
    assert!(rows.start < rows.end && rows.end <= d.out_features);
    let g_t = MatRef {
        data: &out_grad[rows.start..n * d.out_features],
        rows: rows.len(),
        cols: n,
        row_stride: 1,
        col_stride: d.out_features,
    };
    let x = MatRef::new(&input[..n * d.in_features], n, d.in_features);
    sgemm(1.0, g_t, x, beta, &mut out[..rows.len() * d.in_features]);
}

/// Where the parts of a batch keep what a linear layer's weight gradient is made from.
pub trait GradParts {
    /// How many parts; their gradients are summed in this order.
    fn parts(&self) -> usize;
    /// Part `s`: its input `(n, I)` and output gradient `(n, O)`, for the same `n`.
    fn part(&self, s: usize) -> (&[f32], &[f32]);
}

/// Most rows [`weight_grad_step_rows`] takes at once.
pub const STEP_ROWS: usize = 8;

/// Rows `rows` (at most [`STEP_ROWS`]) of a linear layer's weight: their gradient, summed over the parts in
/// order, then the SGD update of `params` and `velocity` (those rows, `(rows, I)`), without ever writing the
/// gradient to memory. The gradient of a batch is a product whose inner dimension is only the batch size, so
/// writing it and reading it back cost more than computing it.
///
/// The same numbers as [`linear_weight_grad_rows`] per part (`beta` 0, then 1) followed by [`Sgd::step`].
pub fn weight_grad_step_rows<P: GradParts + ?Sized>(
    d: &LinearDims,
    parts: &P,
    rows: std::ops::Range<usize>,
    sgd: Sgd,
    params: &mut [f32],
    velocity: &mut [f32],
) {
    let len = rows.len() * d.in_features;
    assert!(rows.start < rows.end && rows.end <= d.out_features && rows.len() <= STEP_ROWS);
    assert!(params.len() == len && velocity.len() == len);
    for s in 0..parts.parts() {
        let (input, out_grad) = parts.part(s);
        assert!(input.len() % d.in_features == 0);
        assert!(out_grad.len() == input.len() / d.in_features * d.out_features);
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx512() {
        // SAFETY: the CPU has the features, and every part and both outputs were checked above.
        return unsafe { avx512::weight_grad_step_rows(d, parts, rows, sgd, params, velocity) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::weight_grad_step_rows(d, parts, rows, sgd, params, velocity) };
    }
    weight_grad_step_rows_body::<{ super::simd::BASELINE_FMA }, P>(d, parts, rows, sgd, params, velocity)
}

/// The rows of a register tile of [`STEP_ROWS`] for the block `rows`: rows past the block repeat its last row,
/// computed and never stored.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn tile_rows(rows: &std::ops::Range<usize>) -> [usize; STEP_ROWS] {
    std::array::from_fn(|r| rows.start + r.min(rows.len() - 1))
}

/// Columns per tile of the portable body.
const STEP_COLS: usize = 8;

#[inline(always)]
fn weight_grad_step_rows_body<const FMA: bool, P: GradParts + ?Sized>(
    d: &LinearDims,
    parts: &P,
    rows: std::ops::Range<usize>,
    sgd: Sgd,
    params: &mut [f32],
    velocity: &mut [f32],
) {
    let (i_len, o_len) = (d.in_features, d.out_features);
    for c0 in (0..i_len).step_by(STEP_COLS) {
        let w = STEP_COLS.min(i_len - c0);
        let mut grad = [[0.0f32; STEP_COLS]; STEP_ROWS];
        for s in 0..parts.parts() {
            let (input, out_grad) = parts.part(s);
            let mut acc = [[0.0f32; STEP_COLS]; STEP_ROWS];
            for (x, g) in input.chunks_exact(i_len).zip(out_grad.chunks_exact(o_len)) {
                let x = &x[c0..c0 + w];
                for (acc_r, &gr) in acc.iter_mut().zip(&g[rows.clone()]) {
                    for (a, &xv) in acc_r.iter_mut().zip(x) {
                        *a = super::simd::mul_add::<FMA>(gr, xv, *a);
                    }
                }
            }
            for (grad_r, acc_r) in grad.iter_mut().zip(&acc) {
                for (gv, a) in grad_r.iter_mut().zip(acc_r) {
                    *gv = if s == 0 { *a } else { *gv + *a };
                }
            }
        }
        for (r, grad_r) in grad.iter().enumerate().take(rows.len()) {
            let at = r * i_len + c0..r * i_len + c0 + w;
            crate::optim::step_inline(sgd, &mut params[at.clone()], &mut velocity[at], &grad_r[..w]);
        }
    }
}

/// The fused gradient and update with AVX2 intrinsics: a tile of 8 rows by 8 columns in registers.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{GradParts, LinearDims, STEP_ROWS, tile_rows};
    use crate::nn::simd::narrow::lanes;
    use crate::optim::Sgd;

    /// Columns of a register tile: one vector.
    const TILE_COLS: usize = 8;

    /// # Safety
    /// The CPU must have AVX2 and FMA; the parts and outputs must have passed the checks of
    /// [`super::weight_grad_step_rows`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weight_grad_step_rows<P: GradParts + ?Sized>(
        d: &LinearDims,
        parts: &P,
        rows: std::ops::Range<usize>,
        sgd: Sgd,
        params: &mut [f32],
        velocity: &mut [f32],
    ) {
        let (i_len, o_len) = (d.in_features, d.out_features);
        let (nr, row_at) = (rows.len(), tile_rows(&rows));
        let (pp, vp) = (params.as_mut_ptr(), velocity.as_mut_ptr());
        // SAFETY (whole body): every part holds whole rows of `i_len` inputs and `o_len` gradients; columns
        // c0..c0+8 are inside `i_len` (masked to it in the last tile), rows inside `rows`, which the caller
        // checked against the outputs.
        unsafe {
            let whole = i_len - i_len % TILE_COLS;
            for c0 in (0..whole).step_by(TILE_COLS) {
                tile::<false, P>(i_len, o_len, parts, &row_at, nr, sgd, pp, vp, c0, lanes(TILE_COLS));
            }
            if whole < i_len {
                tile::<true, P>(i_len, o_len, parts, &row_at, nr, sgd, pp, vp, whole, lanes(i_len - whole));
            }
        }
    }

    /// Columns `c0..c0 + 8` (masked by `mask` when `MASKED`: a vector load or store costs less than a masked one)
    /// of the rows of [`weight_grad_step_rows`]: their gradient, then their update.
    ///
    /// # Safety
    /// As for [`weight_grad_step_rows`]; the columns lie inside the rows of `i_len` values.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const MASKED: bool, P: GradParts + ?Sized>(
        i_len: usize,
        o_len: usize,
        parts: &P,
        row_at: &[usize; STEP_ROWS],
        nr: usize,
        sgd: Sgd,
        pp: *mut f32,
        vp: *mut f32,
        c0: usize,
        mask: __m256i,
    ) {
        // SAFETY (whole body): the caller's guarantees.
        unsafe {
            let load = |x: *const f32| if MASKED { _mm256_maskload_ps(x, mask) } else { _mm256_loadu_ps(x) };
            let store = |x: *mut f32, v: __m256| {
                if MASKED { _mm256_maskstore_ps(x, mask, v) } else { _mm256_storeu_ps(x, v) }
            };
            let mut grad = [_mm256_setzero_ps(); STEP_ROWS];
            for s in 0..parts.parts() {
                let (input, out_grad) = parts.part(s);
                let (xp, gp) = (input.as_ptr().add(c0), out_grad.as_ptr());
                let gend = gp.add(out_grad.len());
                let mut acc = [_mm256_setzero_ps(); STEP_ROWS];
                let (mut x, mut g) = (xp, gp);
                while g < gend {
                    let xv = load(x);
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        *acc_r = _mm256_fmadd_ps(_mm256_broadcast_ss(&*g.add(row_at[r])), xv, *acc_r);
                    }
                    x = x.add(i_len);
                    g = g.add(o_len);
                }
                for (grad_r, acc_r) in grad.iter_mut().zip(acc) {
                    *grad_r = if s == 0 { acc_r } else { _mm256_add_ps(*grad_r, acc_r) };
                }
            }
            // The update, as `Sgd::step` rounds it (a multiply, then an add) and flushes a subnormal velocity.
            let (lr, momentum) = (_mm256_set1_ps(sgd.lr), _mm256_set1_ps(sgd.momentum));
            let min_normal = _mm256_set1_ps(f32::MIN_POSITIVE);
            let abs_bits = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
            for (r, grad_r) in grad.iter().enumerate().take(nr) {
                let at = r * i_len + c0;
                let (p, v) = (pp.add(at), vp.add(at));
                let old_p = load(p);
                let mut g = *grad_r;
                if sgd.weight_decay != 0.0 {
                    g = _mm256_add_ps(g, _mm256_mul_ps(_mm256_set1_ps(sgd.weight_decay), old_p));
                }
                let new_v = _mm256_add_ps(_mm256_mul_ps(momentum, load(v)), g);
                let normal = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_and_ps(new_v, abs_bits), min_normal);
                let new_v = _mm256_and_ps(new_v, normal);
                store(v, new_v);
                store(p, _mm256_sub_ps(old_p, _mm256_mul_ps(lr, new_v)));
            }
        }
    }
}

/// The fused gradient and update with AVX-512 intrinsics: a tile of 8 rows by 32 columns in registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{GradParts, LinearDims, STEP_ROWS, tile_rows};

    /// Columns of a register tile: two vectors.
    const TILE_COLS: usize = 32;
    use crate::nn::simd::lanes;
    use crate::optim::Sgd;

    /// # Safety
    /// The CPU must have AVX-512F; the parts and outputs must have passed the checks of
    /// [`super::weight_grad_step_rows`].
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn weight_grad_step_rows<P: GradParts + ?Sized>(
        d: &LinearDims,
        parts: &P,
        rows: std::ops::Range<usize>,
        sgd: Sgd,
        params: &mut [f32],
        velocity: &mut [f32],
    ) {
        let (i_len, o_len) = (d.in_features, d.out_features);
        let (nr, row_at) = (rows.len(), tile_rows(&rows));
        let (pp, vp) = (params.as_mut_ptr(), velocity.as_mut_ptr());
        let (lr, momentum, wd) =
            (_mm512_set1_ps(sgd.lr), _mm512_set1_ps(sgd.momentum), _mm512_set1_ps(sgd.weight_decay));
        let min_normal = _mm512_set1_ps(f32::MIN_POSITIVE);
        // SAFETY (whole body): every part holds whole rows of `i_len` inputs and `o_len` gradients; columns
        // c0..c0+32 are inside `i_len` (masked to it in the last tile), rows inside `rows`, which the caller
        // checked against the outputs.
        unsafe {
            let update = Update { sgd, lr, momentum, wd, min_normal };
            // Whole tiles with plain loads and stores (masked ones cost more, even with every lane on).
            let whole = i_len - i_len % TILE_COLS;
            for c0 in (0..whole).step_by(TILE_COLS) {
                tile::<false, P>(i_len, o_len, parts, &row_at, nr, &update, pp, vp, c0, [0xffff; 2]);
            }
            if whole < i_len {
                let mask = [lanes(i_len - whole), lanes(i_len.saturating_sub(whole + 16))];
                tile::<true, P>(i_len, o_len, parts, &row_at, nr, &update, pp, vp, whole, mask);
            }
        }
    }

    /// The SGD step's constants, as vectors.
    struct Update {
        sgd: Sgd,
        lr: __m512,
        momentum: __m512,
        wd: __m512,
        min_normal: __m512,
    }

    /// Columns `c0..c0 + 32` (masked by `mask` when `MASKED`) of the rows of [`weight_grad_step_rows`]: their
    /// gradient, then their update.
    ///
    /// # Safety
    /// As for [`weight_grad_step_rows`]; the columns lie inside the rows of `i_len` values, or are masked to them.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn tile<const MASKED: bool, P: GradParts + ?Sized>(
        i_len: usize,
        o_len: usize,
        parts: &P,
        row_at: &[usize; STEP_ROWS],
        nr: usize,
        u: &Update,
        pp: *mut f32,
        vp: *mut f32,
        c0: usize,
        mask: [__mmask16; 2],
    ) {
        // SAFETY (whole body): the caller's guarantees. Past the row when masked off entirely: not dereferenced
        // then.
        unsafe {
            let load = |x: *const f32, h: usize| {
                if MASKED { _mm512_maskz_loadu_ps(mask[h], x) } else { _mm512_loadu_ps(x) }
            };
            let store = |x: *mut f32, h: usize, v: __m512| {
                if MASKED { _mm512_mask_storeu_ps(x, mask[h], v) } else { _mm512_storeu_ps(x, v) }
            };
            let mut grad = [[_mm512_setzero_ps(); 2]; STEP_ROWS];
            for s in 0..parts.parts() {
                let (input, out_grad) = parts.part(s);
                let (xp, gp) = (input.as_ptr().add(c0), out_grad.as_ptr());
                let gend = gp.add(out_grad.len());
                let mut acc = [[_mm512_setzero_ps(); 2]; STEP_ROWS];
                let (mut x, mut g) = (xp, gp);
                while g < gend {
                    let (x0, x1) = (load(x, 0), load(x.wrapping_add(16), 1));
                    for r in 0..STEP_ROWS {
                        let gr = _mm512_set1_ps(*g.add(row_at[r]));
                        acc[r][0] = _mm512_fmadd_ps(gr, x0, acc[r][0]);
                        acc[r][1] = _mm512_fmadd_ps(gr, x1, acc[r][1]);
                    }
                    x = x.add(i_len);
                    g = g.add(o_len);
                }
                for r in 0..STEP_ROWS {
                    for h in 0..2 {
                        grad[r][h] = if s == 0 { acc[r][h] } else { _mm512_add_ps(grad[r][h], acc[r][h]) };
                    }
                }
            }
            // The update, as `Sgd::step` rounds it (a multiply, then an add) and flushes a subnormal velocity.
            for (r, grad_r) in grad.iter().enumerate().take(nr) {
                for (h, &grad_h) in grad_r.iter().enumerate() {
                    let at = r * i_len + c0 + 16 * h;
                    let (p, v) = (pp.wrapping_add(at), vp.wrapping_add(at));
                    let old_p = load(p, h);
                    let mut g = grad_h;
                    if u.sgd.weight_decay != 0.0 {
                        g = _mm512_add_ps(g, _mm512_mul_ps(u.wd, old_p));
                    }
                    let new_v = _mm512_add_ps(_mm512_mul_ps(u.momentum, load(v, h)), g);
                    let normal = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(new_v), u.min_normal);
                    let new_v = _mm512_maskz_mov_ps(normal, new_v);
                    store(v, h, new_v);
                    store(p, h, _mm512_sub_ps(old_p, _mm512_mul_ps(u.lr, new_v)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    struct Parts(Vec<(Vec<f32>, Vec<f32>)>);

    impl GradParts for Parts {
        fn parts(&self) -> usize {
            self.0.len()
        }
        fn part(&self, s: usize) -> (&[f32], &[f32]) {
            (&self.0[s].0, &self.0[s].1)
        }
    }

    #[test]
    fn fused_gradient_and_update_match_gradient_then_update() {
        let mut rng = Rng::new(3);
        let mut random = |len: usize| -> Vec<f32> { (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect() };
        let shapes = [(400, 120, 0..8), (120, 84, 80..84), (84, 10, 8..10), (84, 10, 0..8), (37, 9, 3..5)];
        for (i_len, o_len, rows) in shapes {
            let d = LinearDims { in_features: i_len, out_features: o_len };
            for (images, weight_decay) in [(&[8usize][..], 0.0), (&[8, 8][..], 0.0), (&[8, 5, 3][..], 0.01)] {
                let mut parts = Parts(images.iter().map(|&n| (random(n * i_len), random(n * o_len))).collect());
                // A dead unit: the first row's gradient is zero, and its velocity turns subnormal, so is flushed.
                for (_, out_grad) in &mut parts.0 {
                    out_grad.iter_mut().skip(rows.start).step_by(o_len).for_each(|g| *g = 0.0);
                }
                let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay };
                let len = rows.len() * i_len;
                let (p0, mut v0) = (random(len), random(len));
                v0[..i_len].fill(1.2e-38);
                // The definition: the gradient written out, then the update.
                let mut g = vec![0.0; len];
                for (s, (input, out_grad)) in parts.0.iter().enumerate() {
                    let n = input.len() / i_len;
                    let beta = if s == 0 { 0.0 } else { 1.0 };
                    linear_weight_grad_rows(&d, n, input, out_grad, rows.clone(), beta, &mut g);
                }
                let (mut want_p, mut want_v) = (p0.clone(), v0.clone());
                sgd.step(&mut want_p, &mut want_v, &g);
                let (mut p, mut v) = (p0.clone(), v0.clone());
                weight_grad_step_rows(&d, &parts, rows.clone(), sgd, &mut p, &mut v);
                let (mut pp, mut pv) = (p0.clone(), v0.clone());
                weight_grad_step_rows_body::<false, _>(&d, &parts, rows.clone(), sgd, &mut pp, &mut pv);
                // The AVX2 kernel, which a CPU with AVX-512 does not pick on its own (where it cannot run, the
                // definition stands in).
                let (mut ap, mut av) = (p0.clone(), v0.clone());
                #[cfg(target_arch = "x86_64")]
                let avx2_ran = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && {
                    // SAFETY: the CPU has AVX2 and FMA; the shapes are those `weight_grad_step_rows` checked.
                    unsafe { avx2::weight_grad_step_rows(&d, &parts, rows.clone(), sgd, &mut ap, &mut av) };
                    true
                };
                #[cfg(not(target_arch = "x86_64"))]
                let avx2_ran = false;
                if !avx2_ran {
                    (ap, av) = (want_p.clone(), want_v.clone());
                }
                for (got, want) in
                    [(&p, &want_p), (&v, &want_v), (&pp, &want_p), (&pv, &want_v), (&ap, &want_p), (&av, &want_v)]
                {
                    for (x, y) in got.iter().zip(want.iter()) {
                        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y} ({i_len},{o_len},{rows:?})");
                    }
                }
                // The update really happened (a test that cannot fail is no test).
                assert!(p[i_len..].iter().zip(&p0[i_len..]).any(|(a, b)| a != b));
                if weight_decay == 0.0 {
                    assert!(v[..i_len].iter().all(|&x| x == 0.0), "the dead row's velocity is flushed");
                }
            }
        }
    }
}
