//! `lenet5 sweep`: the Cartesian product of comma-separated values of any run settings ([`grid`]), each trial a
//! `lenet5 train` run of its own in `OUT/trial-NNN` that reads its specification from `trial.json` (so it gives
//! the bits that run gives alone), several at a time, resumable, and splittable by index for job arrays
//! ([`trials`]); then one table of them all, sorted by val_acc ([`report`]).

mod grid;
mod report;
mod trials;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{CommandFactory, FromArgMatches};
use serde_json::{Map, Value};

use lenet5::training::resolve;
use lenet5_core::fs::create_dir;
use lenet5_core::spec::RunSpec;

use super::CliResult;
use super::flags::{RunFlags, SWEEP_SETS, SweepFlags, flag};
use grid::Grid;

#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Start every trial from a named set of settings (as `lenet5 train --preset`).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// A run specification every trial starts from (as `lenet5 train --config`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: SweepFlags,
    /// Directory of the sweep: a run directory per trial, and the results table (CSV and JSON).
    #[arg(long, default_value = "sweep", value_name = "DIR")]
    pub out: PathBuf,
    /// Trials run at once (at most one per core); each gets the cores divided among them.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub parallel: usize,
    /// Run only every N-th trial from the I-th (0-based), for job arrays: `--shard I/N`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Run a grid of more than 10,000 trials (up to N).
    #[arg(long, value_name = "N")]
    pub max_trials: Option<u64>,
    /// Only gather the trials in DIR (written by shards, or an earlier sweep) into one table.
    #[arg(long, value_name = "DIR")]
    pub collect: Option<PathBuf>,
    /// Further `lenet5 train` flags, one value each, the same for every trial, after `--` (`-- --scale 0.8,1.2
    /// --init-weights w.safetensors`).
    #[arg(last = true, value_name = "TRAIN FLAGS")]
    pub train_flags: Vec<String>,
}

/// `lenet5 train`'s settings, parsed alone.
#[derive(clap::Parser)]
#[command(name = "lenet5 train", no_binary_name = true)]
struct TrainFlags {
    #[command(flatten)]
    settings: RunFlags,
}

/// The settings after `--`: `lenet5 train`'s flags, but none the sweep sets for each trial and none it sweeps.
fn fixed_settings(flags: &[String], swept: &[&str]) -> CliResult<Map<String, Value>> {
    for f in flags.iter().filter(|f| f.starts_with('-')) {
        let name = f.split('=').next().unwrap_or_default();
        if ["-h", "--help", "-V", "--version"].contains(&name) {
            return Err(format!("{name} after -- is not a training flag; `lenet5 train --help` lists those").into());
        }
        if SWEEP_SETS.iter().any(|s| flag(s) == name) {
            return Err(format!("{name} is the sweep's to set for each trial, not a flag to give after --").into());
        }
        if swept.iter().any(|s| flag(s) == name) {
            return Err(format!("{name} is given both before and after --: give it once").into());
        }
    }
    let matches = TrainFlags::command()
        .try_get_matches_from(flags)
        .map_err(|e| e.to_string().lines().next().unwrap_or_default().trim_start_matches("error: ").to_string())?;
    Ok(TrainFlags::from_arg_matches(&matches)?.settings.given)
}

/// `I/N` with `I < N`.
fn parse_shard(s: &str) -> CliResult<(u64, u64)> {
    let bad = || format!("--shard must be I/N with 0 <= I < N, got {s}");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad().into());
    }
    Ok((i, n))
}

/// The sweep's grid: the recipe, the `--config` file and the flags after `--`, with the values given swept. The
/// trials choose on a validation split held out of the training images ([`RunSpec::TUNING_HOLDOUT`] of them
/// unless `val_split` is given; 0 chooses on the test set, as a single run of the recipe does).
fn grid(a: &SweepArgs) -> CliResult<Grid> {
    let swept: Vec<&str> = a.settings.axes.iter().map(|(name, _)| *name).collect();
    let fixed = fixed_settings(&a.train_flags, &swept)?;
    let (mut base, _) = resolve(a.preset.as_deref(), a.config.as_deref(), fixed)?;
    if base.val_split.is_none() && !swept.contains(&"val_split") {
        base.val_split = Some(RunSpec::TUNING_HOLDOUT);
    }
    let grid = Grid::new(base, a.settings.axes.clone(), a.max_trials)?;
    // Every trial checked before the first starts (the grid is bounded by --max-trials).
    for index in 0..grid.len {
        grid.trial(index, &a.out)?;
    }
    Ok(grid)
}

pub fn run(a: SweepArgs) -> CliResult {
    if let Some(dir) = &a.collect {
        return report::report(dir);
    }
    let (shard, shards) = a.shard.as_deref().map(parse_shard).transpose()?.unwrap_or((0, 1));
    let grid = grid(&a)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if a.parallel == 0 {
        return Err("--parallel must be at least 1".into());
    }
    let parallel = a.parallel.min(cores);
    if parallel < a.parallel {
        println!("note: --parallel {} is more than the {cores} cores: running {parallel} at a time", a.parallel);
    }
    create_dir(&a.out)?;
    let threads = (cores / parallel).max(1);
    let mine = grid.len.saturating_sub(shard).div_ceil(shards);
    println!(
        "sweep of {mine} trial(s){} into {}, {parallel} at a time with {threads} thread(s) each",
        if shards > 1 { format!(" (shard {shard}/{shards})") } else { String::new() },
        a.out.display(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    let plan = trials::Plan { grid: &grid, out: &a.out, shard, shards, parallel, threads };
    let outcome = trials::run_trials(&plan, &stop)?;
    if stop.load(Ordering::SeqCst) {
        return Err(
            format!("interrupted; run the same command again to resume the sweep in {}", a.out.display()).into()
        );
    }
    report::report(&a.out)?;
    if outcome.elsewhere > 0 {
        println!(
            "{} trial(s) were being trained by another process; when it is done, run the same command again \
             (it finishes nothing twice) or `lenet5 sweep --collect {}` for the whole table",
            outcome.elsewhere,
            a.out.display()
        );
    }
    if outcome.failed > 0 {
        return Err(format!("{} trial(s) failed: see train.log in their directories", outcome.failed).into());
    }
    Ok(())
}
