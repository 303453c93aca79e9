//! Deployment: float weights quantized to int8 on their own training images, int8 files told from float ones,
//! and the C export written into a directory.

use std::path::{Path, PathBuf};

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::data::Dataset;
use lenet5_core::infer::{Activations, Prediction, Predictor};
use lenet5_core::nn::Head;
use lenet5_core::nn::model::IMAGE_LEN;
use lenet5_core::nn::params::num_params;
use lenet5_core::quant::QuantModel;

use crate::error::Result;
use crate::interop::pth;
use crate::source::{DataSource, Notices, data_options};

/// Weights as a file holds them: float (a checkpoint or a PyTorch state_dict) or int8.
pub enum Weights {
    Float(Checkpoint),
    Int8(Box<QuantModel>),
}

impl Weights {
    /// The weights at `path`: an int8 file (its metadata says so), else float weights (`.pth` read with `head`).
    pub fn load(path: &Path, head: Head) -> Result<Weights> {
        let safetensors = path.extension().is_some_and(|e| e == "safetensors");
        if safetensors && QuantModel::is_int8_file(path)? {
            return Ok(Weights::Int8(Box::new(QuantModel::load(path)?)));
        }
        Ok(Weights::Float(pth::load_weights(path, head)?))
    }

    /// A checkpoint with the weights' head, class names and metadata, for what reads only those (which data set
    /// and preprocessing the weights go with): the weights themselves for float ones, zeros for int8 ones.
    pub fn description(&self) -> Checkpoint {
        match self {
            Weights::Float(ck) => ck.clone(),
            Weights::Int8(q) => int8_description(q),
        }
    }
}

/// [`Weights::description`] of an int8 network.
fn int8_description(q: &QuantModel) -> Checkpoint {
    let mut ck = Checkpoint::new(vec![0.0; num_params(q.classes())], q.head);
    ck.class_names = q.class_names.clone();
    ck.metadata = q.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    ck
}

/// Weights ready to run, one picture at a time: the float engine, or the integer one.
pub enum Engine {
    Float(Box<Predictor>),
    Int8 { model: Box<QuantModel>, description: Checkpoint },
}

impl From<Predictor> for Engine {
    fn from(predictor: Predictor) -> Engine {
        Engine::Float(Box::new(predictor))
    }
}

impl From<Weights> for Engine {
    fn from(weights: Weights) -> Engine {
        match weights {
            Weights::Float(ck) => Predictor::new(ck).into(),
            Weights::Int8(model) => Engine::Int8 { description: int8_description(&model), model },
        }
    }
}

impl Engine {
    /// The head, class names and metadata the weights came with ([`Weights::description`]).
    pub fn checkpoint(&self) -> &Checkpoint {
        match self {
            Engine::Float(predictor) => &predictor.checkpoint,
            Engine::Int8 { description, .. } => description,
        }
    }

    pub fn is_int8(&self) -> bool {
        matches!(self, Engine::Int8 { .. })
    }

    pub fn class_name(&self, class: usize) -> &str {
        &self.checkpoint().class_names[class]
    }

    /// The prediction for one picture as the network takes it (784 values in [0, 1]).
    pub fn predict(&mut self, image: &[f32; IMAGE_LEN]) -> Prediction {
        match self {
            Engine::Float(predictor) => predictor.predict(&[*image]).remove(0),
            Engine::Int8 { model, .. } => model.predict_image(image),
        }
    }

    /// [`Engine::predict`], and what the float network's convolutions and pools made of the picture (`None` for
    /// an int8 network, whose engine keeps no feature maps).
    pub fn predict_with_activations(&mut self, image: &[f32; IMAGE_LEN]) -> (Prediction, Option<Activations>) {
        match self {
            Engine::Float(predictor) => {
                let (prediction, activations) = predictor.predict_with_activations(image);
                (prediction, Some(activations))
            }
            Engine::Int8 { model, .. } => (model.predict_image(image), None),
        }
    }
}

