//! `lenet5.Model`: trained weights, to predict with, to read as PyTorch's `state_dict`, and to save.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use numpy::{PyArray1, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;

use lenet5_core::digit::Preprocess;
use pyo3::types::PyDict;

use lenet5_core::base::{MAX_CLASSES, MIN_CLASSES};
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::infer::Predictor;
use lenet5_core::nn::Head;
use lenet5_core::nn::params::{Param, num_params};
use lenet5_core::train::{Evaluator, TrainConfig};

const MAX_BATCH_SIZE: usize = TrainConfig::MAX_BATCH_SIZE;

use lenet5_core::quant::QuantModel;

use crate::arrays;
use crate::errors::core_to_py;
use crate::int8::Int8Model;

/// Trained LeNet-5 weights: `Model.load(path)` reads a .safetensors checkpoint (written by `lenet5 train` or
/// `Model.save`) or a PyTorch .pth state_dict; `Model.from_state_dict` takes numpy arrays.
#[pyclass(module = "lenet5", frozen)]
pub struct Model {
    /// Behind a lock because prediction uses the predictor's buffers; calls from several threads take turns.
    predictor: Mutex<Predictor>,
}

impl Model {
    fn new(checkpoint: Checkpoint) -> Model {
        Model { predictor: Mutex::new(Predictor::new(checkpoint)) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Predictor) -> T) -> T {
        f(&mut self.predictor.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The head's outputs for `images`: N x K floats, and N.
    /// The scores of `images`: network inputs, or pictures to prepare with `preprocess` first.
    fn run(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        preprocess: Option<&str>,
        scale: Option<f64>,
    ) -> PyResult<(Vec<f32>, usize)> {
        // What a PyTorch user holds (tensors, PIL images, lists, any dtype, one image) as one numpy array.
        let inputs = py.import("lenet5._inputs")?;
        let convert = if preprocess.is_some() { "as_pictures" } else { "as_images" };
        let images = &inputs.call_method1(convert, (images, scale))?;
        let (pixels, n) = match preprocess {
            None => {
                // In chunks: a million images cost their input and a few megabytes, not 3 GB of floats.
                let mut scores = Vec::new();
                let n = arrays::for_each_chunk("images", images, &mut |pixels| {
                    scores.extend(py.detach(|| self.with(|p| p.scores(pixels))));
                    Ok(())
                })?;
                return Ok((scores, n));
            }
            Some(name) => {
                let p = Preprocess::parse(name).ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "preprocess: expected \"mnist\", \"resize\" or \"none\", got {name:?}"
                    ))
                })?;
                arrays::pictures("images", images, p)?
            }
        };
        let scores = py.detach(|| self.with(|p| p.scores(&pixels)));
        Ok((scores, n))
    }
}

#[pymethods]
impl Model {
    /// Reads weights from a .safetensors checkpoint or a PyTorch .pth state_dict (read with `head`, which a
    /// .pth file does not record; a checkpoint records its own).
    /// An int8 file (from `lenet5 quantize` or `Int8Model.save`) is read as an `Int8Model`.
    #[staticmethod]
    #[pyo3(signature = (path, *, head = "sigmoid"))]
    fn load(py: Python<'_>, path: PathBuf, head: &str) -> PyResult<Py<PyAny>> {
        let head = parse_head(head)?;
        let weights = py.detach(|| lenet5::deploy::Weights::load(&path, head)).map_err(crate::errors::to_py)?;
        match weights {
            lenet5::deploy::Weights::Float(checkpoint) => Ok(Py::new(py, Model::new(checkpoint))?.into_any()),
            lenet5::deploy::Weights::Int8(model) => Ok(Py::new(py, Int8Model { model: *model })?.into_any()),
        }
    }

    /// The network quantized to int8 (as `lenet5 quantize`): activations calibrated on `calibration` images of
    /// `images` (an array, as `predict` takes them) or, without it, of the training images of the data set the
    /// weights were trained on (or `dataset` under `data`), drawn by `seed`.
    #[pyo3(signature = (*, calibration = QuantModel::DEFAULT_CALIBRATION, seed = 0, images = None, data = None, dataset = None))]
    fn quantize(
        &self,
        py: Python<'_>,
        calibration: usize,
        seed: u64,
        images: Option<&Bound<'_, PyAny>>,
        data: Option<PathBuf>,
        dataset: Option<String>,
    ) -> PyResult<Int8Model> {
        let ck = self.with(|p| p.checkpoint.clone());
        Ok(Int8Model { model: crate::int8::quantize(py, &ck, calibration, seed, images, data, dataset)? })
    }

