//! The library's errors as Python exceptions, each with the one-line message the command line prints, in the
//! keyword arguments' words where it names a setting.

use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::PyException;

use lenet5_core::{Error as CoreError, Setting};

create_exception!(
    lenet5,
    Error,
    PyException,
    "An error of lenet5: a file that cannot be read or is not what it should be, a missing data set, a run that \
     cannot start or diverged. The message is one line that names the file and what was expected."
);
create_exception!(lenet5, SettingError, Error, "A setting (a keyword argument) out of its range.");

/// The exception for an error of the library.
pub fn to_py(err: lenet5::Error) -> PyErr {
    let core = match &err {
        lenet5::Error::Core(e) => Some(e),
        _ => None,
    };
    match core {
        Some(CoreError::Setting { setting, value, expected }) => {
            SettingError::new_err(format!("invalid setting: {} must be {expected}, got {value}", keyword(*setting)))
        }
        Some(e) => Error::new_err(in_python_words(e)),
        None => Error::new_err(err.to_string()),
    }
}

/// The exception for an error of the engine.
pub fn core_to_py(err: CoreError) -> PyErr {
    to_py(err.into())
}

/// The message of `e`, with what a user of the package can do about it where there is something.
fn in_python_words(e: &CoreError) -> String {
    match e {
        CoreError::RunExists { dir } => format!(
            "{e}; pass force=True to overwrite it, resume=\"{}\" to continue it, or out= to choose another directory",
            dir.display()
        ),
        CoreError::Diverged { .. } => {
            format!("{e}; the run directory keeps the last finished epoch as it was; start again with a lower lr")
        }
        CoreError::DataChanged { .. } => {
            format!("{e}; resume with the run's own data (dataset= / data=), or start a new run")
        }
        CoreError::Interrupted { run_dir } => {
            format!("interrupted; resume with lenet5.train(resume=\"{}\")", run_dir.display())
        }
        _ => e.to_string(),
    }
}

/// The keyword argument that sets `setting`.
fn keyword(setting: Setting) -> &'static str {
    match setting {
        Setting::Epochs => "epochs",
        Setting::BatchSize => "batch_size",
        Setting::LearningRate => "lr",
        Setting::Momentum => "momentum",
        Setting::WeightDecay => "weight_decay",
        Setting::TrainLimit => "train_limit",
        Setting::TestLimit => "test_limit",
        Setting::Threads => "threads",
        Setting::Patience => "patience",
        Setting::StepSize => "step_size",
        Setting::Gamma => "gamma",
        Setting::Warmup => "warmup_epochs",
        Setting::Augment => "rotate / shift / scale",
    }
}
