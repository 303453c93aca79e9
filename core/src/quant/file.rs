//! An int8 network as a safetensors file: for each layer `L` (conv1, conv2, linear1, linear2, output),
//! `L.weight` (I8, PyTorch's shape), `L.bias`, `L.multiplier` and `L.shift` (I32, one per output) and
//! `L.weight_scale` (F32); the metadata holds `format = lenet5-int8`, the scales and zero points, the head, the
//! class names and the float checkpoint's own metadata.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::engine::{QLayer, QLayers};
use super::fixed::{MAX_SHIFT, MIN_SHIFT, Requant};
use super::{ACTIVATION_ZERO_POINT, INPUT_SCALE, LAYER_NAMES, QuantModel};
use crate::base::{MAX_CLASSES, MIN_CLASSES};
use crate::checkpoint::{class_names, read_safetensors};
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::nn::model::Head;
use crate::nn::params::Param;

/// The value of the `format` metadata entry of an int8 file.
const FORMAT: &str = "lenet5-int8";
/// Metadata entries the file writes itself, never copied from the float checkpoint's.
const OWN_KEYS: [&str; 9] = [
    "format",
    "format_version",
    "head",
    "class_names",
    "input_scale",
    "activation_scales",
    "zero_point",
    "scores_scale",
    "tensors_sha256",
];

