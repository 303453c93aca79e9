//! Direct convolution for the first layer (1 input channel, 5x5 kernel, padding 2, 28x28 images): each output
//! row is 25 shifted rows of the padded image times one weight each, accumulated in a 32-wide register block.
//! Faster than im2col + GEMM here because the GEMM would have only 6 rows and the column matrix would be 25
//! times the size of the input. [`super::conv`] is the general implementation it is tested against.
//!
//! # Shapes
//! input `(n, 1, 28, 28)`, padded input `(n, 32, 36)` (kept for backward), weight `(6, 1, 5, 5)`,
//! output `(6, n, 28, 28)` (channel-major, like every conv activation), scratch `(n, 28, 32)`.

use super::conv::Conv2dDims;
use super::simd::{dispatch, mul_add};

const S: usize = 28;
const K: usize = 5;
const P: usize = 2;
/// Output row as computed: 28 values rounded up to whole 8-lane vectors.
const W: usize = 32;
/// Padded image: rows of `W + K - 1` so every shifted 32-wide read stays inside the row.
const PW: usize = W + K - 1;
const PH: usize = S + 2 * P;
/// Values of one padded image.
pub const PADDED_LEN: usize = PH * PW;
/// Values of the backward scratch per image.
pub const SCRATCH_LEN: usize = S * W;

/// Whether these are the dimensions this kernel is written for.
pub fn supports(d: &Conv2dDims) -> bool {
    d.in_channels == 1 && d.in_size == S && d.kernel == K && d.padding == P
}

/// Copies `n` images `(n, 28, 28)` into the zero-padded layout `(n, 32, 36)`.
pub fn pad_images(n: usize, input: &[f32], padded: &mut [f32]) {
    for (img, pad) in input[..n * S * S].chunks_exact(S * S).zip(padded.chunks_exact_mut(PADDED_LEN)) {
        pad.fill(0.0);
        for (y, row) in img.chunks_exact(S).enumerate() {
            pad[(y + P) * PW + P..(y + P) * PW + P + S].copy_from_slice(row);
        }
    }
}

#[inline(always)]
fn forward_relu_body<const FMA: bool>(n: usize, padded: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) {
    let out_channels = bias.len();
    for b in 0..n {
        let img: &[f32; PADDED_LEN] = padded[b * PADDED_LEN..(b + 1) * PADDED_LEN].try_into().unwrap();
        for o in 0..out_channels {
            let w: &[f32; K * K] = weight[o * K * K..(o + 1) * K * K].try_into().unwrap();
            let plane = &mut out[(o * n + b) * S * S..(o * n + b + 1) * S * S];
            for (y, out_row) in plane.chunks_exact_mut(S).enumerate() {
                let mut acc = [bias[o]; W];
                for i in 0..K {
                    let row: &[f32; PW] = img[(y + i) * PW..(y + i + 1) * PW].try_into().unwrap();
                    for j in 0..K {
                        let wv = w[i * K + j];
                        let src: &[f32; W] = row[j..j + W].try_into().unwrap();
                        for x in 0..W {
                            acc[x] = mul_add::<FMA>(wv, src[x], acc[x]);
                        }
                    }
                }
                for (o, a) in out_row.iter_mut().zip(&acc) {
                    *o = a.max(0.0);
                }
            }
        }
    }
}

dispatch! {
    /// Convolution then ReLU: `padded (n, 32, 36)` from [`pad_images`] -> `out (6, n, 28, 28)`.
    pub fn conv_relu_forward(n: usize, padded: &[f32], weight: &[f32], bias: &[f32], out: &mut [f32]) => forward_relu_body
}

#[inline(always)]
fn backward_body<const FMA: bool>(
    n: usize,
    padded: &[f32],
    out_grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
    scratch: &mut [f32],
) {
    let out_channels = bias_grad.len();
    for o in 0..out_channels {
        // This channel's gradient rows, widened to 32 with zeros so each row is whole vectors.
        let g = &out_grad[o * n * S * S..(o + 1) * n * S * S];
        let rows = &mut scratch[..n * S * W];
        let mut bias_sum = 0.0f32;
        for (dst, src) in rows.chunks_exact_mut(W).zip(g.chunks_exact(S)) {
            dst[..S].copy_from_slice(src);
            dst[S..].fill(0.0);
            bias_sum += src.iter().sum::<f32>();
        }
        bias_grad[o] += bias_sum;
        for i in 0..K {
            for j in 0..K {
                let mut acc = [0.0f32; W];
                for b in 0..n {
                    let img: &[f32; PADDED_LEN] = padded[b * PADDED_LEN..(b + 1) * PADDED_LEN].try_into().unwrap();
                    for y in 0..S {
                        let src: &[f32; W] = img[(y + i) * PW + j..(y + i) * PW + j + W].try_into().unwrap();
                        let gr: &[f32; W] = rows[(b * S + y) * W..(b * S + y + 1) * W].try_into().unwrap();
                        for x in 0..W {
                            acc[x] = mul_add::<FMA>(gr[x], src[x], acc[x]);
                        }
                    }
                }
                weight_grad[o * K * K + i * K + j] += acc.iter().sum::<f32>();
            }
        }
    }
}

dispatch! {
    /// Adds the weight and bias gradients of `n` images: `out_grad (6, n, 28, 28)` (after the ReLU mask),
    /// `padded (n, 32, 36)` from forward, `scratch (n, 28, 32)`.
    pub fn conv_backward(
        n: usize,
        padded: &[f32],
        out_grad: &[f32],
        weight_grad: &mut [f32],
        bias_grad: &mut [f32],
        scratch: &mut [f32],
    ) => backward_body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::conv::{conv2d_backward, conv2d_forward};
    use crate::nn::model::CONV1;
    use crate::rng::Rng;

    fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.uniform(-1.0, 1.0)).collect()
    }

    fn assert_close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn matches_im2col_gemm_forward_and_backward() {
        assert!(supports(&CONV1));
        let d = CONV1;
        let n = 5;
        let mut rng = Rng::new(9);
        let input = random(&mut rng, n * d.in_len());
        let weight = random(&mut rng, d.weight_len());
        let bias = random(&mut rng, d.out_channels);
        let out_grad = random(&mut rng, n * d.out_len());

        let mut col = vec![0.0; n * d.col_len()];
        let mut want = vec![0.0; n * d.out_len()];
        conv2d_forward(&d, n, &input, &weight, &bias, &mut col, &mut want);
        crate::nn::activation::relu_forward(&mut want);
        let mut padded = vec![f32::NAN; n * PADDED_LEN];
        pad_images(n, &input, &mut padded);
        let mut got = vec![f32::NAN; n * d.out_len()];
        conv_relu_forward(n, &padded, &weight, &bias, &mut got);
        assert_close(&got, &want);

        let (mut gw_want, mut gb_want) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
        conv2d_backward(&d, n, &col, &weight, &out_grad, &mut gw_want, &mut gb_want, None);
        let (mut gw, mut gb) = (vec![0.5; d.weight_len()], vec![0.5; 6]);
        let mut scratch = vec![f32::NAN; n * SCRATCH_LEN];
        conv_backward(n, &padded, &out_grad, &mut gw, &mut gb, &mut scratch);
        assert_close(&gw, &gw_want);
        assert_close(&gb, &gb_want);
    }
}
