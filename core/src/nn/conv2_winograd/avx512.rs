//! The kernels with AVX-512 intrinsics.

use std::arch::x86_64::*;

use super::{A, BT, C, H, K, LANES, OC, OS, PLANE_LEN, POINTS, T, V5_SCALED, WEIGHT_LEN};

/// A vector's worth of values per half of a patch row and term of the row pass.
type PerTerm<V> = [[[V; 16]; A]; 2];

/// The row pass of the input transform, for lane `l` of the 32 per patch row (`nu = l / 5`, `tx = l % 5`) in
/// half `h` (lanes `16 h..16 h + 16`) and term `k`: which value of the image row it reads, `2 tx + k`
/// (`ROW_INDEX[h][k]`), and its coefficient, `B^T[nu][k]` (`ROW_COEF[h][k]`, zero in the padding lanes).
const ROW_TERMS: (PerTerm<i32>, PerTerm<f32>) = {
    let (mut index, mut coef) = ([[[0; 16]; A]; 2], [[[0.0; 16]; A]; 2]);
    let mut lane = 0;
    while lane < A * T {
        let (h, l) = (lane / 16, lane % 16);
        let mut k = 0;
        while k < A {
            index[h][k][l] = (2 * (lane % T) + k) as i32;
            coef[h][k][l] = BT[lane / T][k];
            k += 1;
        }
        lane += 1;
    }
    (index, coef)
};
const ROW_INDEX: PerTerm<i32> = ROW_TERMS.0;
const ROW_COEF: PerTerm<f32> = ROW_TERMS.1;

#[inline(always)]
unsafe fn splat(x: f32) -> __m512 {
    // SAFETY: register operation only.
    unsafe { _mm512_set1_ps(x) }
}

/// `B^T d` for six vectors, with the rows of [`BT`] written out and their common terms shared.
#[inline(always)]
unsafe fn bt_times(d: [__m512; A]) -> [__m512; A] {
    // SAFETY: register operations only.
    unsafe {
        let a = _mm512_sub_ps(d[1], d[3]);
        let b = _mm512_sub_ps(d[2], d[4]);
        [
            _mm512_fmadd_ps(splat(-1.5), a, _mm512_fmadd_ps(splat(-2.0), d[2], _mm512_add_ps(d[0], d[4]))),
            _mm512_fmadd_ps(splat(2.0), _mm512_sub_ps(d[4], d[1]), _mm512_fmadd_ps(splat(5.0), d[3], d[2])),
            _mm512_fmadd_ps(splat(-2.0), _mm512_add_ps(d[1], d[4]), _mm512_fmsub_ps(splat(5.0), d[2], d[3])),
            _mm512_fmadd_ps(splat(0.5), b, a),
            _mm512_fmadd_ps(splat(-2.0), b, a),
            _mm512_fmadd_ps(splat(-1.5), b, _mm512_fmadd_ps(splat(-2.0), d[3], _mm512_add_ps(d[1], d[5]))),
        ]
    }
}

