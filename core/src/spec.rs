//! The run specification: every setting of a training run, its default (the recipe) and its check, written
//! once. Every front end fills a [`RunSpec`] — the command line from its flags and `--config` files, `sweep`
//! from each trial's `trial.json`, the Python package from keyword arguments, the training page from JSON — and
//! [`RunSpec::validate`] turns it into a [`ValidSpec`], the only form the run takes. A front end maps names and
//! nothing more: [`SETTINGS`] lists each setting's name, kind and help text, so flags, keywords and the
//! suggestion for a misspelt name come from the same place.
//!
//! ```
//! use lenet5_core::spec::RunSpec;
//! let spec = RunSpec::default().with_json(&serde_json::json!({"lr": 0.01, "head": "logits"}))?;
//! let valid = spec.validate()?;
//! assert_eq!((valid.config().sgd.lr, valid.config().epochs), (0.01, 50));
//! assert!(RunSpec::default().with_json(&serde_json::json!({"learning_rate": 0.01})).unwrap_err()
//!     .to_string().contains("did you mean `lr`"));
//! # Ok::<(), lenet5_core::Error>(())
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::Augment;
pub use crate::digit::Preprocess;
use crate::error::{Error, Result};
use crate::nn::Head;
use crate::optim::{LrSchedule, Sgd};
use crate::train::{Holdout, TrainConfig, ValidConfig};

/// Most worker threads a run takes: far more than any use needs. Where the system cannot start that many the
/// run says so; asking for 100,000 once left a run hanging after that error instead.
const MAX_THREADS: usize = 256;

/// The share of each class an image folder without `train/` and `test/` holds out when `val_split` is not given.
const FOLDER_HOLDOUT: f64 = 0.2;

/// The kind of learning-rate schedule; its lengths come from `step_size`, `gamma` and `warmup_epochs`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// One rate throughout (the recipe).
    #[default]
    Constant,
    /// Times `gamma` every `step_size` epochs.
    Step,
    /// Cosine annealing after the warm-up epochs.
    Cosine,
    /// PyTorch's OneCycleLR, one step per epoch.
    #[serde(rename = "onecycle")]
    OneCycle,
}

/// Everything a training run can be told. [`RunSpec::default`] is the recipe, on MNIST, into `save_model`; a
/// setting left `None` takes what its help in [`SETTINGS`] says (often: what the resumed run recorded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSpec {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub seed: u64,
    pub head: Head,
    pub lr_schedule: ScheduleKind,
    pub step_size: usize,
    pub gamma: f32,
    pub warmup_epochs: Option<usize>,
    pub lr_per_batch: bool,
    pub label_smoothing: f32,
    pub eval_every: usize,
    pub patience: Option<usize>,
    pub augment: bool,
    pub rotate: f32,
    pub shift: f32,
    pub scale: [f32; 2],
    pub data: Option<PathBuf>,
    pub dataset: Option<String>,
    pub no_download: bool,
    pub preprocess: Option<Preprocess>,
    pub val_split: Option<f64>,
    pub split_seed: Option<u64>,
    pub label_offset: Option<u16>,
    pub skip_bad_images: bool,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    pub threads: Option<usize>,
    pub out: PathBuf,
    pub force: bool,
    pub resume: Option<PathBuf>,
    pub init_weights: Option<PathBuf>,
}

impl Default for RunSpec {
    /// The recipe: the one place every default is written.
    fn default() -> Self {
        RunSpec {
            epochs: 50,
            batch_size: 16,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            seed: 0,
            head: Head::Sigmoid,
            lr_schedule: ScheduleKind::Constant,
            step_size: 10,
            gamma: 0.1,
            warmup_epochs: None,
            lr_per_batch: false,
            label_smoothing: 0.0,
            eval_every: 1,
            patience: None,
            augment: false,
            rotate: 10.0,
            shift: 2.0,
            scale: [0.9, 1.1],
            data: None,
            dataset: None,
            no_download: false,
            preprocess: None,
            val_split: None,
            split_seed: None,
            label_offset: None,
            skip_bad_images: false,
            train_limit: None,
            test_limit: None,
            threads: None,
            out: PathBuf::from("save_model"),
            force: false,
            resume: None,
            init_weights: None,
        }
    }
}

