//! Direct convolution for the second layer (6 -> 16 channels, 5x5 kernel, no padding, 14x14 -> 10x10), with
//! no column matrix. The 16 output channels of one pixel are exactly one AVX-512 vector, so the layer keeps its
//! output pixel-major and each kernel is a chain of vector FMAs whose other operand is one broadcast value:
//! - forward: a row of 10 output pixels in 10 accumulators; per tap, one weight vector times 10 input values;
//! - weight gradient: per input channel, the 25 taps in 25 accumulators; per output pixel, its gradient vector
//!   times 25 input values;
//! - input gradient: per input row of one channel, its 14 values as 14 vectors of per-output-channel partial
//!   sums, summed across lanes at the end (the portable path vectorises over the columns of an input row
//!   instead, reading the gradient as padded rows).
//!
//! On a CPU with AVX-512 the forward pass and the weight gradient run as Winograd convolutions instead
//! ([`super::conv2_winograd`], which these kernels are also the reference for); the input gradient runs here.
//!
//! With AVX2 a pixel's channels are two 8-lane vectors and there are 16 registers instead of 32, so the
//! blocks are smaller (see `mod avx2`); the portable code, for CPUs with neither, is the plain-Rust reference.
//!
//! Against im2col + GEMM ([`super::conv`], which it is tested against) this never writes or reads the 150 x 100
//! column matrix per image, which cost as much as the products themselves.
//!
//! # Shapes
//! input `(n, 6, 14, 14)` (image by image, as pooling writes it), weight `(16, 6, 5, 5)` (PyTorch's), packed
//! weight `(150, 16)`, output `(n, 10, 10, 16)` (pixel-major), output gradient pixel-major `(n, 10, 10, 16)`
//! (and, on the portable path, as padded rows `(n, 16, 10, 20)`), input gradient `(n, 6, 14, 14)`.

use crate::simd::{BASELINE_FMA, dispatch, mul_add, relu_mask, select};

const C: usize = 6;
const OC: usize = 16;
const H: usize = 14;
const K: usize = 5;
const OS: usize = H - K + 1;
/// Weights of one filter: `(c, i, j)`.
const TAPS: usize = C * K * K;
/// Values of one image's input plane.
const PLANE: usize = H * H;
/// A padded gradient row: `K - 1` zeros, the 10 values, zeros up to 20, so that a 16-wide read starting at any
/// of the first `K` positions stays inside the row and reads zeros wherever it is past an edge.
const ROW: usize = 20;
const ROW_PAD: usize = K - 1;

/// Values of the packed weight.
pub const PACKED_WEIGHT_LEN: usize = TAPS * OC;
/// Values of one image's output (and pixel-major output gradient).
pub const OUT_LEN: usize = OS * OS * OC;
/// Values of one image's padded gradient rows.
pub const GRAD_ROWS_LEN: usize = OC * OS * ROW;

/// Whether these are the dimensions this kernel is written for.
#[cfg(test)]
pub fn supports(d: &super::Conv2dDims) -> bool {
    d.in_channels == C && d.out_channels == OC && d.in_size == H && d.kernel == K && d.padding == 0
}

/// `weight (16, 150)` -> `packed (150, 16)`: each tap's 16 output channels side by side.
pub fn pack_weight(weight: &[f32], packed: &mut [f32]) {
    for (o, filter) in weight[..OC * TAPS].chunks_exact(TAPS).enumerate() {
        for (t, &w) in filter.iter().enumerate() {
            packed[t * OC + o] = w;
        }
    }
}

/// Copies the pixel-major output gradient `(n, 10, 10, 16)` into padded rows `(n, 16, 10, 20)`. Only the
/// values are written: the padding of `rows` must be zero (it stays so, as nothing else writes there).
pub fn pad_grad_rows(n: usize, grad: &[f32], rows: &mut [f32]) {
    for (img, dst) in grad[..n * OUT_LEN].chunks_exact(OUT_LEN).zip(rows.chunks_exact_mut(GRAD_ROWS_LEN)) {
        for (p, px) in img.chunks_exact(OC).enumerate() {
            let (y, x) = (p / OS, p % OS);
            for (o, &g) in px.iter().enumerate() {
                dst[(o * OS + y) * ROW + ROW_PAD + x] = g;
            }
        }
    }
}

