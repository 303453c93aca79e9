//! The fused gradient and update with WebAssembly's SIMD128, with the portable code's bits: each weight's
//! gradient is the portable code's sum (per part, image by image, a multiply then an add; the parts added in
//! order), and the update is `Sgd::step`'s, in four lanes. Four rows at a time, so that their accumulators, the
//! inputs and a broadcast gradient stay in registers.
//!
//! Each tile's shape (rows, vectors of columns) is a constant of its own copy of the loop: the browser's compiler
//! neither unswitches nor unrolls a loop over a count known only at run time, and with the count in a variable
//! every multiply sat behind a test and a bounds check (linear1's update took a tenth of a training step).

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
    if !d.in_features.is_multiple_of(4) {
        return weight_grad_step_rows_body::<false, P>(d, parts, rows, sgd, params, velocity, carry);
    }
    let block = Block {
        i_len: d.in_features,
        o_len: d.out_features,
        first_row: rows.start,
        continues: carry.round.continues(),
        updates: carry.round.updates(),
        sum: carry.sum.as_mut_ptr(),
        params: params.as_mut_ptr(),
        velocity: velocity.as_mut_ptr(),
        sgd,
    };
    for c0 in (0..block.i_len).step_by(STEP_COLS) {
        // Two vectors of columns, or one in a last tile of four.
        let two = block.i_len - c0 >= 8;
        for r0 in (0..rows.len()).step_by(ROWS) {
            // SAFETY: the caller checked every part and output against the block's rows and columns.
            unsafe {
                match (ROWS.min(rows.len() - r0), two) {
                    (4, true) => block.tile::<4, 2, P>(parts, r0, c0),
                    (4, false) => block.tile::<4, 1, P>(parts, r0, c0),
                    (3, true) => block.tile::<3, 2, P>(parts, r0, c0),
                    (3, false) => block.tile::<3, 1, P>(parts, r0, c0),
                    (2, true) => block.tile::<2, 2, P>(parts, r0, c0),
                    (2, false) => block.tile::<2, 1, P>(parts, r0, c0),
                    (_, true) => block.tile::<1, 2, P>(parts, r0, c0),
                    (_, false) => block.tile::<1, 1, P>(parts, r0, c0),
                }
            }
        }
    }
}

/// One call's rows: where its sums, parameters and momentum live (each `(rows, i_len)`), and what to do.
struct Block {
    i_len: usize,
    o_len: usize,
    /// The block's first row in the layer (its output gradient's column).
    first_row: usize,
    continues: bool,
    updates: bool,
    sum: *mut f32,
    params: *mut f32,
    velocity: *mut f32,
    sgd: Sgd,
}

impl Block {
    /// The tile of rows `r0..r0 + R` (of the block) and columns `c0..c0 + 4 V`: its gradient summed over the
    /// parts, then left in the carry or taken as an SGD step.
    ///
    /// # Safety
    /// The tile lies inside the block, and every part holds whole images of `i_len` inputs and `o_len` gradients.
    #[inline(always)]
    unsafe fn tile<const R: usize, const V: usize, P: GradParts + ?Sized>(&self, parts: &P, r0: usize, c0: usize) {
        let at = |r: usize, v: usize| (r0 + r) * self.i_len + c0 + 4 * v;
        let mut grad = [[f32x4_splat(0.0); V]; R];
        if self.continues {
            for (r, grad_r) in grad.iter_mut().enumerate() {
                for (v, grad_v) in grad_r.iter_mut().enumerate() {
                    // SAFETY: the carry holds the block's rows (the caller's promise).
                    *grad_v = unsafe { v128_load(self.sum.add(at(r, v)) as *const v128) };
                }
            }
        }
        for s in 0..parts.parts() {
            let (input, out_grad) = parts.part(s);
            // SAFETY: the part's images (the caller's promise).
            let acc = unsafe { self.part_sum::<R, V>(input, out_grad, r0, c0) };
            for (grad_r, acc_r) in grad.iter_mut().zip(&acc) {
                for (grad_v, &acc_v) in grad_r.iter_mut().zip(acc_r) {
                    *grad_v = if s == 0 && !self.continues { acc_v } else { f32x4_add(*grad_v, acc_v) };
                }
            }
        }
        for (r, grad_r) in grad.iter().enumerate() {
            for (v, &g) in grad_r.iter().enumerate() {
                // SAFETY: the block's rows are in the carry, `params` and `velocity` (the caller's promise).
                unsafe {
                    if self.updates {
                        self.step(at(r, v), g);
                    } else {
                        v128_store(self.sum.add(at(r, v)) as *mut v128, g);
                    }
                }
            }
        }
    }

    /// One part's gradient for the tile: image by image, a multiply then an add.
    ///
    /// # Safety
    /// As [`Block::tile`].
    #[inline(always)]
    unsafe fn part_sum<const R: usize, const V: usize>(
        &self,
        input: &[f32],
        out_grad: &[f32],
        r0: usize,
        c0: usize,
    ) -> [[v128; V]; R] {
        let mut acc = [[f32x4_splat(0.0); V]; R];
        let (x, g) = (input.as_ptr(), out_grad.as_ptr());
        for b in 0..input.len() / self.i_len {
            // SAFETY: image b's inputs c0..c0 + 4 V and output gradients of the tile's rows (the caller's promise).
            unsafe {
                let xs: [v128; V] =
                    std::array::from_fn(|v| v128_load(x.add(b * self.i_len + c0 + 4 * v) as *const v128));
                let g_row = g.add(b * self.o_len + self.first_row + r0);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let gr = f32x4_splat(*g_row.add(r));
                    for (acc_v, &x_v) in acc_r.iter_mut().zip(&xs) {
                        *acc_v = f32x4_add(f32x4_mul(gr, x_v), *acc_v);
                    }
                }
            }
        }
        acc
    }

    /// `Sgd::step` on the four weights at `at`, whose gradient is `g`.
    ///
    /// # Safety
    /// `at..at + 4` lies inside the block.
    #[inline(always)]
    unsafe fn step(&self, at: usize, g: v128) {
        let Sgd { lr, momentum, weight_decay, .. } = self.sgd;
        let zero = f32x4_splat(0.0);
        // SAFETY: the caller's promise.
        unsafe {
            let (p, vel) = (self.params.add(at) as *mut v128, self.velocity.add(at) as *mut v128);
            let old_p = v128_load(p);
            let g = if weight_decay != 0.0 { f32x4_add(g, f32x4_mul(f32x4_splat(weight_decay), old_p)) } else { g };
            let new_v = f32x4_add(f32x4_mul(f32x4_splat(momentum), v128_load(vel)), g);
            // A velocity below the smallest normal value is stored as zero (not a NaN, which compares false).
            let new_v = v128_bitselect(zero, new_v, f32x4_lt(f32x4_abs(new_v), f32x4_splat(f32::MIN_POSITIVE)));
            v128_store(vel, new_v);
            v128_store(p, f32x4_sub(old_p, f32x4_mul(f32x4_splat(lr), new_v)));
        }
    }
}
