//! What a training step needs to share its work out among threads: a team of threads that stay with the
//! trainer, so each worker index always runs on the same thread (and its data stays in one core's cache), that
//! start a step within a microsecond and can meet at a barrier mid-step; and a view of a buffer that those
//! workers split among themselves by hand. Nothing here allocates once the team exists.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

/// How long a waiting thread spins before it yields or sleeps: about the gap between two training steps. (In
/// WebAssembly, which has no pause instruction, a spin is much shorter: 16x as many, measured in the page.)
const SPINS: u32 = if cfg!(target_family = "wasm") { 1 << 18 } else { 1 << 14 };
/// The same when the workers outnumber the cores: a thread that spins then holds a core that the thread it
/// waits for may need, so it hands the core over almost at once.
const OVERSUBSCRIBED_SPINS: u32 = 16;

/// How long the waiters of a team of `workers` spin: long when each has a core of its own, hardly at all when
/// they outnumber the cores.
fn spin_limit(workers: usize) -> u32 {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    // WebAssembly cannot tell (WASI says 1); there the front end, the page, caps the workers at the cores the
    // browser reports.
    let cores = *CORES.get_or_init(|| match cfg!(target_family = "wasm") {
        true => usize::MAX,
        false => std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    if workers <= cores { SPINS } else { OVERSUBSCRIBED_SPINS }
}

/// Waits until `done()` holds: spins up to `limit` times (the waits between the parts of a step last
/// microseconds, and putting a thread to sleep and waking it costs as much), then calls `idle` (yield, or park)
/// between checks. Every wait of the team goes through here.
fn wait_until(limit: u32, mut done: impl FnMut() -> bool, mut idle: impl FnMut()) {
    let mut spins = 0;
    while !done() {
        if spins < limit {
            std::hint::spin_loop();
            spins += 1;
        } else {
            idle();
        }
    }
}

/// A barrier for `n` threads that spins, then yields, instead of sleeping: the phases it separates last tens of
/// microseconds, and putting a thread to sleep and waking it costs as much. It has cache lines of its own (as
/// does [`Counter`]): a line that one core writes while another reads what else sits on it is moved between
/// the cores at every write.
#[repr(align(128))]
pub struct SpinBarrier {
    n: usize,
    spins: u32,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl SpinBarrier {
    pub fn new(n: usize) -> Self {
        assert!(n > 0);
        SpinBarrier {
            n,
            spins: spin_limit(n),
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Marks the barrier as one that some thread will never reach (it panicked): every thread waiting at it,
    /// or arriving later, panics too instead of waiting for ever. See [`PoisonOnPanic`].
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    /// Panics if the barrier was poisoned; for other waits of the same threads.
    pub fn check(&self) {
        if self.poisoned.load(Ordering::Acquire) {
            panic!("another worker panicked");
        }
    }

    /// Returns once all `n` threads have called it. Everything a thread wrote before its call is visible to
    /// every thread after theirs. The `n` threads must all be running (as a [`Team`]'s are), or it never returns.
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        wait_until(
            self.spins,
            || {
                self.check();
                self.generation.load(Ordering::Acquire) != generation
            },
            std::thread::yield_now,
        );
    }
}

/// A count of finished pieces of a step's work, which workers wait on: the phases of a step are separated by
/// these rather than by a barrier where each worker waits only for the pieces it needs.
#[repr(align(128))]
pub struct Counter(AtomicUsize);

impl Counter {
    pub fn new() -> Self {
        Counter(AtomicUsize::new(0))
    }

    /// One more piece is finished. Everything this thread wrote before is visible to every thread that then
    /// sees the count reach it in [`Counter::wait_for`].
    pub fn add_one(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    /// Returns once `target` pieces are finished; panics instead if a worker panicked (`barrier` is poisoned).
    pub fn wait_for(&self, target: usize, barrier: &SpinBarrier) {
        wait_until(
            barrier.spins,
            || {
                barrier.check();
                self.0.load(Ordering::Acquire) >= target
            },
            std::thread::yield_now,
        );
    }

    /// The next number from 0 up, each handed out once: pieces taken first come, first served.
    pub fn take(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

/// Poisons a [`SpinBarrier`] if dropped while its thread unwinds from a panic.
pub struct PoisonOnPanic<'a>(pub &'a SpinBarrier);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poison();
        }
    }
}

type Job = *const (dyn Fn(usize) + Sync + 'static);

struct TeamState {
    /// Bumped to start a job (or to stop); each thread waits for it to change.
    generation: AtomicUsize,
    /// Threads that have finished the current job.
    finished: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    /// The current job, written by [`Team::run`] before it bumps `generation` and cleared after every thread
    /// has finished with it.
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by `Team::run` while no thread reads it (before the `generation` bump that
// releases it, and after every thread has reported, with acquire, that it finished); the rest is atomics.
unsafe impl Sync for TeamState {}
unsafe impl Send for TeamState {}

/// `workers` workers: the thread that calls [`Team::run`] is worker 0, and `workers - 1` threads of the team's
/// own are workers `1..workers`, always the same ones.
pub struct Team {
    workers: usize,
    state: Arc<TeamState>,
    threads: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `workers` workers (at least one). Without the `threads` feature it has one, the caller, and
    /// starts no thread.
    pub fn new(workers: usize) -> std::io::Result<Team> {
        let workers = if cfg!(feature = "threads") { workers.max(1) } else { 1 };
        let state = Arc::new(TeamState {
            generation: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
        });
        let mut team = Team { workers, state, threads: Vec::with_capacity(workers - 1) };
        for index in 1..workers {
            let state = Arc::clone(&team.state);
            // On failure the team dropped here stops the threads already started.
            let thread = std::thread::Builder::new()
                .name(format!("lenet5-worker-{index}"))
                .spawn(move || worker_loop(&state, index, spin_limit(workers)))?;
            team.threads.push(thread);
        }
        Ok(team)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f(t)` for every worker `t` at the same time, `f(0)` on the calling thread, and returns when all
    /// have returned. A panic in any of them is raised again here.
    pub fn run(&mut self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers == 1 {
            return f(0);
        }
        let state = &*self.state;
        // SAFETY: the lifetime is erased only for the time the threads use the pointer: this function does not
        // return before every thread has reported that it finished with it, and then clears it.
        let job: Job = unsafe { std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
        // SAFETY: no thread reads `job` now (all finished the last job, or none has started).
        unsafe { *state.job.get() = Some(job) };
        state.finished.store(0, Ordering::Relaxed);
        state.generation.fetch_add(1, Ordering::Release);
        for t in &self.threads {
            t.thread().unpark();
        }
        let own = catch_unwind(AssertUnwindSafe(|| f(0)));
        let spins = spin_limit(self.workers);
        wait_until(spins, || state.finished.load(Ordering::Acquire) >= self.workers - 1, std::thread::yield_now);
        // SAFETY: every thread has finished with the job.
        unsafe { *state.job.get() = None };
        if let Err(payload) = own {
            resume_unwind(payload);
        }
        if state.panicked.swap(false, Ordering::Relaxed) {
            panic!("a worker thread panicked during a training step");
        }
    }
}

fn worker_loop(state: &TeamState, index: usize, spins: u32) {
    let mut seen = 0;
    loop {
        // `run` unparks every thread after bumping the generation, so parking cannot miss a job.
        let mut generation = seen;
        wait_until(
            spins,
            || {
                generation = state.generation.load(Ordering::Acquire);
                generation != seen
            },
            std::thread::park,
        );
        seen = generation;
        if state.stop.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: `run` wrote the job before the bump this thread just acquired, and keeps it alive and
        // unchanged until this thread reports below.
        let job = unsafe { (*state.job.get()).expect("a job is set while the generation moves") };
        // SAFETY: as above, the closure outlives this call.
        if catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(index) })).is_err() {
            state.panicked.store(true, Ordering::Relaxed);
        }
        state.finished.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.state.generation.fetch_add(1, Ordering::Release);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// A buffer handed to the workers of one [`Team::run`], which take turns with it in phases separated by a
/// [`SpinBarrier`] or by counters written with release and read with acquire ordering: within one phase, each
/// part of it is either read by any number of workers or written by exactly one.
pub struct PhaseShared<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the view only hands out references under the phase discipline documented on each method, which
// makes every access either shared-read or exclusive, as `&[T]` / `&mut [T]` across threads require.
unsafe impl<T: Send + Sync> Sync for PhaseShared<'_, T> {}
unsafe impl<T: Send> Send for PhaseShared<'_, T> {}

impl<'a, T> PhaseShared<'a, T> {
    pub fn new(buffer: &'a mut [T]) -> Self {
        PhaseShared { ptr: buffer.as_mut_ptr(), len: buffer.len(), _borrow: std::marker::PhantomData }
    }

    /// The length of the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// # Safety
    /// No thread may write any of `range` while the returned reference lives.
    pub unsafe fn get(&self, range: std::ops::Range<usize>) -> &[T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); no writer exists (the caller's promise).
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// # Safety
    /// No other thread may read or write any of `range` while the returned reference lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (checked); exclusive (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// The part of `0..len` that worker `t` of `workers` owns: contiguous, in order, each a multiple of `align`
/// long except the last.
pub fn share(len: usize, workers: usize, t: usize, align: usize) -> std::ops::Range<usize> {
    let per = len.div_ceil(workers).div_ceil(align) * align;
    (t * per).min(len)..((t + 1) * per).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(target_family = "wasm", ignore = "WebAssembly cannot count the cores")]
    fn waiters_hand_their_core_over_at_once_when_workers_outnumber_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(spin_limit(1), SPINS);
        assert_eq!(spin_limit(cores), SPINS);
        assert_eq!(spin_limit(cores + 1), OVERSUBSCRIBED_SPINS);
        assert_eq!(SpinBarrier::new(cores + 1).spins, OVERSUBSCRIBED_SPINS);
    }

    #[test]
    #[cfg(not(feature = "threads"))]
    fn without_threads_the_team_is_its_caller() {
        let mut team = Team::new(4).unwrap();
        assert_eq!(team.workers(), 1);
        let ran = AtomicUsize::new(0);
        team.run(&|t| {
            assert_eq!(t, 0);
            ran.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(ran.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn shares_cover_the_range_once_in_order() {
        for len in [0, 1, 15, 16, 61_706] {
            for workers in 1..5 {
                let mut next = 0;
                for t in 0..workers {
                    let r = share(len, workers, t, 16);
                    assert_eq!(r.start, next);
                    assert!(r.end == len || r.len().is_multiple_of(16));
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    #[cfg(feature = "threads")]
    fn team_runs_every_worker_and_the_barrier_separates_phases() {
        // Each worker writes its own cell in phase one and reads every cell in phase two, many times over: a
        // barrier that let a worker through early would make some read miss a write.
        for workers in [1, 2, 3] {
            let mut team = Team::new(workers).unwrap();
            let mut cells = vec![0usize; workers];
            let view = PhaseShared::new(&mut cells);
            let barrier = SpinBarrier::new(workers);
            for round in 1..=500 {
                team.run(&|t| {
                    // SAFETY: cell t is written by worker t alone in this phase.
                    unsafe { view.get_mut(t..t + 1)[0] = round };
                    barrier.wait();
                    // SAFETY: nobody writes in this phase.
                    let all = unsafe { view.get(0..workers) };
                    assert!(all.iter().all(|&v| v == round), "round {round}: {all:?}");
                    barrier.wait();
                });
            }
        }
    }

    #[test]
    #[cfg(feature = "threads")]
    fn a_panic_before_the_barrier_reaches_the_caller_instead_of_hanging() {
        let mut team = Team::new(2).unwrap();
        let barrier = SpinBarrier::new(2);
        let hit = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|t| {
                let _guard = PoisonOnPanic(&barrier);
                assert!(t != 1, "worker one fails before the barrier");
                barrier.wait();
            });
        }));
        assert!(hit.is_err());
    }

    #[test]
    #[cfg(feature = "threads")]
    fn a_panic_in_a_worker_reaches_the_caller_and_the_team_still_works() {
        let mut team = Team::new(2).unwrap();
        let hit = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|t| assert!(t != 1, "worker one fails"));
        }));
        assert!(hit.is_err());
        let count = AtomicUsize::new(0);
        team.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }
}
