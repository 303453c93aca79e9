//! Checkpoints as safetensors files whose tensors are PyTorch's `state_dict` for the reference model
//! (`conv1.weight` `[6,1,5,5]` ... `output.bias` `[K]`, float32, K classes: 10 in the recipe), so that
//! `model.load_state_dict(safetensors.torch.load_file(path))` works in PyTorch.
//!
//! Metadata (string to string) carries what a reader needs besides the weights: the format version, the head,
//! the data set and its class names, and, in a resumable training state, the optimiser's momentum tensors
//! (`optimizer.momentum.<name>`) and the training state as JSON. It also holds the SHA-256 of the tensors'
//! values (`CHECKSUM_KEY`): safetensors itself notices a cut or a broken header, not a changed byte in a
//! tensor, which would otherwise load as a wrong weight.
//!
//! Every file is written atomically (see [`crate::fs::write_atomic`]).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::base::{MAX_CLASSES, MIN_CLASSES};
use crate::error::{Error, IoContext, Result};
use crate::fs::write_atomic;
use crate::nn::model::Head;
use crate::nn::params::{Param, classes_of, num_params};

pub(crate) const FORMAT_VERSION: &str = "1";
const MOMENTUM_PREFIX: &str = "optimizer.momentum.";
/// The metadata entry with the hex SHA-256 of the weights' values, then the momentum's (if any), as little-endian
/// float32 in `state_dict` order. Checked on load when present; files from elsewhere need not have it.
pub(crate) const CHECKSUM_KEY: &str = "tensors_sha256";

