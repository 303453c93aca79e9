//! 2-D convolution, stride 1, square kernel, zero padding: im2col followed by one GEMM per image.
//!
//! `out[n, o, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * in[n, c, y + i - pad, x + j - pad]`
//!
//! # Shapes
//! - input  `(N, C, H, W)`, weight `(OC, C, K, K)`, bias `(OC)`, output `(N, OC, OH, OW)` with
//!   `OH = H + 2 pad - K + 1`.
//! - column buffer `(N, C*K*K, OH*OW)`: kept from forward for the weight gradient.

use super::gemm::{MatRef, sgemm};

/// The static description of a convolution layer (square images and kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dDims {
    pub in_channels: usize,
    pub out_channels: usize,
    pub in_size: usize,
    pub kernel: usize,
    pub padding: usize,
}

impl Conv2dDims {
    pub const fn out_size(&self) -> usize {
        self.in_size + 2 * self.padding - self.kernel + 1
    }
    /// Rows of the column matrix: one per weight of a filter.
    pub const fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }
    pub const fn in_len(&self) -> usize {
        self.in_channels * self.in_size * self.in_size
    }
    pub const fn out_len(&self) -> usize {
        self.out_channels * self.out_size() * self.out_size()
    }
    pub const fn col_len(&self) -> usize {
        self.patch_len() * self.out_size() * self.out_size()
    }
    pub const fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }
    /// Multiply-adds of one image's forward pass, times two.
    pub const fn forward_flops(&self) -> usize {
        2 * self.out_len() * self.patch_len()
    }
}

