//! `lenet5 bench`: training step and evaluation speed, achieved GFLOP/s, the time per layer, and how much the
//! machine's cores gain together on pure arithmetic (the most any program's threads can gain on it).

use std::path::Path;
use std::time::Instant;

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::{Dataset, Split};
use lenet5_core::machine::parallel_arithmetic;
use lenet5_core::nn::model::{IMAGE_LEN, Stage, StageClock};
use lenet5_core::nn::params::init_params_for;
use lenet5_core::quant::QuantModel;
use lenet5_core::rng::Rng;
use lenet5_core::spec::recipe;
use lenet5_core::summary::flops_per_image;
use lenet5_core::train::{Evaluator, TrainConfig, Trainer};

use super::{CliResult, DataArgs, threads};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub batch_size: Vec<usize>,
    /// Worker threads (default: every core); 1 is always measured too, for the scaling figure.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds to spend measuring each configuration.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    #[command(flatten)]
    pub data: DataArgs,
}

/// MNIST when it can be found, else random images of the same size (speed does not depend on the pixels).
fn bench_data(a: &BenchArgs) -> (Split, Split, String) {
    match Dataset::load(&a.data.id(None), &a.data.root()) {
        Ok(d) => (d.train, d.test, d.name),
        Err(_) => {
            let mut rng = Rng::new(1);
            let mut make = |n: usize| Split {
                images: (0..n * IMAGE_LEN).map(|_| rng.below(256) as u8).collect(),
                labels: (0..n).map(|_| rng.below(10) as u16).collect(),
            };
            (make(60_000), make(10_000), "random images".into())
        }
    }
}

/// Timed rounds per configuration; the best one counts, which shrugs off other work on a shared machine.
const ROUNDS: usize = 5;

/// One configuration's trainer, timed a round at a time, so that the configurations compared can take turns.
struct StepBench<'a> {
    batch: usize,
    threads: usize,
    trainer: Trainer,
    train: &'a Split,
    batches: Vec<&'a [u32]>,
    steps: usize,
    best_seconds_per_step: f64,
}

impl<'a> StepBench<'a> {
    fn new(train: &'a Split, batch: usize, threads: usize, order: &'a [u32]) -> CliResult<Self> {
        let config = TrainConfig { batch_size: batch, ..recipe() }.check()?;
        let mut trainer = Trainer::new(config, init_params_for(0, 10), None, threads)?;
        let batches: Vec<&[u32]> = order.chunks_exact(batch).collect();
        // warm up
        for b in batches.iter().take(20) {
            trainer.step(train, b);
        }
        Ok(StepBench { batch, threads, trainer, train, batches, steps: 0, best_seconds_per_step: f64::INFINITY })
    }

    /// Steps for about `seconds`, as the training loop runs them.
    fn round(&mut self, seconds: f64) {
        let t0 = Instant::now();
        let mut round = 0;
        while t0.elapsed().as_secs_f64() < seconds {
            for _ in 0..10 {
                let [this, next] = [self.steps, self.steps + 1].map(|s| self.batches[s % self.batches.len()]);
                self.trainer.step_prefetching(self.train, this, next);
                self.steps += 1;
                round += 1;
            }
        }
        let s = t0.elapsed().as_secs_f64() / round as f64;
        self.best_seconds_per_step = self.best_seconds_per_step.min(s);
    }

    fn images_per_second(&self) -> f64 {
        self.batch as f64 / self.best_seconds_per_step
    }
}

pub fn run(a: BenchArgs) -> CliResult {
    let threads = threads(a.threads)?;
    if !(a.seconds > 0.0 && a.seconds <= 3600.0) {
        return Err(format!("--seconds must be a positive number of at most 3600, got {}", a.seconds).into());
    }
    if a.batch_size.contains(&0) {
        return Err("--batch-size must be at least 1".into());
    }
    let (train, test, name) = bench_data(&a);
    if let Some(&batch) = a.batch_size.iter().find(|&&b| b > train.len()) {
        return Err(format!("--batch-size {batch} is larger than the {} training images of {name}", train.len()).into());
    }
    let mut order: Vec<u32> = (0..train.len() as u32).collect();
    Rng::new(0).shuffle(&mut order);
    let simd = lenet5_core::instruction_set();
    let plural = if threads == 1 { "" } else { "s" };
    println!("lenet5 bench: {name}, {threads} thread{plural}, SIMD {simd}");
    println!();
    training_steps(&a, threads, &train, &order)?;
    evaluation(&a, threads, &test)?;
    int8_evaluation(&train, &test)?;
    layers(&a, &train, &order)
}