/// What a setting's value is, for front ends that read it from text (flags, sweep lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number >= 0.
    Count,
    /// A number (single precision: read as `f32`, so text gives the bits `str::parse::<f32>` gives).
    Number,
    /// A number read as `f64`.
    Fraction,
    /// On or off: a flag on the command line.
    Switch,
    /// Text, or a path.
    Text,
    /// One of these names.
    Choice(&'static [&'static str]),
    /// Two numbers, `MIN,MAX`.
    Pair,
}

impl Kind {
    /// A value read from text for a setting of this kind (a flag's value, one of a sweep's values).
    pub fn value_from_text(self, text: &str) -> std::result::Result<Value, String> {
        value_from_text(self, text)
    }
}

/// A setting: its name (the key in files and JSON, the Python keyword, and the flag `--name-with-dashes`), its
/// kind, the name of its value in help texts, and what it does.
#[derive(Clone, Copy, Debug)]
pub struct SettingInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub value_name: &'static str,
    pub help: &'static str,
    /// What a `None` means, where the setting may be left unset.
    pub unset: Option<&'static str>,
}

const fn setting(name: &'static str, kind: Kind, value_name: &'static str, help: &'static str) -> SettingInfo {
    SettingInfo { name, kind, value_name, help, unset: None }
}

const fn optional(
    name: &'static str,
    kind: Kind,
    value_name: &'static str,
    help: &'static str,
    unset: &'static str,
) -> SettingInfo {
    SettingInfo { name, kind, value_name, help, unset: Some(unset) }
}

