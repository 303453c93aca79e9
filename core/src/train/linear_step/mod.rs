//! The linear layers' weight gradient and SGD update in one pass, for a block of rows at a time: where the
//! layers (`nn`) and the optimiser (`optim`) meet, so neither needs the other.

use crate::nn::linear::LinearDims;
use crate::optim::Sgd;

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
/// The same numbers as [`crate::nn::linear::linear_weight_grad_rows`] per part (`beta` 0, then 1) followed by [`Sgd::step`].
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
    if crate::simd::avx512() {
        // SAFETY: the CPU has the features, and every part and both outputs were checked above.
        return unsafe { avx512::weight_grad_step_rows(d, parts, rows, sgd, params, velocity) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::weight_grad_step_rows(d, parts, rows, sgd, params, velocity) };
    }
    weight_grad_step_rows_body::<{ crate::simd::BASELINE_FMA }, P>(d, parts, rows, sgd, params, velocity)
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
                        *a = crate::simd::mul_add::<FMA>(gr, xv, *a);
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
mod avx2;

/// The fused gradient and update with AVX-512 intrinsics: a tile of 8 rows by 32 columns in registers.
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::linear::linear_weight_grad_rows;
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
