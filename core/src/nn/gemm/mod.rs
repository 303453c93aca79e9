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
//! `sgemm_reference` (built for the tests) is the plain triple loop all are tested against.

use crate::simd::{BASELINE_FMA, mul_add, select};

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

fn gemm_rows(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    // The SIMD kernels index with pointers: `sgemm` checked every bound they rely on.
    select! {
        avx512 => avx512::rows(alpha, a, b, c),
        avx2 => avx2::rows(alpha, a, b, c),
        simd128 => simd128::rows(alpha, a, b, c),
        portable => rows_body::<BASELINE_FMA>(alpha, a, b, c),
    }
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

fn gemm_dots(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    // The SIMD kernels index with pointers: `sgemm` checked every bound they rely on.
    select! {
        avx512 => avx512::dots(alpha, a, b, c),
        avx2 => avx2::dots(alpha, a, b, c),
        simd128 => simd128::dots(alpha, a, b, c),
        portable => dots_body::<BASELINE_FMA>(alpha, a, b, c),
    }
}

/// The two kernels written with AVX2/FMA intrinsics: the same blocking as the portable bodies, with the
/// accumulators pinned in registers. At the edges, the row-panel kernel masks its last columns; the dot-product
/// kernel computes the products that do not fill a block one vectorised dot product at a time.
#[cfg(target_arch = "x86_64")]
mod avx2;

/// Both kernels with AVX-512 intrinsics: twice the width of the AVX2 ones, and masked loads and stores for the
/// edges instead of scalar code. The dot-product kernel works on blocks of sixteen dot products, so that the
/// horizontal sums at the end of a block are one transposing reduction of its sixteen accumulators.
#[cfg(target_arch = "x86_64")]
mod avx512;

/// `c = alpha * a @ b + beta * c` by its definition, one dot product at a time: what the fast GEMM is
/// tested against.
#[cfg(test)]
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

/// Both kernels with WebAssembly's SIMD128, with the portable ones' bits.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

#[cfg(test)]
mod tests;