/// Each plane's rows in turn: one image row (14 values) becomes the 30 values `(B^T P)` along the row for all five
/// tiles, in lanes `nu * 5 + tx` of two vectors, by permuting the row five times per vector; then the columns
/// pass combines six of those rows per tile row.
///
/// # Safety
/// The CPU must have AVX-512F; the buffers must have passed `check`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub unsafe fn transform_input(n: usize, input: &[f32], v: &mut [f32]) {
    let (ip, vp) = (input.as_ptr(), v.as_mut_ptr());
    // SAFETY (whole body): every offset is below the lengths `check` proved; the row loads are masked to 14.
    unsafe {
        let mut index = [[_mm512_setzero_si512(); A]; 2];
        let mut coef = [[_mm512_setzero_ps(); A]; 2];
        for h in 0..2 {
            for k in 0..A {
                index[h][k] = _mm512_loadu_si512(ROW_INDEX[h][k].as_ptr().cast());
                coef[h][k] = _mm512_loadu_ps(ROW_COEF[h][k].as_ptr());
            }
        }
        for p in 0..C * n {
            let plane = ip.add(p * H * H);
            let dst = vp.add(p * PLANE_LEN);
            let mut rows = [[_mm512_setzero_ps(); 2]; H];
            for (y, row) in rows.iter_mut().enumerate() {
                let r = _mm512_maskz_loadu_ps((1 << H) - 1, plane.add(y * H));
                // B^T[nu][0] is zero for nu >= 3 and B^T[nu][5] for nu < 5: five terms per half.
                for (h, ks) in [(0, 0..A - 1), (1, 1..A)] {
                    let mut acc = _mm512_setzero_ps();
                    for k in ks {
                        acc = _mm512_fmadd_ps(coef[h][k], _mm512_permutexvar_ps(index[h][k], r), acc);
                    }
                    row[h] = acc;
                }
            }
            for ty in 0..T {
                for h in 0..2 {
                    let d = std::array::from_fn(|k| rows[2 * ty + k][h]);
                    for (xi, out) in bt_times(d).iter().enumerate() {
                        _mm512_storeu_ps(dst.add((ty * A + xi) * LANES + 16 * h), *out);
                    }
                }
            }
        }
    }
}

/// `TILES` neighbouring tiles of one tile row of one image: per patch row `xi`, the 6 products `M[xi][nu]` of
/// each tile (6 multiply-adds each, one per input channel), folded at once into the tile's 2x2 outputs through
/// `A^T`, whose rows are `1, 1, 1, 1, 1, 0` and `0, 1, -1, 1/2, -2, 1`.
///
/// # Safety
/// AVX-512F; `planes[c]` the transformed plane of channel `c` of the image, `u` the transformed weight, `dst`
/// the image's output, `ty < 5`, `tx0 + TILES <= 5`.
#[inline(always)]
unsafe fn forward_tiles<const TILES: usize>(
    planes: &[*const f32; C],
    u: *const f32,
    bias: __m512,
    ty: usize,
    tx0: usize,
    dst: *mut f32,
) {
    // SAFETY (whole body): offsets stay inside the planes, the weight and the image's output.
    unsafe {
        let zero = _mm512_setzero_ps();
        // y[t][2 i + j]: output (2 ty + i, 2 (tx0 + t) + j).
        let mut y = [[zero; 4]; TILES];
        for xi in 0..A {
            let mut m = [[zero; A]; TILES];
            for (c, plane) in planes.iter().enumerate() {
                let src = plane.add((ty * A + xi) * LANES + tx0);
                for nu in 0..A {
                    let w = _mm512_loadu_ps(u.add(((xi * A + nu) * C + c) * OC));
                    for (t, m_t) in m.iter_mut().enumerate() {
                        m_t[nu] = _mm512_fmadd_ps(_mm512_set1_ps(*src.add(nu * T + t)), w, m_t[nu]);
                    }
                }
            }
            for (m_t, y_t) in m.iter().zip(y.iter_mut()) {
                let s0 = _mm512_add_ps(_mm512_add_ps(m_t[0], m_t[1]), _mm512_add_ps(m_t[2], m_t[3]));
                let t0 = _mm512_add_ps(s0, m_t[4]);
                let s1 = _mm512_fmadd_ps(splat(0.5), m_t[3], _mm512_sub_ps(m_t[1], m_t[2]));
                let t1 = _mm512_add_ps(_mm512_fmadd_ps(splat(-2.0), m_t[4], s1), m_t[5]);
                if xi < A - 1 {
                    y_t[0] = _mm512_add_ps(y_t[0], t0);
                    y_t[1] = _mm512_add_ps(y_t[1], t1);
                }
                // A^T[1][xi]: the point, or 1 at infinity.
                let a = if xi < A - 1 { POINTS[xi] } else { 1.0 };
                if a != 0.0 {
                    y_t[2] = _mm512_fmadd_ps(splat(a), t0, y_t[2]);
                    y_t[3] = _mm512_fmadd_ps(splat(a), t1, y_t[3]);
                }
            }
        }
        for (t, y_t) in y.iter().enumerate() {
            for (q, y_q) in y_t.iter().enumerate() {
                let (i, j) = (q / 2, q % 2);
                let px = (2 * ty + i) * OS + 2 * (tx0 + t) + j;
                _mm512_storeu_ps(dst.add(px * OC), _mm512_max_ps(_mm512_add_ps(*y_q, bias), zero));
            }
        }
    }
}

