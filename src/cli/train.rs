//! `lenet5 train`: the recipe end to end, with a progress bar on a terminal and plain lines elsewhere.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use lenet5::training::{PreparedRun, prepare, resolve};
use lenet5_core::optim::LrSchedule;
use lenet5_core::run::{RunDir, TrainState};
use lenet5_core::train::{EpochMetrics, StepResult, TrainConfig, TrainObserver};

use super::flags::RunFlags;
use super::{CliResult, TerminalNotices};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Start from a named set of settings instead of the recipe's: `fast` (99% on MNIST in seconds). --config
    /// and flags given beside it win.
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// A run specification: a TOML file of settings (`lr = 0.01`), or JSON (a run's config.json); flags given
    /// beside it win. The settings are the flags below, with `_` for `-`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the fully resolved specification (JSON, which --config reads) and exit without training.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub settings: RunFlags,
    /// Progress display: `auto` (a bar on a terminal), `bar`, or `plain` lines.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bar", "plain"])]
    pub progress: String,
}

/// Counts SIGINT/SIGTERM; the first stops training at the next step, the second exits at once.
fn install_interrupt_handler(run_dir: PathBuf) -> CliResult<Arc<AtomicUsize>> {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    ctrlc::set_handler(move || {
        if h.fetch_add(1, Ordering::SeqCst) >= 1 {
            // Every file is written to a temporary name and renamed, so no real file can be half written. Let
            // the write in progress finish and start no other, then remove any temporary file a killed
            // earlier run may have left.
            let _no_more_writes = lenet5_core::fs::pause_writes();
            if let Ok(entries) = std::fs::read_dir(&run_dir) {
                for e in entries.flatten() {
                    if lenet5_core::fs::is_temp_file(&e.file_name().to_string_lossy()) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
            eprintln!("\ninterrupted twice: exiting now");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: stopping after this step (press Ctrl-C again to exit at once)");
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(hits)
}

struct Reporter {
    bar: Option<ProgressBar>,
    stop: Arc<AtomicUsize>,
    epoch_start: Instant,
    images: usize,
    loss_sum: f64,
    correct: usize,
    epochs: usize,
    /// Whether the epoch lines show the learning rate (when it moves).
    show_lr: bool,
}

impl TrainObserver for Reporter {
    fn on_epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.epoch_start = Instant::now();
        self.images = 0;
        self.loss_sum = 0.0;
        self.correct = 0;
        self.epochs = epochs;
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(batches as u64);
            bar.set_prefix(format!("epoch {epoch}/{epochs}"));
        }
    }

    fn on_batch(&mut self, batch: usize, _batches: usize, images: usize, r: StepResult) {
        self.images += images;
        self.loss_sum += r.loss as f64;
        self.correct += r.correct;
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            if batch.is_multiple_of(64) {
                let rate = self.images as f64 / self.epoch_start.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4} acc {:.4} {:.0} img/s",
                    self.loss_sum / batch as f64,
                    self.correct as f64 / self.images.max(1) as f64,
                    rate
                ));
            }
        }
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics, new_best: bool) {
        // An epoch the run did not evaluate (eval_every) has no val figures.
        let val = match m.val_acc.is_nan() {
            true => "val not evaluated".to_string(),
            false => format!("val_loss {:.4}  val_acc {:.4}", m.val_loss, m.val_acc),
        };
        let line = format!(
            "epoch {:>3}/{}  train_loss {:.4}  train_acc {:.4}  {val}{}  {:.2}s ({:.0} img/s){}",
            m.epoch,
            self.epochs,
            m.train_loss,
            m.train_acc,
            match m.lr {
                Some(lr) if self.show_lr => format!("  lr {lr:.3e}"),
                _ => String::new(),
            },
            m.train_seconds + m.val_seconds,
            self.images as f64 / m.train_seconds,
            if new_best { "  saved best" } else { "" }
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed) > 0
    }
}

