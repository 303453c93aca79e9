//! Both kernels with AVX-512 intrinsics: twice the width of the AVX2 ones, and masked loads and stores for the
//! edges instead of scalar code. The dot-product kernel works on blocks of sixteen dot products, so that the
//! horizontal sums at the end of a block are one transposing reduction of its sixteen accumulators.

use std::arch::x86_64::*;

use super::MatRef;
use crate::simd::lanes;
use crate::simd::wide::reduce_4x4;

/// `R` rows from `i0` and `V` 16-lane vectors from column `j0` of `c += alpha * a @ b`, the last vector
/// masked by `last`.
///
/// # Safety
/// AVX-512F; the block must lie inside the shapes `sgemm` checked.
#[inline(always)]
unsafe fn rows_block<const R: usize, const V: usize>(
    alpha: f32,
    a: &MatRef,
    b: &MatRef,
    c: *mut f32,
    i0: usize,
    j0: usize,
    last: __mmask16,
) {
    let n = b.cols;
    let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
    // SAFETY: rows i0..i0+R of a and c, the V vectors from j0 (the last one masked) of b's rows and c's rows,
    // and p < k are all inside the checked slices; masked-off lanes are neither read nor written.
    unsafe {
        let mask = |v: usize| if v + 1 == V { last } else { 0xffff };
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in 0..a.cols {
            let row = bp.add(p * b.row_stride + j0);
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_maskz_loadu_ps(mask(v), row.add(16 * v));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add((i0 + r) * a.row_stride + p * a.col_stride));
                for v in 0..V {
                    acc_r[v] = _mm512_fmadd_ps(av, bv[v], acc_r[v]);
                }
            }
        }
        let al = _mm512_set1_ps(alpha);
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, x) in acc_r.iter().enumerate() {
                let out = c.add((i0 + r) * n + j0 + 16 * v);
                let old = _mm512_maskz_loadu_ps(mask(v), out);
                _mm512_mask_storeu_ps(out, mask(v), _mm512_fmadd_ps(al, *x, old));
            }
        }
    }
}

/// `c += alpha * a @ b`, rows of `b` contiguous: 4x32 blocks of `c` in eight registers, then 16-wide and
/// masked column blocks.
///
/// # Safety
/// AVX-512F must be available, and the shapes must have passed `sgemm`'s bounds check.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub unsafe fn rows(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, n) = (a.rows, b.cols);
    let fm = m - m % 4;
    let cp = c.as_mut_ptr();
    let mut j0 = 0;
    // SAFETY (all blocks): each lies inside the checked shapes (rows below m, columns below n).
    unsafe {
        while j0 + 32 <= n {
            for i0 in (0..fm).step_by(4) {
                rows_block::<4, 2>(alpha, &a, &b, cp, i0, j0, 0xffff);
            }
            for i in fm..m {
                rows_block::<1, 2>(alpha, &a, &b, cp, i, j0, 0xffff);
            }
            j0 += 32;
        }
        while j0 < n {
            let last = lanes(n - j0);
            for i0 in (0..fm).step_by(4) {
                rows_block::<4, 1>(alpha, &a, &b, cp, i0, j0, last);
            }
            for i in fm..m {
                rows_block::<1, 1>(alpha, &a, &b, cp, i, j0, last);
            }
            j0 += 16;
        }
    }
}

/// Columns `p..p + 16` (masked by `mask` when `MASKED`) of the dot products of [`dots_block`], added into
/// `acc`.
///
/// # Safety
/// As for [`dots_block`]; the columns lie inside the rows of `k` values, or are masked to them.
#[inline(always)]
unsafe fn dots_chunk<const R: usize, const C: usize, const MASKED: bool>(
    a: &MatRef,
    b: &MatRef,
    i0: usize,
    j0: usize,
    p: usize,
    mask: __mmask16,
    acc: &mut [[__m512; 4]; 4],
) {
    // SAFETY: the caller's guarantees.
    unsafe {
        let load = |x: *const f32| if MASKED { _mm512_maskz_loadu_ps(mask, x) } else { _mm512_loadu_ps(x) };
        let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
        let mut yv = [_mm512_setzero_ps(); C];
        for (q, y) in yv.iter_mut().enumerate() {
            *y = load(bp.add((j0 + q) * b.col_stride + p));
        }
        for r in 0..R {
            let xv = load(ap.add((i0 + r) * a.row_stride + p));
            for (q, y) in yv.iter().enumerate() {
                let t = r * C + q;
                acc[t / 4][t % 4] = _mm512_fmadd_ps(xv, *y, acc[t / 4][t % 4]);
            }
        }
    }
}

