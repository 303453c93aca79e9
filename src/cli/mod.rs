//! Command-line parsing and the subcommands. Every flag's default reproduces the reference recipe.

mod bench;
mod eval;
mod interop;
mod pictures;
mod predict;
mod serve;
mod site;
mod summary;
mod sweep;
mod train;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use lenet5::folder::{FolderOptions, Preprocess};
use lenet5_core::checkpoint::Checkpoint;
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
    /// Train every combination of comma-separated flag values, several at a time, and rank them by val_acc.
    Sweep(sweep::SweepArgs),
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
    /// `mnist`, `fashion-mnist`, a directory holding the four IDX files, or an image folder: one subfolder of
    /// images per class (DIR/<class>/...), or DIR/train/<class>/... and DIR/test/<class>/...
    #[arg(long, value_name = "NAME|DIR")]
    pub dataset: Option<String>,
    /// Never download a missing data set (by default mnist and fashion-mnist are fetched from the mirrors
    /// torchvision uses, and verified).
    #[arg(long)]
    pub no_download: bool,
    /// How an image folder's pictures become 28x28 grey: `resize` (grey, then resized), `mnist` (the digit
    /// framing `predict` uses: crop to the ink, fit 20x20, centre), or `none` (they must be 28x28)
    /// [default: resize, or what the weights or the resumed run were trained with].
    #[arg(long, value_enum)]
    pub preprocess: Option<PreprocessArg>,
    /// The share of each class an image folder without train/ and test/ holds out for validation
    /// [default: 0.2, or the run's].
    #[arg(long, value_name = "FRACTION")]
    pub val_split: Option<f64>,
    /// Seed of that split [default: 0, or the run's].
    #[arg(long, value_name = "N")]
    pub split_seed: Option<u64>,
    /// Subtract N from every label of an IDX data set whose classes are not numbered from 0 (EMNIST letters:
    /// --label-offset 1) [default: 0, or the run's].
    #[arg(long, value_name = "N")]
    pub label_offset: Option<u16>,
    /// Leave out the files of an image folder that cannot be decoded (counted and reported), instead of
    /// stopping with the list of them.
    #[arg(long)]
    pub skip_bad_images: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum PreprocessArg {
    Resize,
    Mnist,
    None,
}

impl DataArgs {
    /// Only a data root (the default one when `None`).
    pub fn with_root(data: Option<PathBuf>) -> DataArgs {
        DataArgs {
            data,
            dataset: None,
            no_download: true,
            preprocess: None,
            val_split: None,
            split_seed: None,
            label_offset: None,
            skip_bad_images: false,
        }
    }

