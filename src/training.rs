//! A training run as every front end starts it: the recipe's settings (each of which may be changed), the data,
//! and the run directory; new, resumed, or from given weights. [`prepare`] checks the settings, takes the run
//! directory and reads the data; [`PreparedRun::run`] trains. The command line and the Python package both
//! start runs here, so a run means the same thing in both.

use std::path::Path;

use serde_json::{Map, Value};

use lenet5_core::data::{Dataset, DatasetId};
use lenet5_core::fs::{create_dir, write_atomic};
use lenet5_core::nn::params::init_params_for;
use lenet5_core::run::{RunDir, RunSummary, Start, TrainState, train_run};
use lenet5_core::spec::{Preset, RunSpec, ValidSpec};
use lenet5_core::train::{TrainObserver, ValidConfig};

use crate::error::Result;
use crate::lock::{DirLock, lock_dir, remove_stale_temporaries};
use crate::source::{DataSource, Notices};

/// The run specification every run directory holds: `lenet5 train --config RUN/config.json --out OTHER` trains
/// the same run again, bit for bit.
pub const CONFIG_FILE: &str = "config.json";

/// Largest specification file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The settings of a specification file, as `name -> value`: TOML, or JSON when the name ends in `.json`. Every
/// name must be a setting, and every value of its setting's type.
pub fn read_config(path: &Path) -> Result<Map<String, Value>> {
    use lenet5_core::error::IoContext;
    let bad = |reason: String| lenet5_core::Error::format(path, reason);
    let len = std::fs::metadata(path).at(path)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(bad(format!("{len} bytes; a run specification is at most {MAX_CONFIG_BYTES}")).into());
    }
    let text = std::fs::read_to_string(path).at(path)?;
    let value: Value = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?
    } else {
        toml::from_str(&text).map_err(|e| bad(format!("not TOML: {}", e.message())))?
    };
    let Value::Object(settings) = value else { return Err(bad("expected a table of settings".into()).into()) };
    // Each name and value checked here, so that the error names the file.
    RunSpec::default().with_json(&Value::Object(settings.clone())).map_err(|e| bad(e.to_string()))?;
    Ok(settings)
}

/// The batch size of the loss that evaluating `ck` reports (the mean of per-batch means): the one the weights
/// were trained with, as their checkpoint records it, else the recipe's. `lenet5 eval`, `Model.evaluate` and the
/// run's own val_loss then agree.
pub fn eval_batch_size(ck: &lenet5_core::checkpoint::Checkpoint) -> usize {
    let recorded = ck.metadata.get("config").and_then(|c| serde_json::from_str::<Value>(c).ok());
    let recorded = recorded.and_then(|c| c["batch_size"].as_u64()).map(|b| b as usize);
    recorded
        .filter(|&b| (1..=lenet5_core::train::TrainConfig::MAX_BATCH_SIZE).contains(&b))
        .unwrap_or(RunSpec::default().batch_size)
}

/// The specification of a run: the recipe, then the settings of the preset called `preset` (if any), then
/// those of the file `config` (if any), then those `given` beside it (flags, keywords). Returns it with every
/// setting that was set explicitly, by the preset, the file or beside it.
pub fn resolve(
    preset: Option<&str>,
    config: Option<&Path>,
    given: Map<String, Value>,
) -> Result<(RunSpec, Map<String, Value>)> {
    let mut settings = match preset {
        Some(name) => Preset::named(name)?.settings(),
        None => Map::new(),
    };
    if let Some(path) = config {
        settings.extend(read_config(path)?);
    }
    settings.extend(given);
    let spec = RunSpec::default().with_json(&Value::Object(settings.clone()))?;
    Ok((spec, settings))
}

/// A run about to start: its directory (this process's alone until the run is dropped), settings, start and
/// data.
pub struct PreparedRun {
    pub run_dir: RunDir,
    pub config: ValidConfig,
    pub start: Start,
    pub data: Dataset,
    _lock: DirLock,
}

impl PreparedRun {
    /// Whether the run continues one that stopped.
    pub fn is_resumed(&self) -> bool {
        matches!(self.start, Start::Resume { .. })
    }

    /// Trains on `threads` workers to the end of the run, writing its files after every epoch and telling
    /// `observer` as it goes. Returns [`lenet5_core::Error::Interrupted`] when the observer asks to stop.
    pub fn run(self, threads: usize, observer: &mut dyn TrainObserver) -> Result<RunSummary> {
        let PreparedRun { run_dir, config, start, data, _lock } = self;
        if matches!(start, Start::Fresh { .. }) {
            run_dir.create(true)?;
        }
        Ok(train_run(&run_dir, config, &data, start, threads, observer)?)
    }
}

/// Takes the run directory of `spec` (new or resumed) and reads the data and the weights to start from. A
/// resumed run keeps its recorded settings, but runs to `spec.epochs` when `epochs_given` (else to its own).
pub fn prepare(spec: &ValidSpec, epochs_given: bool, notices: &dyn Notices) -> Result<PreparedRun> {
    prepare_on(spec, epochs_given, None, notices)
}

/// [`prepare`], on `data` when given (a data set the caller holds in memory) instead of what the specification
/// names. A resumed run must be given the data it was trained on again, which the run checks.
pub fn prepare_on(
    spec: &ValidSpec,
    epochs_given: bool,
    data: Option<Dataset>,
    notices: &dyn Notices,
) -> Result<PreparedRun> {
    match &spec.spec().resume {
        Some(dir) => resumed_run(spec, epochs_given.then_some(spec.spec().epochs), dir, data, notices),
        None => new_run(spec, data, notices),
    }
}