/// `R` rows from `i0` and `C` columns from `j0` (`R * C <= 16`) of `c += alpha * a @ b`, `b` given as the
/// transpose of a row-major matrix. Accumulator `r * C + q` holds element `(r, q)`.
///
/// # Safety
/// AVX-512F; the block must lie inside the shapes `sgemm` checked.
#[inline(always)]
unsafe fn dots_block<const R: usize, const C: usize>(
    alpha: f32,
    a: &MatRef,
    b: &MatRef,
    c: &mut [f32],
    i0: usize,
    j0: usize,
) {
    let (k, n) = (a.cols, b.cols);
    // SAFETY: rows i0..i0+R of a and j0..j0+C of b^T hold k values each; the last chunk is masked to k.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        // Whole chunks of 16 with plain loads (a masked load costs more, even with every lane on), then the
        // rest masked.
        let mut p = 0;
        while p + 16 <= k {
            dots_chunk::<R, C, false>(a, b, i0, j0, p, 0xffff, &mut acc);
            p += 16;
        }
        if p < k {
            dots_chunk::<R, C, true>(a, b, i0, j0, p, lanes(k - p), &mut acc);
        }
        let mut sums = [0.0f32; 16];
        _mm512_storeu_ps(sums.as_mut_ptr(), reduce_4x4(&acc));
        for r in 0..R {
            for q in 0..C {
                let out = &mut c[(i0 + r) * n + j0 + q];
                *out += alpha * sums[r * C + q];
            }
        }
    }
}

/// [`dots_block`] with `cols` (at most 2) chosen at run time.
///
/// # Safety
/// As for [`dots_block`].
#[inline(always)]
unsafe fn dots_row_block<const R: usize>(
    alpha: f32,
    a: &MatRef,
    b: &MatRef,
    c: &mut [f32],
    i0: usize,
    j0: usize,
    cols: usize,
) {
    // SAFETY: as the caller's.
    unsafe {
        if cols == 2 { dots_block::<R, 2>(alpha, a, b, c, i0, j0) } else { dots_block::<R, 1>(alpha, a, b, c, i0, j0) }
    }
}

/// `c += alpha * a @ b` with `a` row-major and `b` the transpose of a row-major matrix: blocks of 8 rows by
/// 2 columns (sixteen accumulators; the rows of `a` stay in L1 while each row of `b` is read once per
/// block of 8), smaller blocks at the edges.
///
/// # Safety
/// AVX-512F must be available, and the shapes must have passed `sgemm`'s bounds check.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub unsafe fn dots(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, n) = (a.rows, b.cols);
    // SAFETY (all blocks): each lies inside the checked shapes.
    unsafe {
        let mut i0 = 0;
        while i0 < m {
            let rows = [8, 4, 2, 1].into_iter().find(|&r| r <= m - i0).expect("m - i0 >= 1");
            let mut j0 = 0;
            while j0 < n {
                let cols = (n - j0).min(2);
                match rows {
                    8 => dots_row_block::<8>(alpha, &a, &b, c, i0, j0, cols),
                    4 => dots_row_block::<4>(alpha, &a, &b, c, i0, j0, cols),
                    2 => dots_row_block::<2>(alpha, &a, &b, c, i0, j0, cols),
                    _ => dots_row_block::<1>(alpha, &a, &b, c, i0, j0, cols),
                }
                j0 += cols;
            }
            i0 += rows;
        }
    }
}
