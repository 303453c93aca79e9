//! SGD with momentum and weight decay, with PyTorch's semantics:
//! `g = grad + wd * p;  v = momentum * v + g;  p -= lr * v`.
//! (PyTorch starts the buffer as `v = g` on the first step, which is the same as `v = momentum * 0 + g`.)

use serde::{Deserialize, Serialize};

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
        for ((p, v), &g) in params.iter_mut().zip(velocity.iter_mut()).zip(grads) {
            let mut g = g;
            if self.weight_decay != 0.0 {
                g += self.weight_decay * *p;
            }
            *v = self.momentum * *v + g;
            *p -= self.lr * *v;
        }
    }
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
