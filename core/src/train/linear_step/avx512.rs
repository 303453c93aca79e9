//! The fused gradient and update with AVX-512 intrinsics: a tile of 8 rows by 32 columns in registers.

use std::arch::x86_64::*;

use super::{Carry, GradParts, LinearDims, STEP_ROWS, tile_rows};
use crate::optim::Sgd;
use crate::simd::lanes;

/// Columns of a register tile: two vectors.
const TILE_COLS: usize = 32;

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
    carry: Carry<'_>,
) {
    let (i_len, o_len) = (d.in_features, d.out_features);
    let (nr, row_at) = (rows.len(), tile_rows(&rows));
    let (pp, vp) = (params.as_mut_ptr(), velocity.as_mut_ptr());
    let (sum, continues, updates) = (carry.sum.as_mut_ptr(), carry.round.continues(), carry.round.updates());
    let (lr, momentum, wd) = (_mm512_set1_ps(sgd.lr), _mm512_set1_ps(sgd.momentum), _mm512_set1_ps(sgd.weight_decay));
    let min_normal = _mm512_set1_ps(f32::MIN_POSITIVE);
    // SAFETY (whole body): every part holds whole rows of `i_len` inputs and `o_len` gradients; columns
    // c0..c0+32 are inside `i_len` (masked to it in the last tile), rows inside `rows`, which the caller
    // checked against the outputs.
    unsafe {
        let update = Update { sgd, lr, momentum, wd, min_normal, sum, continues, updates };
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
    /// A round's carried sum (see [`super::Round`]), laid out as the parameters; whether the sum starts from it,
    /// and whether the round updates (else it leaves the sum there).
    sum: *mut f32,
    continues: bool,
    updates: bool,
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
        if u.continues {
            for (r, grad_r) in grad.iter_mut().enumerate().take(nr) {
                for (h, grad_h) in grad_r.iter_mut().enumerate() {
                    *grad_h = load(u.sum.wrapping_add(r * i_len + c0 + 16 * h), h);
                }
            }
        }
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
                    grad[r][h] = if s == 0 && !u.continues { acc[r][h] } else { _mm512_add_ps(grad[r][h], acc[r][h]) };
                }
            }
        }
        if !u.updates {
            for (r, grad_r) in grad.iter().enumerate().take(nr) {
                for (h, &grad_h) in grad_r.iter().enumerate() {
                    store(u.sum.wrapping_add(r * i_len + c0 + 16 * h), h, grad_h);
                }
            }
            return;
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
