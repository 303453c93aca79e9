//! `lenet5.train`: a training run of the library ([`lenet5::training`]) with the command line's options as
//! keyword arguments, the interpreter free while it trains, and a callback after every epoch.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList};

use lenet5::folder::{FolderReport, Preprocess};
use lenet5::source::{DataSource, Notices};
use lenet5::training::{ScheduleKind, TrainOptions, prepare_on, threads as thread_count};
use lenet5_core::base::{MAX_CLASSES, MIN_CLASSES};
use lenet5_core::data::{Augment, Dataset};
use lenet5_core::nn::Head;
use lenet5_core::run::read_metrics;
use lenet5_core::train::{EpochMetrics, StepResult, TrainObserver};

use crate::arrays;
use crate::errors::to_py;

pub const HEAD_CHOICES: &str = "\"sigmoid\" or \"logits\"";
const SCHEDULE_CHOICES: &str = "\"constant\", \"step\", \"cosine\" or \"onecycle\"";
const PREPROCESS_CHOICES: &str = "\"resize\", \"mnist\" or \"none\"";

/// Batches between two looks for a pending signal (Ctrl-C), a few tens of milliseconds of training.
const SIGNAL_CHECK_BATCHES: usize = 256;

/// Tells the Python callback of every finished epoch, and stops the run when it returns `False` or raises, or
/// when the interpreter has a signal to handle (Ctrl-C).
struct CallbackObserver {
    on_epoch: Option<Py<PyAny>>,
    /// Set once the run is to stop.
    stop: bool,
    /// What the callback raised, or the signal's exception, raised again once the run has stopped.
    error: Option<PyErr>,
    batches: usize,
}

impl CallbackObserver {
    fn halt(&mut self, error: Option<PyErr>) {
        self.stop = true;
        self.error = self.error.take().or(error);
    }
}

impl TrainObserver for CallbackObserver {
    fn on_batch(&mut self, _batch: usize, _batches: usize, _images: usize, _result: StepResult) {
        self.batches += 1;
        if self.batches.is_multiple_of(SIGNAL_CHECK_BATCHES)
            && let Err(e) = Python::attach(|py| py.check_signals())
        {
            self.halt(Some(e));
        }
    }

    fn on_epoch_end(&mut self, metrics: &EpochMetrics, new_best: bool) {
        let Some(callback) = &self.on_epoch else { return };
        let outcome = Python::attach(|py| {
            let record = epoch_record(py, metrics)?;
            record.set_item("new_best", new_best)?;
            let answer = callback.call1(py, (record,))?;
            // Only `False` stops: a callback that returns nothing (or anything else) lets the run go on.
            Ok::<_, PyErr>(answer.is(PyBool::new(py, false).as_any()))
        });
        match outcome {
            Ok(true) => self.halt(None),
            Ok(false) => {}
            Err(e) => self.halt(Some(e)),
        }
    }

    fn should_stop(&self) -> bool {
        self.stop
    }
}

/// What loading the data and preparing the run tell, on the `lenet5` logger of Python's `logging`: downloads and
/// removed leftovers at INFO, images left out of a folder at WARNING.
struct PythonLog;

impl PythonLog {
    fn log(level: &str, message: String) {
        Python::attach(|py| {
            let logger = py.import("logging").and_then(|logging| logging.call_method1("getLogger", ("lenet5",)));
            // A logging failure must not fail the run; Python reports it as it does for its own handlers.
            if let Err(e) = logger.and_then(|logger| logger.call_method1(level, (message,))) {
                e.write_unraisable(py, None);
            }
        });
    }
}

impl Notices for PythonLog {
    fn downloading(&self, dataset: &str, root: &std::path::Path) {
        PythonLog::log("info", format!("{dataset} not found under {}; downloading it", root.display()));
    }

    fn fetching(&self, url: &str) {
        PythonLog::log("info", format!("fetching {url}"));
    }

    fn decoding_finished(&self, report: &FolderReport) {
        if let Some((path, why)) = report.skipped.first() {
            let count = report.skipped.len();
            PythonLog::log(
                "warning",
                format!("left out {count} image(s) that cannot be used, the first {} ({why})", path.display()),
            );
        }
    }