/// Every setting of [`RunSpec`], in its order.
pub const SETTINGS: &[SettingInfo] = &[
    setting("epochs", Kind::Count, "N", "Passes over the training set (with resume: more extend the run)."),
    setting("batch_size", Kind::Count, "N", "Images per SGD step."),
    setting("lr", Kind::Number, "RATE", "Learning rate."),
    setting("momentum", Kind::Number, "M", "SGD momentum (PyTorch semantics)."),
    setting("weight_decay", Kind::Number, "L2", "L2 weight decay, added to the gradient as in PyTorch's SGD."),
    setting("seed", Kind::Count, "N", "Seed of the initial weights, the shuffles and the augmentation."),
    setting(
        "head",
        Kind::Choice(&["sigmoid", "logits"]),
        "HEAD",
        "The network's head: `sigmoid` (the recipe: cross-entropy on the sigmoid output) or `logits`.",
    ),
    setting(
        "lr_schedule",
        Kind::Choice(&["constant", "step", "cosine", "onecycle"]),
        "SCHEDULE",
        "Learning-rate schedule, one rate per epoch: `constant` (the recipe), `step` (times gamma every step_size epochs), `cosine` (cosine annealing after warmup_epochs), or `onecycle` (PyTorch's OneCycleLR, peaking at lr after warmup_epochs).",
    ),
    setting("step_size", Kind::Count, "N", "Epochs between two cuts of the `step` schedule."),
    setting("gamma", Kind::Number, "FACTOR", "Factor of each cut of the `step` schedule."),
    optional(
        "warmup_epochs",
        Kind::Count,
        "N",
        "Warm-up epochs of the `cosine` and `onecycle` schedules.",
        "0 for cosine, 30% of the epochs for onecycle",
    ),
    setting(
        "lr_per_batch",
        Kind::Switch,
        "",
        "Move the schedule's rate at every batch instead of every epoch (PyTorch's scheduler stepped after each batch; its lengths stay in epochs).",
    ),
    setting(
        "label_smoothing",
        Kind::Number,
        "EPSILON",
        "Label smoothing of the training loss, as PyTorch's CrossEntropyLoss(label_smoothing=EPSILON); val and test losses stay plain cross-entropy.",
    ),
    setting(
        "eval_every",
        Kind::Count,
        "N",
        "Evaluate on the validation images after every N epochs and after the last; 0: after the last only. An epoch not evaluated has no val figures and cannot be the best.",
    ),
    optional(
        "patience",
        Kind::Count,
        "N",
        "Stop when val_acc has not improved for N epochs (the best weights are kept, as always).",
        "never",
    ),
    setting(
        "augment",
        Kind::Switch,
        "",
        "Augment the training images: a random affine transform of each, drawn anew every epoch from (seed, epoch, image), as torchvision's RandomAffine (rotation, shift, scale; bilinear, zeros outside).",
    ),
    setting("rotate", Kind::Number, "DEGREES", "Largest rotation of augment, in degrees either way."),
    setting("shift", Kind::Number, "PIXELS", "Largest shift of augment, in pixels along each axis."),
    setting("scale", Kind::Pair, "MIN,MAX", "Scale range of augment."),
    optional(
        "data",
        Kind::Text,
        "DIR",
        "Data root holding the data sets; both a flat directory and torchvision's layout (ROOT/MNIST/raw) work.",
        "$LENET5_DATA, else ./data",
    ),
    optional(
        "dataset",
        Kind::Text,
        "NAME|DIR",
        "`mnist`, `fashion-mnist`, a directory holding the four IDX files, or an image folder: one subfolder of images per class (DIR/<class>/...), or DIR/train/<class>/... and DIR/test/<class>/..., or such a folder zipped (a .zip)",
        "mnist, or a resumed run's",
    ),
    setting(
        "no_download",
        Kind::Switch,
        "",
        "Never download a missing data set (by default mnist and fashion-mnist are fetched from the mirrors torchvision uses, and verified).",
    ),
    optional(
        "preprocess",
        Kind::Choice(&["resize", "mnist", "none"]),
        "HOW",
        "How an image folder's pictures become 28x28 grey: `resize` (grey, then resized), `mnist` (the framing `predict` gives a photo: crop to the ink, fit 20x20, centre), or `none` (they must be 28x28).",
        "resize, or what the weights or the resumed run were read with",
    ),
    optional(
        "val_split",
        Kind::Fraction,
        "FRACTION",
        "Hold out this share of each class of the training images (stratified, seeded by split_seed) to choose the best epoch on, for any data source; the test set is then used only for the final test figure. An image folder without train/ and test/ holds it out as its only evaluation set. 0 holds nothing out.",
        "none: the test set validates, as in the recipe (an image folder without train/ and test/: 0.2)",
    ),
    optional("split_seed", Kind::Count, "N", "Seed of the val_split draw.", "0, or the resumed run's"),
    optional(
        "label_offset",
        Kind::Count,
        "N",
        "Subtract N from every label of an IDX data set whose classes are not numbered from 0 (EMNIST letters: 1).",
        "0, or the resumed run's",
    ),
    setting(
        "skip_bad_images",
        Kind::Switch,
        "",
        "Leave out the files of an image folder that cannot be decoded (counted and reported), instead of stopping with the list of them. Weights trained so read their folder so again.",
    ),
    optional("train_limit", Kind::Count, "N", "Train on only the first N training images.", "all"),
    optional("test_limit", Kind::Count, "N", "Evaluate on only the first N test (or validation) images.", "all"),
    optional("threads", Kind::Count, "N", "Worker threads (at most the cores). Never changes a number.", "every core"),
    setting(
        "out",
        Kind::Text,
        "DIR",
        "Run directory: the best weights, the resumable state, the metrics log and config.json.",
    ),
    setting("force", Kind::Switch, "", "Overwrite a previous run in the output directory."),
    optional(
        "resume",
        Kind::Text,
        "DIR",
        "Continue the run in DIR where it stopped (its settings are kept; epochs may extend it).",
        "a new run",
    ),
    optional(
        "init_weights",
        Kind::Text,
        "FILE",
        "Start from these weights (.safetensors or a PyTorch .pth) instead of a fresh initialisation.",
        "PyTorch's initialisation",
    ),
];

/// A named set of settings for a use other than reproducing the recipe. A front end applies it over the recipe
/// and under everything else it is given (a `--config` file, flags, keywords), and the run records the settings
/// it ran with, never the name.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub name: &'static str,
    /// What it is for, and what it was measured to give.
    pub help: &'static str,
    /// Its settings, a JSON object of names of [`SETTINGS`].
    settings: &'static str,
}

