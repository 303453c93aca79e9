//! Plane-by-plane kernels with AVX-512 intrinsics, the lanes paired or spread with permutes (the compiled portable
//! code handles the pairs one by one): forward for rows of up to 32 values, a pooled row in one vector;
//! backward for the first pooling's 28 x 28 planes.

use std::arch::x86_64::*;

use super::{BACKWARD_SIZE, Pool2Dims};
use crate::simd::lanes;

/// `(lo, hi)` masks of an input row of `h` values.
fn row_masks(h: usize) -> (__mmask16, __mmask16) {
    (lanes(h), lanes(h.saturating_sub(16)))
}

/// # Safety
/// AVX-512F; `input` and `out` hold `n` images of `d`, whose rows have at most [`super::MAX_SIZE`] values.
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
                let sum =
                    _mm512_add_ps(_mm512_permutex2var_ps(t_lo, even, t_hi), _mm512_permutex2var_ps(t_lo, odd, t_hi));
                let sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b_lo, even, b_hi));
                let sum = _mm512_add_ps(sum, _mm512_permutex2var_ps(b_lo, odd, b_hi));
                _mm512_mask_storeu_ps(op.add((plane * oh + y) * oh), out_mask, _mm512_mul_ps(sum, quarter));
            }
        }
    }
}

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
