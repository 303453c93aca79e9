//! Fully connected layer (`nn.Linear`): `out = in @ weight^T + bias`.
//!
//! # Shapes
//! input `(N, I)`, weight `(O, I)` (PyTorch's layout), bias `(O)`, output `(N, O)`.

use super::gemm::{MatRef, sgemm};

/// The static description of a linear layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearDims {
    pub in_features: usize,
    pub out_features: usize,
}

impl LinearDims {
    pub const fn weight_len(&self) -> usize {
        self.in_features * self.out_features
    }
    pub const fn forward_flops(&self) -> usize {
        2 * self.weight_len()
    }
}

/// `input (n, I)` -> `out (n, O)`.
pub fn linear_forward(d: &LinearDims, n: usize, input: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    for row in out[..n * d.out_features].chunks_exact_mut(d.out_features) {
        row.copy_from_slice(bias);
    }
    let x = MatRef::new(&input[..n * d.in_features], n, d.in_features);
    let w = MatRef::new(weight, d.out_features, d.in_features);
    sgemm(1.0, x, w.t(), 1.0, &mut out[..n * d.out_features]);
}

/// Adds to `weight_grad (O, I)` when given (training computes it elsewhere, fused with the update) and to
/// `bias_grad (O)`; overwrites `input_grad (n, I)` when given (`weight` is read only then).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    d: &LinearDims,
    n: usize,
    input: &[f32],
    weight: &[f32],
    out_grad: &[f32],
    weight_grad: Option<&mut [f32]>,
    bias_grad: &mut [f32],
    input_grad: Option<&mut [f32]>,
) {
    for row in out_grad[..n * d.out_features].chunks_exact(d.out_features) {
        for (b, v) in bias_grad.iter_mut().zip(row) {
            *b += v;
        }
    }
    if let Some(weight_grad) = weight_grad {
        linear_weight_grad_rows(d, n, input, out_grad, 0..d.out_features, 1.0, weight_grad);
    }
    if let Some(input_grad) = input_grad {
        linear_input_grad(d, n, out_grad, weight, input_grad);
    }
}

/// Overwrites `input_grad (n, I) = out_grad (n, O) @ weight (O, I)`.
pub fn linear_input_grad(d: &LinearDims, n: usize, out_grad: &[f32], weight: &[f32], input_grad: &mut [f32]) {
    let g = MatRef::new(&out_grad[..n * d.out_features], n, d.out_features);
    let w = MatRef::new(weight, d.out_features, d.in_features);
    sgemm(1.0, g, w, 0.0, &mut input_grad[..n * d.in_features]);
}

/// Rows `rows` of the weight gradient of `n` images, `dW[rows] (rows, I) = dOut^T[rows] (rows, n) @ in (n, I)`,
/// written into `out` as `out = dW[rows] + beta * out`. Summing images in batches this way, the gradient of a
/// row never needs to exist for the whole matrix at once.
pub fn linear_weight_grad_rows(
    d: &LinearDims,
    n: usize,
    input: &[f32],
    out_grad: &[f32],
    rows: std::ops::Range<usize>,
    beta: f32,
    out: &mut [f32],
) {
    assert!(rows.start < rows.end && rows.end <= d.out_features);
    let g_t = MatRef {
        data: &out_grad[rows.start..n * d.out_features],
        rows: rows.len(),
        cols: n,
        row_stride: 1,
        col_stride: d.out_features,
    };
    let x = MatRef::new(&input[..n * d.in_features], n, d.in_features);
    sgemm(1.0, g_t, x, beta, &mut out[..rows.len() * d.in_features]);
}
