//! The training step allocates nothing once the trainer is built: a counting allocator watches 50 steps.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn training_steps_do_not_allocate() {
    use lenet5_core::data::Split;
    use lenet5_core::nn::params::init_params_for;
    use lenet5_core::spec::recipe;
    use lenet5_core::train::{TrainConfig, Trainer};

    let split = Split {
        images: (0..64 * 784).map(|i| (i % 251) as u8).collect(),
        labels: (0..64).map(|i| (i % 10) as u16).collect(),
    };
    // Every trainer lives to the end: a team shutting down (its threads exit asynchronously) must not be counted
    // against the steps of the next configuration. The allocator counts every thread.
    let configs = [(16, 2), (16, 1), (64, 2)];
    let mut trainers: Vec<_> = configs
        .iter()
        .map(|&(batch, threads)| {
            Trainer::new(
                TrainConfig { batch_size: batch, ..recipe() }.check().unwrap(),
                init_params_for(0, 10),
                None,
                threads,
            )
            .unwrap()
        })
        .collect();
    for (&(batch, threads), trainer) in configs.iter().zip(&mut trainers) {
        let indices: Vec<u32> = (0..batch as u32).collect();
        for _ in 0..5 {
            trainer.step(&split, &indices); // warm-up: thread-local state, lazy detection, the team's threads
        }
        // The allocator counts every thread of the process, the test harness's too. On a busy machine a window
        // has now and then seen a single allocation that the next window did not; a step that allocates does
        // so in every window. So the test needs one clean window of 50 steps in three.
        let mut counts = Vec::new();
        for _ in 0..3 {
            ALLOCATIONS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            for _ in 0..50 {
                trainer.step(&split, &indices);
            }
            COUNTING.store(false, Ordering::SeqCst);
            counts.push(ALLOCATIONS.load(Ordering::SeqCst));
            if counts.last() == Some(&0) {
                break;
            }
        }
        assert!(counts.contains(&0), "batch {batch}, {threads} threads: {counts:?} allocations in windows of 50 steps");
    }
}
