//! The transforms as matrix products, one value at a time: the reference the AVX-512 kernels are tested against,
//! and the path of a CPU without them (then only in tests: [`crate::nn::conv2_winograd::enabled`] sends it to the
//! direct kernels).

use super::*;

pub fn transform_input(n: usize, input: &[f32], v: &mut [f32]) {
    for p in 0..C * n {
        let plane = &input[p * H * H..(p + 1) * H * H];
        let dst = &mut v[p * PLANE_LEN..(p + 1) * PLANE_LEN];
        dst.fill(0.0);
        for ty in 0..T {
            for tx in 0..T {
                for xi in 0..A {
                    for nu in 0..A {
                        let mut s = 0.0;
                        for k in 0..A {
                            for l in 0..A {
                                s += BT[xi][k] * plane[(2 * ty + k) * H + 2 * tx + l] * BT[nu][l];
                            }
                        }
                        dst[(ty * A + xi) * LANES + nu * T + tx] = s;
                    }
                }
            }
        }
    }
}

/// `(B^T P B)[xi][nu]` of tile `(ty, tx)` of plane `p`.
pub fn at(v: &[f32], p: usize, ty: usize, tx: usize, xi: usize, nu: usize) -> f32 {
    v[p * PLANE_LEN + (ty * A + xi) * LANES + nu * T + tx]
}

pub fn forward(n: usize, v: &[f32], u: &[f32], bias: &[f32], out: &mut [f32]) {
    for b in 0..n {
        for ty in 0..T {
            for tx in 0..T {
                for o in 0..OC {
                    let mut m = [[0.0f32; A]; A];
                    for (xi, m_xi) in m.iter_mut().enumerate() {
                        for (nu, m_xn) in m_xi.iter_mut().enumerate() {
                            for c in 0..C {
                                *m_xn += u[((xi * A + nu) * C + c) * OC + o] * at(v, b * C + c, ty, tx, xi, nu);
                            }
                        }
                    }
                    for i in 0..2 {
                        for j in 0..2 {
                            let mut y = bias[o];
                            for xi in 0..A {
                                for nu in 0..A {
                                    y += vandermonde(xi, i, 2) * m[xi][nu] * vandermonde(nu, j, 2);
                                }
                            }
                            out[((b * OS + 2 * ty + i) * OS + 2 * tx + j) * OC + o] = y.max(0.0);
                        }
                    }
                }
            }
        }
    }
}

pub fn weight_grad_sums(n: usize, v: &[f32], grad: &[f32], sums: &mut [f32]) {
    sums[..WEIGHT_LEN].fill(0.0);
    for b in 0..n {
        for ty in 0..T {
            for tx in 0..T {
                for o in 0..OC {
                    let g = |a: usize, e: usize| grad[((b * OS + 2 * ty + a) * OS + 2 * tx + e) * OC + o];
                    for xi in 0..A {
                        for nu in 0..A {
                            let mut d = 0.0;
                            for a in 0..2 {
                                for e in 0..2 {
                                    d += vandermonde(xi, a, 2) * g(a, e) * vandermonde(nu, e, 2);
                                }
                            }
                            for c in 0..C {
                                sums[((xi * A + nu) * C + c) * OC + o] += d * at(v, b * C + c, ty, tx, xi, nu);
                            }
                        }
                    }
                }
            }
        }
    }
}
