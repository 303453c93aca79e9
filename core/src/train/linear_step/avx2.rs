//! The fused gradient and update with AVX2 intrinsics: a tile of 8 rows by 8 columns in registers.

use std::arch::x86_64::*;

use super::{Carry, GradParts, LinearDims, STEP_ROWS, tile_rows};
use crate::optim::Sgd;
use crate::simd::narrow::lanes;

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
    carry: Carry<'_>,
) {
    let (i_len, o_len) = (d.in_features, d.out_features);
    let (nr, row_at) = (rows.len(), tile_rows(&rows));
    let (pp, vp) = (params.as_mut_ptr(), velocity.as_mut_ptr());
    let fold = Fold { sum: carry.sum.as_mut_ptr(), continues: carry.round.continues(), updates: carry.round.updates() };
    // SAFETY (whole body): every part holds whole rows of `i_len` inputs and `o_len` gradients; columns
    // c0..c0+8 are inside `i_len` (masked to it in the last tile), rows inside `rows`, which the caller
    // checked against the outputs.
    unsafe {
        let whole = i_len - i_len % TILE_COLS;
        for c0 in (0..whole).step_by(TILE_COLS) {
            tile::<false, P>(i_len, o_len, parts, &row_at, nr, sgd, pp, vp, &fold, c0, lanes(TILE_COLS));
        }
        if whole < i_len {
            tile::<true, P>(i_len, o_len, parts, &row_at, nr, sgd, pp, vp, &fold, whole, lanes(i_len - whole));
        }
    }
}

/// A round's carried sum (see [`super::Round`]), laid out as the parameters.
pub(super) struct Fold {
    pub sum: *mut f32,
    pub continues: bool,
    pub updates: bool,
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
    fold: &Fold,
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
        if fold.continues {
            for (r, grad_r) in grad.iter_mut().enumerate().take(nr) {
                *grad_r = load(fold.sum.add(r * i_len + c0));
            }
        }
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
                *grad_r = if s == 0 && !fold.continues { acc_r } else { _mm256_add_ps(*grad_r, acc_r) };
            }
        }
        if !fold.updates {
            for (r, &grad_r) in grad.iter().enumerate().take(nr) {
                store(fold.sum.add(r * i_len + c0), grad_r);
            }
            return;
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
