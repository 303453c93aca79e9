//! How much arithmetic this machine's cores do together, against one of them alone: the ceiling on what any
//! program's threads can gain on it at that moment. On a virtual machine two "cores" may be two hardware threads
//! of one physical core, or share one with another guest for a while; then two threads of pure arithmetic do
//! little more than one, and so does a training step (see `BENCHMARKS.md`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use crate::simd::mul_add;

/// Independent chains of multiply-adds: with 16-lane vectors, as many as the latency of one multiply-add times
/// the units (8 registers), which keeps them busy. With 8-lane vectors they take every register and a few spill,
/// which costs about a third of the peak; the loop stays bound by arithmetic, which is all this measures.
const CHAINS: usize = 128;

/// Multiply-add rounds per call: half a millisecond of a core with AVX-512, a few with none.
const ROUNDS: usize = 400_000;

#[inline(always)]
fn arithmetic_body<const FMA: bool>(acc: &mut [f32; CHAINS], factor: &f32) {
    let (a, b) = (*factor, 1e-7);
    let mut x = *acc;
    for _ in 0..ROUNDS {
        for v in x.iter_mut() {
            *v = mul_add::<FMA>(*v, a, b);
        }
    }
    *acc = x;
}

crate::simd::dispatch! {
    /// [`ROUNDS`] multiply-adds on each of `acc`'s chains, in registers, with the widest vectors the CPU has.
    fn arithmetic(acc: &mut [f32; CHAINS], factor: &f32) => arithmetic_body
}

/// Seconds one call of [`arithmetic`] takes on this thread.
fn time_arithmetic() -> f64 {
    let mut acc = [0.5; CHAINS];
    let t0 = Instant::now();
    arithmetic(&mut acc, std::hint::black_box(&0.999_999));
    let seconds = t0.elapsed().as_secs_f64();
    std::hint::black_box(acc);
    seconds
}

/// Throughput of `threads` threads doing pure arithmetic at the same time, over that of one thread alone,
/// measured once (a few milliseconds): about `threads` on an idle machine with that many free cores, about 1
/// when the threads share one core's arithmetic units. Fails only if a thread cannot be started.
pub fn parallel_arithmetic(threads: usize) -> std::io::Result<f64> {
    let threads = threads.max(1);
    let alone = time_arithmetic().min(time_arithmetic());
    // 0: wait, 1: go, 2: give up (a thread could not be started). A flag rather than a barrier, which would
    // wait for ever for a thread that never started.
    let signal = AtomicU8::new(0);
    let wait_for_go = || loop {
        match signal.load(Ordering::Acquire) {
            0 => std::thread::yield_now(),
            1 => return true,
            _ => return false,
        }
    };
    std::thread::scope(|scope| {
        let mut runs = Vec::with_capacity(threads);
        for _ in 0..threads {
            let run = std::thread::Builder::new()
                .spawn_scoped(scope, || wait_for_go().then(time_arithmetic))
                .inspect_err(|_| signal.store(2, Ordering::Release))?;
            runs.push(run);
        }
        signal.store(1, Ordering::Release);
        let together: f64 =
            runs.into_iter().map(|r| r.join().ok().flatten().map_or(0.0, |seconds| 1.0 / seconds)).sum();
        Ok(together * alone)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_runs_every_round_on_every_chain() {
        let mut acc: [f32; CHAINS] = std::array::from_fn(|i| i as f32 / CHAINS as f32);
        let start = acc;
        let a = 0.999_9f32;
        arithmetic(&mut acc, &a);
        for (x, x0) in acc.iter().zip(start) {
            // x -> a x + b, ROUNDS times: a^n x0 + b (1 - a^n) / (1 - a).
            let an = (a as f64).powi(ROUNDS as i32);
            let expected = an * x0 as f64 + 1e-7 * (1.0 - an) / (1.0 - a as f64);
            assert!((*x as f64 - expected).abs() < 1e-3 * expected.abs() + 1e-6, "{x} vs {expected}");
        }
    }
}
