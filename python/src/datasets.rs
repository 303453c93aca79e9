//! `lenet5.datasets.load`: a data set as numpy arrays, found (or downloaded) as `lenet5 train` finds it.

use std::path::PathBuf;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use lenet5::source::DataSource;
use lenet5_core::data::Split;
use lenet5_core::nn::model::IMAGE_SIZE;
use lenet5_core::spec::RunSpec;

use crate::errors::to_py;
use crate::train::PythonLog;

/// A split as `images` uint8 `[N, 28, 28]` and `labels` int64 `[N]`.
fn arrays<'py>(py: Python<'py>, split: Split) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let n = split.len();
    let images = PyArray1::from_vec(py, split.images).reshape([n, IMAGE_SIZE, IMAGE_SIZE])?.into_any();
    let labels: Vec<i64> = split.labels.iter().map(|&l| i64::from(l)).collect();
    Ok((images, PyArray1::from_vec(py, labels).into_any()))
}

/// The data set `dataset` (`mnist`, `fashion-mnist`, an IDX directory or an image folder) under the data root
/// `data`, as `lenet5 train --dataset DATASET --data DATA` reads it (downloading a known one that is missing,
/// unless `download` is false): a dict of train_images, train_labels, test_images, test_labels and
/// class_names.
#[pyfunction]
#[pyo3(signature = (dataset, data = None, download = true))]
pub fn load_dataset<'py>(
    py: Python<'py>,
    dataset: String,
    data: Option<PathBuf>,
    download: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let spec = RunSpec { dataset: Some(dataset), data, no_download: !download, ..RunSpec::default() };
    let source = DataSource::of(&spec);
    let loaded = py.detach(|| source.load(None, &Default::default(), &PythonLog)).map_err(to_py)?;
    let out = PyDict::new(py);
    let (train_images, train_labels) = arrays(py, loaded.train)?;
    let (test_images, test_labels) = arrays(py, loaded.test)?;
    out.set_item("train_images", train_images)?;
    out.set_item("train_labels", train_labels)?;
    out.set_item("test_images", test_images)?;
    out.set_item("test_labels", test_labels)?;
    out.set_item("class_names", loaded.class_names)?;
    Ok(out)
}
