//! Average pooling, window 2, stride 2 (`nn.AvgPool2d(2, 2)`).
//!
//! `out[n, c, y, x] = (in[2y, 2x] + in[2y, 2x+1] + in[2y+1, 2x] + in[2y+1, 2x+1]) / 4`
//!
//! # Shapes
//! input `(N, C, H, H)` with `H` even, output `(N, C, H/2, H/2)`.

use crate::simd::{dispatch, relu_mask};

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

dispatch! {
    fn forward_portable(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) => forward_body
}

/// `input (n, C, H, H)` -> `out (n, C, H/2, H/2)`. Sums in PyTorch's order, then divides.
pub fn avgpool2_forward(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) {
    assert!(input.len() >= n * d.in_len() && out.len() >= n * d.out_len() && d.in_size.is_multiple_of(2));
    #[cfg(target_arch = "x86_64")]
    if d.in_size <= avx512::MAX_SIZE && crate::simd::avx512() {
        // SAFETY: the CPU has the features, the buffers were checked above and a row fits the kernel.
        return unsafe { avx512::forward(d, n, input, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if d.in_size <= avx2::MAX_SIZE && crate::simd::avx2_fma() {
        // SAFETY: as above, with AVX2.
        return unsafe { avx2::forward(d, n, input, out) };
    }
    forward_portable(d, n, input, out)
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

/// [`avgpool2_relu_backward`] over the activation itself: `act_grad` holds the ReLU output on entry and its
/// gradient on return, which spares the step a buffer the size of the activation.
pub fn avgpool2_relu_backward_in_place(d: &Pool2Dims, n: usize, out_grad: &[f32], act_grad: &mut [f32]) {
    assert!(act_grad.len() >= n * d.in_len() && out_grad.len() >= n * d.out_len() && d.in_size.is_multiple_of(2));
    #[cfg(target_arch = "x86_64")]
    if d.in_size == avx512::BACKWARD_SIZE && crate::simd::avx512() {
        // SAFETY: the CPU has the features, the buffers were checked above and the size is the kernel's.
        return unsafe { avx512::relu_backward_in_place(d, n, out_grad, act_grad) };
    }
    #[cfg(target_arch = "x86_64")]
    if d.in_size == avx2::BACKWARD_SIZE && crate::simd::avx2_fma() {
        // SAFETY: as above, with AVX2.
        return unsafe { avx2::relu_backward_in_place(d, n, out_grad, act_grad) };
    }
    relu_backward_in_place_portable(d, n, out_grad, act_grad)
}

/// Channel-major kernels with AVX-512 intrinsics, the lanes paired or spread with permutes (the compiled portable
/// code handles the pairs one by one): forward for rows of up to 32 values, a pooled row in one vector;
/// backward for the first pooling's 28 x 28 planes.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Pool2Dims;
    use crate::simd::lanes;

    /// Largest input row the kernels take.
    pub const MAX_SIZE: usize = 32;

    /// `(lo, hi)` masks of an input row of `h` values.
    fn row_masks(h: usize) -> (__mmask16, __mmask16) {
        (lanes(h), lanes(h.saturating_sub(16)))
    }

    /// # Safety
    /// AVX-512F; `input` and `out` hold `n` images of `d`, whose rows have at most [`MAX_SIZE`] values.
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn forward(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) {
        let (h, oh) = (d.in_size, d.out_size());
        let ((lo, hi), out_mask) = (row_masks(h), lanes(oh));
        let (ip, op) = (input.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole body): rows are read and written through masks of their length, inside the checked
        // buffers.
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
            let quarter = _mm512_set1_ps(0.25);
            for plane in 0..n * d.channels {
                for y in 0..oh {
                    let top = ip.add((plane * h + 2 * y) * h);
                    let bottom = top.add(h);
                    let (t_lo, t_hi) = (_mm512_maskz_loadu_ps(lo, top), _mm512_maskz_loadu_ps(hi, top.add(16)));
                    let (b_lo, b_hi) = (_mm512_maskz_loadu_ps(lo, bottom), _mm512_maskz_loadu_ps(hi, bottom.add(16)));
                    // Lane x: in[2y, 2x] + in[2y, 2x+1] + in[2y+1, 2x] + in[2y+1, 2x+1], in that order, then / 4
                    // (a multiply by 0.25 is the same rounding).
                    let sum = _mm512_add_ps(
                        _mm512_permutex2var_ps(t_lo, even, t_hi),
                        _mm512_permutex2var_ps(t_lo, odd, t_hi),
                    );
                    let sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b_lo, even, b_hi));
                    let sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b_lo, odd, b_hi));
                    _mm512_mask_storeu_ps(op.add((plane * oh + y) * oh), out_mask, _mm512_mul_ps(sum, quarter));
                }
            }
        }
    }

    /// Input size of the layer [`relu_backward_in_place`] is written for (the first pooling).
    pub const BACKWARD_SIZE: usize = 28;

    /// # Safety
    /// AVX-512F; `out_grad` and `act_grad` hold `n` images of `d`, whose `in_size` is [`BACKWARD_SIZE`].
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
    pub unsafe fn relu_backward_in_place(d: &Pool2Dims, n: usize, out_grad: &[f32], act_grad: &mut [f32]) {
        // A plane read as whole vectors, with no masks: rows of 28 values straddle vectors, and a masked store
        // that shares a 64-byte span with the next row's load stalls that load. Seven vectors are four input rows,
        // which take the 28 values of two pooled rows; lane l of vector v takes pooled value
        // (row / 2) * 14 + col / 2 of input value 16 v + l = row * 28 + col.
        const H: usize = BACKWARD_SIZE;
        const GROUP: usize = 7;
        const POOLED: usize = 2 * H / 2;
        let (gp, ap) = (out_grad.as_ptr(), act_grad.as_mut_ptr());
        let spread: [__m512i; GROUP] = std::array::from_fn(|v| {
            let at = |l: usize| {
                let (row, col) = ((16 * v + l) / H, (16 * v + l) % H);
                ((row / 2) * (H / 2) + col / 2) as i32
            };
            _mm512_setr_epi32(
                at(0),
                at(1),
                at(2),
                at(3),
                at(4),
                at(5),
                at(6),
                at(7),
                at(8),
                at(9),
                at(10),
                at(11),
                at(12),
                at(13),
                at(14),
                at(15),
            )
        });
        let tail: __mmask16 = (1 << (POOLED - 16)) - 1;
        // SAFETY (whole body): a plane is 49 whole vectors of input and 7 groups of 28 pooled values, all inside
        // the buffers the caller checked.
        unsafe {
            let (quarter, zero) = (_mm512_set1_ps(0.25), _mm512_setzero_ps());
            for plane in 0..n * d.channels {
                for group in 0..H * H / (16 * GROUP) {
                    let g = gp.add(plane * H * H / 4 + group * POOLED);
                    let lo = _mm512_mul_ps(_mm512_loadu_ps(g), quarter);
                    let hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, g.add(16)), quarter);
                    for (v, idx) in spread.iter().enumerate() {
                        let dst = ap.add(plane * H * H + (group * GROUP + v) * 16);
                        // The ReLU's gradient: the quarter where the output was positive, else zero.
                        let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(_mm512_loadu_ps(dst), zero);
                        _mm512_storeu_ps(dst, _mm512_maskz_mov_ps(keep, _mm512_permutex2var_ps(lo, *idx, hi)));
                    }
                }
            }
        }
    }
}

