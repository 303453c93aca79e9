//! Average pooling, window 2, stride 2 (`nn.AvgPool2d(2, 2)`).
//!
//! `out[n, c, y, x] = (in[2y, 2x] + in[2y, 2x+1] + in[2y+1, 2x] + in[2y+1, 2x+1]) / 4`
//!
//! # Shapes
//! input `(N, C, H, H)` with `H` even, output `(N, C, H/2, H/2)`.

use crate::simd::{dispatch, relu_mask, select};

/// The static description of a pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2Dims {
    pub channels: usize,
    pub in_size: usize,
}

impl Pool2Dims {
    pub const fn out_size(&self) -> usize {
        self.in_size / 2
    }
    pub const fn in_len(&self) -> usize {
        self.channels * self.in_size * self.in_size
    }
    pub const fn out_len(&self) -> usize {
        self.channels * self.out_size() * self.out_size()
    }
}

/// Largest input row the SIMD forward kernels take.
const MAX_SIZE: usize = 32;

/// Input size of the layer the SIMD backward kernels are written for (the first pooling).
const BACKWARD_SIZE: usize = 28;

/// Fewest pooled pixels the SIMD flattening kernel takes: one whole block of 8.
const MIN_FLATTEN_PIXELS: usize = 8;

dispatch! {
    fn forward_portable(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) => forward_body
}

/// `input (n, C, H, H)` -> `out (n, C, H/2, H/2)`. Sums in PyTorch's order, then divides.
pub fn avgpool2_forward(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) {
    assert!(input.len() >= n * d.in_len() && out.len() >= n * d.out_len() && d.in_size.is_multiple_of(2));
    if d.in_size > MAX_SIZE {
        return forward_portable(d, n, input, out);
    }
    // The SIMD kernels index with pointers: the buffers were checked above, and a row fits them.
    select! {
        avx512 => avx512::forward(d, n, input, out),
        avx2 => avx2::forward(d, n, input, out),
        portable => forward_portable(d, n, input, out),
    }
}

#[inline(always)]
fn forward_body<const FMA: bool>(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) {
    let (h, oh) = (d.in_size, d.out_size());
    let planes = n * d.channels;
    for (plane, out_plane) in input[..planes * h * h].chunks_exact(h * h).zip(out.chunks_exact_mut(oh * oh)) {
        for (rows, out_row) in plane.chunks_exact(2 * h).zip(out_plane.chunks_exact_mut(oh)) {
            let (top, bottom) = rows.split_at(h);
            for ((o, t), b) in out_row.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
                *o = (t[0] + t[1] + b[0] + b[1]) / 4.0;
            }
        }
    }
}

dispatch! {
    #[cfg(test)]
    /// Backward of ReLU then pooling in one pass: `input_grad = (activation > 0) * out_grad / 4` spread over each
    /// 2x2 window. `activation` is the ReLU output that was pooled, same shape as `input_grad`.
    pub fn avgpool2_relu_backward(
        d: &Pool2Dims,
        n: usize,
        out_grad: &[f32],
        activation: &[f32],
        input_grad: &mut [f32],
    ) => relu_backward_body
}

#[cfg(test)]
#[inline(always)]
fn relu_backward_body<const FMA: bool>(
    d: &Pool2Dims,
    n: usize,
    out_grad: &[f32],
    activation: &[f32],
    input_grad: &mut [f32],
) {
    let (h, oh) = (d.in_size, d.out_size());
    let planes = n * d.channels;
    for ((plane, act), g_plane) in input_grad[..planes * h * h]
        .chunks_exact_mut(h * h)
        .zip(activation.chunks_exact(h * h))
        .zip(out_grad.chunks_exact(oh * oh))
    {
        for ((row, act_row), y) in plane.chunks_exact_mut(h).zip(act.chunks_exact(h)).zip(0..) {
            let g_row = &g_plane[(y / 2) * oh..(y / 2 + 1) * oh];
            for ((pair, act_pair), g) in row.chunks_exact_mut(2).zip(act_row.chunks_exact(2)).zip(g_row) {
                let q = g / 4.0;
                pair[0] = relu_mask(act_pair[0], q);
                pair[1] = relu_mask(act_pair[1], q);
            }
        }
    }
}

#[inline(always)]
fn relu_backward_in_place_body<const FMA: bool>(d: &Pool2Dims, n: usize, out_grad: &[f32], act_grad: &mut [f32]) {
    let (h, oh) = (d.in_size, d.out_size());
    let planes = n * d.channels;
    for (plane, g_plane) in act_grad[..planes * h * h].chunks_exact_mut(h * h).zip(out_grad.chunks_exact(oh * oh)) {
        for (row, y) in plane.chunks_exact_mut(h).zip(0..) {
            let g_row = &g_plane[(y / 2) * oh..(y / 2 + 1) * oh];
            for (pair, g) in row.chunks_exact_mut(2).zip(g_row) {
                let q = g / 4.0;
                pair[0] = relu_mask(pair[0], q);
                pair[1] = relu_mask(pair[1], q);
            }
        }
    }
}

dispatch! {
    fn relu_backward_in_place_portable(
        d: &Pool2Dims,
        n: usize,
        out_grad: &[f32],
        act_grad: &mut [f32],
    ) => relu_backward_in_place_body
}

