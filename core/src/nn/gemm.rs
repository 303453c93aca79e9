//! Single-precision matrix multiply: the one primitive every layer is built on.
//!
//! `C (m,n) = alpha * A (m,k) @ B (k,n) + beta * C`, with every matrix given as a slice plus a row stride and a
//! column stride, so a transposed operand is just a different pair of strides.
//!
//! The model only needs two shapes of product, and both have their own register-blocked kernel that needs no
//! packing and allocates nothing (a training step must not allocate):
//! - rows of B contiguous (`B (k,n)` row-major, any A): each 4x16 block of C accumulates `A[i,p] * B[p,..]`;
//! - B given transposed (`B^T (n,k)` row-major) and A row-major: each block of C is a set of dot products
//!   (2x4 with AVX2, 8x2 with AVX-512, whose sixteen horizontal sums are one transposing reduction).
//!
//! Any other layout (only the tests' reference convolution uses one) is computed one dot product at a time.
//! [`sgemm_reference`] is the plain triple loop all are tested against.

use crate::simd::{dispatch, mul_add};

/// A matrix view: `data[row * row_stride + col * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// The transpose, without moving any data.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn max_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            return 0;
        }
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

fn check(a: &MatRef, b: &MatRef, c: &[f32], m: usize, n: usize) {
    // Internal invariants: shapes are fixed by the model code, never by user input.
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    assert!(a.rows == m && b.cols == n, "gemm: output shape");
    assert!(a.max_index() < a.data.len().max(1), "gemm: A out of bounds");
    assert!(b.max_index() < b.data.len().max(1), "gemm: B out of bounds");
    assert!(c.len() >= m * n, "gemm: C out of bounds");
}

/// `c (a.rows, b.cols)`, row-major and contiguous, `= alpha * a @ b + beta * c`.
pub fn sgemm(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    check(&a, &b, c, m, n);
    if m == 0 || n == 0 {
        return;
    }
    let c = &mut c[..m * n];
    if beta == 0.0 {
        c.fill(0.0);
    } else if beta != 1.0 {
        c.iter_mut().for_each(|v| *v *= beta);
    }
    if k == 0 {
        return;
    }
    if b.col_stride == 1 {
        gemm_rows(alpha, a, b, c);
    } else if b.row_stride == 1 && a.col_stride == 1 {
        gemm_dots(alpha, a, b, c);
    } else {
        // Layouts the model never multiplies (both operands transposed, or other strides): one dot product at a
        // time.
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] += alpha * dot_at(&a, &b, i, j);
            }
        }
    }
}

/// Row `i` of `a` times column `j` of `b`, in order.
fn dot_at(a: &MatRef, b: &MatRef, i: usize, j: usize) -> f32 {
    let mut acc = 0.0f32;
    for p in 0..a.cols {
        acc += a.data[i * a.row_stride + p * a.col_stride] * b.data[p * b.row_stride + j * b.col_stride];
    }
    acc
}

const RM: usize = 4;
const RN: usize = 16;

/// `c += alpha * a @ b` where the rows of `b` are contiguous.
#[inline(always)]
fn rows_body<const FMA: bool>(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let a_at = |i: usize, p: usize| a.data[i * a.row_stride + p * a.col_stride];
    for j0 in (0..n).step_by(RN) {
        let nj = RN.min(n - j0);
        for i0 in (0..m).step_by(RM) {
            let mi = RM.min(m - i0);
            if mi == RM && nj == RN {
                let mut acc = [[0.0f32; RN]; RM];
                for p in 0..k {
                    let start = p * b.row_stride + j0;
                    let row: &[f32; RN] = b.data[start..start + RN].try_into().unwrap();
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let av = a_at(i0 + r, p);
                        for x in 0..RN {
                            acc_r[x] = mul_add::<FMA>(av, row[x], acc_r[x]);
                        }
                    }
                }
                for (r, acc_r) in acc.iter().enumerate() {
                    let out: &mut [f32; RN] = (&mut c[(i0 + r) * n + j0..(i0 + r) * n + j0 + RN]).try_into().unwrap();
                    for x in 0..RN {
                        out[x] = mul_add::<FMA>(alpha, acc_r[x], out[x]);
                    }
                }
            } else {
                for r in 0..mi {
                    for x in 0..nj {
                        let mut s = 0.0f32;
                        for p in 0..k {
                            s = mul_add::<FMA>(a_at(i0 + r, p), b.data[p * b.row_stride + j0 + x], s);
                        }
                        let o = &mut c[(i0 + r) * n + j0 + x];
                        *o = mul_add::<FMA>(alpha, s, *o);
                    }
                }
            }
        }
    }
}

dispatch! {
    fn gemm_rows_portable(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) => rows_body
}

fn gemm_rows(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512, and `sgemm` checked every bound the kernel relies on.
        return unsafe { avx512::rows(alpha, a, b, c) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, and `sgemm` checked every bound the kernel relies on.
        return unsafe { avx2::rows(alpha, a, b, c) };
    }
    gemm_rows_portable(alpha, a, b, c)
}

const DN: usize = 4;
const LANES: usize = 8;