/// The run directory `dir` as this process's alone, from before its state or data is read to the end of the
/// run; and without the temporary files a process killed while writing there may have left.
fn take_run_dir(dir: &Path, notices: &dyn Notices) -> Result<DirLock> {
    let lock = lock_dir(dir)?;
    for stale in remove_stale_temporaries(dir) {
        notices.removed_stale(&stale);
    }
    Ok(lock)
}

/// A resumed run: its directory, settings (only the length may change), state and data.
fn resumed_run(
    spec: &ValidSpec,
    epochs: Option<usize>,
    dir: &Path,
    data: Option<Dataset>,
    notices: &dyn Notices,
) -> Result<PreparedRun> {
    let run_dir = RunDir::new(dir);
    run_dir.check_resumable()?;
    let lock = take_run_dir(dir, notices)?;
    let (state, params, momentum) = run_dir.load_state()?;
    let recorded = state.config.clone().check()?;
    let config = match epochs {
        Some(epochs) => recorded.with_epochs(epochs)?,
        None => recorded,
    };
    let data = match data {
        Some(data) => data,
        None => resume_data(spec.spec(), &state).load(None, &state.data_options, notices)?,
    };
    update_config_file(dir, config.epochs)?;
    let start = Start::Resume { state: Box::new(state), params, momentum };
    Ok(PreparedRun { run_dir, config, start, data, _lock: lock })
}

/// The run's `config.json` (where it has one: runs written before it have none) with its new length.
fn update_config_file(dir: &Path, epochs: usize) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return Ok(());
    }
    let settings = read_config(&path)?;
    let spec = RunSpec::default().with_json(&Value::Object(settings))?;
    Ok(write_atomic(&path, RunSpec { epochs, ..spec }.to_json_text().as_bytes())?)
}

/// A new run of the specification, from PyTorch's initialisation (for the data set's classes) or the given
/// weights; its specification written as the run directory's `config.json`.
fn new_run(spec: &ValidSpec, data: Option<Dataset>, notices: &dyn Notices) -> Result<PreparedRun> {
    let s = spec.spec();
    let run_dir = RunDir::new(&s.out);
    let refuse_existing = || match run_dir.holds_run() && !s.force {
        true => Err(lenet5_core::Error::RunExists { dir: s.out.clone() }),
        false => Ok(()),
    };
    // Said before the data are read (which takes a while), and nothing is created for data that are refused.
    refuse_existing()?;
    let data = match data {
        Some(data) => data,
        None => DataSource::of(s).load(None, &Default::default(), notices)?,
    };
    create_dir(&s.out)?;
    let lock = take_run_dir(&s.out, notices)?;
    refuse_existing()?;
    // An image folder without train/ and test/ held its validation images out as it was read.
    let config = match data.options.contains_key("val_split") {
        true => spec.config().without_holdout(),
        false => spec.config().clone(),
    };
    let params = match &s.init_weights {
        Some(path) => crate::interop::pth::load_weights(path, s.head)?.params,
        None => init_params_for(s.seed, data.classes()),
    };
    let record = RunSpec { force: false, resume: None, ..s.clone() };
    write_atomic(&run_dir.dir.join(CONFIG_FILE), record.to_json_text().as_bytes())?;
    Ok(PreparedRun { run_dir, config, start: Start::Fresh { params }, data, _lock: lock })
}

/// Where a resumed run's data are: the specification's where given, else the directory and the data set the run
/// recorded (read from there, never downloaded: it must be the same data, which `train_run` checks).
fn resume_data(spec: &RunSpec, state: &TrainState) -> DataSource {
    let mut spec = spec.clone();
    let named = spec.data.is_some() || spec.dataset.is_some();
    spec.dataset = spec.dataset.or_else(|| Some(state.dataset.clone()));
    if let (false, Some(dir)) = (named, &state.data_dir) {
        spec.data = Some(dir.clone());
        if let DatasetId::Dir(_) = DatasetId::parse(&state.dataset) {
            spec.dataset = Some(dir.display().to_string());
        }
        spec.no_download = true;
    }
    DataSource::of(&spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_is_read_as_toml_or_json_and_the_settings_beside_it_win() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("run.toml");
        std::fs::write(&toml, "lr = 0.01\nepochs = 3\nhead = \"logits\"\nscale = [0.8, 1.2]\n").unwrap();
        let given = Map::from_iter([("epochs".to_string(), Value::from(5))]);
        let (spec, settings) = resolve(None, Some(&toml), given).unwrap();
        assert_eq!((spec.lr, spec.epochs, spec.head.name(), spec.scale), (0.01, 5, "logits", [0.8, 1.2]));
        assert_eq!(settings.len(), 4);
        let json = dir.path().join("run.json");
        std::fs::write(&json, r#"{"lr": 0.01, "batch_size": 32}"#).unwrap();
        assert_eq!(resolve(None, Some(&json), Map::new()).unwrap().0.batch_size, 32);
    }

    #[test]
    fn a_bad_config_file_is_an_error_that_names_it_and_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let bad = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            resolve(None, Some(&path), Map::new()).unwrap_err().to_string()
        };
        let e = bad("a.toml", "learning_rate = 0.1\n");
        assert!(e.contains("a.toml") && e.contains("did you mean `lr`"), "{e}");
        let e = bad("b.toml", "lr = \"fast\"\n");
        assert!(e.contains("b.toml") && e.contains("setting lr"), "{e}");
        let e = bad("c.json", "[1, 2]");
        assert!(e.contains("c.json") && e.contains("table of settings"), "{e}");
        let e = bad("d.toml", "lr = = 1");
        assert!(e.contains("d.toml") && e.contains("not TOML"), "{e}");
        assert!(resolve(None, Some(&dir.path().join("missing.toml")), Map::new()).is_err());
    }
}
