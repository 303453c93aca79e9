//! 2-D convolution, stride 1, square kernel, zero padding: im2col, then one GEMM for all the images of a slice.
//!
//! `out[o, n, y, x] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * in[c, n, y + i - pad, x + j - pad]`
//!
//! Images are stored channel-major, `(C, N, H, W)`, so that the `N` images of a slice form one wide matrix and
//! each layer is a single large GEMM instead of `N` small ones. This is the general form the model's direct
//! kernels are tested against; they keep NCHW, each image's values side by side (`image_major` converts).
//!
//! # Shapes
//! - input `(C, N, H, W)`, weight `(OC, C, K, K)` (PyTorch's layout), bias `(OC)`, output `(OC, N, OH, OW)`
//!   with `OH = H + 2 pad - K + 1`.
//! - column matrix `(C*K*K, N*OH*OW)`: kept from forward for the weight gradient.

#[cfg(test)]
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
    /// Values of one image's input.
    pub const fn in_len(&self) -> usize {
        self.in_channels * self.in_size * self.in_size
    }
    /// Values of one image's output.
    pub const fn out_len(&self) -> usize {
        self.out_channels * self.out_size() * self.out_size()
    }
    /// Values of one image's share of the column matrix.
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

/// For kernel column `j`: the output columns `x_lo..x_hi` that read inside the image (the rest read padding).
#[cfg(test)]
fn valid_columns(d: &Conv2dDims, j: usize) -> (usize, usize) {
    let (h, p, oh) = (d.in_size, d.padding, d.out_size());
    (p.saturating_sub(j), (h + p - j).min(oh))
}

/// Unfolds `n` images `(C, n, H, W)` into `col (C*K*K, n*OH*OW)`; padding reads as zero.
#[cfg(test)]
pub fn im2col(d: &Conv2dDims, n: usize, input: &[f32], col: &mut [f32]) {
    // Rows are short (10 or 28 values); a copy of known length compiles to a few vector moves instead of a
    // call to memmove.
    match d.out_size() {
        10 => im2col_rows::<10>(d, n, input, col),
        28 => im2col_rows::<28>(d, n, input, col),
        _ => im2col_rows::<0>(d, n, input, col),
    }
}