    /// `quantize(...)`, then `Int8Model.export_c(dir, force=force)`, as `lenet5 export --c` does for float weights.
    #[pyo3(signature = (dir, *, force = false, calibration = QuantModel::DEFAULT_CALIBRATION, seed = 0, images = None, data = None, dataset = None))]
    #[allow(clippy::too_many_arguments)]
    fn export_c(
        &self,
        py: Python<'_>,
        dir: PathBuf,
        force: bool,
        calibration: usize,
        seed: u64,
        images: Option<&Bound<'_, PyAny>>,
        data: Option<PathBuf>,
        dataset: Option<String>,
    ) -> PyResult<(PathBuf, PathBuf)> {
        let q = self.quantize(py, calibration, seed, images, data, dataset)?;
        let [header, source] = lenet5::deploy::write_c(&q.model, &dir, force).map_err(crate::errors::to_py)?;
        Ok((header, source))
    }

    /// Weights from a mapping of PyTorch's `state_dict` names to arrays of its shapes (`conv1.weight` (6, 1, 5,
    /// 5) ... `output.bias` (K,)); any float dtype, values finite. `torch` tensors work through `.numpy()`.
    #[staticmethod]
    #[pyo3(signature = (state_dict, *, head = "sigmoid", class_names = None))]
    fn from_state_dict(state_dict: &Bound<'_, PyAny>, head: &str, class_names: Option<Vec<String>>) -> PyResult<Model> {
        let head = parse_head(head)?;
        let params = params_from(state_dict)?;
        let mut checkpoint = Checkpoint::new(params, head);
        if let Some(names) = class_names {
            if names.len() != checkpoint.classes() {
                return Err(PyValueError::new_err(format!(
                    "class_names: {} names for a network of {} outputs",
                    names.len(),
                    checkpoint.classes()
                )));
            }
            checkpoint.class_names = names;
        }
        Ok(Model::new(checkpoint))
    }

    /// The class of each image; returns N class indices (int64), which `class_names` maps to names. `images`:
    /// one image `[28, 28]` or a batch `[N, 28, 28]`, `[N, 1, 28, 28]` or `[N, 28, 28, 1]`, as a numpy array of
    /// any integer or float dtype, a torch tensor (on the CPU), a PIL image or a list. Integers are grey levels
    /// 0-255; floats are in [0, 1] (as torchvision's `ToTensor` gives them), or out of `scale` (`scale=255` for
    /// floats never divided): floats above 1 without it are refused.
    ///
    /// With `preprocess` ("mnist": the framing `lenet5 predict` gives a photo; "resize"; "none"), `images` are
    /// grey pictures of any size (one, a list, or `[N, H, W]`), prepared as `lenet5 predict` prepares image files.
    #[pyo3(signature = (images, *, preprocess = None, scale = None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        preprocess: Option<&str>,
        scale: Option<f64>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let (scores, n) = self.run(py, images, preprocess, scale)?;
        let argmax = scores.chunks_exact(self.num_classes()).map(|s| lenet5_core::nn::argmax(s) as i64);
        debug_assert_eq!(argmax.len(), n);
        Ok(PyArray1::from_vec(py, argmax.collect()))
    }

    /// The network's outputs for each image, `[N, K]` float32, as the PyTorch module returns them: the sigmoid
    /// outputs for the sigmoid head, the logits for the logits head.
    /// `preprocess` as for `predict`.
    #[pyo3(signature = (images, *, preprocess = None, scale = None))]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        preprocess: Option<&str>,
        scale: Option<f64>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let (scores, n) = self.run(py, images, preprocess, scale)?;
        let classes = self.num_classes();
        arrays::tensor(py, scores, &[n, classes])
    }

    /// Loss and accuracy on labelled images, as `lenet5 eval` reports them for a data set: images as `predict`
    /// takes them (floats must be bytes / 255, as the data sets hold them), labels N integers (any array, tensor or
    /// list) below
    /// `num_classes`; the loss is the mean of per-batch means over batches of `batch_size` (default: the one the
    /// weights were trained with, else the recipe's), the accuracy correct / total. Returns a dict of
    /// loss, accuracy, correct and total.
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
        let inputs = py.import("lenet5._inputs")?;
        let images = &inputs.call_method1("as_images", (images, scale))?;
        let n = images.len()?;
        let labels = &inputs.call_method1("as_labels", (labels, n))?;
        let split = arrays::split("images", images, labels, arrays::IMAGE_SHAPES)?;
        if split.is_empty() {
            return Err(PyValueError::new_err("images: no images to evaluate"));
        }
        check_labels(&split, self.num_classes())?;
        let batch_size = batch_size.unwrap_or_else(|| self.with(|p| lenet5::training::eval_batch_size(&p.checkpoint)));
        if batch_size == 0 || batch_size > MAX_BATCH_SIZE {
            return Err(PyValueError::new_err(format!("batch_size: expected 1 to {MAX_BATCH_SIZE}, got {batch_size}")));
        }
        let threads = lenet5_core::spec::thread_count(threads).map_err(core_to_py)?;
        let (params, head) = self.with(|p| (p.checkpoint.params.clone(), p.checkpoint.head));
        let result = py.detach(|| {
            Evaluator::new(threads).map(|mut evaluator| evaluator.evaluate(&params, head, &split, batch_size))
        });
        eval_dict(py, &result.map_err(core_to_py)?)
    }

    /// The weights as PyTorch's `state_dict`: a dict of float32 arrays, by its names and with its shapes, in
    /// its order (`torch.from_numpy` of each, then `load_state_dict`, gives the same network in PyTorch).
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        self.with(|p| {
            let classes = p.checkpoint.classes();
            for param in Param::ALL {
                let values = p.checkpoint.params[param.range(classes)].to_vec();
                dict.set_item(param.name(), arrays::tensor(py, values, &param.shape(classes))?)?;
            }
            Ok::<_, PyErr>(())
        })?;
        Ok(dict)
    }

    /// Writes the weights as a .safetensors checkpoint (atomically), which `lenet5 eval --weights`, `lenet5
    /// serve` and `Model.load` read.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let checkpoint = self.with(|p| p.checkpoint.clone());
        py.detach(|| checkpoint.save(&path)).map_err(core_to_py)
    }

    /// The name of each class, in the order of the outputs.
    #[getter]
    fn class_names(&self) -> Vec<String> {
        self.with(|p| p.checkpoint.class_names.clone())
    }

    /// The number of classes, K.
    #[getter]
    fn num_classes(&self) -> usize {
        self.with(|p| p.checkpoint.classes())
    }

    /// `"sigmoid"` or `"logits"`.
    #[getter]
    fn head(&self) -> &'static str {
        self.with(|p| p.checkpoint.head.name())
    }

    /// What the checkpoint records besides its tensors (data set, epoch, metrics, settings), as strings.
    #[getter]
    fn metadata(&self) -> HashMap<String, String> {
        self.with(|p| p.checkpoint.metadata.clone())
    }

    fn __repr__(&self) -> String {
        self.with(|p| {
            let classes = p.checkpoint.classes();
            format!("Model(classes={classes}, head={:?}, parameters={})", p.checkpoint.head.name(), num_params(classes))
        })
    }
}

