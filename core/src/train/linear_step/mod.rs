//! The linear layers' weight gradient and SGD update in one pass, for a block of rows at a time: where the
//! layers (`nn`) and the optimiser (`optim`) meet, so neither needs the other.

use crate::nn::linear::LinearDims;
use crate::optim::Sgd;
use crate::simd::{BASELINE_FMA, select};

/// Where the parts of a batch keep what a linear layer's weight gradient is made from.
pub trait GradParts {
    /// How many parts; their gradients are summed in this order.
    fn parts(&self) -> usize;
    /// Part `s`: its input `(n, I)` and output gradient `(n, O)`, for the same `n`.
    fn part(&self, s: usize) -> (&[f32], &[f32]);
}

/// Most rows [`weight_grad_step_rows`] takes at once.
pub const STEP_ROWS: usize = 8;

/// Where a call's parts stand in their batch. A batch too large to hold at once runs in rounds of slices, one
/// call each: the gradient is the same sum of the parts, in the same order, carried from call to call, and the
/// update is made once, by the last call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// The whole batch in one call.
    Only,
    /// The first of several: the sum is left in the carry.
    First,
    /// Neither first nor last: the sum starts from the carry and is left there.
    Middle,
    /// The last: the sum starts from the carry, and the update is made.
    Last,
}

impl Round {
    /// Round `k` (0-based) of `rounds`.
    pub fn of(k: usize, rounds: usize) -> Round {
        match (k == 0, k + 1 == rounds) {
            (true, true) => Round::Only,
            (true, false) => Round::First,
            (false, false) => Round::Middle,
            (false, true) => Round::Last,
        }
    }

    /// Whether the sum starts from the one carried over from the rounds before.
    pub fn continues(self) -> bool {
        matches!(self, Round::Middle | Round::Last)
    }

    /// Whether this round makes the update (else it leaves the sum so far in the carry).
    pub fn updates(self) -> bool {
        matches!(self, Round::Only | Round::Last)
    }
}

/// A round and its carry: the gradient summed over the rounds before, laid out as the parameters it is for.
pub struct Carry<'a> {
    pub round: Round,
    pub sum: &'a mut [f32],
}

impl Carry<'_> {
    /// A whole batch in one call: nothing carried.
    pub fn none() -> Carry<'static> {
        Carry { round: Round::Only, sum: &mut [] }
    }
}

/// Rows `rows` (at most [`STEP_ROWS`]) of a linear layer's weight: their gradient, summed over the parts in
/// order, then the SGD update of `params` and `velocity` (those rows, `(rows, I)`), without ever writing the
/// gradient to memory. The gradient of a batch is a product whose inner dimension is only the batch size, so
/// writing it and reading it back cost more than computing it.
///
/// The same numbers as [`crate::nn::linear::linear_weight_grad_rows`] per part (`beta` 0, then 1) followed by [`Sgd::step`].
/// In a batch run in rounds, `carry` holds the rows' gradient summed over the rounds before (see [`Round`]): the
/// sum goes on from it, and is left in it unless this round updates; the bits are those of one call on all the
/// parts.
pub fn weight_grad_step_rows<P: GradParts + ?Sized>(
    d: &LinearDims,
    parts: &P,
    rows: std::ops::Range<usize>,
    sgd: Sgd,
    params: &mut [f32],
    velocity: &mut [f32],
    carry: Carry<'_>,
) {
    let len = rows.len() * d.in_features;
    assert!(rows.start < rows.end && rows.end <= d.out_features && rows.len() <= STEP_ROWS);
    assert!(params.len() == len && velocity.len() == len);
    assert!(carry.round == Round::Only || carry.sum.len() == len);
    assert!(parts.parts() > 0);
    for s in 0..parts.parts() {
        let (input, out_grad) = parts.part(s);
        assert!(input.len() % d.in_features == 0);
        assert!(out_grad.len() == input.len() / d.in_features * d.out_features);
    }
    // The SIMD kernels index with pointers: every part and both outputs were checked above.
    select! {
        avx512 => avx512::weight_grad_step_rows(d, parts, rows, sgd, params, velocity, carry),
        avx2 => avx2::weight_grad_step_rows(d, parts, rows, sgd, params, velocity, carry),
        simd128 => simd128::weight_grad_step_rows(d, parts, rows, sgd, params, velocity, carry),
        portable => weight_grad_step_rows_body::<BASELINE_FMA, P>(d, parts, rows, sgd, params, velocity, carry),
    }
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
    carry: Carry<'_>,
) {
    let (i_len, o_len) = (d.in_features, d.out_features);
    let (continues, updates) = (carry.round.continues(), carry.round.updates());
    for c0 in (0..i_len).step_by(STEP_COLS) {
        let w = STEP_COLS.min(i_len - c0);
        let mut grad = [[0.0f32; STEP_COLS]; STEP_ROWS];
        if continues {
            for (r, grad_r) in grad.iter_mut().enumerate().take(rows.len()) {
                grad_r[..w].copy_from_slice(&carry.sum[r * i_len + c0..][..w]);
            }
        }
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
                    *gv = if s == 0 && !continues { *a } else { *gv + *a };
                }
            }
        }
        if !updates {
            for (r, grad_r) in grad.iter().enumerate().take(rows.len()) {
                carry.sum[r * i_len + c0..][..w].copy_from_slice(&grad_r[..w]);
            }
            continue;
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

/// The fused gradient and update with WebAssembly's SIMD128, with the portable code's bits.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

#[cfg(test)]
mod tests;