/// [`im2col`] for output rows of `OW` values (`OW == 0`: any width).
#[cfg(test)]
fn im2col_rows<const OW: usize>(d: &Conv2dDims, n: usize, input: &[f32], col: &mut [f32]) {
    let (h, k, p, oh) = (d.in_size, d.kernel, d.padding, d.out_size());
    debug_assert!(OW == 0 || OW == oh);
    if OW != 0 && p == 0 {
        // No padding and a known width: each (row of col, image) is an OW x OW window of the plane, copied
        // with no per-row branching.
        let mut rows = col[..d.patch_len() * n * OW * OW].chunks_exact_mut(n * OW * OW);
        for c in 0..d.in_channels {
            for i in 0..k {
                for j in 0..k {
                    let row = rows.next().expect("col has C*K*K rows");
                    for (b, dst) in row.chunks_exact_mut(OW * OW).enumerate() {
                        let plane = &input[(c * n + b) * h * h..(c * n + b + 1) * h * h];
                        for (y, d) in dst.chunks_exact_mut(OW).enumerate() {
                            let start = (y + i) * h + j;
                            let d: &mut [f32; OW] = d.try_into().expect("OW wide");
                            d.copy_from_slice(&plane[start..start + OW]);
                        }
                    }
                }
            }
        }
        return;
    }
    let mut rows = col[..d.patch_len() * n * oh * oh].chunks_exact_mut(n * oh * oh);
    for c in 0..d.in_channels {
        for i in 0..k {
            for j in 0..k {
                let row = rows.next().expect("col has C*K*K rows");
                let (x_lo, x_hi) = valid_columns(d, j);
                for b in 0..n {
                    let plane = &input[(c * n + b) * h * h..(c * n + b + 1) * h * h];
                    for y in 0..oh {
                        let dst = &mut row[(b * oh + y) * oh..(b * oh + y + 1) * oh];
                        let sy = y + i;
                        if sy < p || sy - p >= h {
                            dst.fill(0.0);
                        } else if OW != 0 && x_lo == 0 && x_hi == OW {
                            let src = &plane[(sy - p) * h + j - p..(sy - p) * h + j - p + OW];
                            let dst: &mut [f32; OW] = dst.try_into().expect("OW wide");
                            dst.copy_from_slice(src);
                        } else {
                            let src = &plane[(sy - p) * h..(sy - p + 1) * h];
                            dst[..x_lo].fill(0.0);
                            dst[x_lo..x_hi].copy_from_slice(&src[x_lo + j - p..x_hi + j - p]);
                            dst[x_hi..].fill(0.0);
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `col (C*K*K, n*OH*OW)` back into `input_grad (C, n, H, W)`.
#[cfg(test)]
pub fn col2im_add(d: &Conv2dDims, n: usize, col: &[f32], input_grad: &mut [f32]) {
    match d.out_size() {
        10 => col2im_rows::<10>(d, n, col, input_grad),
        _ => col2im_rows::<0>(d, n, col, input_grad),
    }
}

#[cfg(test)]
fn col2im_rows<const OW: usize>(d: &Conv2dDims, n: usize, col: &[f32], input_grad: &mut [f32]) {
    let (h, k, p, oh) = (d.in_size, d.kernel, d.padding, d.out_size());
    if OW != 0 && p == 0 {
        let mut rows = col[..d.patch_len() * n * OW * OW].chunks_exact(n * OW * OW);
        for c in 0..d.in_channels {
            for i in 0..k {
                for j in 0..k {
                    let row = rows.next().expect("col has C*K*K rows");
                    for (b, src) in row.chunks_exact(OW * OW).enumerate() {
                        let plane = &mut input_grad[(c * n + b) * h * h..(c * n + b + 1) * h * h];
                        for (y, s) in src.chunks_exact(OW).enumerate() {
                            let start = (y + i) * h + j;
                            let dst: &mut [f32; OW] = (&mut plane[start..start + OW]).try_into().expect("OW");
                            for x in 0..OW {
                                dst[x] += s[x];
                            }
                        }
                    }
                }
            }
        }
        return;
    }
    let mut rows = col[..d.patch_len() * n * oh * oh].chunks_exact(n * oh * oh);
    for c in 0..d.in_channels {
        for i in 0..k {
            for j in 0..k {
                let row = rows.next().expect("col has C*K*K rows");
                let (x_lo, x_hi) = valid_columns(d, j);
                for b in 0..n {
                    let plane = &mut input_grad[(c * n + b) * h * h..(c * n + b + 1) * h * h];
                    for y in 0..oh {
                        let sy = y + i;
                        if sy < p || sy - p >= h {
                            continue;
                        }
                        if OW != 0 && x_lo == 0 && x_hi == OW {
                            let src: &[f32; OW] =
                                row[(b * oh + y) * oh..(b * oh + y) * oh + OW].try_into().expect("OW");
                            let start = (sy - p) * h + j - p;
                            let dst: &mut [f32; OW] = (&mut plane[start..start + OW]).try_into().expect("OW");
                            for x in 0..OW {
                                dst[x] += src[x];
                            }
                            continue;
                        }
                        let src = &row[(b * oh + y) * oh + x_lo..(b * oh + y) * oh + x_hi];
                        let dst = &mut plane[(sy - p) * h + x_lo + j - p..(sy - p) * h + x_hi + j - p];
                        for (g, s) in dst.iter_mut().zip(src) {
                            *g += s;
                        }
                    }
                }
            }
        }
    }
}

/// Forward over `n` images. `input (C, n, H, W)`, `col (C*K*K, n*OH*OW)`, `out (OC, n, OH, OW)`.
#[cfg(test)]
pub fn conv2d_forward(
    d: &Conv2dDims,
    n: usize,
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    col: &mut [f32],
    out: &mut [f32],
) {
    let cols = n * d.out_size() * d.out_size();
    im2col(d, n, input, col);
    let out = &mut out[..d.out_channels * cols];
    for (o, plane) in out.chunks_exact_mut(cols).enumerate() {
        plane.fill(bias[o]);
    }
    let w = MatRef::new(weight, d.out_channels, d.patch_len());
    sgemm(1.0, w, MatRef::new(&col[..d.patch_len() * cols], d.patch_len(), cols), 1.0, out);
}

/// Backward over `n` images; gradients are *added* to `weight_grad (OC, C, K, K)` and `bias_grad (OC)`.
/// `input_grad (C, n, H, W)` is overwritten when given, using `col_grad (C*K*K, n*OH*OW)` as scratch; the
/// first layer passes `None` and skips that work.
#[allow(clippy::too_many_arguments)]
#[cfg(test)]
pub fn conv2d_backward(
    d: &Conv2dDims,
    n: usize,
    col: &[f32],
    weight: &[f32],
    out_grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
    input_grad: Option<(&mut [f32], &mut [f32])>,
) {
    let cols = n * d.out_size() * d.out_size();
    let g = &out_grad[..d.out_channels * cols];
    for (o, plane) in g.chunks_exact(cols).enumerate() {
        bias_grad[o] += plane.iter().sum::<f32>();
    }
    let g = MatRef::new(g, d.out_channels, cols);
    let col = MatRef::new(&col[..d.patch_len() * cols], d.patch_len(), cols);
    // dW (OC, CKK) += dOut (OC, n*OHW) @ col^T (n*OHW, CKK)
    sgemm(1.0, g, col.t(), 1.0, weight_grad);
    if let Some((input_grad, col_grad)) = input_grad {
        // dcol (CKK, n*OHW) = W^T (CKK, OC) @ dOut (OC, n*OHW), then fold back into the images.
        let w = MatRef::new(weight, d.out_channels, d.patch_len());
        let col_grad = &mut col_grad[..d.patch_len() * cols];
        sgemm(1.0, w.t(), g, 0.0, col_grad);
        let ig = &mut input_grad[..n * d.in_len()];
        ig.fill(0.0);
        col2im_add(d, n, col_grad, ig);
    }
}

/// `x (C, n, P)`, images laid out as here, -> `(n, C, P)`, as the model's kernels lay them out.
#[cfg(test)]
pub fn image_major(x: &[f32], channels: usize, n: usize, plane: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; channels * n * plane];
    for c in 0..channels {
        for b in 0..n {
            out[(b * channels + c) * plane..][..plane].copy_from_slice(&x[(c * n + b) * plane..][..plane]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The definition, one output at a time.
    fn conv_reference(d: &Conv2dDims, input: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
        let (h, k, p, oh) = (d.in_size as isize, d.kernel, d.padding as isize, d.out_size());
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
                                        * input[(c * h as usize + sy as usize) * h as usize + sx as usize];
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

    /// NCHW images to `(C, N, H, W)`.
    fn to_channel_major(images: &[Vec<f32>], channels: usize) -> Vec<f32> {
        let plane = images[0].len() / channels;
        let mut out = Vec::new();
        for c in 0..channels {
            for image in images {
                out.extend_from_slice(&image[c * plane..(c + 1) * plane]);
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
            Conv2dDims { in_channels: 1, out_channels: 6, in_size: 28, kernel: 5, padding: 2 },
            Conv2dDims { in_channels: 6, out_channels: 16, in_size: 14, kernel: 5, padding: 0 },
            Conv2dDims { in_channels: 2, out_channels: 3, in_size: 4, kernel: 3, padding: 1 },
        ] {
            let n = 3;
            let images: Vec<Vec<f32>> = (0..n).map(|_| random(&mut rng, d.in_len())).collect();
            let weight = random(&mut rng, d.weight_len());
            let bias = random(&mut rng, d.out_channels);
            let input = to_channel_major(&images, d.in_channels);
            let mut col = vec![f32::NAN; n * d.col_len()];
            let mut out = vec![f32::NAN; n * d.out_len()];
            conv2d_forward(&d, n, &input, &weight, &bias, &mut col, &mut out);
            let ohw = d.out_size() * d.out_size();
            for (b, image) in images.iter().enumerate() {
                let want = conv_reference(&d, image, &weight, &bias);
                for o in 0..d.out_channels {
                    let got = &out[(o * n + b) * ohw..(o * n + b + 1) * ohw];
                    for (x, y) in got.iter().zip(&want[o * ohw..(o + 1) * ohw]) {
                        assert!((x - y).abs() < 1e-4, "{x} vs {y}");
                    }
                }
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for random x and c.
        let d = Conv2dDims { in_channels: 2, out_channels: 1, in_size: 7, kernel: 3, padding: 2 };
        let mut rng = Rng::new(5);
        let n = 2;
        let x = random(&mut rng, n * d.in_len());
        let c = random(&mut rng, n * d.col_len());
        let mut col = vec![0.0; n * d.col_len()];
        im2col(&d, n, &x, &mut col);
        let mut back = vec![0.0; n * d.in_len()];
        col2im_add(&d, n, &c, &mut back);
        let lhs: f64 = col.iter().zip(&c).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    }
}
