use super::*;
use crate::rng::Rng;

#[test]
fn fast_gemm_matches_reference_for_every_transpose() {
    let mut rng = Rng::new(7);
    for &(m, k, n) in
        &[(6, 25, 784), (16, 150, 800), (8, 400, 120), (3, 1, 5), (10, 84, 8), (150, 16, 800), (7, 13, 19), (9, 37, 53)]
    {
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
            // The SIMD128 kernels give the portable ones' bits, whatever the shape (`scripts/wasm-test.sh`).
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            if bm.col_stride == 1 || (bm.row_stride == 1 && am.col_stride == 1) {
                let mut lanes = c0.clone();
                match bm.col_stride == 1 {
                    true => simd128::rows(0.5, am, bm, &mut lanes),
                    false => simd128::dots(0.5, am, bm, &mut lanes),
                }
                assert_eq!(lanes, portable, "SIMD128 against portable ({m},{k},{n}, {ta}, {tb})");
            }
            for (x, y) in fast.iter().zip(&slow) {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y} ({m},{k},{n})");
            }
            // The AVX2 kernels, which a CPU with AVX-512 never picks on its own.
            #[cfg(target_arch = "x86_64")]
            if crate::simd::cpu_has(crate::simd::Isa::Avx2)
                && (bm.col_stride == 1 || (bm.row_stride == 1 && am.col_stride == 1))
            {
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