    fn removed_stale(&self, path: &std::path::Path) {
        PythonLog::log("info", format!("removed {}, left by a run that was killed while writing it", path.display()));
    }
}

/// An epoch's figures as a dict, with the keys of a line of `metrics.jsonl`.
fn epoch_record<'py>(py: Python<'py>, m: &EpochMetrics) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("epoch", m.epoch)?;
    d.set_item("train_loss", m.train_loss)?;
    d.set_item("train_acc", m.train_acc)?;
    d.set_item("val_loss", m.val_loss)?;
    d.set_item("val_acc", m.val_acc)?;
    d.set_item("lr", m.lr)?;
    d.set_item("train_seconds", m.train_seconds)?;
    d.set_item("val_seconds", m.val_seconds)?;
    Ok(d)
}

/// The value `parse` makes of the keyword argument `name`, or a ValueError listing the `choices`.
pub fn choice<T>(name: &str, value: &str, parse: fn(&str) -> Option<T>, choices: &str) -> PyResult<T> {
    parse(value).ok_or_else(|| PyValueError::new_err(format!("{name}: expected {choices}, got {value:?}")))
}

/// The name a data set given as arrays goes by, in errors and in the checkpoints' metadata.
const ARRAYS: &str = "arrays";

/// A data set of `(images, labels)` arrays for training and for validation, with `class_names` (default: the
/// labels' numbers, 0 to the largest).
fn in_memory(
    train: &(Bound<'_, PyAny>, Bound<'_, PyAny>),
    test: &(Bound<'_, PyAny>, Bound<'_, PyAny>),
    class_names: Option<Vec<String>>,
) -> PyResult<Dataset> {
    let train = arrays::split("train_data", &train.0, &train.1)?;
    let test = arrays::split("test_data", &test.0, &test.1)?;
    let largest = train.labels.iter().chain(&test.labels).copied().max().unwrap_or(0) as usize;
    let class_names =
        class_names.unwrap_or_else(|| (0..(largest + 1).max(MIN_CLASSES)).map(|k| k.to_string()).collect());
    if !(MIN_CLASSES..=MAX_CLASSES).contains(&class_names.len()) {
        let count = class_names.len();
        return Err(PyValueError::new_err(format!(
            "class_names: {count} classes; expected {MIN_CLASSES} to {MAX_CLASSES}"
        )));
    }
    if largest >= class_names.len() {
        let count = class_names.len();
        return Err(PyValueError::new_err(format!("label {largest} is out of range for {count} class_names")));
    }
    Ok(Dataset {
        name: ARRAYS.into(),
        dir: PathBuf::from(ARRAYS),
        class_names,
        train,
        test,
        options: Default::default(),
    })
}

