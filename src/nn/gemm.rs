//! Single-precision matrix multiply: the one primitive every layer is built on.
//!
//! `C (m,n) = alpha * A (m,k) @ B (k,n) + beta * C`, with every matrix given as a slice plus a row stride and a
//! column stride, so a transposed operand is just a different pair of strides. The fast path is
//! `matrixmultiply`, which picks AVX2/FMA, AVX, SSE2 or NEON kernels at run time; [`sgemm_reference`] is the
//! plain triple loop it is tested against.

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
    // SAFETY: `check` proved that every index the kernel touches lies inside the three slices, and `c` does
    // not alias `a` or `b` because it is borrowed mutably.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a.row_stride as isize,
            a.col_stride as isize,
            b.data.as_ptr(),
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// The definition of [`sgemm`], one dot product at a time.
pub fn sgemm_reference(alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    check(&a, &b, c, m, n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a.data[i * a.row_stride + p * a.col_stride] * b.data[p * b.row_stride + j * b.col_stride];
            }
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
        for &(m, k, n) in &[(6, 25, 784), (16, 150, 100), (8, 400, 120), (3, 1, 5), (10, 84, 8)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.uniform(-1.0, 1.0)).collect();
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let am = if ta { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
                let bm = if tb { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
                let mut fast = c0.clone();
                let mut slow = c0.clone();
                sgemm(0.5, am, bm, 1.0, &mut fast);
                sgemm_reference(0.5, am, bm, 1.0, &mut slow);
                for (x, y) in fast.iter().zip(&slow) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y} ({m},{k},{n})");
                }
            }
        }
    }
}