/// Backward of ReLU then pooling in one pass, `act_grad = (activation > 0) * out_grad / 4` spread over each
/// 2x2 window, over the activation itself: `act_grad` holds the ReLU output on entry and its
/// gradient on return, which spares the step a buffer the size of the activation.
pub fn avgpool2_relu_backward_in_place(d: &Pool2Dims, n: usize, out_grad: &[f32], act_grad: &mut [f32]) {
    assert!(act_grad.len() >= n * d.in_len() && out_grad.len() >= n * d.out_len() && d.in_size.is_multiple_of(2));
    if d.in_size != BACKWARD_SIZE {
        return relu_backward_in_place_portable(d, n, out_grad, act_grad);
    }
    // The SIMD kernels index with pointers: the buffers were checked above, and the size is theirs.
    select! {
        avx512 => avx512::relu_backward_in_place(d, n, out_grad, act_grad),
        avx2 => avx2::relu_backward_in_place(d, n, out_grad, act_grad),
        portable => relu_backward_in_place_portable(d, n, out_grad, act_grad),
    }
}

/// Plane-by-plane kernels with AVX-512 intrinsics, the lanes paired or spread with permutes (the compiled portable
/// code handles the pairs one by one): forward for rows of up to 32 values, a pooled row in one vector;
/// backward for the first pooling's 28 x 28 planes.
#[cfg(target_arch = "x86_64")]
mod avx512;

/// Kernels with AVX2 intrinsics: the plane-by-plane forward and backward (as on AVX-512, with 8 lanes), and the
/// pixel-major flattening forward, which every CPU with AVX2 uses (AVX-512 has nothing faster for it).
#[cfg(target_arch = "x86_64")]
mod avx2;

/// Pooling of a pixel-major input `(n, H, H, C)`, written flattened as `nn.Flatten` orders it:
/// `flat (n, C * H/2 * H/2)`, channel, then row, then column. Same sums, same order, as [`avgpool2_forward`].
pub fn avgpool2_pixel_major_flatten(d: &Pool2Dims, n: usize, input: &[f32], flat: &mut [f32]) {
    assert!(input.len() >= n * d.in_len() && flat.len() >= n * d.out_len() && d.in_size.is_multiple_of(2));
    if d.channels != 16 || d.out_size() * d.out_size() < MIN_FLATTEN_PIXELS {
        return flatten_portable(d, n, input, flat);
    }
    // The SIMD kernel indexes with pointers: the buffers were checked above, and the shape is its. (On AVX-512
    // it beats scattering each pixel's 16 channels: 1.3 against 1.7 us for 8 images.)
    select! {
        avx2 => avx2::flatten16(d, n, input, flat),
        portable => flatten_portable(d, n, input, flat),
    }
}

dispatch! {
    fn flatten_portable(d: &Pool2Dims, n: usize, input: &[f32], flat: &mut [f32]) => flatten_body
}

#[inline(always)]
fn flatten_body<const FMA: bool>(d: &Pool2Dims, n: usize, input: &[f32], flat: &mut [f32]) {
    let (h, oh, ch) = (d.in_size, d.out_size(), d.channels);
    for (img, out) in input[..n * d.in_len()].chunks_exact(d.in_len()).zip(flat.chunks_exact_mut(d.out_len())) {
        let px = |y: usize, x: usize| &img[(y * h + x) * ch..(y * h + x + 1) * ch];
        for y in 0..oh {
            for x in 0..oh {
                let (t0, t1, b0, b1) =
                    (px(2 * y, 2 * x), px(2 * y, 2 * x + 1), px(2 * y + 1, 2 * x), px(2 * y + 1, 2 * x + 1));
                for c in 0..ch {
                    out[(c * oh + y) * oh + x] = (t0[c] + t1[c] + b0[c] + b1[c]) / 4.0;
                }
            }
        }
    }
}

/// Backward of [`avgpool2_pixel_major_flatten`] after a ReLU: `flat_grad (n, C * H/2 * H/2)` and the ReLU output
/// `activation (n, H, H, C)` -> `input_grad (n, H, H, C)` (overwritten).
#[cfg(test)]
pub fn avgpool2_pixel_major_relu_backward(
    d: &Pool2Dims,
    n: usize,
    flat_grad: &[f32],
    activation: &[f32],
    input_grad: &mut [f32],
) {
    let (h, oh, ch) = (d.in_size, d.out_size(), d.channels);
    for ((g_img, act), out) in flat_grad[..n * d.out_len()]
        .chunks_exact(d.out_len())
        .zip(activation.chunks_exact(d.in_len()))
        .zip(input_grad.chunks_exact_mut(d.in_len()))
    {
        for y in 0..h {
            for x in 0..h {
                let p = (y * h + x) * ch;
                for c in 0..ch {
                    let q = g_img[(c * oh + y / 2) * oh + x / 2] / 4.0;
                    out[p + c] = relu_mask(act[p + c], q);
                }
            }
        }
    }
}

/// `out_grad (n, C, H/2, H/2)` -> `input_grad (n, C, H, H)` (overwritten): each input gets a quarter.
#[cfg(test)]
pub fn avgpool2_backward(d: &Pool2Dims, n: usize, out_grad: &[f32], input_grad: &mut [f32]) {
    let (h, oh) = (d.in_size, d.out_size());
    for (plane, g_plane) in input_grad.chunks_exact_mut(h * h).zip(out_grad.chunks_exact(oh * oh)).take(n * d.channels)
    {
        for y in 0..h {
            let g_row = &g_plane[(y / 2) * oh..(y / 2 + 1) * oh];
            for (x, v) in plane[y * h..(y + 1) * h].iter_mut().enumerate() {
                *v = g_row[x / 2] / 4.0;
            }
        }
    }
}

#[cfg(test)]
mod tests;
