//! SGD with momentum and weight decay, with PyTorch's semantics:
//! `g = grad + wd * p;  v = momentum * v + g;  p -= lr * v`.
//! (PyTorch starts the buffer as `v = g` on the first step, which is the same as `v = momentum * 0 + g`.)

use serde::{Deserialize, Serialize};

use crate::nn::simd::dispatch;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd { lr: 1e-3, momentum: 0.9, weight_decay: 0.0 }
    }
}

impl Sgd {
    /// One update of `params` and `velocity` from `grads` (all the same length).
    pub fn step(&self, params: &mut [f32], velocity: &mut [f32], grads: &[f32]) {
        assert!(velocity.len() == params.len() && grads.len() == params.len());
        update(*self, params, velocity, grads)
    }
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
        *v = momentum * *v + g;
        *p -= lr * *v;
    }
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
    pub fn add_assign(sum: &mut [f32], x: &[f32]) => add_assign_body
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
}
