//! Command-line parsing and the subcommands. Every flag's default reproduces the reference recipe.

mod bench;
mod deploy;
mod eval;
mod flags;
mod interop;
mod pictures;
mod predict;
mod serve;
mod site;
mod summary;
mod sweep;
mod train;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use lenet5::folder::FolderReport;
use lenet5::source::{DataSource, Notices};
use lenet5_core::Error;
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::{DatasetId, Split};
use lenet5_core::nn::Head;

/// Errors from the library or from this front end, printed once by `main`.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;
pub type CliResult<T = ()> = Result<T, CliError>;

#[derive(Parser, Debug)]
#[command(name = "lenet5", version, about = "Train, evaluate and use LeNet-5 on MNIST-style digit images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train with the reference recipe (50 epochs, batch 16, SGD lr 1e-3 momentum 0.9).
    Train(train::TrainArgs),
    /// Loss and accuracy of saved weights on the test set.
    Eval(eval::EvalArgs),
    /// Classify image files, or test-set images by index.
    Predict(predict::PredictArgs),
    /// The architecture: output shapes, parameter counts and FLOPs of every layer.
    Summary(summary::SummaryArgs),
    /// Loss and accuracy curves of a run, as PNG and SVG.
    Plot(pictures::PlotArgs),
    /// The confusion matrix and per-class accuracy on the test set, with pictures.
    Confusion(pictures::ConfusionArgs),
    /// Pictures of the kernels and of the feature maps an image produces.
    Inspect(pictures::InspectArgs),
    /// Convert a PyTorch state_dict (.pth) to a safetensors checkpoint, safely.
    Import(interop::ImportArgs),
    /// Quantize float weights to int8 (per-channel weights, activations calibrated on training images).
    Quantize(deploy::QuantizeArgs),
    /// Export weights as an ONNX model, or as int8 C99 for microcontrollers.
    Export(interop::ExportArgs),
    /// Serve a page to draw digits on and watch the network read them, with a JSON API, and a page that trains
    /// LeNet-5 in the browser (/train).
    Serve(serve::ServeArgs),
    /// Write the page that trains LeNet-5 in the browser as a static site, with its data sets.
    Site(site::SiteArgs),
    /// Measure training and evaluation speed, per layer.
    Bench(bench::BenchArgs),
    /// Train every combination of comma-separated flag values, several at a time, and rank them by val_acc.
    Sweep(Box<sweep::SweepArgs>),
}

/// The weights a command uses.
#[derive(clap::Args, Debug, Clone)]
pub struct WeightsArg {
    /// Trained weights: a .safetensors checkpoint, or a PyTorch .pth state_dict (read with the sigmoid head).
    #[arg(long, value_name = "FILE", default_value = "save_model/best.safetensors")]
    pub weights: PathBuf,
}

impl WeightsArg {
    pub fn path(&self) -> PathBuf {
        self.weights.clone()
    }
}

/// Loads the float weights named by `--weights`; int8 ones are refused, naming the commands that take them.
pub fn load_weights(w: &WeightsArg) -> CliResult<lenet5_core::checkpoint::Checkpoint> {
    match lenet5::deploy::Weights::load(&w.weights, Head::Sigmoid)? {
        lenet5::deploy::Weights::Float(ck) => Ok(ck),
        lenet5::deploy::Weights::Int8(_) => Err(format!(
            "{}: int8 weights; this command takes float weights (eval, predict, serve and export --c take int8 ones)",
            w.weights.display()
        )
        .into()),
    }
}

/// The network's head, as a flag value.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HeadArg {
    /// Sigmoid on the output, cross-entropy on that (the recipe).
    Sigmoid,
    /// Cross-entropy on the raw outputs.
    Logits,
}

impl From<HeadArg> for Head {
    fn from(h: HeadArg) -> Head {
        match h {
            HeadArg::Sigmoid => Head::Sigmoid,
            HeadArg::Logits => Head::Logits,
        }
    }
}

/// Where the data is, and how to read it: the run specification's data settings, shared by every command that
/// reads a data set.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DataArgs {
    #[command(flatten)]
    pub flags: flags::DataFlags,
}

impl DataArgs {
    /// Only a data root (the default one when `None`), never downloaded into.
    pub fn with_root(data: Option<PathBuf>) -> DataArgs {
        let mut flags = flags::DataFlags::default();
        if let Some(dir) = data {
            flags.given.insert("data".into(), dir.display().to_string().into());
        }
        flags.given.insert("no_download".into(), true.into());
        DataArgs { flags }
    }

