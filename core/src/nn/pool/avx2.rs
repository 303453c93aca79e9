//! Kernels with AVX2 intrinsics: the plane-by-plane forward and backward (as on AVX-512, with 8 lanes), and the
//! pixel-major flattening forward, which every CPU with AVX2 uses (AVX-512 has nothing faster for it).

use std::arch::x86_64::*;

use super::{BACKWARD_SIZE, Pool2Dims};
use crate::simd::narrow::lanes;

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
/// AVX2; `input` and `out` hold `n` images of `d`, whose rows have at most [`super::MAX_SIZE`] values.
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
                        _mm256_storeu_ps(a, _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(_mm256_loadu_ps(a), zero), *q));
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
/// AVX2; `d.channels` is 16, at least [`super::MIN_FLATTEN_PIXELS`] pooled pixels; `input` and `flat` hold `n` images of `d`.
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
