//! The fused gradient and update with WebAssembly's SIMD128, with the portable code's bits: each weight's
//! gradient is the portable code's sum (per part, image by image, a multiply then an add; the parts added in
//! order), and the update is `Sgd::step`'s, in four lanes. Four rows at a time, so that their accumulators, the
//! inputs and a broadcast gradient stay in registers.

use core::arch::wasm32::*;

use super::{Carry, GradParts, LinearDims, STEP_COLS, weight_grad_step_rows_body};
use crate::optim::Sgd;

/// Rows per register block.
const ROWS: usize = 4;

/// As [`super::weight_grad_step_rows`], whose checks the parts and outputs passed.
pub fn weight_grad_step_rows<P: GradParts + ?Sized>(
    d: &LinearDims,
    parts: &P,
    rows: std::ops::Range<usize>,
    sgd: Sgd,
    params: &mut [f32],
    velocity: &mut [f32],
    carry: Carry<'_>,
) {
    let (i_len, o_len) = (d.in_features, d.out_features);
    if i_len % 4 != 0 {
        return weight_grad_step_rows_body::<false, P>(d, parts, rows, sgd, params, velocity, carry);
    }
    let (continues, updates) = (carry.round.continues(), carry.round.updates());
    let sum = carry.sum.as_mut_ptr();
    let (lr, momentum, wd) = (f32x4_splat(sgd.lr), f32x4_splat(sgd.momentum), f32x4_splat(sgd.weight_decay));
    let (min_normal, zero) = (f32x4_splat(f32::MIN_POSITIVE), f32x4_splat(0.0));
    let (pp, vp) = (params.as_mut_ptr(), velocity.as_mut_ptr());
    for c0 in (0..i_len).step_by(STEP_COLS) {
        // Two vectors of columns, or one in a last tile of four.
        let vectors = STEP_COLS.min(i_len - c0) / 4;
        for r0 in (0..rows.len()).step_by(ROWS) {
            let nr = ROWS.min(rows.len() - r0);
            let mut grad = [[zero; 2]; ROWS];
            if continues {
                for (r, grad_r) in grad.iter_mut().enumerate().take(nr) {
                    for (v, grad_v) in grad_r.iter_mut().enumerate().take(vectors) {
                        // SAFETY: the carry holds the block's rows of i_len values, its length checked.
                        *grad_v = unsafe { v128_load(sum.add((r0 + r) * i_len + c0 + 4 * v) as *const v128) };
                    }
                }
            }
            for s in 0..parts.parts() {
                let (input, out_grad) = parts.part(s);
                let mut acc = [[zero; 2]; ROWS];
                for (x, g) in input.chunks_exact(i_len).zip(out_grad.chunks_exact(o_len)) {
                    // SAFETY: columns c0..c0 + 4 vectors are inside the row of i_len values.
                    let xs = unsafe {
                        let p = x.as_ptr().add(c0);
                        [
                            v128_load(p as *const v128),
                            if vectors == 2 { v128_load(p.add(4) as *const v128) } else { zero },
                        ]
                    };
                    for (r, acc_r) in acc.iter_mut().enumerate().take(nr) {
                        let gr = f32x4_splat(g[rows.start + r0 + r]);
                        for v in 0..vectors {
                            acc_r[v] = f32x4_add(f32x4_mul(gr, xs[v]), acc_r[v]);
                        }
                    }
                }
                for (grad_r, acc_r) in grad.iter_mut().zip(&acc) {
                    for v in 0..vectors {
                        grad_r[v] = if s == 0 && !continues { acc_r[v] } else { f32x4_add(grad_r[v], acc_r[v]) };
                    }
                }
            }
            if !updates {
                for (r, grad_r) in grad.iter().enumerate().take(nr) {
                    for (v, &g) in grad_r.iter().enumerate().take(vectors) {
                        // SAFETY: as above.
                        unsafe { v128_store(sum.add((r0 + r) * i_len + c0 + 4 * v) as *mut v128, g) };
                    }
                }
                continue;
            }
            for (r, grad_r) in grad.iter().enumerate().take(nr) {
                for (v, &g) in grad_r.iter().enumerate().take(vectors) {
                    let at = (r0 + r) * i_len + c0 + 4 * v;
                    // SAFETY: the block's rows of i_len values are in `params` and `velocity`, whose lengths
                    // were checked.
                    unsafe {
                        let (p, vel) = (pp.add(at) as *mut v128, vp.add(at) as *mut v128);
                        let old_p = v128_load(p);
                        let g = if sgd.weight_decay != 0.0 { f32x4_add(g, f32x4_mul(wd, old_p)) } else { g };
                        let new_v = f32x4_add(f32x4_mul(momentum, v128_load(vel)), g);
                        // A velocity below the smallest normal value is stored as zero (not a NaN, which compares
                        // false).
                        let new_v = v128_bitselect(zero, new_v, f32x4_lt(f32x4_abs(new_v), min_normal));
                        v128_store(vel, new_v);
                        v128_store(p, f32x4_sub(old_p, f32x4_mul(lr, new_v)));
                    }
                }
            }
        }
    }
}
