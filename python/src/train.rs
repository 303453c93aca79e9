//! `lenet5.train`: a training run of the library ([`lenet5::training`]) with the command line's options as
//! keyword arguments, the interpreter free while it trains, and a callback after every epoch.

use std::path::PathBuf;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PySequence, PyString};
use serde_json::{Map, Value};

use lenet5::folder::FolderReport;
use lenet5::source::Notices;
use lenet5::training::{prepare_on, read_config, resolve};
use lenet5_core::base::{MAX_CLASSES, MIN_CLASSES};
use lenet5_core::data::Dataset;
use lenet5_core::run::read_metrics;
use lenet5_core::spec::{Preset, RunSpec, SETTINGS, ValidSpec};
use lenet5_core::train::{EpochMetrics, TrainObserver};

use crate::arrays;
use crate::errors::{core_to_py, to_py};

/// Time between two looks for a pending signal (Ctrl-C): the engine asks before every batch and between the
/// rounds of a large one (a few tens of milliseconds apart at most), so a run stops well within half a second
/// at any batch size.
const SIGNAL_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Tells the Python callback of every finished epoch, and stops the run when it returns `False` or raises, or
/// when the interpreter has a signal to handle (Ctrl-C).
struct CallbackObserver {
    on_epoch: Option<Py<PyAny>>,
    /// Set once the run is to stop.
    stop: std::cell::Cell<bool>,
    /// What the callback raised, or the signal's exception, raised again once the run has stopped.
    error: std::cell::RefCell<Option<PyErr>>,
    /// When signals were last looked for.
    checked: std::cell::Cell<std::time::Instant>,
}

impl CallbackObserver {
    fn new(on_epoch: Option<Py<PyAny>>) -> Self {
        CallbackObserver { on_epoch, stop: false.into(), error: None.into(), checked: std::time::Instant::now().into() }
    }

    fn halt(&self, error: Option<PyErr>) {
        self.stop.set(true);
        let mut kept = self.error.borrow_mut();
        *kept = kept.take().or(error);
    }

    /// What stopped the run with an error (the callback's, or the signal's), taken.
    fn take_error(&self) -> Option<PyErr> {
        self.error.borrow_mut().take()
    }
}

impl TrainObserver for CallbackObserver {
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
        if !self.stop.get() && self.checked.get().elapsed() >= SIGNAL_CHECK_EVERY {
            self.checked.set(std::time::Instant::now());
            if let Err(e) = Python::attach(|py| py.check_signals()) {
                self.halt(Some(e));
            }
        }
        self.stop.get()
    }
}

/// What loading the data and preparing the run tell, on the `lenet5` logger of Python's `logging`: downloads and
/// removed leftovers at INFO, images left out of a folder at WARNING.
pub struct PythonLog;

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

/// The name a data set given as arrays goes by, in errors and in the checkpoints' metadata.
const ARRAYS: &str = "arrays";