/// # Safety
/// The CPU must have AVX-512F; the buffers must have passed `check`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub unsafe fn forward(n: usize, v: &[f32], u: &[f32], bias: &[f32], out: &mut [f32]) {
    let (vp, up, op) = (v.as_ptr(), u.as_ptr(), out.as_mut_ptr());
    // SAFETY (whole body): every offset is below the lengths `check` proved.
    unsafe {
        let bias = _mm512_loadu_ps(bias.as_ptr());
        for b in 0..n {
            let planes: [*const f32; C] = std::array::from_fn(|c| vp.add((b * C + c) * PLANE_LEN));
            let dst = op.add(b * OS * OS * OC);
            for ty in 0..T {
                forward_tiles::<3>(&planes, up, bias, ty, 0, dst);
                forward_tiles::<2>(&planes, up, bias, ty, 3, dst);
            }
        }
    }
}

/// The weight gradient's sums in the transformed domain, `sums[xi][nu][c] = Σ D[xi][nu] (B^T P_c B)[xi][nu]` over
/// every tile of every image, where `D = V G V^T` of the tile's 2x2 output gradient `G` (`V` the Vandermonde
/// matrix of the points with two columns: rows `1, p` and `0, 1` at infinity). Per image, `rows` first holds
/// `G V^T` of every tile; then per `(xi, nu)` pair of pairs, 12 sums stay in registers over the 25 tiles.
///
/// # Safety
/// The CPU must have AVX-512F; the buffers must have passed `check`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub unsafe fn weight_grad_sums(
    n: usize,
    v: &[f32],
    grad: &[f32],
    rows: &mut [f32],
    sums: &mut [f32],
    bias_grad: &mut [f32],
) {
    sums[..WEIGHT_LEN].fill(0.0);
    let (vp, gp, rp, sp) = (v.as_ptr(), grad.as_ptr(), rows.as_mut_ptr(), sums.as_mut_ptr());
    // SAFETY (whole body): every offset is below the lengths `check` proved.
    unsafe {
        // The bias gradient, from the pairs of pixels `h[1]` below adds up anyway.
        let mut bias_sum = _mm512_setzero_ps();
        for b in 0..n {
            let g_img = gp.add(b * OS * OS * OC);
            // rows[(tile * 2 + a) * 6 + nu]: Σ_e G[a][e] V[nu][e] for the tile's gradient row a.
            for tile in 0..T * T {
                let (ty, tx) = (tile / T, tile % T);
                for a in 0..2 {
                    let px = g_img.add(((2 * ty + a) * OS + 2 * tx) * OC);
                    let (g0, g1) = (_mm512_loadu_ps(px), _mm512_loadu_ps(px.add(OC)));
                    let h = [
                        g0,
                        _mm512_add_ps(g0, g1),
                        _mm512_sub_ps(g0, g1),
                        _mm512_fmadd_ps(splat(POINTS[3]), g1, g0),
                        _mm512_fmadd_ps(splat(POINTS[4]), g1, g0),
                        g1,
                    ];
                    bias_sum = _mm512_add_ps(bias_sum, h[1]);
                    for (nu, h_nu) in h.iter().enumerate() {
                        _mm512_storeu_ps(rp.add(((tile * 2 + a) * A + nu) * OC), *h_nu);
                    }
                }
            }
            let planes: [*const f32; C] = std::array::from_fn(|c| vp.add((b * C + c) * PLANE_LEN));
            for xi in 0..A {
                const NU: usize = 3;
                for nu0 in (0..A).step_by(NU) {
                    let mut acc = [[_mm512_setzero_ps(); C]; NU];
                    for (j, acc_j) in acc.iter_mut().enumerate() {
                        for (c, a) in acc_j.iter_mut().enumerate() {
                            *a = _mm512_loadu_ps(sp.add(((xi * A + nu0 + j) * C + c) * OC));
                        }
                    }
                    for tile in 0..T * T {
                        let (ty, tx) = (tile / T, tile % T);
                        for (j, acc_j) in acc.iter_mut().enumerate() {
                            let nu = nu0 + j;
                            let h0 = _mm512_loadu_ps(rp.add(((tile * 2) * A + nu) * OC));
                            let h1 = _mm512_loadu_ps(rp.add(((tile * 2 + 1) * A + nu) * OC));
                            // D[xi][nu] = V[xi][0] h0 + V[xi][1] h1.
                            let d = match xi {
                                0 => h0,
                                1 => _mm512_add_ps(h0, h1),
                                2 => _mm512_sub_ps(h0, h1),
                                5 => h1,
                                _ => _mm512_fmadd_ps(splat(POINTS[xi]), h1, h0),
                            };
                            let off = (ty * A + xi) * LANES + nu * T + tx;
                            for (c, a) in acc_j.iter_mut().enumerate() {
                                *a = _mm512_fmadd_ps(_mm512_set1_ps(*planes[c].add(off)), d, *a);
                            }
                        }
                    }
                    for (j, acc_j) in acc.iter().enumerate() {
                        for (c, a) in acc_j.iter().enumerate() {
                            _mm512_storeu_ps(sp.add(((xi * A + nu0 + j) * C + c) * OC), *a);
                        }
                    }
                }
            }
        }
        let mut lanes = [0.0f32; OC];
        _mm512_storeu_ps(lanes.as_mut_ptr(), bias_sum);
        for (g, s) in bias_grad.iter_mut().zip(lanes) {
            *g += s;
        }
    }
}

