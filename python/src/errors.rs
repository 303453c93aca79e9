//! The library's errors as Python exceptions, each with the one-line message the command line prints, in the
//! keyword arguments' words where it names a setting.

use pyo3::PyErr;
use pyo3::create_exception;
use pyo3::exceptions::PyException;

use pyo3::exceptions::{PyTypeError, PyValueError};

use lenet5_core::Error as CoreError;

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
        Some(CoreError::Setting { .. }) => SettingError::new_err(err.to_string()),
        Some(CoreError::UnknownSetting { name, suggestion }) => PyTypeError::new_err(format!(
            "train() got an unexpected keyword argument '{name}'{}",
            suggestion.map_or(String::new(), |s| format!(" (did you mean '{s}'?)"))
        )),
        Some(CoreError::SettingValue { name, reason }) => PyValueError::new_err(format!("{name}: {reason}")),
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