impl QuantModel {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        let layers = self.layers.all();
        for (i, (name, layer)) in LAYER_NAMES.iter().zip(layers).enumerate() {
            let o = layer.outputs();
            let shape = Param::ALL[2 * i].shape(self.classes());
            data.push((format!("{name}.weight"), Dtype::I8, shape, layer.weight.iter().map(|&w| w as u8).collect()));
            let ints = |v: &mut dyn Iterator<Item = i32>| v.flat_map(i32::to_le_bytes).collect::<Vec<u8>>();
            data.push((format!("{name}.bias"), Dtype::I32, vec![o], ints(&mut layer.bias.iter().copied())));
            let multipliers = ints(&mut layer.requant.iter().map(|r| r.multiplier));
            data.push((format!("{name}.multiplier"), Dtype::I32, vec![o], multipliers));
            data.push((format!("{name}.shift"), Dtype::I32, vec![o], ints(&mut layer.requant.iter().map(|r| r.shift))));
            let scales = self.weight_scales[i].iter().flat_map(|s| s.to_le_bytes()).collect();
            data.push((format!("{name}.weight_scale"), Dtype::F32, vec![o], scales));
        }
        let views: Vec<(String, TensorView)> = data
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("sizes agree")))
            .collect();
        let mut meta: HashMap<String, String> = self
            .metadata
            .iter()
            .filter(|(k, _)| !OWN_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("format_version".into(), "1".into());
        meta.insert("head".into(), self.head.name().into());
        meta.insert("class_names".into(), serde_json::to_string(&self.class_names).expect("JSON"));
        meta.insert("input_scale".into(), INPUT_SCALE.to_string());
        meta.insert("zero_point".into(), ACTIVATION_ZERO_POINT.to_string());
        meta.insert("activation_scales".into(), serde_json::to_string(&self.activation_scales).expect("JSON"));
        meta.insert("scores_scale".into(), self.scores_scale.to_string());
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Shape { expected: "tensors that fit their shapes".into(), found: e.to_string() })
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads and checks an int8 file: every tensor present with its dtype and shape, shifts and multipliers in
    /// range, scales positive.
    pub fn load(path: &Path) -> Result<QuantModel> {
        let bytes = read_safetensors(path)?;
        let bad = |why: String| Error::format(path, why);
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not valid safetensors ({e})")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        if metadata.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("not an int8 network (its metadata has no format = {FORMAT})")));
        }
        let classes = match st.tensor("output.bias").map(|t| t.shape().to_vec()) {
            Ok(shape) if shape.len() == 1 && (MIN_CLASSES..=MAX_CLASSES).contains(&shape[0]) => shape[0],
            _ => return Err(Error::tensor(path, "output.bias", "missing, or not [K] with K classes")),
        };
        let mut layers = Vec::new();
        let mut weight_scales = Vec::new();
        for (i, name) in LAYER_NAMES.iter().enumerate() {
            let shape = Param::ALL[2 * i].shape(classes);
            let outputs = shape[0];
            let tensor = |suffix: &str, dtype: Dtype, shape: &[usize]| {
                let full = format!("{name}.{suffix}");
                let t = st.tensor(&full).map_err(|_| Error::tensor(path, &full, "missing"))?;
                if t.dtype() != dtype || t.shape() != shape {
                    let found = format!("{:?} {:?}, expected {dtype:?} {shape:?}", t.dtype(), t.shape());
                    return Err(Error::tensor(path, &full, found));
                }
                Ok(t.data().to_vec())
            };
            let ints =
                |b: Vec<u8>| b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
            let weight = tensor("weight", Dtype::I8, &shape)?.into_iter().map(|b| b as i8).collect();
            let bias = ints(tensor("bias", Dtype::I32, &[outputs])?);
            let multipliers = ints(tensor("multiplier", Dtype::I32, &[outputs])?);
            let shifts = ints(tensor("shift", Dtype::I32, &[outputs])?);
            let mut requant = Vec::new();
            for (&multiplier, &shift) in multipliers.iter().zip(&shifts) {
                if !(multiplier == 0 || multiplier >= 1 << 30) || !(MIN_SHIFT..=MAX_SHIFT).contains(&shift) {
                    let why = format!(
                        "multiplier {multiplier} with shift {shift}: expected 0 or from 2^30, shift in -31..=30"
                    );
                    return Err(Error::tensor(path, &format!("{name}.multiplier"), why));
                }
                requant.push(Requant { multiplier, shift });
            }
            let scales: Vec<f32> = tensor("weight_scale", Dtype::F32, &[outputs])?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(Error::tensor(path, &format!("{name}.weight_scale"), "scales must be positive numbers"));
            }
            layers.push(QLayer { weight, bias, requant });
            weight_scales.push(scales);
        }
        let number = |key: &str| -> Result<f32> {
            let v = metadata.get(key).and_then(|v| v.parse::<f32>().ok());
            v.filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| bad(format!("metadata {key} must be a positive number")))
        };
        let scores_scale = number("scores_scale")?;
        let activation_scales: [f32; 4] = metadata
            .get("activation_scales")
            .and_then(|v| serde_json::from_str::<[f32; 4]>(v).ok())
            .filter(|s| s.iter().all(|s| s.is_finite() && *s > 0.0))
            .ok_or_else(|| bad("metadata activation_scales must be 4 positive numbers".into()))?;
        let head = match metadata.get("head") {
            None => Head::Sigmoid,
            Some(h) => Head::parse(h).ok_or_else(|| bad(format!("unknown head `{h}` in metadata")))?,
        };
        let class_names = class_names(&metadata, classes, path)?;
        let [conv1, conv2, linear1, linear2, output] = <[QLayer; 5]>::try_from(layers).expect("five layers");
        Ok(QuantModel {
            layers: QLayers::new([conv1, conv2, linear1, linear2, output]),
            activation_scales,
            weight_scales: <[Vec<f32>; 5]>::try_from(weight_scales).expect("five layers"),
            scores_scale,
            head,
            class_names,
            metadata: metadata.into_iter().collect(),
        })
    }

    /// Whether the safetensors file at `path` holds an int8 network (its metadata says so).
    pub fn is_int8_file(path: &Path) -> Result<bool> {
        let bytes = read_safetensors(path)?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors checkpoint ({e})")))?;
        Ok(header.metadata().as_ref().and_then(|m| m.get("format")).is_some_and(|f| f == FORMAT))
    }
}