/// Trains LeNet-5 as `lenet5 train` does, with the same options and defaults (the recipe), writing the same
/// run directory (`out`: best.safetensors, last.safetensors, metrics.jsonl). Returns the run's history: one
/// dict per finished epoch (epoch, train_loss, train_acc, val_loss, val_acc, lr, train_seconds, val_seconds).
///
/// `train_data=(images, labels)` and `test_data=(images, labels)` train on numpy arrays instead of a data set
/// on disk: images `[N, 28, 28]` or `[N, 1, 28, 28]`, uint8 or those bytes / 255; labels N integers; with
/// `class_names` (default: the labels' numbers).
///
/// `on_epoch(record)` is called after every epoch with that epoch's dict (and `new_best`); returning `False`
/// stops the run there (it can be resumed), which is how a tuner prunes a trial; an exception it raises stops
/// the run and is raised again. The interpreter is free while the engine trains; Ctrl-C stops the run.
#[pyfunction]
#[pyo3(signature = (
    *, epochs = None, batch_size = 16, lr = 1e-3, momentum = 0.9, weight_decay = 0.0, seed = 0,
    head = "sigmoid", lr_schedule = "constant", step_size = 10, gamma = 0.1, warmup_epochs = None,
    augment = false, rotate = 10.0, shift = 2.0, scale = (0.9, 1.1), patience = None, threads = None,
    data = None, dataset = None, no_download = false, preprocess = None, val_split = None, split_seed = None,
    label_offset = None, skip_bad_images = false, out = PathBuf::from("save_model"), force = false,
    resume = None, init_weights = None, train_limit = None, test_limit = None, on_epoch = None,
    train_data = None, test_data = None, class_names = None,
))]
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    epochs: Option<usize>,
    batch_size: usize,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    seed: u64,
    head: &str,
    lr_schedule: &str,
    step_size: usize,
    gamma: f32,
    warmup_epochs: Option<usize>,
    augment: bool,
    rotate: f32,
    shift: f32,
    scale: (f32, f32),
    patience: Option<usize>,
    threads: Option<usize>,
    data: Option<PathBuf>,
    dataset: Option<PathBuf>,
    no_download: bool,
    preprocess: Option<&str>,
    val_split: Option<f64>,
    split_seed: Option<u64>,
    label_offset: Option<u16>,
    skip_bad_images: bool,
    out: PathBuf,
    force: bool,
    resume: Option<PathBuf>,
    init_weights: Option<PathBuf>,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
    on_epoch: Option<Py<PyAny>>,
    train_data: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    test_data: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    class_names: Option<Vec<String>>,
) -> PyResult<Bound<'py, PyList>> {
    let arrays = match (train_data, test_data) {
        (Some(train), Some(test)) if data.is_none() && dataset.is_none() => {
            Some(in_memory(&train, &test, class_names)?)
        }
        (None, None) if class_names.is_none() => None,
        (None, None) => return Err(PyValueError::new_err("class_names: only with train_data and test_data")),
        (Some(_), Some(_)) => {
            return Err(PyValueError::new_err(
                "train_data and test_data replace data and dataset: give one or the other",
            ));
        }
        _ => return Err(PyValueError::new_err("train_data and test_data go together: give both")),
    };
    let data = DataSource {
        root: data,
        dataset: dataset.map(|d| d.to_string_lossy().into_owned()),
        download: !no_download,
        preprocess: preprocess.map(|p| choice("preprocess", p, Preprocess::parse, PREPROCESS_CHOICES)).transpose()?,
        val_split,
        split_seed,
        label_offset,
        skip_bad_images,
    };
    let options = TrainOptions {
        epochs,
        batch_size,
        lr,
        momentum,
        weight_decay,
        seed,
        head: choice("head", head, Head::parse, HEAD_CHOICES)?,
        lr_schedule: choice("lr_schedule", lr_schedule, ScheduleKind::parse, SCHEDULE_CHOICES)?,
        step_size,
        gamma,
        warmup_epochs,
        augment: augment.then_some(Augment {
            degrees: rotate,
            translate: shift,
            scale_min: scale.0,
            scale_max: scale.1,
        }),
        patience,
        train_limit,
        test_limit,
        data,
        out,
        force,
        resume,
        init_weights,
    };
    if let Some(callback) = &on_epoch
        && !callback.bind(py).is_callable()
    {
        return Err(PyValueError::new_err("on_epoch: expected a function of one argument (the epoch's dict)"));
    }
    let threads = thread_count(threads).map_err(to_py)?;
    let mut observer = CallbackObserver { on_epoch, stop: false, error: None, batches: 0 };
    let history = py.detach(|| run(&options, arrays, threads, &mut observer));
    if let Some(e) = observer.error {
        return Err(e);
    }
    let history = history.map_err(to_py)?;
    let list = PyList::empty(py);
    for m in &history {
        list.append(epoch_record(py, m)?)?;
    }
    Ok(list)
}

/// Prepares and trains the run of `options`; its history, whole even when the observer stopped it.
fn run(
    options: &TrainOptions,
    arrays: Option<Dataset>,
    threads: usize,
    observer: &mut CallbackObserver,
) -> lenet5::Result<Vec<EpochMetrics>> {
    let prepared = prepare_on(options, arrays, &PythonLog)?;
    let metrics = prepared.run_dir.metrics();
    match prepared.run(threads, observer) {
        Ok(summary) => Ok(summary.state.history),
        // Stopped on request: the history of the epochs finished is in the run's log.
        Err(lenet5::Error::Core(lenet5_core::Error::Interrupted { .. })) if observer.stop => {
            Ok(read_metrics(&metrics)?)
        }
        Err(e) => Err(e),
    }
}