impl Preset {
    /// Every preset.
    pub const ALL: &[Preset] = &[FAST];
}

/// `--preset fast`.
const FAST: Preset = Preset {
    name: "fast",
    help: "99% test accuracy on MNIST in seconds: the logits head, a one-cycle schedule moved every batch to a peak \
           rate of 0.05, label smoothing 0.1, 3 epochs of batch 32, evaluated once, after the last (so no test \
           image chooses anything)",
    settings: r#"{"head": "logits", "lr_schedule": "onecycle", "lr_per_batch": true, "lr": 0.05,
                  "label_smoothing": 0.1, "batch_size": 32, "epochs": 3, "eval_every": 0}"#,
};

/// The names of the presets, for the error that names them.
const PRESET_NAMES: &str = "`fast`";

impl Preset {
    /// The preset called `name`.
    pub fn named(name: &str) -> Result<&'static Preset> {
        Preset::ALL.iter().find(|p| p.name == name).ok_or_else(|| Error::Setting {
            setting: "preset",
            value: name.to_string(),
            expected: PRESET_NAMES,
        })
    }

    /// Its settings, as [`RunSpec::with_json`] takes them.
    pub fn settings(&self) -> Map<String, Value> {
        match serde_json::from_str(self.settings) {
            Ok(Value::Object(map)) => map,
            _ => unreachable!("a preset's settings are a JSON object (a test reads each)"),
        }
    }
}

/// The setting called `name`.
fn setting_info(name: &str) -> Option<&'static SettingInfo> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Names other tools give some settings (PyTorch's, Keras', Hydra configs'), for the suggestion.
const ALIASES: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("lr_scheduler", "lr_schedule"),
    ("scheduler", "lr_schedule"),
    ("bs", "batch_size"),
    ("wd", "weight_decay"),
    ("num_epochs", "epochs"),
    ("max_epochs", "epochs"),
    ("num_workers", "threads"),
    ("workers", "threads"),
    ("output_dir", "out"),
    ("weights", "init_weights"),
    ("validation_split", "val_split"),
    ("early_stopping", "patience"),
    ("data_dir", "data"),
    ("root", "data"),
];