/// The hex SHA-256 of the tensors' bytes, given in the order [`CHECKSUM_KEY`] defines.
fn tensors_sha256<'a>(tensors: impl IntoIterator<Item = &'a [u8]>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for bytes in tensors {
        hash.update(bytes);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Weights plus what is known about them.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Flat parameter block, in [`Param::ALL`] order, of [`num_params`] values for K classes.
    pub params: Vec<f32>,
    pub head: Head,
    /// One name per class (K of them), in label order.
    pub class_names: Vec<String>,
    /// Present in resumable training states.
    pub momentum: Option<Vec<f32>>,
    /// Every metadata entry as stored.
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    /// Weights (of a network of any number of classes) with default metadata: the given head, and the classes
    /// named by their numbers (MNIST's names, for ten).
    pub fn new(params: Vec<f32>, head: Head) -> Self {
        let classes = classes_of(params.len());
        Checkpoint {
            params,
            head,
            class_names: (0..classes).map(|k| k.to_string()).collect(),
            momentum: None,
            metadata: HashMap::new(),
        }
    }

    /// Classes the network tells apart: the rows of its output layer.
    pub fn classes(&self) -> usize {
        classes_of(self.params.len())
    }

    /// Serialises to safetensors bytes; `head`, `class_names` and `format_version` overwrite any metadata
    /// entries of the same name.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let classes = self.classes();
        if self.class_names.len() != classes || self.momentum.as_ref().is_some_and(|m| m.len() != self.params.len()) {
            return Err(Error::Shape {
                expected: format!("{classes} class names and momentum like the weights"),
                found: format!("{} class names", self.class_names.len()),
            });
        }
        let mut meta = self.metadata.clone();
        meta.insert("format".into(), "lenet5".into());
        meta.insert("format_version".into(), FORMAT_VERSION.into());
        meta.insert("head".into(), self.head.name().into());
        meta.insert("class_names".into(), serde_json::to_string(&self.class_names).expect("strings serialise"));
        let to_le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let weights = to_le(&self.params);
        let momentum = self.momentum.as_deref().map(to_le);
        meta.insert(CHECKSUM_KEY.into(), tensors_sha256(std::iter::once(&weights[..]).chain(momentum.as_deref())));
        let mut views = Vec::new();
        for p in Param::ALL {
            let (shape, r) = (p.shape(classes), p.range(classes));
            let bytes = &weights[r.start * 4..r.end * 4];
            views.push((p.name().to_string(), TensorView::new(Dtype::F32, shape.clone(), bytes).expect("sizes agree")));
            if let Some(m) = &momentum {
                let bytes = &m[r.start * 4..r.end * 4];
                views.push((
                    format!("{MOMENTUM_PREFIX}{}", p.name()),
                    TensorView::new(Dtype::F32, shape, bytes).expect("sizes agree"),
                ));
            }
        }
        safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::Shape { expected: "tensors that fit their shapes".into(), found: e.to_string() })
    }

    /// Writes atomically to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads and validates a checkpoint: every tensor present, float32, with PyTorch's shape. The file is read
    /// header first, and then only as far as the header says (see `read_safetensors`).
    pub fn load(path: &Path) -> Result<Checkpoint> {
        Self::from_bytes(&read_safetensors(path)?, path)
    }

    /// Parses safetensors bytes; `path` names the source in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors checkpoint ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::format(path, format!("not a valid safetensors checkpoint ({e})")))?;
        let metadata = header.metadata().clone().unwrap_or_default();

        let read = |name: &str, out: &mut [f32], shape: &[usize]| -> Result<()> {
            let t = st.tensor(name).map_err(|_| Error::tensor(path, name, "missing"))?;
            if t.dtype() != Dtype::F32 {
                return Err(Error::tensor(path, name, format!("dtype {:?}, expected F32", t.dtype())));
            }
            if t.shape() != shape {
                return Err(Error::tensor(path, name, format!("shape {:?}, expected {:?}", t.shape(), shape)));
            }
            for (o, c) in out.iter_mut().zip(t.data().chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                return Err(Error::tensor(path, name, format!("value {i} is {}; weights must be finite", out[i])));
            }
            Ok(())
        };
        let classes = classes_in(&st, path)?;
        let mut params = vec![0.0; num_params(classes)];
        for p in Param::ALL {
            read(p.name(), &mut params[p.range(classes)], &p.shape(classes))?;
        }
        let momentum = if st.names().iter().any(|n| n.starts_with(MOMENTUM_PREFIX)) {
            let mut m = vec![0.0; num_params(classes)];
            for p in Param::ALL {
                read(&format!("{MOMENTUM_PREFIX}{}", p.name()), &mut m[p.range(classes)], &p.shape(classes))?;
            }
            Some(m)
        } else {
            None
        };
        // The SHA-256 of the bytes as stored, tensor by tensor in `state_dict` order: weights, then any momentum.
        let sha256_as_stored = || {
            let weights = Param::ALL.iter().map(|p| p.name().to_string());
            let momentum = Param::ALL.iter().filter(|_| momentum.is_some());
            let names = weights.chain(momentum.map(|p| format!("{MOMENTUM_PREFIX}{}", p.name())));
            tensors_sha256(names.map(|name| st.tensor(&name).expect("read above").data()))
        };
        if metadata.get(CHECKSUM_KEY).is_some_and(|stored| *stored != sha256_as_stored()) {
            return Err(Error::format(
                path,
                format!(
                    "damaged: the tensors' values do not match the {CHECKSUM_KEY} stored with them (if they were \
                     changed on purpose, drop that metadata entry)"
                ),
            ));
        }
        if let Some(v) = metadata.get("format_version").filter(|v| *v != FORMAT_VERSION) {
            return Err(Error::format(
                path,
                format!("checkpoint format version {v}, this program reads {FORMAT_VERSION}"),
            ));
        }
        let head = match metadata.get("head") {
            None => Head::Sigmoid,
            Some(h) => Head::parse(h).ok_or_else(|| Error::format(path, format!("unknown head `{h}` in metadata")))?,
        };
        let class_names = class_names(&metadata, classes, path)?;
        Ok(Checkpoint { params, head, class_names, momentum, metadata })
    }
}

/// Largest safetensors header read (safetensors' own limit).
const MAX_HEADER: u64 = 100_000_000;
/// Largest tensor data read: far more than the weights and momentum of the largest network (1,000 classes).
const MAX_DATA: u64 = 64 << 20;

