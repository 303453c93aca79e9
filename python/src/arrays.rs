//! numpy arrays in and out: images as the network reads them, and tensors with PyTorch's shapes.

use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use lenet5_core::base::{Label, MAX_CLASSES};
use lenet5_core::data::Split;
use lenet5_core::digit::{GreyImage, Preprocess};
use lenet5_core::nn::model::{IMAGE_LEN, IMAGE_SIZE};

/// Most images one call takes: a call copies its images as floats (3.1 GB for a million); more go in chunks.
pub const MAX_IMAGES: usize = 1_000_000;

/// The pixels of `images`, `[N, 28, 28]` or `[N, 1, 28, 28]`, as N x 784 floats in [0, 1] as `ToTensor` makes
/// them: float32 or float64 arrays as they are, uint8 divided by 255. Any memory layout; values must be finite.
pub fn images(name: &str, images: &Bound<'_, PyAny>, accepted: &str) -> PyResult<(Vec<f32>, usize)> {
    if let Ok(a) = images.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        let n = image_count(name, a.shape(), accepted)?;
        return Ok((a.as_array().iter().map(|&v| v as f32 / 255.0).collect(), n));
    }
    // Every count is checked before anything is copied: an array may claim any size (np.broadcast_to).
    let (pixels, n) = if let Ok(a) = images.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let n = image_count(name, a.shape(), accepted)?;
        (a.as_array().iter().copied().collect::<Vec<f32>>(), n)
    } else if let Ok(a) = images.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        let n = image_count(name, a.shape(), accepted)?;
        (a.as_array().iter().map(|&v| v as f32).collect(), n)
    } else {
        let kind = match images.cast::<PyUntypedArray>() {
            Ok(array) => format!("an array of dtype {}", array.dtype()),
            Err(_) => format!("a {}", images.get_type().name()?),
        };
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a numpy array of float32 or float64 (in [0, 1]) or uint8 (0-255), got {kind}"
        )));
    };
    if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
        return Err(PyValueError::new_err(format!(
            "{name}: pixel {} of image {} is {}; pixels must be finite",
            i % IMAGE_LEN,
            i / IMAGE_LEN,
            pixels[i]
        )));
    }
    Ok((pixels, n))
}

/// Largest side of a picture given to `preprocess` (as the command line decodes).
const MAX_SIDE: usize = 8192;

/// The network's inputs for `pictures` prepared by `preprocess` (as `lenet5 predict` prepares image files):
/// a list of 2-D grey arrays of any size, or one array `[N, H, W]`; uint8, or floats in [0, 1].
pub fn pictures(name: &str, pictures: &Bound<'_, PyAny>, preprocess: Preprocess) -> PyResult<(Vec<f32>, usize)> {
    let numpy = pictures.py().import("numpy")?;
    let count = pictures.len()?;
    if count > MAX_IMAGES {
        return Err(PyValueError::new_err(format!("{name}: at most {MAX_IMAGES} pictures in one call, got {count}")));
    }
    let mut inputs = Vec::with_capacity(count * IMAGE_LEN);
    for (i, picture) in pictures.try_iter()?.enumerate() {
        let array: PyReadonlyArrayDyn<'_, f64> = numpy.call_method1("asarray", (picture?, "float64"))?.extract()?;
        let [height, width] = *array.shape() else {
            let shape = array.shape().to_vec();
            return Err(PyValueError::new_err(format!("{name}: picture {i} has shape {shape:?}, expected [H, W]")));
        };
        if height.max(width) > MAX_SIDE {
            return Err(PyValueError::new_err(format!(
                "{name}: picture {i} is {width}x{height}, larger than {MAX_SIDE}"
            )));
        }
        let values = array.as_array();
        let scale = if values.iter().any(|&v| v > 1.0) { 1.0 } else { 255.0 };
        let bytes: Vec<u8> = values.iter().map(|&v| (v * scale).round().clamp(0.0, 255.0) as u8).collect();
        let grey = GreyImage::new(width, height, bytes).expect("one byte per pixel");
        let input = preprocess.input(&grey).map_err(|e| PyValueError::new_err(format!("{name}: picture {i}: {e}")))?;
        inputs.extend_from_slice(&input);
    }
    Ok((inputs, count))
}

/// Images converted at a time by [`for_each_chunk`]: 12 MB of floats.
const CHUNK_IMAGES: usize = 4096;

