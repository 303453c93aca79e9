//! `lenet5 train`: the recipe end to end, with a progress bar on a terminal and plain lines elsewhere.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use lenet5::training::{ScheduleKind, TrainOptions, prepare};
use lenet5_core::data::Augment;
use lenet5_core::optim::LrSchedule;
use lenet5_core::train::{EpochMetrics, StepResult, TrainConfig, TrainObserver};

use super::{CliResult, DataArgs, HeadArg, TerminalNotices, threads};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ScheduleArg {
    Constant,
    Step,
    Cosine,
    Onecycle,
}

/// `MIN,MAX`, two numbers.
fn parse_scale(s: &str) -> Result<(f32, f32), String> {
    let parse = |v: &str| v.trim().parse::<f32>().map_err(|e| format!("`{v}`: {e}"));
    match s.split_once(',') {
        Some((lo, hi)) => Ok((parse(lo)?, parse(hi)?)),
        None => Err("expected MIN,MAX, e.g. 0.9,1.1".into()),
    }
}

impl TrainArgs {
    /// The library's options for the run the flags ask for.
    pub fn options(&self) -> TrainOptions {
        TrainOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            seed: self.seed,
            head: self.head.into(),
            lr_schedule: match self.lr_schedule {
                ScheduleArg::Constant => ScheduleKind::Constant,
                ScheduleArg::Step => ScheduleKind::Step,
                ScheduleArg::Cosine => ScheduleKind::Cosine,
                ScheduleArg::Onecycle => ScheduleKind::OneCycle,
            },
            step_size: self.step_size,
            gamma: self.gamma,
            warmup_epochs: self.warmup_epochs,
            augment: self.augment.then_some(Augment {
                degrees: self.rotate,
                translate: self.shift,
                scale_min: self.scale.0,
                scale_max: self.scale.1,
            }),
            patience: self.patience,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            data: self.data.source(),
            out: self.out.clone(),
            force: self.force,
            resume: self.resume.clone(),
            init_weights: self.init_weights.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Passes over the training set [default: 50; with --resume, the run's own, or more to extend it].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per SGD step.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f32,
    /// SGD momentum (PyTorch semantics).
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub momentum: f32,
    /// L2 weight decay, added to the gradient as in PyTorch's SGD.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f32,
    /// Seed for the initial weights and the shuffles.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The network's head: `sigmoid` (the recipe) or `logits`.
    #[arg(long, value_enum, default_value = "sigmoid")]
    pub head: HeadArg,
    /// Learning-rate schedule, one rate per epoch: `constant` (the recipe), `step` (times --gamma every
    /// --step-size epochs), `cosine` (cosine annealing after --warmup-epochs), or `onecycle` (PyTorch's
    /// OneCycleLR, one step per epoch, peaking at --lr after --warmup-epochs).
    #[arg(long, value_enum, default_value = "constant")]
    pub lr_schedule: ScheduleArg,
    /// Epochs between two cuts of the `step` schedule.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub step_size: usize,
    /// Factor of each cut of the `step` schedule.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub gamma: f32,
    /// Warm-up epochs of `cosine` [default: 0] and `onecycle` [default: 30% of the epochs].
    #[arg(long, value_name = "N")]
    pub warmup_epochs: Option<usize>,
    /// Augment the training images: a random affine transform of each, drawn anew every epoch from
    /// (seed, epoch, image), as torchvision's RandomAffine (rotation, shift, scale; bilinear, zeros outside).
    #[arg(long)]
    pub augment: bool,
    /// Largest rotation of --augment, in degrees either way.
    #[arg(long, default_value_t = 10.0, value_name = "DEGREES")]
    pub rotate: f32,
    /// Largest shift of --augment, in pixels along each axis.
    #[arg(long, default_value_t = 2.0, value_name = "PIXELS")]
    pub shift: f32,
    /// Scale range of --augment.
    #[arg(long, default_value = "0.9,1.1", value_name = "MIN,MAX", value_parser = parse_scale)]
    pub scale: (f32, f32),
    /// Stop when val_acc has not improved for N epochs (the best weights are kept, as always).
    #[arg(long, value_name = "N")]
    pub patience: Option<usize>,
    /// Worker threads (default: every core). Never changes the results.
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Run directory for the best weights, the resumable state and the metrics log.
    #[arg(long, default_value = "save_model", value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite a previous run in the output directory.
    #[arg(long)]
    pub force: bool,
    /// Continue the run in DIR where it stopped (its settings are kept; --epochs may extend it).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["force", "init_weights"])]
    pub resume: Option<PathBuf>,
    /// Start from these weights (.safetensors or a PyTorch .pth) instead of a fresh initialisation.
    #[arg(long, value_name = "FILE")]
    pub init_weights: Option<PathBuf>,
    /// Train on only the first N training images.
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,
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
    acc_sum: f64,
    epochs: usize,
    /// Whether the epoch lines show the learning rate (when it moves).
    show_lr: bool,
}

impl TrainObserver for Reporter {
    fn on_epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.epoch_start = Instant::now();
        self.images = 0;
        self.loss_sum = 0.0;
        self.acc_sum = 0.0;
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
        self.acc_sum += r.accuracy as f64;
        if let Some(bar) = &self.bar {
            bar.set_position(batch as u64);
            if batch.is_multiple_of(64) {
                let rate = self.images as f64 / self.epoch_start.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4} acc {:.4} {:.0} img/s",
                    self.loss_sum / batch as f64,
                    self.acc_sum / batch as f64,
                    rate
                ));
            }
        }
    }

    fn on_epoch_end(&mut self, m: &EpochMetrics, new_best: bool) {
        let line = format!(
            "epoch {:>3}/{}  train_loss {:.4}  train_acc {:.4}  val_loss {:.4}  val_acc {:.4}{}  {:.2}s ({:.0} img/s){}",
            m.epoch,
            self.epochs,
            m.train_loss,
            m.train_acc,
            m.val_loss,
            m.val_acc,
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
    let threads = threads(a.threads)?;
    let prepared = prepare(&a.options(), &TerminalNotices::new())?;
    let stop = install_interrupt_handler(prepared.run_dir.dir.clone())?;
    let use_bar = match a.progress.as_str() {
        "bar" => true,
        "plain" => false,
        _ => std::io::stderr().is_terminal(),
    };
    let bar = use_bar.then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let (config, data, run_dir) = (&prepared.config, &prepared.data, prepared.run_dir.clone());
    println!(
        "{} LeNet-5 on {} ({} train / {} test images, data in {}), {} epochs, batch {}, lr {}, momentum {}, head {}, \
         seed {}{}, {} threads -> {}",
        if prepared.is_resumed() { "resuming" } else { "training" },
        data.name,
        config.train_limit.map_or(data.train.len(), |n| n.min(data.train.len())),
        config.test_limit.map_or(data.test.len(), |n| n.min(data.test.len())),
        data.dir.display(),
        config.epochs,
        config.batch_size,
        config.sgd.lr,
        config.sgd.momentum,
        config.head.name(),
        config.seed,
        schedule_and_patience(config),
        threads,
        run_dir.dir.display()
    );
    let mut reporter = Reporter {
        bar,
        stop,
        epoch_start: Instant::now(),
        images: 0,
        loss_sum: 0.0,
        acc_sum: 0.0,
        epochs: config.epochs,
        show_lr: config.lr_schedule != LrSchedule::Constant,
    };
    let result = prepared.run(threads, &mut reporter);
    if let Some(bar) = &reporter.bar {
        bar.finish_and_clear();
    }
    let summary = result?;
    let s = &summary.state;
    if s.stopped_early() {
        println!(
            "stopped early after epoch {}: val_acc has not improved for {} epochs",
            s.epoch,
            s.config.patience.unwrap_or_default()
        );
    }
    if let (Some(acc), Some(epoch)) = (s.best_val_acc, s.best_epoch) {
        println!("best val_acc {:.4} at epoch {}: weights in {}", acc, epoch, run_dir.best().display());
    }
    Ok(())
}

/// The schedule and the patience for the run's first line, when they are not the recipe's.
fn schedule_and_patience(config: &TrainConfig) -> String {
    let mut text = String::new();
    match config.lr_schedule {
        LrSchedule::Constant => {}
        LrSchedule::Step { step_size, gamma } => text += &format!(", lr schedule step (x{gamma} every {step_size})"),
        s => text += &format!(", lr schedule {} ({} warm-up epochs)", s.name(), s.warmup()),
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
