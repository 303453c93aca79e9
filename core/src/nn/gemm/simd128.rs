//! Both GEMM kernels with WebAssembly's SIMD128, with the portable kernels' bits: every element is the portable
//! code's sum, term by term in the same order (a multiply, then an add), and blocks the portable code does one
//! value at a time are done by it.

use core::arch::wasm32::*;

use super::{DN, LANES, MatRef, RM, RN, dots_body, rows_body};

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

/// As [`super::rows_body`]: whole blocks of 4 rows by 16 columns in vectors, eight columns at a time.
pub fn rows(alpha: f32, a: MatRef, b: MatRef, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m % RM != 0 || n % RN != 0 {
        return rows_body::<false>(alpha, a, b, c);
    }
    let alpha_v = f32x4_splat(alpha);
    let (ap, bp, cp) = (a.data.as_ptr(), b.data.as_ptr(), c.as_mut_ptr());
    // SAFETY (whole body): `sgemm` checked that every index of `a` and `b` and the m x n values of `c` exist,
    // and the blocks are whole.
    unsafe {
        for j0 in (0..n).step_by(RN) {
            for i0 in (0..m).step_by(RM) {
                for half in 0..2 {
                    let j = j0 + 8 * half;
                    let mut acc = [[f32x4_splat(0.0); 2]; RM];
                    for p in 0..k {
                        let row = bp.add(p * b.row_stride + j);
                        let (r0, r1) = (load(row, 0), load(row, 4));
                        for (r, acc_r) in acc.iter_mut().enumerate() {
                            let av =
                                v128_load32_splat(ap.add((i0 + r) * a.row_stride + p * a.col_stride) as *const u32);
                            acc_r[0] = mul_add(av, r0, acc_r[0]);
                            acc_r[1] = mul_add(av, r1, acc_r[1]);
                        }
                    }
                    for (r, acc_r) in acc.iter().enumerate() {
                        let out = cp.add((i0 + r) * n + j);
                        v128_store(out as *mut v128, mul_add(alpha_v, acc_r[0], load(out, 0)));
                        v128_store(out.add(4) as *mut v128, mul_add(alpha_v, acc_r[1], load(out, 4)));
                    }
                }
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