/// The error for a name that is no setting, with the closest setting's name (or the setting a close alias
/// names).
fn unknown(name: &str) -> Error {
    let name_ = name.replace('-', "_").to_lowercase();
    let candidates = SETTINGS.iter().map(|s| (s.name, s.name)).chain(ALIASES.iter().copied());
    let closest = candidates
        .map(|(candidate, setting)| (edit_distance(&name_, candidate), candidate, setting))
        .filter(|(d, candidate, _)| *d <= candidate.len().max(3) / 2)
        .min_by_key(|(d, ..)| *d)
        .map(|(.., setting)| setting);
    let related = SETTINGS.iter().find(|s| s.name.len() > 2 && (name_.contains(s.name) || s.name.contains(&name_)));
    Error::UnknownSetting { name: name.to_string(), suggestion: closest.or(related.map(|s| s.name)) }
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

impl RunSpec {
    /// The share of each class an image folder without `train/` and `test/` holds out when `val_split` is not
    /// given.
    pub const FOLDER_HOLDOUT: f64 = FOLDER_HOLDOUT;

    /// The share of each class of the training images that tools comparing runs (`lenet5 sweep`, the Optuna
    /// example) hold out to choose on when `val_split` is not given: choosing among many runs on the test set
    /// would make its figure an optimistic one.
    pub const TUNING_HOLDOUT: f64 = 0.1;

    /// This specification with the settings of `overrides` (a JSON object of setting names and values) in
    /// place of its own. An unknown name, or a value of the wrong type, is an error that names the setting.
    pub fn with_json(&self, overrides: &Value) -> Result<RunSpec> {
        let Value::Object(overrides) = overrides else {
            return Err(Error::SettingValue { name: "(specification)".into(), reason: "expected an object".into() });
        };
        let mut spec = self.clone();
        for (name, value) in overrides {
            spec = spec.with(name, value.clone())?;
        }
        Ok(spec)
    }

    /// This specification with setting `name` set to `value`.
    pub fn with(&self, name: &str, value: Value) -> Result<RunSpec> {
        let info = setting_info(name).ok_or_else(|| unknown(name))?;
        let mut all = self.to_json();
        let reason = match (&value, info.unset) {
            (Value::Null, None) => Some("cannot be unset (null)".to_string()),
            _ => None,
        };
        all.insert(name.to_string(), value);
        match reason {
            Some(reason) => Err(Error::SettingValue { name: name.to_string(), reason }),
            None => serde_json::from_value(Value::Object(all))
                .map_err(|e| Error::SettingValue { name: name.to_string(), reason: type_error(&e.to_string()) }),
        }
    }

    /// Reads a specification from JSON text (a `config.json`, a trial, the page's settings): the recipe, with the
    /// object's settings in place of its own.
    pub fn from_json_text(text: &str) -> Result<RunSpec> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::SettingValue { name: "(specification)".into(), reason: format!("not JSON ({e})") })?;
        RunSpec::default().with_json(&value)
    }

    /// The specification as a JSON object (every setting, `null` where unset), as `config.json` holds it.
    /// Numbers are the shortest decimals that give their bits back (`0.001`, not the `f64` nearest the `f32`).
    pub fn to_json(&self) -> Map<String, Value> {
        match serde_json::from_str(&self.to_json_text()).expect("a specification's JSON reads back") {
            Value::Object(map) => map,
            _ => unreachable!("a struct serialises as an object"),
        }
    }

    /// The specification as pretty JSON text, its settings in their order: what `config.json` holds.
    pub fn to_json_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("a specification serialises")
    }

    /// Checks every setting, once: the only way to a [`ValidSpec`].
    pub fn validate(&self) -> Result<ValidSpec> {
        let bad = |setting: &'static str, value: &dyn std::fmt::Display, expected: &'static str| Error::Setting {
            setting,
            value: value.to_string(),
            expected,
        };
        thread_count(self.threads)?;
        if self.out.as_os_str().is_empty() {
            return Err(bad("out", &"\"\"", "a directory"));
        }
        if let (Some(_), Some(weights)) = (&self.resume, &self.init_weights) {
            let weights = weights.display();
            return Err(bad(
                "init_weights",
                &weights,
                "unset with resume (a resumed run goes on from its own weights)",
            ));
        }
        if self.resume.is_some() && self.force {
            return Err(bad("force", &true, "off with resume (resuming never overwrites the run)"));
        }
        let config = self.train_config().check()?;
        Ok(ValidSpec { spec: self.clone(), config })
    }

    /// The engine's settings of this run, unchecked.
    fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            sgd: Sgd { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay },
            seed: self.seed,
            head: self.head,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            lr_schedule: self.schedule(),
            patience: self.patience,
            augment: self.augment.then_some(Augment {
                degrees: self.rotate,
                translate: self.shift,
                scale_min: self.scale[0],
                scale_max: self.scale[1],
            }),
            // A share of 0 holds nothing out: the test set validates, as when none is given.
            holdout: (self.val_split.filter(|&share| share != 0.0))
                .map(|share| Holdout { share, seed: self.split_seed.unwrap_or(0) }),
            lr_per_batch: self.lr_per_batch,
            label_smoothing: self.label_smoothing,
            eval_every: self.eval_every,
        }
    }

    /// The schedule asked for, over the run's epochs.
    fn schedule(&self) -> LrSchedule {
        match self.lr_schedule {
            ScheduleKind::Constant => LrSchedule::Constant,
            ScheduleKind::Step => LrSchedule::Step { step_size: self.step_size, gamma: self.gamma },
            ScheduleKind::Cosine => LrSchedule::Cosine { warmup: self.warmup_epochs.unwrap_or(0) },
            ScheduleKind::OneCycle => LrSchedule::OneCycle {
                warmup: self.warmup_epochs.unwrap_or(((self.epochs as f64 * 0.3).round() as usize).max(1)),
            },
        }
    }
}

