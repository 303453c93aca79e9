//! This CPU's fp32 multiply-add peak, one core: sixteen independent chains of vector FMAs, AVX-512 and AVX2.
//! Build and run: `rustc -O bench/fma_peak.rs -o /tmp/fma_peak && /tmp/fma_peak` (x86-64 only).

use std::arch::x86_64::*;
use std::time::Instant;

const ITERS: u64 = 50_000_000;

#[target_feature(enable = "avx512f,fma")]
unsafe fn chains_avx512() -> f32 {
    let mut acc = [_mm512_set1_ps(0.0); 16];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..ITERS {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
}

#[target_feature(enable = "avx2,fma")]
unsafe fn chains_avx2() -> f32 {
    let mut acc = [_mm256_set1_ps(0.0); 16];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..ITERS {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    acc.iter()
        .map(|&x| {
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x) };
            lanes.iter().sum::<f32>()
        })
        .sum()
}

/// Best of three runs, in GFLOP/s (an FMA is two FLOPs per lane).
fn best(lanes: u64, run: impl Fn() -> f32) -> f64 {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(run());
            (ITERS * 16 * lanes * 2) as f64 / t.elapsed().as_secs_f64() / 1e9
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