/// `c += alpha * a @ b` where `a` is row-major and `b` is the transpose of a row-major `(n, k)` matrix: each
/// element of `c` is a dot product of two contiguous rows, four at a time.
#[inline(always)]
fn dots_body<const FMA: bool>(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let a_row = |i: usize| &a.data[i * a.row_stride..i * a.row_stride + k];
    let b_row = |j: usize| &b.data[j * b.col_stride..j * b.col_stride + k];
    let whole = k - k % LANES;
    for i in 0..m {
        let x = a_row(i);
        let c_row = &mut c[i * n..(i + 1) * n];
        let mut j = 0;
        while j + DN <= n {
            let (y0, y1, y2, y3) = (b_row(j), b_row(j + 1), b_row(j + 2), b_row(j + 3));
            let mut acc = [[0.0f32; LANES]; DN];
            for ((((xa, b0), b1), b2), b3) in x[..whole]
                .chunks_exact(LANES)
                .zip(y0[..whole].chunks_exact(LANES))
                .zip(y1[..whole].chunks_exact(LANES))
                .zip(y2[..whole].chunks_exact(LANES))
                .zip(y3[..whole].chunks_exact(LANES))
            {
                for l in 0..LANES {
                    acc[0][l] = mul_add::<FMA>(xa[l], b0[l], acc[0][l]);
                    acc[1][l] = mul_add::<FMA>(xa[l], b1[l], acc[1][l]);
                    acc[2][l] = mul_add::<FMA>(xa[l], b2[l], acc[2][l]);
                    acc[3][l] = mul_add::<FMA>(xa[l], b3[l], acc[3][l]);
                }
            }
            for (q, y) in [y0, y1, y2, y3].into_iter().enumerate() {
                let mut s: f32 = acc[q].iter().sum();
                for p in whole..k {
                    s = mul_add::<FMA>(x[p], y[p], s);
                }
                c_row[j + q] = mul_add::<FMA>(alpha, s, c_row[j + q]);
            }
            j += DN;
        }
        for (jj, o) in c_row.iter_mut().enumerate().skip(j) {
            let y = b_row(jj);
            let mut s = 0.0f32;
            for p in 0..k {
                s = mul_add::<FMA>(x[p], y[p], s);
            }
            *o = mul_add::<FMA>(alpha, s, *o);
        }
    }
}

dispatch! {
    fn gemm_dots_portable(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) => dots_body
}

fn gemm_dots(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx512() {
        // SAFETY: the CPU has AVX-512, and `sgemm` checked every bound the kernel relies on.
        return unsafe { avx512::dots(alpha, a, b, c) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::simd::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA, and `sgemm` checked every bound the kernel relies on.
        return unsafe { avx2::dots(alpha, a, b, c) };
    }
    gemm_dots_portable(alpha, a, b, c)
}

/// The two kernels written with AVX2/FMA intrinsics: the same blocking as the portable bodies, with the
/// accumulators pinned in registers. At the edges, the row-panel kernel masks its last columns; the dot-product
/// kernel computes the products that do not fill a block one vectorised dot product at a time.
#[cfg(target_arch = "x86_64")]
mod avx2 {
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
}

/// Both kernels with AVX-512 intrinsics: twice the width of the AVX2 ones, and masked loads and stores for the
/// edges instead of scalar code. The dot-product kernel works on blocks of sixteen dot products, so that the
/// horizontal sums at the end of a block are one transposing reduction of its sixteen accumulators.
#[cfg(target_arch = "x86_64")]
mod avx512 {
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
            if cols == 2 {
                dots_block::<R, 2>(alpha, a, b, c, i0, j0)
            } else {
                dots_block::<R, 1>(alpha, a, b, c, i0, j0)
            }
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
}

/// The definition of [`sgemm`], one dot product at a time.
pub fn sgemm_reference(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    let (m, n) = (a.rows, b.cols);
    check(&a, &b, c, m, n);
    for i in 0..m {
        for j in 0..n {
            let acc = dot_at(&a, &b, i, j);
            let old = if beta == 0.0 { 0.0 } else { beta * c[i * n + j] };
            c[i * n + j] = alpha * acc + old;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_gemm_matches_reference_for_every_transpose() {
        let mut rng = Rng::new(7);
        for &(m, k, n) in &[
            (6, 25, 784),
            (16, 150, 800),
            (8, 400, 120),
            (3, 1, 5),
            (10, 84, 8),
            (150, 16, 800),
            (7, 13, 19),
            (9, 37, 53),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let am = if ta { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
                let bm = if tb { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
                let mut fast = c0.clone();
                let mut slow = c0.clone();
                for beta in [1.0, 0.0, 0.5] {
                    sgemm(0.5, am, bm, beta, &mut fast);
                    sgemm_reference(0.5, am, bm, beta, &mut slow);
                }
                // The portable kernels, which this CPU may never pick, against the reference too.
                let mut portable = c0.clone();
                let mut want = c0.clone();
                sgemm_reference(0.5, am, bm, 1.0, &mut want);
                if bm.col_stride == 1 {
                    rows_body::<false>(0.5, am, bm, &mut portable);
                } else if bm.row_stride == 1 && am.col_stride == 1 {
                    dots_body::<false>(0.5, am, bm, &mut portable);
                } else {
                    portable = want.clone();
                }
                for (x, y) in portable.iter().zip(&want) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "portable {x} vs {y} ({m},{k},{n})");
                }
                for (x, y) in fast.iter().zip(&slow) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y} ({m},{k},{n})");
                }
                // The AVX2 kernels, which a CPU with AVX-512 never picks on its own.
                #[cfg(target_arch = "x86_64")]
                if crate::simd::avx2_fma() && (bm.col_stride == 1 || (bm.row_stride == 1 && am.col_stride == 1)) {
                    let mut narrow = c0.clone();
                    // SAFETY: the CPU has AVX2 and FMA; the shapes are consistent, as `sgemm` checked above.
                    unsafe {
                        if bm.col_stride == 1 {
                            avx2::rows(0.5, am, bm, &mut narrow)
                        } else {
                            avx2::dots(0.5, am, bm, &mut narrow)
                        }
                    }
                    for (x, y) in narrow.iter().zip(&want) {
                        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "avx2 {x} vs {y} ({m},{k},{n})");
                    }
                }
            }
        }
    }
}