    /// The library's description of these data.
    pub fn source(&self) -> DataSource {
        DataSource::of(&self.flags.spec())
    }

    /// The data root: `--data DIR` when given, else `$LENET5_DATA`, else `./data`.
    pub fn root(&self) -> PathBuf {
        self.source().root()
    }

    /// The data set named by the flag, else `fallback`, else MNIST.
    pub fn id(&self, fallback: Option<&str>) -> DatasetId {
        self.source().id(fallback)
    }

    /// The test split of the data set `ck` was trained on (unless the flags name another), for its classes.
    pub fn load_test_for(&self, ck: &Checkpoint) -> CliResult<Split> {
        let notices = TerminalNotices::new();
        Ok(self.source().load_test_for(ck, &notices)?)
    }
}

/// What loading data and preparing a run do, on standard error: downloads, a bar while an image folder is
/// decoded (on a terminal), the files left out, and temporary files removed.
pub struct TerminalNotices {
    bar: Option<ProgressBar>,
}

impl TerminalNotices {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::hidden();
            bar.set_style(
                ProgressStyle::with_template("decoding {pos}/{len} images [{bar:30}] ({elapsed}<{eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        TerminalNotices { bar }
    }
}

impl Drop for TerminalNotices {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Notices for TerminalNotices {
    fn downloading(&self, dataset: &str, root: &Path) {
        eprintln!("{dataset} not found under {}; downloading it", root.display());
    }

    fn fetching(&self, url: &str) {
        eprintln!("  fetching {url}");
    }

    fn decoded(&self, done: usize, total: usize) {
        if let Some(bar) = &self.bar {
            if bar.is_hidden() {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }

    fn decoding_finished(&self, report: &FolderReport) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if let Some((path, why)) = report.skipped.first() {
            eprintln!(
                "note: left out {} image(s) that cannot be used, the first {} ({why})",
                report.skipped.len(),
                path.display()
            );
        }
    }

    fn removed_stale(&self, path: &Path) {
        eprintln!("note: removed {}, left by a run that was killed while writing it", path.display());
    }
}

/// Threads to use: the flag, else every core.
pub fn threads(flag: Option<usize>) -> CliResult<usize> {
    Ok(lenet5_core::spec::thread_count(flag)?)
}

/// The engine's error inside `err`, if it is one (directly or through the application library).
pub fn engine_error(err: &CliError) -> Option<&Error> {
    match err.downcast_ref::<lenet5::Error>() {
        Some(lenet5::Error::Core(e)) => Some(e),
        _ => err.downcast_ref::<Error>(),
    }
}

/// The one line a user sees for `err`: the library's message, in the command line's words where it names a
/// setting or where the user can do something about it.
pub fn message(err: &CliError) -> String {
    let Some(e) = engine_error(err) else { return err.to_string() };
    match e {
        Error::Setting { setting, value, expected } => {
            format!("invalid setting: {} must be {expected}, got {value}", flags::flag(setting))
        }
        Error::SettingValue { name, reason } => format!("invalid value for {}: {reason}", flags::flag(name)),
        Error::RunExists { dir } => format!(
            "{e}; pass --force to overwrite it, --resume {} to continue it, or --out to choose another directory",
            dir.display()
        ),
        Error::NotResumable { .. } => format!("{e}; only a directory written by `lenet5 train` can be resumed"),
        Error::DataNotFound { .. } => format!(
            "{e}; put the four IDX files in one of these directories, or point --data / LENET5_DATA at their parent"
        ),
        Error::DataChanged { .. } => {
            format!("{e}; resume with the run's own data (--dataset / --data), or start a new run")
        }
        Error::Diverged { .. } => {
            format!("{e}; the run directory keeps the last finished epoch as it was; start again with a lower --lr")
        }
        Error::ClassCount { .. } => format!("{e}; use the weights trained on this data set"),
        Error::Interrupted { run_dir } => {
            format!("interrupted; resume with: lenet5 train --resume {}", run_dir.display())
        }
        _ => e.to_string(),
    }
}

pub fn run() -> CliResult {
    let cli = Cli::parse();
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Summary(a) => summary::run(a),
        Command::Plot(a) => pictures::plot(a),
        Command::Confusion(a) => pictures::confusion(a),
        Command::Inspect(a) => pictures::inspect(a),
        Command::Import(a) => interop::import(a),
        Command::Quantize(a) => deploy::run(a),
        Command::Export(a) => interop::export(a),
        Command::Serve(a) => serve::run(a),
        Command::Site(a) => site::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Sweep(a) => sweep::run(*a),
    }
}