    /// The flags that give these data arguments again (for a `lenet5 train` run by a sweep).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut add = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                args.extend([flag.to_string(), v]);
            }
        };
        add("--data", self.data.as_ref().map(|d| d.display().to_string()));
        add("--dataset", self.dataset.clone());
        add("--preprocess", self.preprocess.map(|p| format!("{p:?}").to_lowercase()));
        add("--val-split", self.val_split.map(|v| v.to_string()));
        add("--split-seed", self.split_seed.map(|v| v.to_string()));
        add("--label-offset", self.label_offset.map(|v| v.to_string()));
        if self.no_download {
            args.push("--no-download".into());
        }
        if self.skip_bad_images {
            args.push("--skip-bad-images".into());
        }
        args
    }

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

    /// Makes sure the `files` of a known data set are on disk (all four, or the test split's), downloading
    /// what is missing where that is allowed.
    fn ensure(&self, id: &DatasetId, files: &'static [&'static str]) -> CliResult {
        let root = self.root();
        if let Err(e) = lenet5_core::data::dataset::locate_files(id, &root, files) {
            if self.no_download || lenet5::download::remote(id).is_none() {
                return Err(e.into());
            }
            eprintln!("{} not found under {}; downloading it", id.name(), root.display());
            lenet5::download::download(id, &root, files, &mut |url| eprintln!("  fetching {url}"))?;
        }
        Ok(())
    }

    /// How to read an image folder: the flags, else what `recorded` (a run's or a checkpoint's data options)
    /// says, else the defaults.
    fn folder_options(&self, recorded: &BTreeMap<String, String>) -> FolderOptions {
        let preprocess = self
            .preprocess
            .map(|p| match p {
                PreprocessArg::Resize => Preprocess::Resize,
                PreprocessArg::Mnist => Preprocess::Mnist,
                PreprocessArg::None => Preprocess::None,
            })
            .or_else(|| recorded.get("preprocess").and_then(|p| Preprocess::parse(p)))
            .unwrap_or(Preprocess::Resize);
        FolderOptions {
            preprocess,
            val_split: self.val_split.or_else(|| recorded.get("val_split")?.parse().ok()).unwrap_or(0.2),
            split_seed: self.split_seed.or_else(|| recorded.get("split_seed")?.parse().ok()).unwrap_or(0),
            skip_bad_images: self.skip_bad_images,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Both splits of the data set (downloaded first if needed); an image folder is read as `recorded` says
    /// where no flag does.
    pub fn load(&self, fallback: Option<&str>, recorded: &BTreeMap<String, String>) -> CliResult<Dataset> {
        let id = self.id(fallback);
        if let DatasetId::Dir(dir) = &id
            && lenet5::folder::is_image_folder(dir)
        {
            return load_image_folder(dir, &self.folder_options(recorded));
        }
        self.ensure(&id, &lenet5_core::data::dataset::FILES)?;
        let data = Dataset::load(&id, &self.root())?;
        Ok(match self.label_offset(recorded) {
            0 => data,
            offset => data.with_label_offset(offset)?,
        })
    }

    /// The label offset of an IDX data set: the flag's, else the recorded one, else 0.
    fn label_offset(&self, recorded: &BTreeMap<String, String>) -> u16 {
        self.label_offset.or_else(|| recorded.get("label_offset")?.parse().ok()).unwrap_or(0)
    }

    /// The test split of the data set `ck` was trained on (unless the flags name another), for its classes.
    pub fn load_test_for(&self, ck: &Checkpoint) -> CliResult<Split> {
        let id = self.id(ck.metadata.get("dataset").map(String::as_str));
        let recorded = data_options(ck);
        let test = if let DatasetId::Dir(dir) = &id
            && lenet5::folder::is_image_folder(dir)
        {
            let data = load_image_folder(dir, &self.folder_options(&recorded))?;
            check_classes(&data, ck)?;
            data.test
        } else if self.label_offset(&recorded) != 0 {
            let data = self.load(Some(&id.name()), &recorded)?;
            check_classes(&data, ck)?;
            data.test
        } else {
            // Only the test split: evaluating never needs (or downloads) the training images.
            self.ensure(&id, &lenet5_core::data::dataset::TEST_FILES)?;
            Dataset::load_test(&id, &self.root(), ck.classes())?
        };
        if test.is_empty() {
            return Err(Error::EmptySplit { dataset: id.name(), split: "test" }.into());
        }
        Ok(test)
    }
}

/// The data options a checkpoint records (its `data.<name>` metadata).
pub fn data_options(ck: &Checkpoint) -> BTreeMap<String, String> {
    ck.metadata.iter().filter_map(|(k, v)| Some((k.strip_prefix("data.")?.to_string(), v.clone()))).collect()
}

/// The network of `ck` tells apart the classes of `data`.
fn check_classes(data: &Dataset, ck: &Checkpoint) -> CliResult {
    if data.class_names.len() != ck.classes() {
        return Err(lenet5_core::Error::ClassCount {
            dataset: data.name.clone(),
            network: ck.classes(),
            data: data.class_names.len(),
        }
        .into());
    }
    Ok(())
}

/// Reads an image folder with a progress bar on a terminal, and says what it left out.
fn load_image_folder(dir: &Path, options: &FolderOptions) -> CliResult<Dataset> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("decoding {pos}/{len} images [{bar:30}] ({elapsed}<{eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let progress = |done: usize, total: usize| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    };
    let result = lenet5::folder::load_folder(dir, options, &progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (data, report) = result?;
    if !report.skipped.is_empty() {
        let (path, why) = &report.skipped[0];
        eprintln!(
            "note: left out {} image(s) that cannot be used, the first {} ({why})",
            report.skipped.len(),
            path.display()
        );
    }
    Ok(data)
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
        Setting::Augment => "--rotate / --shift / --scale",
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
        Command::Sweep(a) => sweep::run(a),
    }
}