/// Unfolds one image `(C, H, W)` into `col (C*K*K, OH*OW)`; padding reads as zero.
pub fn im2col(d: &Conv2dDims, input: &[f32], col: &mut [f32]) {
    let (h, k, p, oh) = (d.in_size, d.kernel, d.padding, d.out_size());
    debug_assert_eq!(input.len(), d.in_len());
    debug_assert_eq!(col.len(), d.col_len());
    let mut rows = col.chunks_exact_mut(oh * oh);
    for c in 0..d.in_channels {
        let plane = &input[c * h * h..(c + 1) * h * h];
        for i in 0..k {
            for j in 0..k {
                let row = rows.next().expect("col has C*K*K rows");
                for y in 0..oh {
                    let dst = &mut row[y * oh..(y + 1) * oh];
                    let sy = y + i;
                    if sy < p || sy - p >= h {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[(sy - p) * h..(sy - p + 1) * h];
                    // Output columns x read input column x + j - p; those outside [0, h) are padding.
                    let x_lo = p.saturating_sub(j);
                    let x_hi = (h + p - j).min(oh);
                    dst[..x_lo].fill(0.0);
                    dst[x_lo..x_hi].copy_from_slice(&src[x_lo + j - p..x_hi + j - p]);
                    dst[x_hi..].fill(0.0);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `col (C*K*K, OH*OW)` back into `input_grad (C, H, W)`.
pub fn col2im_add(d: &Conv2dDims, col: &[f32], input_grad: &mut [f32]) {
    let (h, k, p, oh) = (d.in_size, d.kernel, d.padding, d.out_size());
    let mut rows = col.chunks_exact(oh * oh);
    for c in 0..d.in_channels {
        let plane = &mut input_grad[c * h * h..(c + 1) * h * h];
        for i in 0..k {
            for j in 0..k {
                let row = rows.next().expect("col has C*K*K rows");
                for y in 0..oh {
                    let sy = y + i;
                    if sy < p || sy - p >= h {
                        continue;
                    }
                    let x_lo = p.saturating_sub(j);
                    let x_hi = (h + p - j).min(oh);
                    let dst = &mut plane[(sy - p) * h + x_lo + j - p..(sy - p) * h + x_hi + j - p];
                    for (g, s) in dst.iter_mut().zip(&row[y * oh + x_lo..y * oh + x_hi]) {
                        *g += s;
                    }
                }
            }
        }
    }
}

/// Forward over `n` images. `input (n, C, H, W)`, `col (n, C*K*K, OH*OW)`, `out (n, OC, OH, OW)`.
pub fn conv2d_forward(
    d: &Conv2dDims,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    col: &mut [f32],
    out: &mut [f32],
) {
    let ohw = d.out_size() * d.out_size();
    let w = MatRef::new(weight, d.out_channels, d.patch_len());
    for b in 0..n {
        let col_b = &mut col[b * d.col_len()..(b + 1) * d.col_len()];
        im2col(d, &input[b * d.in_len()..(b + 1) * d.in_len()], col_b);
        let out_b = &mut out[b * d.out_len()..(b + 1) * d.out_len()];
        for (o, plane) in out_b.chunks_exact_mut(ohw).enumerate() {
            plane.fill(bias[o]);
        }
        sgemm(1.0, w, MatRef::new(col_b, d.patch_len(), ohw), 1.0, out_b);
    }
}

/// Backward over `n` images; gradients are *added* to `weight_grad (OC, C, K, K)` and `bias_grad (OC)`.
/// `input_grad (n, C, H, W)` is overwritten when given; the first layer passes `None` and skips that work.
/// `col_grad (C*K*K, OH*OW)` is scratch for one image.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    d: &Conv2dDims,
    n: usize,
    col: &[f32],
    weight: &[f32],
    out_grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
    mut input_grad: Option<(&mut [f32], &mut [f32])>,
) {
    let ohw = d.out_size() * d.out_size();
    for b in 0..n {
        let g = &out_grad[b * d.out_len()..(b + 1) * d.out_len()];
        for (o, plane) in g.chunks_exact(ohw).enumerate() {
            bias_grad[o] += plane.iter().sum::<f32>();
        }
        let g_mat = MatRef::new(g, d.out_channels, ohw);
        let col_b = MatRef::new(
            &col[b * d.col_len()..(b + 1) * d.col_len()],
            d.patch_len(),
            ohw,
        );
        // dW (OC, CKK) += dOut (OC, OHW) @ col^T (OHW, CKK)
        sgemm(1.0, g_mat, col_b.t(), 1.0, weight_grad);
        if let Some((input_grad, col_grad)) = input_grad.as_mut() {
            // dcol (CKK, OHW) = W^T (CKK, OC) @ dOut (OC, OHW), then fold back into the image.
            let w = MatRef::new(weight, d.out_channels, d.patch_len());
            sgemm(1.0, w.t(), g_mat, 0.0, col_grad);
            let ig = &mut input_grad[b * d.in_len()..(b + 1) * d.in_len()];
            ig.fill(0.0);
            col2im_add(d, col_grad, ig);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition, one output at a time.
    fn conv_reference(d: &Conv2dDims, input: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        let (h, k, p, oh) = (
            d.in_size as isize,
            d.kernel,
            d.padding as isize,
            d.out_size(),
        );
        let mut out = vec![0.0; d.out_len()];
        for o in 0..d.out_channels {
            for y in 0..oh {
                for x in 0..oh {
                    let mut acc = bias[o];
                    for c in 0..d.in_channels {
                        for i in 0..k {
                            for j in 0..k {
                                let sy = y as isize + i as isize - p;
                                let sx = x as isize + j as isize - p;
                                if sy >= 0 && sy < h && sx >= 0 && sx < h {
                                    acc += weight[((o * d.in_channels + c) * k + i) * k + j]
                                        * input[(c * h as usize + sy as usize) * h as usize
                                            + sx as usize];
                                }
                            }
                        }
                    }
                    out[(o * oh + y) * oh + x] = acc;
                }
            }
        }
        out
    }

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    #[test]
    fn forward_matches_direct_convolution_with_and_without_padding() {
        let mut rng = Rng::new(11);
        for d in [
            Conv2dDims {
                in_channels: 1,
                out_channels: 6,
                in_size: 28,
                kernel: 5,
                padding: 2,
            },
            Conv2dDims {
                in_channels: 6,
                out_channels: 16,
                in_size: 14,
                kernel: 5,
                padding: 0,
            },
            Conv2dDims {
                in_channels: 2,
                out_channels: 3,
                in_size: 4,
                kernel: 3,
                padding: 1,
            },
        ] {
            let input = random(&mut rng, 2 * d.in_len());
            let weight = random(&mut rng, d.weight_len());
            let bias = random(&mut rng, d.out_channels);
            let mut col = vec![f32::NAN; 2 * d.col_len()];
            let mut out = vec![f32::NAN; 2 * d.out_len()];
            conv2d_forward(&d, 2, &input, &weight, &bias, &mut col, &mut out);
            for b in 0..2 {
                let want = conv_reference(
                    &d,
                    &input[b * d.in_len()..(b + 1) * d.in_len()],
                    &weight,
                    &bias,
                );
                for (x, y) in out[b * d.out_len()..(b + 1) * d.out_len()]
                    .iter()
                    .zip(&want)
                {
                    assert!((x - y).abs() < 1e-4, "{x} vs {y}");
                }
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for random x and c.
        let d = Conv2dDims {
            in_channels: 2,
            out_channels: 1,
            in_size: 7,
            kernel: 3,
            padding: 2,
        };
        let mut rng = Rng::new(5);
        let x = random(&mut rng, d.in_len());
        let c = random(&mut rng, d.col_len());
        let mut col = vec![0.0; d.col_len()];
        im2col(&d, &x, &mut col);
        let mut back = vec![0.0; d.in_len()];
        col2im_add(&d, &c, &mut back);
        let lhs: f64 = col
            .iter()
            .zip(&c)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
