//! Both GEMM kernels with WebAssembly's SIMD128, with the portable kernels' bits: every element is the portable
//! code's sum, term by term in the same order (a multiply, then an add). The dot products of a width that is no
//! whole number of blocks are left to the portable code; the row-panel kernel takes every width itself.

use core::arch::wasm32::*;

use super::{DN, LANES, MatRef, RM, dots_body};

/// `p[at..at + 4]`.
///
/// # Safety
/// The four values must be there.
#[inline(always)]
unsafe fn load(p: *const f32, at: usize) -> v128 {
    // SAFETY: the caller's promise.
    unsafe { v128_load(p.add(at) as *const v128) }
}

#[inline(always)]
fn mul_add(a: v128, b: v128, acc: v128) -> v128 {
    f32x4_add(f32x4_mul(a, b), acc)
}

/// As [`super::rows_body`]: blocks of up to 4 rows by 8 columns in vectors (4 where fewer are left), and the last
/// columns of a width that is no whole number of vectors one value at a time, as there. Each block's shape is a
/// constant of its own copy of the loop, which the browser's compiler needs to keep it free of tests.
pub fn rows(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, n) = (a.rows, b.cols);
    let vector_cols = n - n % 4;
    for j in (0..vector_cols).step_by(8) {
        let two = vector_cols - j >= 8;
        for i0 in (0..m).step_by(RM) {
            // SAFETY: `sgemm` checked that every index of `a` and `b` and the m x n values of `c` exist; the
            // block's rows and columns are inside them.
            unsafe {
                match (RM.min(m - i0), two) {
                    (4, true) => rows_block::<4, 2>(alpha, a, b, c, i0, j),
                    (4, false) => rows_block::<4, 1>(alpha, a, b, c, i0, j),
                    (3, true) => rows_block::<3, 2>(alpha, a, b, c, i0, j),
                    (3, false) => rows_block::<3, 1>(alpha, a, b, c, i0, j),
                    (2, true) => rows_block::<2, 2>(alpha, a, b, c, i0, j),
                    (2, false) => rows_block::<2, 1>(alpha, a, b, c, i0, j),
                    (_, true) => rows_block::<1, 2>(alpha, a, b, c, i0, j),
                    (_, false) => rows_block::<1, 1>(alpha, a, b, c, i0, j),
                }
            }
        }
    }
    for i in 0..m {
        for x in vector_cols..n {
            let mut s = 0.0f32;
            for p in 0..a.cols {
                s += a.data[i * a.row_stride + p * a.col_stride] * b.data[p * b.row_stride + x];
            }
            let o = &mut c[i * n + x];
            *o += alpha * s;
        }
    }
}

/// Rows `i0..i0 + R` and columns `j..j + 4 V` of `c += alpha * a @ b`, each value summed over `p` from zero, a
/// multiply then an add, as the portable code sums it.
///
/// # Safety
/// The block lies inside `c (a.rows, b.cols)`, and `a` and `b` hold every value it reads (`sgemm`'s checks).
#[inline(always)]
unsafe fn rows_block<const R: usize, const V: usize>(
    alpha: f32,
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    i0: usize,
    j: usize,
) {
    let n = b.cols;
    let (ap, bp, cp) = (a.data.as_ptr(), b.data.as_ptr(), c.as_mut_ptr());
    let mut acc = [[f32x4_splat(0.0); V]; R];
    // SAFETY (whole body): the caller's promise.
    unsafe {
        for p in 0..a.cols {
            let row = bp.add(p * b.row_stride + j);
            let bs: [v128; V] = std::array::from_fn(|v| load(row, 4 * v));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = v128_load32_splat(ap.add((i0 + r) * a.row_stride + p * a.col_stride) as *const u32);
                for (acc_v, &b_v) in acc_r.iter_mut().zip(&bs) {
                    *acc_v = mul_add(av, b_v, *acc_v);
                }
            }
        }
        let alpha = f32x4_splat(alpha);
        for (r, acc_r) in acc.iter().enumerate() {
            let out = cp.add((i0 + r) * n + j);
            for (v, &acc_v) in acc_r.iter().enumerate() {
                v128_store(out.add(4 * v) as *mut v128, mul_add(alpha, acc_v, load(out, 4 * v)));
            }
        }
    }
}

/// As [`super::dots_body`]: four dot products at a time, eight lanes each, summed lane by lane as there.
pub fn dots(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if n % DN != 0 {
        return dots_body::<false>(alpha, a, b, c);
    }
    let whole = k - k % LANES;
    let (ap, bp) = (a.data.as_ptr(), b.data.as_ptr());
    let mut lanes = [0.0f32; LANES];
    for i in 0..m {
        let x = &a.data[i * a.row_stride..i * a.row_stride + k];
        for j in (0..n).step_by(DN) {
            let mut acc = [[f32x4_splat(0.0); 2]; DN];
            // SAFETY: `sgemm` checked that rows i of `a` and j..j + 4 of `b` hold k values each.
            unsafe {
                let xp = ap.add(i * a.row_stride);
                for p in (0..whole).step_by(LANES) {
                    let (x0, x1) = (load(xp, p), load(xp, p + 4));
                    for (q, acc_q) in acc.iter_mut().enumerate() {
                        let y = bp.add((j + q) * b.col_stride + p);
                        acc_q[0] = mul_add(x0, load(y, 0), acc_q[0]);
                        acc_q[1] = mul_add(x1, load(y, 4), acc_q[1]);
                    }
                }
            }
            for (q, acc_q) in acc.iter().enumerate() {
                // SAFETY: eight values are there.
                unsafe {
                    v128_store(lanes.as_mut_ptr() as *mut v128, acc_q[0]);
                    v128_store(lanes.as_mut_ptr().add(4) as *mut v128, acc_q[1]);
                }
                let y = &b.data[(j + q) * b.col_stride..(j + q) * b.col_stride + k];
                let mut s: f32 = lanes.iter().sum();
                for p in whole..k {
                    s += x[p] * y[p];
                }
                let o = &mut c[i * n + j + q];
                *o += alpha * s;
            }
        }
    }
}