/// The class names a checkpoint's metadata records (the class numbers when it records none): a JSON list of one
/// name per output, each at most `MAX_CLASS_NAME` bytes.
pub(crate) fn class_names(metadata: &HashMap<String, String>, classes: usize, path: &Path) -> Result<Vec<String>> {
    let Some(names) = metadata.get("class_names") else { return Ok((0..classes).map(|k| k.to_string()).collect()) };
    match serde_json::from_str::<Vec<String>>(names) {
        Ok(v) if v.len() == classes && v.iter().all(|n| n.len() <= crate::base::MAX_CLASS_NAME) => Ok(v),
        _ => Err(Error::format(
            path,
            format!(
                "metadata class_names must be a JSON list of {classes} strings (one per output) of at most {} bytes",
                crate::base::MAX_CLASS_NAME
            ),
        )),
    }
}

/// The bytes of the safetensors file at `path`, read as its header says: the 8-byte header length, the header,
/// then exactly the tensor data the header lays out, each within a bound, and nothing after. A file that is
/// not a checkpoint (or endless, like `/dev/zero`) costs a few bytes to refuse.
pub(crate) fn read_safetensors(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).at(path)?;
    let not_safetensors = |why: String| Error::format(path, format!("not a valid safetensors checkpoint ({why})"));
    let mut bytes = Vec::new();
    (&mut file).take(8).read_to_end(&mut bytes).at(path)?;
    let header_len = match <[u8; 8]>::try_from(bytes.as_slice()) {
        Ok(b) => u64::from_le_bytes(b),
        Err(_) => return Err(not_safetensors(format!("{} bytes, shorter than a header", bytes.len()))),
    };
    if header_len > MAX_HEADER {
        return Err(not_safetensors(format!("a header of {header_len} bytes")));
    }
    (&mut file).take(header_len).read_to_end(&mut bytes).at(path)?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..]).map_err(|e| not_safetensors(format!("header is not JSON: {e}")))?;
    let data_len = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    if data_len > MAX_DATA {
        return Err(not_safetensors(format!("{data_len} bytes of tensors, more than a LeNet-5 holds")));
    }
    (&mut file).take(data_len).read_to_end(&mut bytes).at(path)?;
    let mut more = [0u8; 1];
    if file.read(&mut more).at(path)? > 0 {
        return Err(not_safetensors("bytes after the tensors".into()));
    }
    Ok(bytes)
}