/// serde's words for a value of the wrong type, without the position in a document that has none.
fn type_error(message: &str) -> String {
    message.split(" at line ").next().unwrap_or(message).to_string()
}

/// A run specification whose every setting was checked: what runs take.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    spec: RunSpec,
    config: ValidConfig,
}

impl ValidSpec {
    /// The specification.
    pub fn spec(&self) -> &RunSpec {
        &self.spec
    }

    /// The engine's checked settings.
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// The worker threads: the setting, else every core; never more than the cores, since more only cost memory
    /// (the thread count never changes a number).
    pub fn threads(&self) -> usize {
        thread_count(self.spec.threads).expect("checked").min(cores())
    }

    /// The threads asked for, when they are more than the cores and so capped (for a front end to say so).
    pub fn threads_capped(&self) -> Option<usize> {
        self.spec.threads.filter(|&n| n > cores())
    }
}

impl Default for ValidSpec {
    /// The recipe.
    fn default() -> Self {
        RunSpec::default().validate().expect("the recipe is valid")
    }
}

/// The cores this process may run on.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The worker threads to use: `asked` (the `threads` setting, which any command that runs the engine takes),
/// else every core.
pub fn thread_count(asked: Option<usize>) -> Result<usize> {
    match asked {
        Some(n) if n == 0 || n > MAX_THREADS => {
            Err(Error::Setting { setting: "threads", value: n.to_string(), expected: "between 1 and 256" })
        }
        Some(n) => Ok(n),
        None => Ok(cores()),
    }
}

/// The engine's settings of the recipe ([`RunSpec::default`]), to build other settings from: `TrainConfig {
/// batch_size: 64, ..recipe() }.check()?`.
pub fn recipe() -> TrainConfig {
    RunSpec::default().train_config()
}

