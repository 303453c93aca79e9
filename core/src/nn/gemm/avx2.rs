//! The two kernels written with AVX2/FMA intrinsics: the same blocking as the portable bodies, with the
//! accumulators pinned in registers. At the edges, the row-panel kernel masks its last columns; the dot-product
//! kernel computes the products that do not fill a block one vectorised dot product at a time.

use std::arch::x86_64::*;

use super::MatRef;
use crate::simd::narrow::{lanes, sum_lanes};

/// `c += alpha * a @ b`, rows of `b` contiguous: 4x16 blocks of `c` in eight registers, in panels of 16
/// columns; then a panel of 8 columns and one of the last few, masked.
///
/// # Safety
/// AVX2 and FMA must be available, and the shapes must have passed `sgemm`'s bounds check.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rows(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let n = b.cols;
    let all = lanes(8);
    let mut j0 = 0;
    // SAFETY (whole body): each panel lies inside the shapes `sgemm` checked.
    unsafe {
        // Columns outer: a panel of b stays in L1 while every block of rows uses it.
        while j0 + 16 <= n {
            panel::<2, false>(alpha, &a, &b, c, j0, all);
            j0 += 16;
        }
        if j0 + 8 <= n {
            panel::<1, false>(alpha, &a, &b, c, j0, all);
            j0 += 8;
        }
        if j0 < n {
            panel::<1, true>(alpha, &a, &b, c, j0, lanes(n - j0));
        }
    }
}

/// Columns `j0..j0 + 8 V` of `c += alpha * a @ b` (the vectors masked by `mask` when `MASKED`), four rows at
/// a time and then one.
///
/// # Safety
/// AVX2 and FMA; the columns (masked) lie inside the shapes `sgemm` checked.
#[inline(always)]
unsafe fn panel<const V: usize, const MASKED: bool>(
    alpha: f32,
    a: &MatRef,
    b: &MatRef,
    c: &mut [f32],
    j0: usize,
    mask: __m256i,
) {
    let m = a.rows;
    let mut i0 = 0;
    // SAFETY: the caller's guarantees, and the rows stay below m.
    unsafe {
        while i0 + 4 <= m {
            block::<4, V, MASKED>(alpha, a, b, c, i0, j0, mask);
            i0 += 4;
        }
        while i0 < m {
            block::<1, V, MASKED>(alpha, a, b, c, i0, j0, mask);
            i0 += 1;
        }
    }
}

/// Rows `i0..i0 + R`, columns `j0..j0 + 8 V` of `c += alpha * a @ b`: `R x V` accumulators.
///
/// # Safety
/// As for [`panel`], and `i0 + R <= a.rows`.
#[inline(always)]
unsafe fn block<const R: usize, const V: usize, const MASKED: bool>(
    alpha: f32,
    a: &MatRef,
    b: &MatRef,
    c: &mut [f32],
    i0: usize,
    j0: usize,
    mask: __m256i,
) {
    let (k, n) = (a.cols, b.cols);
    let (ap, bp, cp) = (a.data.as_ptr(), b.data.as_ptr(), c.as_mut_ptr());
    // SAFETY (whole body): rows i0..i0+R of a and c, columns j0..j0+8V of b and c (masked to n), p < k.
    unsafe {
        let load = |x: *const f32| if MASKED { _mm256_maskload_ps(x, mask) } else { _mm256_loadu_ps(x) };
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        for p in 0..k {
            let row = bp.add(p * b.row_stride + j0);
            let bv: [__m256; V] = std::array::from_fn(|v| load(row.add(8 * v)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*ap.add((i0 + r) * a.row_stride + p * a.col_stride));
                for (acc_rv, bv) in acc_r.iter_mut().zip(bv) {
                    *acc_rv = _mm256_fmadd_ps(av, bv, *acc_rv);
                }
            }
        }
        let al = _mm256_set1_ps(alpha);
        for (r, acc_r) in acc.iter().enumerate() {
            for (v, acc_rv) in acc_r.iter().enumerate() {
                let out = cp.add((i0 + r) * n + j0 + 8 * v);
                let sum = _mm256_fmadd_ps(al, *acc_rv, load(out));
                if MASKED { _mm256_maskstore_ps(out, mask, sum) } else { _mm256_storeu_ps(out, sum) }
            }
        }
    }
}

/// One dot product of `k` values, vectorised.
///
/// # Safety
/// AVX2 and FMA must be available; `x` and `y` must point to `k` readable values.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot(x: *const f32, y: *const f32, k: usize) -> f32 {
    let fk = k - k % 8;
    // SAFETY: every offset is below k.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for p in (0..fk).step_by(8) {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(p)), _mm256_loadu_ps(y.add(p)), acc);
        }
        let mut s = sum_lanes(acc);
        for p in fk..k {
            s += *x.add(p) * *y.add(p);
        }
        s
    }
}

/// `c += alpha * a @ b` with `a` row-major and `b` the transpose of a row-major matrix: 2x4 blocks of dot
/// products, eight vector accumulators.
///
/// # Safety
/// AVX2 and FMA must be available, and the shapes must have passed `sgemm`'s bounds check.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dots(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (fm, fn_, fk) = (m - m % 2, n - n % 4, k - k % 8);
    let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
    let (ars, bcs) = (a.row_stride, b.col_stride);
    for i0 in (0..fm).step_by(2) {
        for j0 in (0..fn_).step_by(4) {
            // SAFETY: rows i0, i0+1 of a and j0..j0+4 of b^T hold k values each, inside the checked slices.
            let (x, y) = unsafe {
                let x = [ap.add(i0 * ars), ap.add((i0 + 1) * ars)];
                let y = [bp.add(j0 * bcs), bp.add((j0 + 1) * bcs), bp.add((j0 + 2) * bcs), bp.add((j0 + 3) * bcs)];
                let mut acc = [_mm256_setzero_ps(); 8];
                for p in (0..fk).step_by(8) {
                    let (x0, x1) = (_mm256_loadu_ps(x[0].add(p)), _mm256_loadu_ps(x[1].add(p)));
                    for q in 0..4 {
                        let yv = _mm256_loadu_ps(y[q].add(p));
                        acc[q] = _mm256_fmadd_ps(x0, yv, acc[q]);
                        acc[4 + q] = _mm256_fmadd_ps(x1, yv, acc[4 + q]);
                    }
                }
                let mut sums = [0.0f32; 8];
                for (s, v) in sums.iter_mut().zip(acc) {
                    *s = sum_lanes(v);
                }
                (sums, (x, y))
            };
            let (sums, (xr, yr)) = (x, y);
            for r in 0..2 {
                for q in 0..4 {
                    let mut s = sums[r * 4 + q];
                    for p in fk..k {
                        // SAFETY: p < k, inside the rows above.
                        s += unsafe { *xr[r].add(p) * *yr[q].add(p) };
                    }
                    c[(i0 + r) * n + j0 + q] += alpha * s;
                }
            }
        }
    }
    // Leftover columns and rows, one vectorised dot product each.
    for i in 0..m {
        let cols = if i < fm { fn_..n } else { 0..n };
        for j in cols {
            // SAFETY: row i of a and row j of b^T hold k values inside the checked slices.
            c[i * n + j] += alpha * unsafe { dot(ap.add(i * ars), bp.add(j * bcs), k) };
        }
    }
}