/// Refuses labels that are no class of a `classes`-class network.
pub(crate) fn check_labels(split: &lenet5_core::data::Split, classes: usize) -> PyResult<()> {
    match split.labels.iter().find(|&&l| l as usize >= classes) {
        Some(bad) => {
            Err(PyValueError::new_err(format!("labels: label {bad} is not a class of this {classes}-class network")))
        }
        None => Ok(()),
    }
}

/// An evaluation's figures as the dict `evaluate` returns: loss, accuracy, correct and total.
pub(crate) fn eval_dict<'py>(py: Python<'py>, r: &lenet5_core::train::EvalResult) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("loss", r.loss)?;
    dict.set_item("accuracy", r.accuracy)?;
    dict.set_item("correct", r.correct)?;
    dict.set_item("total", r.total)?;
    Ok(dict)
}

fn parse_head(head: &str) -> PyResult<Head> {
    Head::parse(head)
        .ok_or_else(|| PyValueError::new_err(format!("head: expected \"sigmoid\" or \"logits\", got {head:?}")))
}

/// The flat parameter block of a `state_dict` mapping, checked tensor by tensor.
fn params_from(state_dict: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    let get = |name: &str| {
        state_dict.get_item(name).map_err(|_| PyKeyError::new_err(format!("state_dict: no tensor {name:?}")))
    };
    let numpy = state_dict.py().import("numpy")?;
    let array_of = |name: &str| -> PyResult<PyReadonlyArrayDyn<'_, f32>> {
        let array = numpy
            .call_method1("asarray", (get(name)?, "float32"))
            .map_err(|e| PyTypeError::new_err(format!("state_dict: {name:?} is not an array of numbers ({e})")))?;
        array.extract()
    };
    let bias = array_of(Param::OutputBias.name())?;
    let [classes] = bias.shape() else {
        let shape = bias.shape();
        return Err(PyValueError::new_err(format!("state_dict: \"output.bias\" has shape {shape:?}, expected [K]")));
    };
    let classes = *classes;
    if !(MIN_CLASSES..=MAX_CLASSES).contains(&classes) {
        return Err(PyValueError::new_err(format!(
            "state_dict: output.bias has {classes} values; a network has {MIN_CLASSES} to {MAX_CLASSES} classes"
        )));
    }
    let mut params = vec![0.0; num_params(classes)];
    for param in Param::ALL {
        let array = array_of(param.name())?;
        let expected = param.shape(classes);
        if array.shape() != expected {
            return Err(PyValueError::new_err(format!(
                "state_dict: {:?} has shape {:?}, expected {expected:?}",
                param.name(),
                array.shape()
            )));
        }
        let dst = &mut params[param.range(classes)];
        for (d, s) in dst.iter_mut().zip(array.as_array().iter()) {
            *d = *s;
        }
        if let Some(i) = dst.iter().position(|v| !v.is_finite()) {
            return Err(PyValueError::new_err(format!(
                "state_dict: value {i} of {:?} is {}; weights must be finite",
                param.name(),
                dst[i]
            )));
        }
    }
    Ok(params)
}