/// Internal invariant: the workspace sizes every buffer from the same constants. The kernels index with
/// pointers after this one check.
#[inline(always)]
fn output_grad_body<const FMA: bool>(n: usize, pooled_grad: &[f32], out_grad: &mut [f32]) {
    const POOLED: usize = OS / 2;
    for b in 0..n {
        let g = &pooled_grad[b * OC * POOLED * POOLED..(b + 1) * OC * POOLED * POOLED];
        // A quarter of each pooled pixel's gradient, its 16 channels side by side.
        let mut quarter = [[0.0f32; OC]; POOLED * POOLED];
        for (o, g_o) in g.chunks_exact(POOLED * POOLED).enumerate() {
            for (q, v) in quarter.iter_mut().zip(g_o) {
                q[o] = v / 4.0;
            }
        }
        let dst = &mut out_grad[b * OUT_LEN..(b + 1) * OUT_LEN];
        for y in 0..OS {
            for x in 0..OS {
                let p = (y * OS + x) * OC;
                let q = &quarter[(y / 2) * POOLED + x / 2];
                let d: &mut [f32; OC] = (&mut dst[p..p + OC]).try_into().unwrap();
                for o in 0..OC {
                    d[o] = relu_mask(d[o], q[o]);
                }
            }
        }
    }
}

dispatch! {
    /// Backward of ReLU, 2x2 average pooling and flattening: from `pooled_grad (n, 16 * 5 * 5)` (flattened, as
    /// `nn.Flatten` orders it) into `out_grad (n, 10, 10, 16)`, which holds the layer's ReLU output on entry and
    /// its gradient on return. The same values as `pool::avgpool2_pixel_major_relu_backward`.
    pub fn output_grad_from_pooled(n: usize, pooled_grad: &[f32], out_grad: &mut [f32]) => output_grad_body
}

fn check(fits: bool) {
    assert!(fits, "conv2: buffer too small");
}

#[inline(always)]
fn forward_body<const FMA: bool>(n: usize, input: &[f32], packed: &[f32], bias: &[f32], out: &mut [f32]) {
    // Five pixels at a time: ten accumulators of 16 values.
    const XB: usize = 5;
    let bias: &[f32; OC] = bias[..OC].try_into().unwrap();
    for b in 0..n {
        for y in 0..OS {
            for x0 in (0..OS).step_by(XB) {
                let mut acc = [*bias; XB];
                for c in 0..C {
                    let plane = &input[(b * C + c) * PLANE..(b * C + c + 1) * PLANE];
                    for i in 0..K {
                        let row: &[f32; H] = plane[(y + i) * H..(y + i + 1) * H].try_into().unwrap();
                        for j in 0..K {
                            let t = (c * K + i) * K + j;
                            let w: &[f32; OC] = packed[t * OC..(t + 1) * OC].try_into().unwrap();
                            for (x, acc_x) in acc.iter_mut().enumerate() {
                                let v = row[x0 + x + j];
                                for o in 0..OC {
                                    acc_x[o] = mul_add::<FMA>(v, w[o], acc_x[o]);
                                }
                            }
                        }
                    }
                }
                for (x, acc_x) in acc.iter().enumerate() {
                    let dst = &mut out[((b * OS + y) * OS + x0 + x) * OC..][..OC];
                    for o in 0..OC {
                        dst[o] = acc_x[o].max(0.0);
                    }
                }
            }
        }
    }
}

/// Convolution then ReLU: `input (n, 6, 14, 14)`, `packed` from [`pack_weight`] -> `out (n, 10, 10, 16)`.
pub fn conv_relu_forward(n: usize, input: &[f32], packed: &[f32], bias: &[f32], out: &mut [f32]) {
    check(
        input.len() >= C * n * PLANE
            && out.len() >= n * OUT_LEN
            && packed.len() >= PACKED_WEIGHT_LEN
            && bias.len() >= OC,
    );
    // The SIMD kernels index with pointers: `check` proved every buffer large enough.
    select! {
        avx512 => avx512::forward(n, input, packed, bias, out),
        avx2 => avx2::forward(n, input, packed, bias, out),
        simd128 => simd128::forward(n, input, packed, bias, out),
        portable => forward_body::<BASELINE_FMA>(n, input, packed, bias, out),
    }
}

#[inline(always)]
fn weight_grad_body<const FMA: bool>(
    n: usize,
    input: &[f32],
    grad: &[f32],
    weight_grad: &mut [f32],
    bias_grad: &mut [f32],
) {
    let mut bias_sum = [0.0f32; OC];
    for px in grad[..n * OUT_LEN].chunks_exact(OC) {
        for o in 0..OC {
            bias_sum[o] += px[o];
        }
    }
    for o in 0..OC {
        bias_grad[o] += bias_sum[o];
    }
    // One kernel row (five taps) of one input channel at a time.
    for c in 0..C {
        for i in 0..K {
            let mut acc = [[0.0f32; OC]; K];
            for b in 0..n {
                let plane = &input[(b * C + c) * PLANE..(b * C + c + 1) * PLANE];
                for y in 0..OS {
                    let row: &[f32; H] = plane[(y + i) * H..(y + i + 1) * H].try_into().unwrap();
                    for x in 0..OS {
                        let g: &[f32; OC] = grad[((b * OS + y) * OS + x) * OC..][..OC].try_into().unwrap();
                        for (j, acc_j) in acc.iter_mut().enumerate() {
                            let v = row[x + j];
                            for o in 0..OC {
                                acc_j[o] = mul_add::<FMA>(v, g[o], acc_j[o]);
                            }
                        }
                    }
                }
            }
            for (j, acc_j) in acc.iter().enumerate() {
                for o in 0..OC {
                    weight_grad[o * TAPS + (c * K + i) * K + j] += acc_j[o];
                }
            }
        }
    }
}

