//! Average pooling, window 2, stride 2 (`nn.AvgPool2d(2, 2)`).
//!
//! `out[n, c, y, x] = (in[2y, 2x] + in[2y, 2x+1] + in[2y+1, 2x] + in[2y+1, 2x+1]) / 4`
//!
//! # Shapes
//! input `(N, C, H, H)` with `H` even, output `(N, C, H/2, H/2)`.

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

/// `input (n, C, H, H)` -> `out (n, C, H/2, H/2)`. Sums in PyTorch's order, then divides.
pub fn avgpool2_forward(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) {
    let (h, oh) = (d.in_size, d.out_size());
    for (plane, out_plane) in input.chunks_exact(h * h).zip(out.chunks_exact_mut(oh * oh)).take(n * d.channels) {
        for y in 0..oh {
            let top = &plane[2 * y * h..(2 * y + 1) * h];
            let bottom = &plane[(2 * y + 1) * h..(2 * y + 2) * h];
            for x in 0..oh {
                out_plane[y * oh + x] = (top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1]) / 4.0;
            }
        }
    }
}

/// `out_grad (n, C, H/2, H/2)` -> `input_grad (n, C, H, H)` (overwritten): each input gets a quarter.
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
