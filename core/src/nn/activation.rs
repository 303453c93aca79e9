//! Element-wise activations. Backward passes read the forward *output*, as PyTorch does.

use crate::math;
use crate::simd::relu_mask;

/// In place: `x = max(x, 0)`.
pub fn relu_forward(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// `grad *= (out > 0)`, in place.
pub fn relu_backward(out: &[f32], grad: &mut [f32]) {
    for (g, &o) in grad.iter_mut().zip(out) {
        *g = relu_mask(o, *g);
    }
}

/// `out = 1 / (1 + exp(-x))`, with the crate's own `exp` (see [`crate::math`]).
pub fn sigmoid_forward(x: &[f32], out: &mut [f32]) {
    let out = &mut out[..x.len()];
    for (o, v) in out.iter_mut().zip(x) {
        *o = -v;
    }
    math::exp_in_place(out);
    for o in out {
        *o = 1.0 / (1.0 + *o);
    }
}

/// `grad *= out * (1 - out)`, in place.
pub fn sigmoid_backward(out: &[f32], grad: &mut [f32]) {
    for (g, o) in grad.iter_mut().zip(out) {
        *g *= (1.0 - o) * o;
    }
}