pub fn run(a: TrainArgs) -> CliResult {
    let (spec, given) = resolve(a.preset.as_deref(), a.config.as_deref(), a.settings.given)?;
    if a.print_config {
        println!("{}", spec.to_json_text());
        return Ok(());
    }
    let spec = spec.validate()?;
    let threads = spec.threads();
    if let Some(asked) = spec.threads_capped() {
        eprintln!(
            "note: --threads {asked} is more than the {threads} cores: using {threads} (the numbers are the same)"
        );
    }
    let prepared = prepare(&spec, given.contains_key("epochs"), &TerminalNotices::new())?;
    let stop = install_interrupt_handler(prepared.run_dir.dir.clone())?;
    println!("{}", first_line(&prepared, threads));
    let config = &prepared.config;
    let mut reporter = Reporter {
        bar: progress_bar(&a.progress),
        stop,
        epoch_start: Instant::now(),
        images: 0,
        loss_sum: 0.0,
        correct: 0,
        epochs: config.epochs,
        show_lr: config.lr_schedule != LrSchedule::Constant,
    };
    let run_dir = prepared.run_dir.clone();
    let result = prepared.run(threads, &mut reporter);
    if let Some(bar) = &reporter.bar {
        bar.finish_and_clear();
    }
    last_lines(&result?.state, &run_dir);
    Ok(())
}

/// A progress bar, on a terminal (or when `--progress bar` asks for one).
fn progress_bar(mode: &str) -> Option<ProgressBar> {
    let use_bar = match mode {
        "bar" => true,
        "plain" => false,
        _ => std::io::stderr().is_terminal(),
    };
    use_bar.then(|| {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})");
        bar.set_style(style.expect("valid template").progress_chars("=> "));
        bar
    })
}

/// What the run is about to do: the data, which images val_acc comes from, the settings and the directory.
fn first_line(prepared: &PreparedRun, threads: usize) -> String {
    let (config, data) = (&prepared.config, &prepared.data);
    let test_images = config.test_limit.map_or(data.test.len(), |n| n.min(data.test.len()));
    let images = match config.holdout {
        None => format!(
            "{} train / {test_images} test images, val_acc on the test images",
            config.train_limit.map_or(data.train.len(), |n| n.min(data.train.len())),
        ),
        Some(h) => format!(
            "{} train images, {}% of each class held out for val_acc; {test_images} test images, measured once at \
             the end",
            data.train.len(),
            h.share * 100.0,
        ),
    };
    format!(
        "{} LeNet-5 on {} ({images}, data in {}), {} epochs, batch {}, lr {}, momentum {}, head {}, seed {}{}, \
         {threads} threads -> {}",
        if prepared.is_resumed() { "resuming" } else { "training" },
        data.name,
        data.dir.display(),
        config.epochs,
        config.batch_size,
        config.sgd.lr,
        config.sgd.momentum,
        config.head.name(),
        config.seed,
        beyond_the_recipe(config),
        prepared.run_dir.dir.display()
    )
}

/// How the run ended: early or not, its best epoch, and its test figures where it held the test set out.
fn last_lines(s: &TrainState, run_dir: &RunDir) {
    if s.stopped_early() {
        let patience = s.config.patience.unwrap_or_default();
        println!("stopped early after epoch {}: val_acc has not improved for {patience} epochs", s.epoch);
    }
    if let (Some(acc), Some(epoch)) = (s.best_val_acc, s.best_epoch) {
        println!("best val_acc {:.4} at epoch {}: weights in {}", acc, epoch, run_dir.best().display());
    }
    if let Some(t) = &s.test {
        println!(
            "test: loss {:.4}  accuracy {:.4}  ({}/{} correct) with the best weights",
            t.loss, t.accuracy, t.correct, t.total
        );
    }
}

/// The settings of the run's schedule, loss, evaluation, patience and augmentation, for its first line, where
/// they are not the recipe's.
fn beyond_the_recipe(config: &TrainConfig) -> String {
    let mut text = String::new();
    match config.lr_schedule {
        LrSchedule::Constant => {}
        LrSchedule::Step { step_size, gamma } => text += &format!(", lr schedule step (x{gamma} every {step_size})"),
        s => text += &format!(", lr schedule {} ({} warm-up epochs)", s.name(), s.warmup()),
    }
    if config.lr_per_batch && config.lr_schedule != LrSchedule::Constant {
        text += ", rate moved every batch";
    }
    if config.label_smoothing != 0.0 {
        text += &format!(", label smoothing {}", config.label_smoothing);
    }
    match config.eval_every {
        1 => {}
        0 => text += ", evaluated after the last epoch only",
        n => text += &format!(", evaluated every {n} epochs and after the last"),
    }
    if let Some(p) = config.patience {
        text += &format!(", patience {p}");
    }
    if let Some(a) = config.augment {
        text += &format!(
            ", augment (rotate ±{}°, shift ±{} px, scale {}..{})",
            a.degrees, a.translate, a.scale_min, a.scale_max
        );
    }
    text
}