/// A value read from text for a setting of kind `kind` (a flag's value, one of a sweep's values).
fn value_from_text(kind: Kind, text: &str) -> std::result::Result<Value, String> {
    let number = |t: &str| {
        let v: f32 =
            t.trim().parse().ok().filter(|v: &f32| v.is_finite()).ok_or(format!("expected a number, got `{t}`"))?;
        // The shortest decimal of the f32 (as a file would hold it), where it reads back to the same bits.
        let shortest: f64 = v.to_string().parse().unwrap_or(v as f64);
        let exact = if (shortest as f32).to_bits() == v.to_bits() { shortest } else { v as f64 };
        Ok::<Value, String>(serde_json::Number::from_f64(exact).map_or(Value::Null, Value::Number))
    };
    match kind {
        Kind::Count => {
            text.trim().parse::<u64>().map(Value::from).map_err(|_| format!("expected a whole number, got `{text}`"))
        }
        Kind::Number => number(text),
        Kind::Fraction => {
            let v = text.trim().parse().ok().and_then(serde_json::Number::from_f64);
            v.map(Value::Number).ok_or(format!("expected a number, got `{text}`"))
        }
        Kind::Switch => match text {
            "on" | "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "off" | "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("expected on or off, got `{text}`")),
        },
        Kind::Text => Ok(Value::String(text.to_string())),
        Kind::Choice(names) if names.contains(&text) => Ok(Value::String(text.to_string())),
        Kind::Choice(names) => Err(format!("expected one of {}, got `{text}`", names.join(", "))),
        Kind::Pair => match text.split_once(',') {
            Some((lo, hi)) => Ok(Value::Array(vec![number(lo)?, number(hi)?])),
            None => Err(format!("expected MIN,MAX (e.g. 0.9,1.1), got `{text}`")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_lists_every_field_of_the_specification_in_order() {
        let keys: Vec<String> = RunSpec::default().to_json().keys().cloned().collect();
        let mut names: Vec<String> = SETTINGS.iter().map(|s| s.name.to_string()).collect();
        // serde_json's map is sorted by key: compare as sets, then the order through the struct's own order.
        names.sort();
        assert_eq!(keys, names);
        let nullable: Vec<&str> = RunSpec::default()
            .to_json()
            .into_iter()
            .filter(|(_, v)| v.is_null())
            .map(|(k, _)| setting_info(&k).unwrap().name)
            .collect();
        for s in SETTINGS {
            assert_eq!(
                s.unset.is_some(),
                nullable.contains(&s.name),
                "{}: unset documented iff null by default",
                s.name
            );
        }
    }

    #[test]
    fn the_default_is_the_recipe() {
        let valid = ValidSpec::default();
        let c = valid.config();
        assert_eq!((c.epochs, c.batch_size, c.sgd.lr, c.sgd.momentum, c.sgd.weight_decay), (50, 16, 1e-3, 0.9, 0.0));
        assert_eq!(
            (c.head, c.seed, c.lr_schedule, c.augment, c.patience),
            (Head::Sigmoid, 0, LrSchedule::Constant, None, None)
        );
        assert_eq!(&**c, &recipe());
        assert_eq!((c.lr_per_batch, c.label_smoothing, c.eval_every), (false, 0.0, 1));
    }

    #[test]
    fn every_preset_is_valid_settings_and_an_unknown_one_is_named() {
        for preset in Preset::ALL {
            let spec = RunSpec::default().with_json(&Value::Object(preset.settings())).unwrap();
            assert_ne!(spec, RunSpec::default(), "{}", preset.name);
            spec.validate().unwrap();
        }
        let fast = RunSpec::default().with_json(&Value::Object(Preset::named("fast").unwrap().settings())).unwrap();
        // The preset never validates on test images: it evaluates once, after its last epoch.
        assert_eq!((fast.eval_every, fast.val_split), (0, None));
        let error = Preset::named("quick").unwrap_err().to_string();
        assert!(error.contains("preset") && error.contains("quick") && error.contains("fast"), "{error}");
    }

    #[test]
    fn the_new_settings_are_checked() {
        for (name, value) in
            [("label_smoothing", json!(1.0)), ("label_smoothing", json!(-0.1)), ("eval_every", json!(2_000_000))]
        {
            let error = RunSpec::default().with(name, value).unwrap().validate().unwrap_err().to_string();
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn a_validation_share_of_zero_holds_nothing_out() {
        let holdout = |share: Option<f64>| RunSpec { val_split: share, ..RunSpec::default() }.train_config().holdout;
        assert!(holdout(Some(0.0)).is_none() && holdout(None).is_none());
        assert_eq!(holdout(Some(0.1)).map(|h| h.share), Some(0.1));
        let zero = RunSpec { val_split: Some(0.0), ..RunSpec::default() }.validate().unwrap();
        assert_eq!(format!("{:?}", zero.config()), format!("{:?}", ValidSpec::default().config()));
    }

    #[test]
    fn schedules_take_their_lengths_from_the_settings() {
        let schedule = |kind, warmup_epochs| {
            let spec = RunSpec {
                epochs: 20,
                lr_schedule: kind,
                warmup_epochs,
                step_size: 5,
                gamma: 0.5,
                ..RunSpec::default()
            };
            spec.schedule()
        };
        assert_eq!(schedule(ScheduleKind::Step, None), LrSchedule::Step { step_size: 5, gamma: 0.5 });
        assert_eq!(schedule(ScheduleKind::Cosine, None), LrSchedule::Cosine { warmup: 0 });
        assert_eq!(schedule(ScheduleKind::OneCycle, None), LrSchedule::OneCycle { warmup: 6 });
        assert_eq!(schedule(ScheduleKind::OneCycle, Some(2)), LrSchedule::OneCycle { warmup: 2 });
    }

    #[test]
    fn unknown_names_suggest_the_closest_setting() {
        let err = |name: &str| RunSpec::default().with(name, Value::from(1)).unwrap_err().to_string();
        assert!(err("learning_rate").contains("`lr`"), "{}", err("learning_rate"));
        assert!(err("batchsize").contains("`batch_size`"), "{}", err("batchsize"));
        assert!(err("epoch").contains("`epochs`"), "{}", err("epoch"));
        assert!(err("momentun").contains("`momentum`"), "{}", err("momentun"));
        assert!(err("learning_rat").contains("`lr`"), "{}", err("learning_rat"));
        assert!(!err("zzzzzzzzzzzz").contains("did you mean"), "{}", err("zzzzzzzzzzzz"));
    }

    #[test]
    fn values_of_the_wrong_type_name_the_setting() {
        let e = RunSpec::default().with("lr", Value::from("fast")).unwrap_err().to_string();
        assert!(e.starts_with("setting lr: invalid type: string \"fast\""), "{e}");
        let e = RunSpec::default().with("epochs", Value::Null).unwrap_err().to_string();
        assert!(e.contains("epochs") && e.contains("null"), "{e}");
        assert_eq!(RunSpec::default().with("patience", Value::Null).unwrap(), RunSpec::default());
    }

    #[test]
    fn every_check_names_its_setting() {
        let check = |json: Value| RunSpec::default().with_json(&json).unwrap().validate().unwrap_err();
        for (json, name) in [
            (serde_json::json!({"epochs": 0}), "epochs"),
            (serde_json::json!({"batch_size": 0}), "batch_size"),
            (serde_json::json!({"lr": -1.0}), "lr"),
            (serde_json::json!({"momentum": 1.0}), "momentum"),
            (serde_json::json!({"weight_decay": -1.0}), "weight_decay"),
            (serde_json::json!({"threads": 0}), "threads"),
            (serde_json::json!({"threads": 257}), "threads"),
            (serde_json::json!({"val_split": 1.0}), "val_split"),
            (serde_json::json!({"train_limit": 0}), "train_limit"),
            (serde_json::json!({"patience": 0}), "patience"),
            (serde_json::json!({"lr_schedule": "step", "step_size": 0}), "step_size"),
            (serde_json::json!({"lr_schedule": "step", "gamma": 0.0}), "gamma"),
            (serde_json::json!({"lr_schedule": "cosine", "warmup_epochs": 50}), "warmup_epochs"),
            (serde_json::json!({"augment": true, "rotate": 200.0}), "rotate"),
            (serde_json::json!({"out": ""}), "out"),
        ] {
            match check(json.clone()) {
                Error::Setting { setting, .. } => assert_eq!(setting, name, "{json}"),
                e => panic!("{json}: {e}"),
            }
        }
    }

    #[test]
    fn text_values_read_as_their_kind() {
        assert_eq!(value_from_text(Kind::Count, "12").unwrap(), Value::from(12));
        assert!(value_from_text(Kind::Count, "-1").is_err());
        // Read as f32, so "0.1" gives the bits of 0.1f32, as a flag parsed straight to f32 does.
        let v = value_from_text(Kind::Number, "0.1").unwrap();
        let spec = RunSpec::default().with("lr", v).unwrap();
        assert_eq!(spec.lr.to_bits(), 0.1f32.to_bits());
        assert_eq!(value_from_text(Kind::Switch, "on").unwrap(), Value::Bool(true));
        assert!(value_from_text(Kind::Choice(&["a"]), "b").unwrap_err().contains("one of a"));
        let pair = value_from_text(Kind::Pair, "0.8,1.2").unwrap();
        assert_eq!(RunSpec::default().with("scale", pair).unwrap().scale, [0.8, 1.2]);
        assert!(value_from_text(Kind::Number, "nan").is_err() && value_from_text(Kind::Fraction, "inf").is_err());
    }

    #[test]
    fn a_specification_round_trips_through_json_bit_for_bit() {
        let odd = RunSpec { lr: 0.012345679, momentum: 0.95, gamma: 0.3, scale: [0.85, 1.15], ..RunSpec::default() };
        for spec in [RunSpec::default(), odd] {
            assert_eq!(RunSpec::from_json_text(&spec.to_json_text()).unwrap(), spec);
            let text = serde_json::to_string(&spec.to_json()).unwrap();
            assert_eq!(RunSpec::from_json_text(&text).unwrap(), spec);
        }
        assert!(RunSpec::default().to_json_text().contains("\"lr\": 0.001,"));
        assert_eq!(value_from_text(Kind::Number, "0.02").unwrap().to_string(), "0.02");
    }
}