/// The data set `ck` was trained on (unless `source` names another), read as it was, with as many classes as the
/// network: its training split calibrates a quantization, its test split measures the result.
pub fn data_for(ck: &Checkpoint, source: &DataSource, notices: &dyn Notices) -> Result<Dataset> {
    let recorded = data_options(ck);
    let id = source.id_for(ck)?;
    let data = source.load(Some(&id.name()), &recorded, notices)?;
    if data.classes() != ck.classes() {
        let (network, classes) = (ck.classes(), data.classes());
        return Err(lenet5_core::Error::ClassCount { dataset: data.name, network, data: classes }.into());
    }
    Ok(data)
}

/// `ck` quantized, calibrated on `calibration` images (drawn by `seed`) of the training split of [`data_for`].
pub fn quantize(
    ck: &Checkpoint,
    source: &DataSource,
    calibration: usize,
    seed: u64,
    notices: &dyn Notices,
) -> Result<QuantModel> {
    Ok(QuantModel::quantize(ck, &data_for(ck, source, notices)?.train, calibration, seed)?)
}

/// Writes `lenet5_model.h` and `lenet5_model.c` of `model` into `dir` (made if missing). A directory that holds
/// anything is refused unless `force`, which replaces those two files and leaves the rest.
pub fn write_c(model: &QuantModel, dir: &Path, force: bool) -> Result<[PathBuf; 2]> {
    let refuse = |why: &str| lenet5_core::Error::format(dir, why);
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) if !force => {
            return Err(refuse("not empty; --force writes lenet5_model.h and lenet5_model.c into it anyway").into());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => lenet5_core::fs::create_dir(dir)?,
        Err(_) if dir.exists() => return Err(refuse("not a directory").into()),
        Err(e) => return Err(lenet5_core::Error::io(dir, e).into()),
    }
    let [(header, header_text), (source, source_text)] = model.to_c();
    let paths = [dir.join(header), dir.join(source)];
    lenet5_core::fs::write_atomic(&paths[0], header_text.as_bytes())?;
    lenet5_core::fs::write_atomic(&paths[1], source_text.as_bytes())?;
    Ok(paths)
}

/// What the C export takes on a Cortex-M4, as Debian's `arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os` builds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Code and `const` data: what stays in flash.
    pub flash: usize,
    /// Static data (initialised and zeroed).
    pub static_ram: usize,
    /// The stack: every function's frame added up, at least the deepest chain of calls.
    pub stack: usize,
}

/// The Cortex-M4 footprint of `lenet5_model.c` in `dir`, or why it could not be measured (no cross compiler).
pub fn cortex_m4_footprint(dir: &Path) -> std::result::Result<Footprint, String> {
    let work = std::env::temp_dir().join(format!("lenet5-cortex-m4-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let footprint = measure(dir, &work);
    let _ = std::fs::remove_dir_all(&work);
    footprint
}

/// [`cortex_m4_footprint`], building in `work`.
fn measure(dir: &Path, work: &Path) -> std::result::Result<Footprint, String> {
    let object = work.join("lenet5_model.o");
    let flags = ["-mcpu=cortex-m4", "-mthumb", "-Os", "-std=c99", "-ffreestanding", "-fstack-usage", "-c"];
    let compiled = std::process::Command::new("arm-none-eabi-gcc")
        .args(flags)
        .arg(dir.join("lenet5_model.c"))
        .arg("-o")
        .arg(&object)
        .output()
        .map_err(|_| "arm-none-eabi-gcc not found (Debian: apt-get install gcc-arm-none-eabi)".to_string())?;
    if !compiled.status.success() {
        return Err(format!("arm-none-eabi-gcc failed: {}", String::from_utf8_lossy(&compiled.stderr).trim()));
    }
    let size = std::process::Command::new("arm-none-eabi-size").arg(&object).output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&size.stdout);
    let numbers: Vec<usize> =
        text.lines().nth(1).unwrap_or("").split_whitespace().take(3).filter_map(|v| v.parse().ok()).collect();
    let [code, data, bss] = numbers[..] else { return Err(format!("arm-none-eabi-size printed {text}")) };
    let usage = std::fs::read_to_string(work.join("lenet5_model.su")).map_err(|e| e.to_string())?;
    let stack = usage.lines().filter_map(|l| l.split('\t').nth(1)?.trim().parse::<usize>().ok()).sum();
    Ok(Footprint { flash: code + data, static_ram: data + bss, stack })
}