/// Calls `f` with the pixels of `images` (as [`images`] reads them: `[N, 28, 28]` or `[N, 1, 28, 28]`, uint8 or
/// floats in [0, 1]), at most `CHUNK_IMAGES` images at a time (each a view of the array, copied alone), so that
/// N images cost their input and one chunk; returns N.
pub fn for_each_chunk(
    name: &str,
    images: &Bound<'_, PyAny>,
    f: &mut dyn FnMut(&[f32]) -> PyResult<()>,
) -> PyResult<usize> {
    let Ok(array) = images.cast::<PyUntypedArray>() else {
        // Not an array: `images` says why.
        return self::images(name, images, IMAGE_SHAPES).and_then(|(pixels, n)| f(&pixels).map(|()| n));
    };
    let n = image_count(name, array.shape(), IMAGE_SHAPES)?;
    for start in (0..n).step_by(CHUNK_IMAGES) {
        let end = (start + CHUNK_IMAGES).min(n);
        let part = images.get_item(pyo3::types::PySlice::new(images.py(), start as isize, end as isize, 1))?;
        let (pixels, _) = self::images(name, &part, IMAGE_SHAPES).map_err(|e| offset_error(e, start))?;
        f(&pixels)?;
    }
    Ok(n)
}

/// An error about image `i` of a chunk, renumbered from the chunk's first image `start`.
fn offset_error(e: PyErr, start: usize) -> PyErr {
    if start == 0 {
        return e;
    }
    Python::attach(|py| {
        let message = e.value(py).to_string();
        match message.split_once(" of image ").and_then(|(head, rest)| {
            let (index, tail) = rest.split_once(' ')?;
            Some(format!("{head} of image {} {tail}", index.parse::<usize>().ok()? + start))
        }) {
            Some(m) => PyValueError::new_err(m),
            None => e,
        }
    })
}

/// The shapes `Model`'s methods take (`lenet5._inputs` makes the others into the first two).
pub const IMAGE_SHAPES: &str = "one image [28, 28] or a batch [N, 28, 28], [N, 1, 28, 28] or [N, 28, 28, 1]";
/// The shapes training data take.
pub const BATCH_SHAPES: &str = "shape [N, 28, 28] or [N, 1, 28, 28]";

/// N of an image array's shape, `[N, 28, 28]` or `[N, 1, 28, 28]` (`accepted` says what the caller takes).
fn image_count(name: &str, shape: &[usize], accepted: &str) -> PyResult<usize> {
    let n = match shape {
        [n, IMAGE_SIZE, IMAGE_SIZE] | [n, 1, IMAGE_SIZE, IMAGE_SIZE] => *n,
        _ => {
            return Err(PyValueError::new_err(format!("{name}: expected {accepted}, got {shape:?}")));
        }
    };
    if n > MAX_IMAGES {
        return Err(PyValueError::new_err(format!("{name}: at most {MAX_IMAGES} images in one call, got {n}")));
    }
    Ok(n)
}

/// A float32 array of `shape` holding `values`.
pub fn tensor<'py>(py: Python<'py>, values: Vec<f32>, shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    numpy::PyArray1::from_vec(py, values).reshape(shape)
}

/// A data set split from numpy arrays, as the data sets hold them: `images` `[N, 28, 28]` or `[N, 1, 28, 28]`,
/// uint8 (0-255) or floats that are such bytes divided by 255 (as `ToTensor` makes them); `labels` N integers.
/// `name` (the keyword argument) starts every error.
pub fn split(name: &str, images: &Bound<'_, PyAny>, labels: &Bound<'_, PyAny>, accepted: &str) -> PyResult<Split> {
    let err = |message: String| PyValueError::new_err(format!("{name}: {message}"));
    let (bytes, n) = if let Ok(a) = images.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        let n = image_count(name, a.shape(), accepted)?;
        (a.as_array().iter().copied().collect::<Vec<u8>>(), n)
    } else {
        let (pixels, n) = self::images(name, images, accepted)?;
        let bytes = pixels.iter().map(|&p| (p * 255.0).round().clamp(0.0, 255.0) as u8);
        let bytes: Vec<u8> = bytes.collect();
        if let Some(i) = pixels.iter().zip(&bytes).position(|(&p, &b)| (p * 255.0 - b as f32).abs() > 1e-3) {
            return Err(err(format!(
                "pixel {} of image {} is {}; training images are bytes (uint8), or bytes / 255 as floats",
                i % IMAGE_LEN,
                i / IMAGE_LEN,
                pixels[i]
            )));
        }
        (bytes, n)
    };
    let labels = labels.py().import("numpy")?.call_method1("asarray", (labels, "int64"))?;
    let labels: PyReadonlyArrayDyn<'_, i64> = labels.extract()?;
    if labels.shape() != [n] {
        return Err(err(format!(
            "{n} images need {n} labels in one dimension, got labels of shape {:?}",
            labels.shape()
        )));
    }
    let labels = labels.as_array();
    if let Some(bad) = labels.iter().find(|&&l| !(0..MAX_CLASSES as i64).contains(&l)) {
        return Err(err(format!("label {bad}; labels are classes 0 to {}", MAX_CLASSES - 1)));
    }
    Ok(Split { images: bytes, labels: labels.iter().map(|&l| l as Label).collect() })
}