/// Adds the weight and bias gradients of `n` images: `input (n, 6, 14, 14)` as in forward, `grad (n, 10, 10, 16)`
/// the output gradient after the ReLU mask, `weight_grad (16, 6, 5, 5)`.
pub fn weight_grad(n: usize, input: &[f32], grad: &[f32], weight_grad: &mut [f32], bias_grad: &mut [f32]) {
    check(
        input.len() >= C * n * PLANE
            && grad.len() >= n * OUT_LEN
            && weight_grad.len() >= OC * TAPS
            && bias_grad.len() >= OC,
    );
    // The SIMD kernels index with pointers: `check` proved every buffer large enough.
    select! {
        avx512 => avx512::weight_grad(n, input, grad, weight_grad, bias_grad),
        avx2 => avx2::weight_grad(n, input, grad, weight_grad, bias_grad),
        simd128 => simd128::weight_grad(n, input, grad, weight_grad, bias_grad),
        portable => weight_grad_body::<BASELINE_FMA>(n, input, grad, weight_grad, bias_grad),
    }
}

#[inline(always)]
fn input_grad_body<const FMA: bool>(n: usize, rows: &[f32], packed: &[f32], input_grad: &mut [f32]) {
    input_grad[..C * n * PLANE].fill(0.0);
    const L: usize = 16;
    for b in 0..n {
        for y in 0..OS {
            // Gradient row y reaches input rows y..y+5; one input row at a time on the portable path.
            for i in 0..K {
                let mut acc = [[0.0f32; L]; C];
                for o in 0..OC {
                    let row: &[f32; ROW] = rows[((b * OC + o) * OS + y) * ROW..][..ROW].try_into().unwrap();
                    for j in 0..K {
                        let src: &[f32; L] = row[ROW_PAD - j..ROW_PAD - j + L].try_into().unwrap();
                        for (c, acc_c) in acc.iter_mut().enumerate() {
                            let w = packed[((c * K + i) * K + j) * OC + o];
                            for l in 0..L {
                                acc_c[l] = mul_add::<FMA>(w, src[l], acc_c[l]);
                            }
                        }
                    }
                }
                for (c, acc_c) in acc.iter().enumerate() {
                    let dst = &mut input_grad[((b * C + c) * H + y + i) * H..][..H];
                    for x in 0..H {
                        dst[x] += acc_c[x];
                    }
                }
            }
        }
    }
}

/// Overwrites `input_grad (n, 6, 14, 14)` with the gradient of the input, from the pixel-major output gradient
/// `grad (n, 10, 10, 16)` and the packed weight `(150, 16)` (see [`pack_weight`]). `rows (n, 16, 10, 20)` is
/// scratch for the portable path, which reads the gradient as padded rows: its padding must be zero, as for
/// [`pad_grad_rows`].
pub fn input_grad(n: usize, grad: &[f32], rows: &mut [f32], packed: &[f32], input_grad: &mut [f32]) {
    check(
        grad.len() >= n * OUT_LEN
            && rows.len() >= n * GRAD_ROWS_LEN
            && packed.len() >= PACKED_WEIGHT_LEN
            && input_grad.len() >= C * n * PLANE,
    );
    // The SIMD kernels index with pointers: `check` proved every buffer large enough.
    select! {
        avx512 => avx512::input_grad(n, grad, packed, input_grad),
        avx2 => avx2::input_grad(n, grad, packed, input_grad),
        simd128 => {
            simd128::pad_grad_rows(n, grad, rows);
            simd128::input_grad(n, rows, packed, input_grad)
        },
        portable => {
            pad_grad_rows(n, grad, rows);
            input_grad_body::<BASELINE_FMA>(n, rows, packed, input_grad)
        },
    }
}

/// The three kernels with AVX-512 intrinsics: one 16-lane vector per pixel's channels (or per input row).
#[cfg(target_arch = "x86_64")]
mod avx512;

/// The three kernels with AVX2 intrinsics: a pixel's 16 channels are two 8-lane vectors, and with 16 registers
/// the blocks are smaller than on AVX-512 (five pixels in forward, one kernel row in the weight gradient, seven
/// columns of an input row in the input gradient).
#[cfg(target_arch = "x86_64")]
mod avx2;

/// The three kernels with WebAssembly's SIMD128, with the portable ones' bits.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

#[cfg(test)]
mod tests;
