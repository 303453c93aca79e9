//! This CPU's fp32 multiply-add peak, one core: twelve independent chains of vector FMAs (more than the FMA
//! latency times the FMA units), AVX-512 and AVX2.
//! Build and run: `rustc -O bench/fma_peak.rs -o /tmp/fma_peak && /tmp/fma_peak` (x86-64 only).

use std::arch::x86_64::*;
use std::time::Instant;

const ITERS: u64 = 50_000_000;

/// Twelve chains, each in its own variable: kept in an array, the compiler rotated the array through the
/// registers every iteration and spilled one chain to memory, which measured two thirds of the peak.
macro_rules! chains {
    ($fma:ident, $set1:ident, $ty:ty, $sum:expr) => {{
        let (a, b) = ($set1(0.999_999), $set1(1e-7));
        let z = $set1(0.0);
        let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) = (z, z, z, z, z, z);
        let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) = (z, z, z, z, z, z);
        for _ in 0..ITERS {
            c0 = $fma(c0, a, b);
            c1 = $fma(c1, a, b);
            c2 = $fma(c2, a, b);
            c3 = $fma(c3, a, b);
            c4 = $fma(c4, a, b);
            c5 = $fma(c5, a, b);
            c6 = $fma(c6, a, b);
            c7 = $fma(c7, a, b);
            c8 = $fma(c8, a, b);
            c9 = $fma(c9, a, b);
            c10 = $fma(c10, a, b);
            c11 = $fma(c11, a, b);
        }
        let all: [$ty; CHAINS as usize] = [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11];
        all.iter().map($sum).sum::<f32>()
    }};
}

const CHAINS: u64 = 12;

#[target_feature(enable = "avx512f,fma")]
unsafe fn chains_avx512() -> f32 {
    chains!(_mm512_fmadd_ps, _mm512_set1_ps, __m512, |&x| _mm512_reduce_add_ps(x))
}

#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2() -> f32 {
    chains!(_mm256_fmadd_ps, _mm256_set1_ps, __m256, |&x| {
        let mut lanes = [0.0f32; 8];
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x) };
        lanes.iter().sum::<f32>()
    })
}

/// Best of three runs, in GFLOP/s (an FMA is two FLOPs per lane).
fn best(lanes: u64, run: impl Fn() -> f32) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(run());
            (ITERS * CHAINS * lanes * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

fn main() {
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        println!("fp32 FMA peak, one core: AVX2 {:.0} GFLOP/s", best(8, || unsafe { chains_avx2() }));
    }
    if is_x86_feature_detected!("avx512f") {
        println!("fp32 FMA peak, one core: AVX-512 {:.0} GFLOP/s", best(16, || unsafe { chains_avx512() }));
    }
}