/// The number of classes of the checkpoint in `st`: the length of its output bias, which must be a number of
/// classes the network takes (ten when it has none, so that the tensors are then named in order as missing or
/// misshapen).
pub(crate) fn classes_in(st: &SafeTensors, path: &Path) -> Result<usize> {
    let name = Param::OutputBias.name();
    let Ok(t) = st.tensor(name) else { return Ok(crate::base::MNIST_CLASS_COUNT) };
    match t.shape() {
        [k] if (MIN_CLASSES..=MAX_CLASSES).contains(k) => Ok(*k),
        shape => Err(Error::tensor(
            path,
            name,
            format!("shape {shape:?}, expected [K] with K from {MIN_CLASSES} to {MAX_CLASSES} classes"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::init_params;

    #[test]
    #[cfg_attr(target_family = "wasm", ignore = "WASI has no temporary directory")]
    fn round_trip_keeps_every_bit_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut ck = Checkpoint::new(init_params(3), Head::Logits);
        ck.momentum = Some(init_params(4));
        ck.class_names[0] = "zero".into();
        ck.metadata.insert("epoch".into(), "7".into());
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.params, ck.params);
        assert_eq!(back.momentum, ck.momentum);
        assert_eq!(back.head, Head::Logits);
        assert_eq!(back.class_names[0], "zero");
        assert_eq!(back.metadata["epoch"], "7");
        // nothing but the target is left in the directory
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_or_misshapen_tensors_are_named() {
        let p = Path::new("x.safetensors");
        let weights = vec![0u8; 4 * 150];
        let bytes = safetensors::serialize(
            [("conv1.weight", TensorView::new(Dtype::F32, vec![6, 25], &weights).unwrap())],
            None,
        )
        .unwrap();
        let e = Checkpoint::from_bytes(&bytes, p).unwrap_err().to_string();
        assert!(e.contains("conv1.weight") && e.contains("[6, 25]") && e.contains("[6, 1, 5, 5]"), "{e}");
        let good = Checkpoint::new(init_params(1), Head::Sigmoid).to_bytes().unwrap();
        let e = Checkpoint::from_bytes(&good[..good.len() - 10], p).unwrap_err().to_string();
        assert!(e.starts_with("x.safetensors: not a valid safetensors"), "{e}");
        let e = Checkpoint::from_bytes(b"garbage", p).unwrap_err().to_string();
        assert!(e.contains("not a valid safetensors"), "{e}");
    }

    #[test]
    #[cfg_attr(target_family = "wasm", ignore = "WASI has no temporary directory")]
    fn files_are_read_no_further_than_their_header_says() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(unix)]
        {
            let zeros = dir.path().join("zeros.safetensors");
            std::os::unix::fs::symlink("/dev/zero", &zeros).unwrap();
            let e = Checkpoint::load(&zeros).unwrap_err().to_string();
            assert!(e.contains("not a valid safetensors checkpoint"), "{e}");
        }
        let path = dir.path().join("w.safetensors");
        let good = Checkpoint::new(init_params(1), Head::Sigmoid).to_bytes().unwrap();
        let mut huge_header = u64::MAX.to_le_bytes().to_vec();
        huge_header.extend_from_slice(&good[8..]);
        for (bytes, needle) in [
            (huge_header, "a header of 18446744073709551615 bytes"),
            ([good.as_slice(), b"more"].concat(), "bytes after the tensors"),
            (good[..good.len() - 4].to_vec(), "not a valid safetensors"),
            (good[..5].to_vec(), "shorter than a header"),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let e = Checkpoint::load(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap().params, init_params(1));
    }

    #[test]
    fn weights_or_momentum_that_are_not_finite_are_refused_naming_the_tensor() {
        let p = Path::new("x.safetensors");
        for (at, bad) in [(Param::Linear2Bias.start(10) + 3, f32::NAN), (0, f32::INFINITY)] {
            let mut ck = Checkpoint::new(init_params(1), Head::Sigmoid);
            ck.params[at] = bad;
            let e = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), p).unwrap_err().to_string();
            assert!(e.contains("weights must be finite"), "{e}");
            assert!(e.contains(if at == 0 { "conv1.weight" } else { "linear2.bias`: value 3" }), "{e}");
        }
        let mut ck = Checkpoint::new(init_params(1), Head::Sigmoid);
        let mut m = init_params(2);
        m[5] = f32::NEG_INFINITY;
        ck.momentum = Some(m);
        let e = Checkpoint::from_bytes(&ck.to_bytes().unwrap(), p).unwrap_err().to_string();
        assert!(e.contains("optimizer.momentum.conv1.weight") && e.contains("-inf"), "{e}");
    }

    #[test]
    fn a_changed_bit_in_any_tensor_is_caught_and_files_without_a_checksum_still_load() {
        let p = Path::new("x.safetensors");
        let mut ck = Checkpoint::new(init_params(1), Head::Sigmoid);
        ck.momentum = Some(init_params(2));
        let good = ck.to_bytes().unwrap();
        let (header_len, _) = SafeTensors::read_metadata(&good).unwrap();
        let data_start = 8 + header_len;
        // The first byte of the weights, one in the middle, and the last byte of the momentum: a flip in the
        // data is still valid safetensors, and only the checksum tells.
        for at in [data_start, (data_start + good.len()) / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            let e = Checkpoint::from_bytes(&bad, p).unwrap_err().to_string();
            assert!(e.starts_with("x.safetensors: damaged") && e.contains(CHECKSUM_KEY), "byte {at}: {e}");
        }
        // Written by another program: the same tensors and no checksum.
        let st = SafeTensors::deserialize(&good).unwrap();
        let plain = safetensors::serialize(st.tensors(), None).unwrap();
        let back = Checkpoint::from_bytes(&plain, p).unwrap();
        assert_eq!((back.params, back.momentum), (ck.params, ck.momentum));
    }
}
