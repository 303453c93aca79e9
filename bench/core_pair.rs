//! Whether this machine's first two cores are two cores at every moment: over and over, one thread of pure
//! multiply-adds alone on core 0, then one on core 0 and one on core 1 at the same time; prints how much work the
//! pair did against the one alone (2.0: two whole cores; 1.0: the two share one core's arithmetic units, as two
//! hardware threads of one physical core do), how often the pair fell below 1.7, and when.
//! Build and run (Linux, x86-64 with AVX2 and FMA): `rustc -O bench/core_pair.rs -o /tmp/core_pair && /tmp/core_pair 60`
//! (the argument is seconds; default 30).

use std::arch::x86_64::*;
use std::sync::{Arc, Barrier, mpsc};
use std::time::Instant;

unsafe extern "C" {
    fn sched_setaffinity(pid: i32, cpusetsize: usize, mask: *const u64) -> i32;
}

/// Keeps the calling thread on `cpu`.
fn pin(cpu: usize) {
    let mut mask = [0u64; 16];
    mask[cpu / 64] = 1 << (cpu % 64);
    // SAFETY: the mask is a valid cpu_set_t of 1024 bits; pid 0 is the calling thread.
    let rc = unsafe { sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr()) };
    assert_eq!(rc, 0, "cannot pin a thread to core {cpu}");
}

const ITERS: u64 = 100_000;

/// Twelve independent chains of 8-lane FMAs, each in its own register (see fma_peak.rs); returns seconds.
#[target_feature(enable = "avx2,fma")]
unsafe fn burn() -> f64 {
    let t = Instant::now();
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    let z = _mm256_set1_ps(0.0);
    let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) = (z, z, z, z, z, z);
    let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) = (z, z, z, z, z, z);
    for _ in 0..std::hint::black_box(ITERS) {
        c0 = _mm256_fmadd_ps(c0, a, b);
        c1 = _mm256_fmadd_ps(c1, a, b);
        c2 = _mm256_fmadd_ps(c2, a, b);
        c3 = _mm256_fmadd_ps(c3, a, b);
        c4 = _mm256_fmadd_ps(c4, a, b);
        c5 = _mm256_fmadd_ps(c5, a, b);
        c6 = _mm256_fmadd_ps(c6, a, b);
        c7 = _mm256_fmadd_ps(c7, a, b);
        c8 = _mm256_fmadd_ps(c8, a, b);
        c9 = _mm256_fmadd_ps(c9, a, b);
        c10 = _mm256_fmadd_ps(c10, a, b);
        c11 = _mm256_fmadd_ps(c11, a, b);
    }
    std::hint::black_box([c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11]);
    t.elapsed().as_secs_f64()
}

/// Five calls of `burn` (a few milliseconds); seconds per call.
fn burst() -> f64 {
    // SAFETY: main checked AVX2 and FMA.
    (0..5).map(|_| unsafe { burn() }).sum::<f64>() / 5.0
}

fn main() {
    assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"), "needs AVX2 and FMA");
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(30.0);
    let start_pair = Arc::new(Barrier::new(2));
    let (report, partner) = mpsc::channel();
    let barrier = Arc::clone(&start_pair);
    std::thread::spawn(move || {
        pin(1);
        loop {
            barrier.wait();
            if report.send(burst()).is_err() {
                return;
            }
        }
    });
    pin(0);
    let t0 = Instant::now();
    let (mut ratios, mut low_since, mut spells) = (Vec::new(), None, Vec::new());
    while t0.elapsed().as_secs_f64() < seconds {
        let alone = burst();
        start_pair.wait();
        let mine = burst();
        let theirs = partner.recv().expect("the partner thread runs until the end");
        let ratio = alone / mine + alone / theirs;
        ratios.push(ratio);
        let now = t0.elapsed().as_secs_f64();
        match (ratio < 1.7, low_since) {
            (true, None) => low_since = Some(now),
            (false, Some(since)) => {
                spells.push((since, now - since));
                low_since = None;
            }
            _ => {}
        }
    }
    if let Some(since) = low_since {
        spells.push((since, t0.elapsed().as_secs_f64() - since));
    }
    ratios.sort_by(f64::total_cmp);
    let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q) as usize];
    let low = ratios.iter().filter(|&&r| r < 1.7).count();
    println!(
        "{} rounds over {seconds} s: cores 0 and 1 together did {:.2}x (5%) {:.2}x (25%) {:.2}x (median) {:.2}x (75%) the work of core 0 alone",
        ratios.len(),
        at(0.05),
        at(0.25),
        at(0.5),
        at(0.75)
    );
    println!("below 1.7x in {:.1}% of the rounds, in {} spells:", 100.0 * low as f64 / ratios.len() as f64, spells.len());
    for (since, lasted) in spells.iter().filter(|(_, lasted)| *lasted >= 0.05) {
        println!("  from {since:6.2} s for {lasted:.2} s");
    }
}