/// Steps per second for every batch size, with one thread and with all of them, taking rounds in turn.
fn training_steps(a: &BenchArgs, threads: usize, train: &Split, order: &[u32]) -> CliResult {
    println!("training step (forward + backward + SGD)");
    println!(
        "{:>6} {:>8} {:>10} {:>12} {:>10} {:>9} {:>8} {:>10}",
        "batch", "threads", "ms/step", "images/s", "epoch s", "GFLOP/s", "scaling", "per image"
    );
    // Every configuration, one thread and all of them for each batch size, takes a round in turn, so that all
    // meet the same moments of a shared machine and the ratios compare like with like.
    let thread_counts: &[usize] = if threads > 1 { &[1, threads] } else { &[1] };
    let mut benches = Vec::new();
    for &batch in &a.batch_size {
        for &t in thread_counts {
            benches.push(StepBench::new(train, batch, t, order)?);
        }
    }
    // Before each round, what the machine offers: `threads` threads of pure arithmetic against one.
    let mut offered = Vec::new();
    for _ in 0..ROUNDS {
        if threads > 1 {
            offered.push(
                parallel_arithmetic(threads)
                    .map_err(|e| format!("cannot start {threads} threads to measure the machine: {e}"))?,
            );
        }
        for bench in &mut benches {
            bench.round(a.seconds / ROUNDS as f64);
        }
    }
    let images_per_second = |batch: usize, t: usize| {
        benches.iter().find(|b| (b.batch, b.threads) == (batch, t)).map_or(f64::NAN, StepBench::images_per_second)
    };
    for bench in &benches {
        let ips = bench.images_per_second();
        println!(
            "{:>6} {:>8} {:>10.3} {:>12.0} {:>10.2} {:>9.1} {:>7.2}x {:>9.2}x",
            bench.batch,
            bench.threads,
            bench.best_seconds_per_step * 1e3,
            ips,
            train.len() as f64 / ips,
            ips * flops_per_image().1 as f64 / 1e9,
            ips / images_per_second(bench.batch, 1),
            ips / images_per_second(a.batch_size[0], bench.threads)
        );
    }
    println!(
        "(scaling: images/s against one thread at that batch size; per image: against batch {} at that",
        a.batch_size[0]
    );
    println!(" thread count)");
    if lenet5_core::nn::model::conv2_runs_winograd() {
        println!(
            "(GFLOP/s counts the recipe's multiply-adds as a direct convolution does them; conv2's Winograd kernels \
             do fewer)"
        );
    }
    if !offered.is_empty() {
        offered.sort_by(f64::total_cmp);
        println!(
            "machine: {threads} threads of pure arithmetic did {:.2}x - {:.2}x the work of one (median {:.2}x; \
             measured before each round)",
            offered[0],
            offered[offered.len() - 1],
            offered[offered.len() / 2]
        );
    }
    Ok(())
}

/// The whole test set, forward only.
fn evaluation(a: &BenchArgs, threads: usize, test: &Split) -> CliResult {
    let params = init_params_for(0, 10);
    let mut evaluator = Evaluator::new(threads)?;
    evaluator.evaluate(&params, Default::default(), test, 16);
    let t0 = Instant::now();
    let mut runs = 0;
    while t0.elapsed().as_secs_f64() < a.seconds.min(2.0) || runs < 3 {
        evaluator.evaluate(&params, Default::default(), test, 16);
        runs += 1;
    }
    let eval_s = t0.elapsed().as_secs_f64() / runs as f64;
    println!();
    println!(
        "evaluation: {} test images in {:.1} ms ({:.0} images/s, {:.1} GFLOP/s)",
        test.len(),
        eval_s * 1e3,
        test.len() as f64 / eval_s,
        test.len() as f64 * flops_per_image().0 as f64 / eval_s / 1e9
    );
    Ok(())
}