/// Kernels with AVX2 intrinsics: the channel-major forward and backward (as on AVX-512, with 8 lanes), and the
/// pixel-major flattening forward, which every CPU with AVX2 uses (AVX-512 has nothing faster for it).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Pool2Dims;
    use crate::simd::narrow::lanes;

    /// Largest input row [`forward`] takes.
    pub const MAX_SIZE: usize = 32;

    /// Input size of the layer [`relu_backward_in_place`] is written for (the first pooling).
    pub const BACKWARD_SIZE: usize = 28;

    /// `(t0 + t1 + b0 + b1) / 4` of the eight 2x2 windows of 16 values of a top row (`t`) and the row below (`b`):
    /// the sums in the portable code's order (a multiply by 0.25 is the same rounding as a division by 4).
    #[inline(always)]
    unsafe fn pool_pairs(t: [__m256; 2], b: [__m256; 2]) -> __m256 {
        // SAFETY: register operations only, in functions compiled with AVX2.
        unsafe {
            // Even and odd lanes of the 16 values, each in the order (0..4 of 8 | 4..8 of 8) of 128-bit halves.
            let even = |v: [__m256; 2]| _mm256_shuffle_ps::<0b10_00_10_00>(v[0], v[1]);
            let odd = |v: [__m256; 2]| _mm256_shuffle_ps::<0b11_01_11_01>(v[0], v[1]);
            let sum = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(even(t), odd(t)), even(b)), odd(b));
            // 64-bit chunks (0, 2, 1, 3) put the windows in order.
            let sum = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(sum)));
            _mm256_mul_ps(sum, _mm256_set1_ps(0.25))
        }
    }

    /// # Safety
    /// AVX2; `input` and `out` hold `n` images of `d`, whose rows have at most [`MAX_SIZE`] values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn forward(d: &Pool2Dims, n: usize, input: &[f32], out: &mut [f32]) {
        // SAFETY: the caller's guarantees; the first pooling's size is compiled on its own, with its row's
        // loads and stores resolved at compile time.
        unsafe {
            if d.in_size == BACKWARD_SIZE {
                forward_rows(BACKWARD_SIZE, n * d.channels, input, out)
            } else {
                forward_rows(d.in_size, n * d.channels, input, out)
            }
        }
    }

    /// [`forward`] for `planes` planes of `h x h` values.
    ///
    /// # Safety
    /// As for [`forward`].
    #[inline(always)]
    unsafe fn forward_rows(h: usize, planes: usize, input: &[f32], out: &mut [f32]) {
        let oh = h / 2;
        let (ip, op) = (input.as_ptr(), out.as_mut_ptr());
        // SAFETY (whole body): rows are read and written through masks of their length, inside the checked
        // buffers; a pointer past a row is only used with a mask that reads nothing.
        unsafe {
            for plane in 0..planes {
                for y in 0..oh {
                    let top = ip.add((plane * h + 2 * y) * h);
                    let bottom = top.add(h);
                    let dst = op.add((plane * oh + y) * oh);
                    for k in 0..h.div_ceil(16) {
                        // Whole vectors where the row has them (a masked load or store costs several times
                        // more), masked at its end.
                        let load = |row: *const f32, at: usize| match h.saturating_sub(at) {
                            8.. => _mm256_loadu_ps(row.add(at)),
                            // The lanes past the row come out as lanes past the pooled row: never stored.
                            4 => _mm256_castps128_ps256(_mm_loadu_ps(row.add(at))),
                            rest => _mm256_maskload_ps(row.wrapping_add(at), lanes(rest)),
                        };
                        let (a, b) = (16 * k, 16 * k + 8);
                        let sum = pool_pairs([load(top, a), load(top, b)], [load(bottom, a), load(bottom, b)]);
                        let dst = dst.add(8 * k);
                        match oh - 8 * k {
                            8.. => _mm256_storeu_ps(dst, sum),
                            6 => {
                                _mm_storeu_ps(dst, _mm256_castps256_ps128(sum));
                                _mm_storel_epi64(dst.add(4).cast(), _mm_castps_si128(_mm256_extractf128_ps::<1>(sum)));
                            }
                            rest => _mm256_maskstore_ps(dst, lanes(rest), sum),
                        }
                    }
                }
            }
        }
    }

    /// # Safety
    /// AVX2; `out_grad` and `act_grad` hold `n` images of `d`, whose `in_size` is [`BACKWARD_SIZE`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn relu_backward_in_place(d: &Pool2Dims, n: usize, out_grad: &[f32], act_grad: &mut [f32]) {
        // A pooled row of 14 values is read as 8 + 4 + 2 and each value doubled, which gives the 28 values of
        // both input rows below it: 8 + 8 + 8 + 4, with no masks.
        const H: usize = BACKWARD_SIZE;
        const OH: usize = H / 2;
        let (gp, ap) = (out_grad.as_ptr(), act_grad.as_mut_ptr());
        // SAFETY (whole body): a plane is 196 pooled values and 784 input values, inside the buffers the caller
        // checked.
        unsafe {
            let (quarter, zero) = (_mm256_set1_ps(0.25), _mm256_setzero_ps());
            let (quarter4, zero4) = (_mm_set1_ps(0.25), _mm_setzero_ps());
            for plane in 0..n * d.channels {
                for y in 0..OH {
                    let g = gp.add((plane * OH + y) * OH);
                    let g8 = _mm256_mul_ps(_mm256_loadu_ps(g), quarter);
                    let g4 = _mm_mul_ps(_mm_loadu_ps(g.add(8)), quarter4);
                    let g2 = _mm_mul_ps(_mm_castsi128_ps(_mm_loadl_epi64(g.add(12).cast())), quarter4);
                    let (lo, hi) = (_mm256_unpacklo_ps(g8, g8), _mm256_unpackhi_ps(g8, g8));
                    let spread = [
                        _mm256_permute2f128_ps::<0x20>(lo, hi),
                        _mm256_permute2f128_ps::<0x31>(lo, hi),
                        _mm256_set_m128(_mm_unpackhi_ps(g4, g4), _mm_unpacklo_ps(g4, g4)),
                    ];
                    let last = _mm_unpacklo_ps(g2, g2);
                    for r in 0..2 {
                        let row = ap.add((plane * H + 2 * y + r) * H);
                        // The ReLU's gradient: the quarter where the output was positive, else zero.
                        for (v, q) in spread.iter().enumerate() {
                            let a = row.add(8 * v);
                            _mm256_storeu_ps(
                                a,
                                _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(a), zero), *q),
                            );
                        }
                        let a = row.add(24);
                        _mm_storeu_ps(a, _mm_and_ps(_mm_cmpgt_ps(_mm_loadu_ps(a), zero4), last));
                    }
                }
            }
        }
    }

    /// [`super::avgpool2_pixel_major_flatten`] for 16 channels: eight pooled pixels at a time, each pixel's
    /// channels two vectors, turned into eight pixels of each channel by two 8x8 transposes in registers. The
    /// last block ends at the last pixel and may repeat some of the block before it (same values, written twice).
    ///
    /// # Safety
    /// AVX2; `d.channels` is 16, at least [`MIN_PIXELS`] pooled pixels; `input` and `flat` hold `n` images of `d`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn flatten16(d: &Pool2Dims, n: usize, input: &[f32], flat: &mut [f32]) {
        const CH: usize = 16;
        let (h, oh) = (d.in_size, d.out_size());
        let pixels = oh * oh;
        let (ip, op) = (input.as_ptr(), flat.as_mut_ptr());
        // SAFETY (whole body): pixel (y, x) of image b is 16 values at ((b h + y) h + x) 16, inside `input`;
        // channel c of pooled pixel p goes to b * out_len + c * pixels + p, inside `flat`.
        unsafe {
            let quarter = _mm256_set1_ps(0.25);
            for b in 0..n {
                let img = ip.add(b * h * h * CH);
                let out = op.add(b * d.out_len());
                let mut p0 = 0;
                loop {
                    for half in 0..2 {
                        let pooled: [__m256; 8] = std::array::from_fn(|i| {
                            let (y, x) = ((p0 + i) / oh, (p0 + i) % oh);
                            let top = img.add((2 * y * h + 2 * x) * CH + 8 * half);
                            let bottom = top.add(h * CH);
                            let (t0, t1) = (_mm256_loadu_ps(top), _mm256_loadu_ps(top.add(CH)));
                            let (b0, b1) = (_mm256_loadu_ps(bottom), _mm256_loadu_ps(bottom.add(CH)));
                            // In the portable code's order; a quarter is exact either way.
                            _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(t0, t1), b0), b1), quarter)
                        });
                        for (i, channel) in transpose_8x8(pooled).into_iter().enumerate() {
                            _mm256_storeu_ps(out.add((8 * half + i) * pixels + p0), channel);
                        }
                    }
                    if p0 + 8 == pixels {
                        break;
                    }
                    p0 = (p0 + 8).min(pixels - 8);
                }
            }
        }
    }

    /// Fewest pooled pixels [`flatten16`] takes: one whole block.
    pub const MIN_PIXELS: usize = 8;

    /// Lane `j` of output `i` is lane `i` of input `j`.
    #[inline(always)]
    unsafe fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
        // SAFETY: register operations only, in functions compiled with AVX2.
        unsafe {
            // Pairs of rows interleaved, then pairs of pairs, within 128-bit halves; then the halves exchanged.
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 { _mm256_unpacklo_ps(a, b) } else { _mm256_unpackhi_ps(a, b) }
            });
            let u = [
                _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                _mm256_shuffle_ps::<0xee>(t[0], t[2]),
                _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                _mm256_shuffle_ps::<0xee>(t[1], t[3]),
                _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                _mm256_shuffle_ps::<0xee>(t[4], t[6]),
                _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                _mm256_shuffle_ps::<0xee>(t[5], t[7]),
            ];
            std::array::from_fn(|i| {
                if i < 4 {
                    _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4])
                } else {
                    _mm256_permute2f128_ps::<0x31>(u[i - 4], u[i])
                }
            })
        }
    }
}

