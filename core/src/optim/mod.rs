//! SGD with momentum and weight decay, with PyTorch's semantics:
//! `g = grad + wd * p;  v = momentum * v + g;  p -= lr * v`.
//! (PyTorch starts the buffer as `v = g` on the first step, which is the same as `v = momentum * 0 + g`.)
//!
//! One departure, which never changes a parameter: a velocity that falls below the smallest normal `f32`
//! (about 1.2e-38) is stored as zero. A weight whose gradient stays zero (a dead unit's) has its velocity shrink
//! by `momentum` each step; PyTorch carries it through the subnormal range for about 150 steps until it reaches
//! zero anyway. There, `lr * v` is below 1e-40 and leaves any parameter above 1e-32 in size exactly as it was,
//! while every arithmetic instruction that touches a subnormal value costs x86 CPUs about a hundred cycles: with
//! thousands of such weights, that was a third of a training step.

use serde::{Deserialize, Serialize};

use crate::simd::dispatch;

mod schedule;
pub use schedule::LrSchedule;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Sgd {
    /// One update of `params` and `velocity` from `grads` (all the same length).
    pub fn step(&self, params: &mut [f32], velocity: &mut [f32], grads: &[f32]) {
        assert!(velocity.len() == params.len() && grads.len() == params.len());
        update(*self, params, velocity, grads)
    }
}

/// [`Sgd::step`] inlined into the caller, for kernels that update a few values at a time (a call for each
/// would cost more than the update).
#[inline(always)]
pub(crate) fn step_inline(sgd: Sgd, params: &mut [f32], velocity: &mut [f32], grads: &[f32]) {
    update_body::<false>(sgd, params, velocity, grads)
}

/// The update, element by element, with PyTorch's roundings (a multiply, then an add: no fused multiply-add).
#[inline(always)]
fn update_body<const FMA: bool>(sgd: Sgd, params: &mut [f32], velocity: &mut [f32], grads: &[f32]) {
    let Sgd { lr, momentum, weight_decay } = sgd;
    for ((p, v), &g) in params.iter_mut().zip(velocity.iter_mut()).zip(grads) {
        let mut g = g;
        if weight_decay != 0.0 {
            g += weight_decay * *p;
        }
        *v = flush_subnormal(momentum * *v + g);
        *p -= lr * *v;
    }
}

/// `v`, or zero if `v` is subnormal (see the module's documentation).
#[inline(always)]
pub(crate) fn flush_subnormal(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v }
}

dispatch! {
    fn update(sgd: Sgd, params: &mut [f32], velocity: &mut [f32], grads: &[f32]) => update_body
}

#[inline(always)]
fn add_assign_body<const FMA: bool>(sum: &mut [f32], x: &[f32]) {
    for (s, v) in sum.iter_mut().zip(x) {
        *s += v;
    }
}

dispatch! {
    /// `sum += x`, element-wise (the shorter length).
    pub(crate) fn add_assign(sum: &mut [f32], x: &[f32]) => add_assign_body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_pytorch_steps() {
        let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0 };
        let mut p = vec![1.0f32];
        let mut v = vec![0.0f32];
        sgd.step(&mut p, &mut v, &[0.5]);
        assert_eq!(v[0], 0.5);
        assert!((p[0] - 0.95).abs() < 1e-7);
        sgd.step(&mut p, &mut v, &[0.5]);
        assert!((v[0] - 0.95).abs() < 1e-7);
        assert!((p[0] - 0.855).abs() < 1e-6);
        let wd = Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.5 };
        let mut p = vec![2.0f32];
        let mut v = vec![0.0f32];
        wd.step(&mut p, &mut v, &[0.0]);
        assert!((p[0] - 1.9).abs() < 1e-6);
    }

    #[test]
    fn a_velocity_that_turns_subnormal_is_stored_as_zero_and_moves_nothing() {
        let sgd = Sgd { lr: 1e-3, momentum: 0.9, weight_decay: 0.0 };
        let p0 = [0.05f32, -0.3, 1e-3, 0.2];
        // Decays below the smallest normal value, stays normal, turns subnormal from the gradient alone, exact.
        let v0 = [1.1e-38f32, 1.0, 0.0, 3e-38];
        let g = [0.0f32, 0.0, 1e-39, 0.0];
        let (mut p, mut v) = (p0, v0);
        // Long enough for the update to be split into vectors and a remainder.
        let (mut pl, mut vl) = (p0.repeat(9), v0.repeat(9));
        sgd.step(&mut p, &mut v, &g);
        sgd.step(&mut pl, &mut vl, &g.repeat(9));
        assert_eq!(v, [0.0, 0.9, 0.0, 0.9f32 * 3e-38]);
        assert!(v[3].is_normal());
        assert_eq!(p[0], p0[0]);
        assert_eq!(p[1], p0[1] - 1e-3 * 0.9);
        assert_eq!(p[2], p0[2]);
        assert_eq!((&pl[..4], &vl[..4]), (&p[..], &v[..]));
        assert_eq!((&pl[32..], &vl[32..]), (&p[..], &v[..]));
    }
}
