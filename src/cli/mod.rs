//! Command-line parsing and the subcommands. Every flag's default reproduces the reference recipe.

mod bench;
mod eval;
mod interop;
mod pictures;
mod predict;
mod serve;
mod site;
mod summary;
mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use lenet5_core::data::{Dataset, DatasetId, Split};
use lenet5_core::nn::Head;
use lenet5_core::{Error, Setting};

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
    /// Export weights as an ONNX model.
    Export(interop::ExportArgs),
    /// Serve a page to draw digits on and watch the network read them, with a JSON API, and a page that trains
    /// LeNet-5 in the browser (/train).
    Serve(serve::ServeArgs),
    /// Write the page that trains LeNet-5 in the browser as a static site, with its data sets.
    Site(site::SiteArgs),
    /// Measure training and evaluation speed, per layer.
    Bench(bench::BenchArgs),
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

/// Loads the weights named by `--weights`.
pub fn load_weights(w: &WeightsArg) -> CliResult<lenet5_core::checkpoint::Checkpoint> {
    Ok(lenet5::interop::pth::load_weights(&w.weights, Head::Sigmoid)?)
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

/// Where the data is: shared by every command that reads a data set.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Data root holding the data sets (default: $LENET5_DATA, else ./data). Both a flat directory and
    /// torchvision's layout (ROOT/MNIST/raw) work.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// `mnist`, `fashion-mnist`, or a directory holding the four IDX files.
    #[arg(long, value_name = "NAME|DIR")]
    pub dataset: Option<String>,
    /// Never download a missing data set (by default mnist and fashion-mnist are fetched from the mirrors
    /// torchvision uses, and verified).
    #[arg(long)]
    pub no_download: bool,
}

impl DataArgs {
    /// The data root: `--data DIR` when given, else `$LENET5_DATA`, else `./data`.
    pub fn root(&self) -> PathBuf {
        if let Some(dir) = &self.data {
            return dir.clone();
        }
        match std::env::var_os("LENET5_DATA") {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => PathBuf::from("data"),
        }
    }
    /// The data set named by the flag, else `fallback`, else MNIST.
    pub fn id(&self, fallback: Option<&str>) -> DatasetId {
        DatasetId::parse(self.dataset.as_deref().or(fallback).unwrap_or("mnist"))
    }

    /// Makes sure a known data set is on disk, downloading it if it is missing and allowed.
    fn ensure(&self, id: &DatasetId) -> CliResult {
        let root = self.root();
        if let Err(e) = lenet5_core::data::dataset::locate(id, &root) {
            if self.no_download || lenet5::download::remote(id).is_none() {
                return Err(e.into());
            }
            eprintln!("{} not found under {}; downloading it", id.name(), root.display());
            lenet5::download::download(id, &root, &mut |url| eprintln!("  fetching {url}"))?;
        }
        Ok(())
    }

    /// Both splits of the data set (downloaded first if needed).
    pub fn load(&self, fallback: Option<&str>) -> CliResult<Dataset> {
        let id = self.id(fallback);
        self.ensure(&id)?;
        Ok(Dataset::load(&id, &self.root())?)
    }

    /// The test split only, for a network of `classes` classes.
    pub fn load_test(&self, fallback: Option<&str>, classes: usize) -> CliResult<Split> {
        let id = self.id(fallback);
        self.ensure(&id)?;
        Ok(Dataset::load_test(&id, &self.root(), classes)?)
    }
}

/// Most worker threads a command takes: far more than any use needs. Where the system cannot start that many
/// the command says so and exits; asking for 100,000 once left it hanging after that error instead.
const MAX_THREADS: usize = 256;

/// Threads to use: the flag, else every core.
pub fn threads(flag: Option<usize>) -> CliResult<usize> {
    match flag {
        Some(0) => Err("--threads must be at least 1".into()),
        Some(n) if n > MAX_THREADS => Err(format!("--threads must be at most {MAX_THREADS}, got {n}").into()),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    }
}

/// The one line a user sees for `err`: the library's message, in the command line's words where it names a
/// setting or where the user can do something about it.
pub fn message(err: &CliError) -> String {
    let core = match err.downcast_ref::<lenet5::Error>() {
        Some(lenet5::Error::Core(e)) => Some(e),
        _ => err.downcast_ref::<Error>(),
    };
    let Some(e) = core else { return err.to_string() };
    match e {
        Error::Setting { setting, value, expected } => {
            format!("invalid setting: {} must be {expected}, got {value}", flag(*setting))
        }
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
        Error::Interrupted { run_dir } => {
            format!("interrupted; resume with: lenet5 train --resume {}", run_dir.display())
        }
        _ => e.to_string(),
    }
}

/// The flag that sets `setting`.
fn flag(setting: Setting) -> &'static str {
    match setting {
        Setting::Epochs => "--epochs",
        Setting::BatchSize => "--batch-size",
        Setting::LearningRate => "--lr",
        Setting::Momentum => "--momentum",
        Setting::WeightDecay => "--weight-decay",
        Setting::TrainLimit => "--train-limit",
        Setting::TestLimit => "--test-limit",
        Setting::Threads => "--threads",
        Setting::Patience => "--patience",
        Setting::StepSize => "--step-size",
        Setting::Gamma => "--gamma",
        Setting::Warmup => "--warmup-epochs",
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
        Command::Export(a) => interop::export(a),
        Command::Serve(a) => serve::run(a),
        Command::Site(a) => site::run(a),
        Command::Bench(a) => bench::run(a),
    }
}