/// Pooling of a pixel-major input `(n, H, H, C)`, written flattened as `nn.Flatten` orders it:
/// `flat (n, C * H/2 * H/2)`, channel, then row, then column. Same sums, same order, as [`avgpool2_forward`].
pub fn avgpool2_pixel_major_flatten(d: &Pool2Dims, n: usize, input: &[f32], flat: &mut [f32]) {
    assert!(input.len() >= n * d.in_len() && flat.len() >= n * d.out_len() && d.in_size.is_multiple_of(2));
    #[cfg(target_arch = "x86_64")]
    if d.channels == 16 && d.out_size() * d.out_size() >= avx2::MIN_PIXELS && crate::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2, the buffers were checked above, and the shape is the kernel's. (On AVX-512
        // this beats scattering each pixel's 16 channels: 1.3 against 1.7 us for 8 images.)
        return unsafe { avx2::flatten16(d, n, input, flat) };
    }
    flatten_portable(d, n, input, flat)
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
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn pixel_major_pooling_matches_channel_major() {
        let d = Pool2Dims { channels: 16, in_size: 10 };
        let n = 3;
        let (h, ch) = (d.in_size, d.channels);
        let mut rng = Rng::new(3);
        // A ReLU output (some exact zeros) in both layouts: `(n, C, H, H)` and `(n, H, H, C)`.
        let act: Vec<f32> = (0..n * d.in_len()).map(|_| rng.uniform(-1.0, 1.0).max(0.0)).collect();
        let mut act_px = vec![0.0; act.len()];
        for b in 0..n {
            for c in 0..ch {
                for p in 0..h * h {
                    act_px[(b * h * h + p) * ch + c] = act[(b * ch + c) * h * h + p];
                }
            }
        }
        let mut want = vec![0.0; n * d.out_len()];
        avgpool2_forward(&d, n, &act, &mut want);
        let mut got = vec![f32::NAN; n * d.out_len()];
        avgpool2_pixel_major_flatten(&d, n, &act_px, &mut got);
        assert_eq!(got, want, "(n, C, H/2, H/2) is the flattened order");
        let mut portable = vec![f32::NAN; n * d.out_len()];
        flatten_body::<false>(&d, n, &act_px, &mut portable);
        assert_eq!(portable, want, "the portable path");

        let g: Vec<f32> = (0..n * d.out_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let mut want = vec![0.0; n * d.in_len()];
        avgpool2_relu_backward(&d, n, &g, &act, &mut want);
        let mut in_place = act.clone();
        avgpool2_relu_backward_in_place(&d, n, &g, &mut in_place);
        assert_eq!(in_place, want);
        let mut got = vec![f32::NAN; n * d.in_len()];
        avgpool2_pixel_major_relu_backward(&d, n, &g, &act_px, &mut got);
        for b in 0..n {
            for c in 0..ch {
                for p in 0..h * h {
                    assert_eq!(got[(b * h * h + p) * ch + c], want[(b * ch + c) * h * h + p]);
                }
            }
        }
        assert!(want.contains(&0.0) && want.iter().any(|&v| v != 0.0));
    }

    #[test]
    fn fast_channel_major_kernels_match_the_portable_ones() {
        let mut rng = Rng::new(5);
        for (channels, in_size, n) in [(6, 28, 3), (2, 32, 2), (3, 10, 2), (1, 2, 1)] {
            let d = Pool2Dims { channels, in_size };
            let act: Vec<f32> = (0..n * d.in_len()).map(|_| rng.uniform(-1.0, 1.0).max(0.0)).collect();
            let g: Vec<f32> = (0..n * d.out_len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let (mut want, mut got) = (vec![0.0; n * d.out_len()], vec![f32::NAN; n * d.out_len()]);
            forward_body::<false>(&d, n, &act, &mut want);
            avgpool2_forward(&d, n, &act, &mut got);
            assert_eq!(got, want, "forward {d:?}");
            let (mut want, mut got) = (act.clone(), act.clone());
            relu_backward_in_place_body::<false>(&d, n, &g, &mut want);
            avgpool2_relu_backward_in_place(&d, n, &g, &mut got);
            assert_eq!(got, want, "backward {d:?}");
            // The AVX2 kernels, which a CPU with AVX-512 does not pick on its own.
            #[cfg(target_arch = "x86_64")]
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                let mut forward = vec![f32::NAN; n * d.out_len()];
                // SAFETY: the CPU has AVX2; rows of at most 32 values, buffers of `n` images.
                unsafe { avx2::forward(&d, n, &act, &mut forward) };
                let mut want_forward = vec![0.0; n * d.out_len()];
                forward_body::<false>(&d, n, &act, &mut want_forward);
                assert_eq!(forward, want_forward, "AVX2 forward {d:?}");
                if in_size == avx2::BACKWARD_SIZE {
                    let mut got = act.clone();
                    // SAFETY: as above, and the size is the kernel's.
                    unsafe { avx2::relu_backward_in_place(&d, n, &g, &mut got) };
                    assert_eq!(got, want, "AVX2 backward {d:?}");
                }
            }
            assert!(want.contains(&0.0) && want.iter().any(|&v| v != 0.0));
        }
    }
}