/// A data set of `(images, labels)` arrays for training and for validation, with `class_names` (default: the
/// labels' numbers, 0 to the largest).
fn in_memory(
    train: &(Bound<'_, PyAny>, Bound<'_, PyAny>),
    test: &(Bound<'_, PyAny>, Bound<'_, PyAny>),
    class_names: Option<Vec<String>>,
) -> PyResult<Dataset> {
    let train = arrays::split("train_data", &train.0, &train.1, arrays::BATCH_SHAPES)?;
    let test = arrays::split("test_data", &test.0, &test.1, arrays::BATCH_SHAPES)?;
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

/// A Python value as the JSON of a setting: None, a bool, an int, a float, a str, a path, or a tuple or list
/// of those.
fn to_json(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Value> {
    let unsupported = || {
        let kind = value.get_type().name().map(|n| n.to_string()).unwrap_or_default();
        PyTypeError::new_err(format!("{name}: a {kind} is no setting's value"))
    };
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if value.is_instance_of::<PyFloat>() || value.hasattr("__float__")? && !value.hasattr("__index__")? {
        let v: f64 = value.extract()?;
        return serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| PyValueError::new_err(format!("{name}: expected a number, got {v}")));
    }
    if let Ok(v) = value.extract::<i64>() {
        return Ok(Value::from(v));
    }
    if let Ok(items) = value.cast::<PySequence>() {
        let items: PyResult<Vec<Value>> = items.try_iter()?.map(|item| to_json(name, &item?)).collect();
        return items.map(Value::Array);
    }
    if value.hasattr("__fspath__")? {
        let path: PathBuf = value.extract()?;
        return Ok(Value::String(path.to_string_lossy().into_owned()));
    }
    Err(unsupported())
}

/// The settings of the `config` argument: a path to a specification file (TOML or JSON), or a dict.
fn config_settings(config: Option<&Bound<'_, PyAny>>) -> PyResult<Map<String, Value>> {
    let Some(config) = config.filter(|c| !c.is_none()) else { return Ok(Map::new()) };
    if let Ok(dict) = config.cast::<PyDict>() {
        return dict.iter().map(|(k, v)| Ok((k.extract::<String>()?, to_json("config", &v)?))).collect();
    }
    let path: PathBuf = config
        .extract()
        .map_err(|_| PyTypeError::new_err("config: expected a path to a specification file, or a dict"))?;
    read_config(&path).map_err(to_py)
}

/// Trains LeNet-5 as `lenet5 train` does, from the same run specification and with the same defaults (the
/// recipe), writing the same run directory (`out`: best.safetensors, last.safetensors, metrics.jsonl,
/// config.json). Every setting of `lenet5 train` is a keyword argument of the same name (`lenet5.settings()`
/// lists them with their defaults); `config` is a specification file (TOML, or JSON such as a run's
/// config.json) or a dict, whose settings the keywords override; `preset` (`"fast"`, as `lenet5 train --preset`)
/// starts from a named set of settings, under `config` and the keywords. Returns the run's history, one dict per
/// finished epoch (epoch, train_loss, train_acc, val_loss, val_acc, lr, train_seconds, val_seconds), its
/// directory and the epoch it chose its best weights at (`lenet5.train` makes them a `TrainResult`).
///
/// `train_data=(images, labels)` and `test_data=(images, labels)` train on numpy arrays instead of a data set
/// on disk: images `[N, 28, 28]` or `[N, 1, 28, 28]`, uint8 or those bytes / 255; labels N integers; with
/// `class_names` (default: the labels' numbers).
///
/// `on_epoch(record)` is called after every epoch with that epoch's dict (and `new_best`); returning `False`
/// stops the run there (it can be resumed), which is how a tuner prunes a trial; an exception it raises stops
/// the run and is raised again. The interpreter is free while the engine trains; Ctrl-C stops the run.
#[pyfunction]
#[pyo3(signature = (*, preset = None, config = None, on_epoch = None, train_data = None, test_data = None, class_names = None, **settings))]
// Python's keyword arguments, one parameter each.
#[allow(clippy::too_many_arguments)]
pub fn train<'py>(
    py: Python<'py>,
    preset: Option<String>,
    config: Option<&Bound<'py, PyAny>>,
    on_epoch: Option<Py<PyAny>>,
    train_data: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    test_data: Option<(Bound<'py, PyAny>, Bound<'py, PyAny>)>,
    class_names: Option<Vec<String>>,
    settings: Option<&Bound<'py, PyDict>>,
) -> PyResult<(Bound<'py, PyList>, PathBuf, Option<usize>)> {
    let mut given = config_settings(config)?;
    for (name, value) in settings.into_iter().flat_map(|d| d.iter()) {
        let name: String = name.extract()?;
        given.insert(name.clone(), to_json(&name, &value)?);
    }
    let (spec, given) = resolve(preset.as_deref(), None, given).map_err(to_py)?;
    let arrays = match (train_data, test_data) {
        (Some(train), Some(test)) if spec.data.is_none() && spec.dataset.is_none() => {
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
    if let Some(callback) = &on_epoch
        && !callback.bind(py).is_callable()
    {
        return Err(PyValueError::new_err("on_epoch: expected a function of one argument (the epoch's dict)"));
    }
    let spec = spec.validate().map_err(core_to_py)?;
    if let Some(asked) = spec.threads_capped() {
        let used = spec.threads();
        PythonLog::log("info", format!("threads={asked} is more than the {used} cores: using {used}"));
    }
    let mut observer = CallbackObserver::new(on_epoch);
    let epochs_given = given.contains_key("epochs");
    let history = py.detach(|| run(&spec, epochs_given, arrays, &mut observer));
    if let Some(e) = observer.take_error() {
        return Err(e);
    }
    let (history, best_epoch) = history.map_err(to_py)?;
    let list = PyList::empty(py);
    for m in &history {
        list.append(epoch_record(py, m)?)?;
    }
    let run_dir = spec.spec().resume.clone().unwrap_or_else(|| spec.spec().out.clone());
    Ok((list, run_dir, best_epoch))
}

/// Every setting of a run: a list of dicts with its name, default (`None` where unset), what leaving it unset
/// means, and its help.
#[pyfunction]
pub fn settings<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
    let defaults = RunSpec::default().to_json();
    let list = PyList::empty(py);
    for info in SETTINGS {
        let d = PyDict::new(py);
        d.set_item("name", info.name)?;
        let default = serde_json::to_string(&defaults[info.name]).expect("JSON");
        d.set_item("default", py.import("json")?.call_method1("loads", (default,))?)?;
        d.set_item("unset", info.unset)?;
        d.set_item("help", info.help)?;
        list.append(d)?;
    }
    Ok(list)
}

/// Every preset (`train(preset=...)`): a list of dicts with its name, help and settings.
#[pyfunction]
pub fn presets<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for preset in Preset::ALL {
        let d = PyDict::new(py);
        d.set_item("name", preset.name)?;
        d.set_item("help", preset.help)?;
        let settings = serde_json::to_string(&preset.settings()).expect("JSON");
        d.set_item("settings", py.import("json")?.call_method1("loads", (settings,))?)?;
        list.append(d)?;
    }
    Ok(list)
}

/// Prepares and trains the run of `spec`; its history, whole even when the observer stopped it.
fn run(
    spec: &ValidSpec,
    epochs_given: bool,
    arrays: Option<Dataset>,
    observer: &mut CallbackObserver,
) -> lenet5::Result<(Vec<EpochMetrics>, Option<usize>)> {
    let prepared = prepare_on(spec, epochs_given, arrays, &PythonLog)?;
    let run_dir = prepared.run_dir.clone();
    match prepared.run(spec.threads(), observer) {
        Ok(summary) => Ok((summary.state.history, summary.state.best_epoch)),
        // Stopped on request: the epochs finished are in the run's log, and its best in its last state.
        Err(lenet5::Error::Core(lenet5_core::Error::Interrupted { .. })) if observer.stop.get() => {
            let best = run_dir.load_state().ok().and_then(|(state, _, _)| state.best_epoch);
            Ok((read_metrics(&run_dir.metrics())?, best))
        }
        Err(e) => Err(e),
    }
}