/// The int8 engine against the float one on the same trained network (the bundled MNIST model, quantized with
/// 100 calibration images: a trained network's activations, zeros included, as users run them), one thread each,
/// taking rounds in turn; the best round of each counts.
fn int8_evaluation(train: &Split, test: &Split) -> CliResult {
    let ck = Checkpoint::from_bytes(lenet5::serve::BUNDLED_MODEL, Path::new(lenet5::serve::BUNDLED_MODEL_NAME))?;
    let int8 = QuantModel::quantize(&ck, train, 100, 0)?;
    let mut evaluator = Evaluator::new(1)?;
    let (mut float_s, mut int8_s) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        let t0 = Instant::now();
        evaluator.evaluate(&ck.params, Default::default(), test, 16);
        float_s = float_s.min(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        int8.evaluate(test, 16, 1);
        int8_s = int8_s.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "int8 evaluation, 1 thread, {}: {:.1} ms ({:.0} images/s), float {:.1} ms: int8 at {:.2}x float's speed",
        QuantModel::instruction_set(),
        int8_s * 1e3,
        test.len() as f64 / int8_s,
        float_s * 1e3,
        float_s / int8_s
    );
    Ok(())
}

/// Accumulates wall time per stage, forward and backward apart.
struct StageTimes {
    last: Instant,
    forward_ns: [u64; Stage::ALL.len()],
    backward_ns: [u64; Stage::ALL.len()],
}

impl StageClock for StageTimes {
    fn restart(&mut self) {
        self.last = Instant::now();
    }
    fn lap(&mut self, stage: Stage, backward: bool) {
        let now = Instant::now();
        let ns = (now - self.last).as_nanos() as u64;
        self.last = now;
        let times = if backward { &mut self.backward_ns } else { &mut self.forward_ns };
        times[stage as usize] += ns;
    }
}

/// The time of each layer of one thread's first slice, batch of the first size given.
fn layers(a: &BenchArgs, train: &Split, order: &[u32]) -> CliResult {
    let batch = a.batch_size[0];
    let mut trainer =
        Trainer::new(TrainConfig { batch_size: batch, ..recipe() }.check()?, init_params_for(0, 10), None, 1)?;
    let batches: Vec<&[u32]> = order.chunks_exact(batch).collect();
    // Ten rounds; each layer's figure is its best round, which shrugs off other work on a shared machine.
    let mut best_fwd = [f64::INFINITY; Stage::ALL.len()];
    let mut best_bwd = [f64::INFINITY; Stage::ALL.len()];
    let mut steps = 0;
    for _ in 0..10 {
        let mut times =
            StageTimes { last: Instant::now(), forward_ns: [0; Stage::ALL.len()], backward_ns: [0; Stage::ALL.len()] };
        let t0 = Instant::now();
        let mut round_steps = 0;
        while t0.elapsed().as_secs_f64() < a.seconds.min(2.0) / 10.0 {
            times.restart();
            let [this, next] = [steps, steps + 1].map(|s| batches[s % batches.len()]);
            trainer.step_timed(train, this, next, &mut times);
            steps += 1;
            round_steps += 1;
        }
        for i in 0..Stage::ALL.len() {
            best_fwd[i] = best_fwd[i].min(times.forward_ns[i] as f64 / round_steps as f64 / 1e3);
            best_bwd[i] = best_bwd[i].min(times.backward_ns[i] as f64 / round_steps as f64 / 1e3);
        }
    }
    let total: f64 = best_fwd.iter().chain(&best_bwd).sum();
    println!();
    println!(
        "time per layer, one thread, first slice of each batch-{batch} step, best of 10 rounds (share of the sum)"
    );
    println!("{:<14} {:>12} {:>8} {:>12} {:>8}", "layer", "forward us", "share", "backward us", "share");
    for stage in Stage::ALL {
        let (f, b) = (best_fwd[stage as usize], best_bwd[stage as usize]);
        println!(
            "{:<14} {:>12.2} {:>7.1}% {:>12.2} {:>7.1}%",
            stage.name(),
            f,
            100.0 * f / total,
            b,
            100.0 * b / total
        );
    }
    println!("{:<14} {:>12.2} {:>8} {:>12.2}", "sum", best_fwd.iter().sum::<f64>(), "", best_bwd.iter().sum::<f64>());
    Ok(())
}