/// As `untransform_weight_grad_body`, with the zero coefficients of `A^T` skipped.
///
/// # Safety
/// The CPU must have AVX-512F; the buffers must have passed `check`.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
pub unsafe fn untransform_weight_grad(sums: &[f32], weight_grad: &mut [f32]) {
    let sp = sums.as_ptr();
    // SAFETY (whole body): every offset is below the lengths `check` proved.
    unsafe {
        for c in 0..C {
            // A^T M: (5, 6) of 16 channels.
            let mut am = [[_mm512_setzero_ps(); A]; K];
            for xi in 0..A {
                for nu in 0..A {
                    let m = _mm512_loadu_ps(sp.add(((xi * A + nu) * C + c) * OC));
                    for (i, am_i) in am.iter_mut().enumerate() {
                        if V5_SCALED[xi][i] != 0.0 {
                            am_i[nu] = _mm512_fmadd_ps(splat(V5_SCALED[xi][i]), m, am_i[nu]);
                        }
                    }
                }
            }
            let mut taps = [[0.0f32; OC]; K * K];
            for (i, am_i) in am.iter().enumerate() {
                for j in 0..K {
                    let mut tap = _mm512_setzero_ps();
                    for (nu, am_in) in am_i.iter().enumerate() {
                        if V5_SCALED[nu][j] != 0.0 {
                            tap = _mm512_fmadd_ps(splat(V5_SCALED[nu][j]), *am_in, tap);
                        }
                    }
                    _mm512_storeu_ps(taps[i * K + j].as_mut_ptr(), tap);
                }
            }
            for o in 0..OC {
                let dst = &mut weight_grad[(o * C + c) * K * K..][..K * K];
                for (d, tap) in dst.iter_mut().zip(&taps) {
                    *d += tap[o];
                }
            }
        }
    }
}
