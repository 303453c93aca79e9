//! `lenet5._lenet5`, the native half of the `lenet5` Python package: the application library's training runs
//! ([`lenet5::training`]) and the engine's inference and checkpoints, with numpy arrays in and out. It holds no
//! logic of its own beyond translating arguments, arrays and errors.

mod arrays;
mod datasets;
mod errors;
mod int8;
mod model;
mod train;

use pyo3::prelude::*;

#[pymodule]
mod _lenet5 {
    #[pymodule_export]
    use super::datasets::load_dataset;
    #[pymodule_export]
    use super::errors::{Error, SettingError};
    #[pymodule_export]
    use super::int8::Int8Model;
    #[pymodule_export]
    use super::model::Model;
    #[pymodule_export]
    use super::train::{presets, settings, train};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        m.add("PARAMETER_NAMES", lenet5_core::nn::params::Param::ALL.map(|p| p.name()).to_vec())?;
        m.add("TUNING_VAL_SPLIT", lenet5_core::spec::RunSpec::TUNING_HOLDOUT)?;
        Ok(())
    }
}
