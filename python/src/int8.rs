//! `lenet5.Int8Model`: a network quantized to int8 (`Model.quantize`, `lenet5 quantize`), run by the integer
//! engine, saved as the command line saves it and exported as C99.

use std::path::PathBuf;

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use lenet5_core::base::Label;
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::Split;
use lenet5_core::quant::QuantModel;
use lenet5_core::spec::RunSpec;
use lenet5_core::train::TrainConfig;

use crate::arrays;
use crate::errors::{core_to_py, to_py};
use crate::model::{check_labels, eval_dict};
use crate::train::PythonLog;

/// An int8 LeNet-5: `Model.quantize(...)` makes one, `Model.load` reads one from a file `lenet5 quantize` or
/// `Int8Model.save` wrote. It predicts with integers only; `export_c` writes it as C99 for microcontrollers.
#[pyclass(module = "lenet5", frozen)]
pub struct Int8Model {
    pub model: QuantModel,
}

/// Images as the int8 network takes them (bytes, or those bytes / 255), with labels when given.
fn images_split(
    py: Python<'_>,
    images: &Bound<'_, PyAny>,
    labels: Option<&Bound<'_, PyAny>>,
    scale: Option<f64>,
) -> PyResult<Split> {
    let inputs = py.import("lenet5._inputs")?;
    let images = &inputs.call_method1("as_images", (images, scale))?;
    let n = images.len()?;
    let labels = match labels {
        Some(labels) => inputs.call_method1("as_labels", (labels, n))?,
        None => py.import("numpy")?.call_method1("zeros", (n, "int64"))?,
    };
    arrays::split("images", images, &labels, arrays::IMAGE_SHAPES)
}

/// `ck` quantized on `images` (an array) or on `calibration` training images of the data set it was trained on
/// (or `dataset` under `data`).
pub fn quantize(
    py: Python<'_>,
    ck: &Checkpoint,
    calibration: usize,
    seed: u64,
    images: Option<&Bound<'_, PyAny>>,
    data: Option<PathBuf>,
    dataset: Option<String>,
) -> PyResult<QuantModel> {
    if let Some(images) = images {
        let split = images_split(py, images, None, None)?;
        return py
            .detach(|| QuantModel::quantize(ck, &split, calibration.min(split.len().max(1)), seed))
            .map_err(core_to_py);
    }
    let spec = RunSpec { data, dataset, ..RunSpec::default() };
    let source = lenet5::source::DataSource::of(&spec);
    py.detach(|| lenet5::deploy::quantize(ck, &source, calibration, seed, &PythonLog)).map_err(to_py)
}

#[pymethods]
impl Int8Model {
    /// Reads a file `lenet5 quantize` or `Int8Model.save` wrote.
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Int8Model> {
        Ok(Int8Model { model: py.detach(|| QuantModel::load(&path)).map_err(core_to_py)? })
    }

    /// Writes the int8 network as safetensors (read by `lenet5 eval`, `lenet5 export --c` and `Model.load`).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| self.model.save(&path)).map_err(core_to_py)
    }

    /// Writes `lenet5_model.h` and `lenet5_model.c` into `dir`, as `lenet5 export --c` does; a directory that
    /// holds anything is refused unless `force`. Returns the two paths.
    #[pyo3(signature = (dir, *, force = false))]
    fn export_c(&self, dir: PathBuf, force: bool) -> PyResult<(PathBuf, PathBuf)> {
        let [header, source] = lenet5::deploy::write_c(&self.model, &dir, force).map_err(to_py)?;
        Ok((header, source))
    }

    /// The class of each image (images as `Model.predict` takes them): N int64.
    #[pyo3(signature = (images, *, scale = None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        scale: Option<f64>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let split = images_split(py, images, None, scale)?;
        let mut scores = vec![0i32; self.model.classes()];
        let classes =
            py.detach(|| (0..split.len()).map(|i| self.model.predict(split.image(i), &mut scores) as i64).collect());
        Ok(PyArray1::from_vec(py, classes))
    }

    /// The int32 scores of each image, `[N, K]` (larger = more likely; `scores_scale` times a score is the logit).
    #[pyo3(signature = (images, *, scale = None))]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        scale: Option<f64>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i32>>> {
        let split = images_split(py, images, None, scale)?;
        let k = self.model.classes();
        let all = py.detach(|| {
            let mut all = vec![0i32; split.len() * k];
            for (i, scores) in all.chunks_exact_mut(k).enumerate() {
                self.model.predict(split.image(i), scores);
            }
            all
        });
        PyArray1::from_vec(py, all).reshape(vec![split.len(), k])
    }

    /// Loss and accuracy on labelled images, as `lenet5 eval` reports them for an int8 file.
    #[pyo3(signature = (images, labels, *, batch_size = None, threads = None, scale = None))]
    fn evaluate<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        labels: &Bound<'py, PyAny>,
        batch_size: Option<usize>,
        threads: Option<usize>,
        scale: Option<f64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let split = images_split(py, images, Some(labels), scale)?;
        check_labels(&split, self.model.classes())?;
        let description = lenet5::deploy::Weights::Int8(Box::new(self.model.clone())).description();
        let batch_size = batch_size.unwrap_or_else(|| lenet5::training::eval_batch_size(&description));
        if batch_size == 0 || batch_size > TrainConfig::MAX_BATCH_SIZE {
            let max = TrainConfig::MAX_BATCH_SIZE;
            return Err(PyValueError::new_err(format!("batch_size: expected 1 to {max}, got {batch_size}")));
        }
        let threads = lenet5_core::spec::thread_count(threads).map_err(core_to_py)?;
        let (r, _): (_, Vec<Label>) = py.detach(|| self.model.evaluate(&split, batch_size, threads));
        eval_dict(py, &r)
    }

    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.model.class_names.clone()
    }

    #[getter]
    fn num_classes(&self) -> usize {
        self.model.classes()
    }

    #[getter]
    fn head(&self) -> &'static str {
        self.model.head.name()
    }

    #[getter]
    fn scores_scale(&self) -> f32 {
        self.model.scores_scale
    }

    #[getter]
    fn metadata(&self) -> std::collections::HashMap<String, String> {
        self.model.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn __repr__(&self) -> String {
        format!("Int8Model({} classes, head {})", self.model.classes(), self.model.head.name())
    }
}
