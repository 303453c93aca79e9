//! PyTorch checkpoint files (`torch.save(model.state_dict(), "x.pth")`): the zip format (`data.pkl` plus one
//! file per storage) and the older single-stream format, read through the restricted [`super::pickle`] reader.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::pickle::{self, Value};
use lenet5_core::base::{MAX_CLASSES, MIN_CLASSES};
use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::error::{Error, IoContext, Result};
use lenet5_core::nn::model::Head;
use lenet5_core::nn::params::{Param, num_params};

/// Whether `bytes` look like a PyTorch file (zip, or a legacy pickle) rather than safetensors.
pub fn is_pth(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(&[0x80, 0x02, 0x8a, 0x0a])
}

/// One pickle from `data[start..]` (see [`pickle::load`]), its error as text for the file's error.
fn unpickle(data: &[u8], start: usize) -> std::result::Result<(Value, usize), String> {
    pickle::load(data, start).map_err(|e| e.to_string())
}

/// Bytes per element of a storage type, for the ones a float32 state_dict could mention.
fn element_size(dtype: &str) -> usize {
    match dtype {
        "DoubleStorage" | "LongStorage" => 8,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "CharStorage" | "ByteStorage" | "BoolStorage" => 1,
        _ => 4,
    }
}

/// The number of classes of a state_dict: the length of its output bias.
fn output_classes(tensors: &HashMap<String, Value>, path: &Path) -> Result<usize> {
    match tensors.get(Param::OutputBias.name()) {
        Some(Value::Tensor { size, .. }) if size.len() == 1 && (MIN_CLASSES..=MAX_CLASSES).contains(&size[0]) => {
            Ok(size[0])
        }
        _ => {
            let expected = format!("a tensor of shape [K], K from {MIN_CLASSES} to {MAX_CLASSES} classes");
            Err(Error::tensor(path, Param::OutputBias.name(), expected))
        }
    }
}

/// Reads a `.pth` file into a checkpoint with the given head.
pub fn read_pth(path: &Path, head: Head) -> Result<Checkpoint> {
    let bytes = read_capped(path)?;
    from_pth_bytes(&bytes, path, head)
}

/// [`read_pth`] from memory; `path` names the source in errors.
pub fn from_pth_bytes(bytes: &[u8], path: &Path, head: Head) -> Result<Checkpoint> {
    let fail = |m: String| Error::format(path, m);
    let (root, storages) =
        if bytes.starts_with(b"PK\x03\x04") { read_zip(bytes) } else { read_legacy(bytes) }.map_err(&fail)?;
    let Value::Dict(entries) = root else {
        return Err(fail("not a state_dict: the file holds something other than a dict of tensors".into()));
    };
    let mut tensors: HashMap<String, Value> = HashMap::new();
    for (k, v) in entries {
        if let Value::Str(name) = k {
            tensors.insert(name, v);
        }
    }
    let expected: Vec<&str> = Param::ALL.iter().map(|p| p.name()).collect();
    let missing: Vec<&str> = expected.iter().copied().filter(|n| !tensors.contains_key(*n)).collect();
    let extra: Vec<&String> = tensors.keys().filter(|k| !expected.contains(&k.as_str())).collect();
    if !missing.is_empty() || !extra.is_empty() {
        let mut extra: Vec<String> = extra.iter().map(|s| s.chars().take(60).collect()).collect();
        extra.sort();
        let extra_count = extra.len();
        extra.truncate(12);
        let more = if extra_count > 12 { format!(" and {} more", extra_count - 12) } else { String::new() };
        return Err(fail(format!("not a LeNet-5 state_dict: missing {missing:?}, unexpected {extra:?}{more}")));
    }
    let classes = output_classes(&tensors, path)?;
    let mut params = vec![0.0f32; num_params(classes)];
    for p in Param::ALL {
        let (name, shape, range) = (p.name(), p.shape(classes), p.range(classes));
        let Some(Value::Tensor { storage, offset, size, stride }) = tensors.get(name) else {
            return Err(Error::tensor(path, name, "is not a tensor"));
        };
        if *size != shape {
            return Err(Error::tensor(path, name, format!("shape {size:?}, expected {shape:?}")));
        }
        let Value::Storage { key, dtype, numel } = storage.as_ref() else { unreachable!("checked by the reader") };
        if dtype != "FloatStorage" {
            return Err(Error::tensor(path, name, format!("{dtype}, expected float32 (FloatStorage)")));
        }
        let data = storages.get(key).ok_or_else(|| Error::tensor(path, name, format!("storage {key} missing")))?;
        // Every size is checked arithmetic: the numbers come from the file.
        if numel.checked_mul(4).is_none_or(|bytes| data.len() < bytes) {
            let holds = data.len();
            return Err(Error::tensor(path, name, format!("storage {key} holds {holds} bytes, not {numel} floats")));
        }
        // The last element any index reaches must lie inside the storage (the shape has no zero dimension).
        let last = size
            .iter()
            .zip(stride)
            .try_fold(*offset, |at, (d, s)| (d - 1).checked_mul(*s).and_then(|step| at.checked_add(step)));
        if last.is_none_or(|last| last >= *numel) {
            let reach = last.map_or("beyond any size".to_string(), |l| format!("element {l}"));
            return Err(Error::tensor(path, name, format!("view reaches {reach} of a {numel}-element storage")));
        }
        let out = &mut params[range];
        let mut index = vec![0usize; size.len()];
        for o in out.iter_mut() {
            let e = offset + index.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
            *o = f32::from_le_bytes(data[e * 4..e * 4 + 4].try_into().unwrap());
            // Row-major increment of the multi-index.
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < size[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::tensor(path, name, format!("value {i} is {}; weights must be finite", out[i])));
        }
    }
    let mut ck = Checkpoint::new(params, head);
    ck.metadata.insert("source".into(), path.display().to_string());
    Ok(ck)
}

type Storages = HashMap<String, Vec<u8>>;

fn read_zip(bytes: &[u8]) -> std::result::Result<(Value, Storages), String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a readable zip ({e})"))?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).and_then(|n| n.ok()).map(|n| n.to_string()))
        .find(|n| n.ends_with("data.pkl"))
        .ok_or("zip without data.pkl: not a PyTorch checkpoint")?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read = |name: &str| -> std::result::Result<Option<Vec<u8>>, String> {
        let Ok(mut f) = zip.by_name(name) else { return Ok(None) };
        // The size an entry declares is not trusted: the bytes are read as they come, up to a bound.
        let mut v = Vec::new();
        (&mut f).take(MAX_ENTRY + 1).read_to_end(&mut v).map_err(|e| format!("{name}: {e}"))?;
        if v.len() as u64 > MAX_ENTRY {
            return Err(format!("{name} is larger than {MAX_ENTRY} bytes"));
        }
        Ok(Some(v))
    };
    if let Some(order) = read(&format!("{prefix}byteorder"))?.filter(|o| o != b"little") {
        return Err(format!("byte order {:?} is not supported", String::from_utf8_lossy(&order)));
    }
    let data = read(&pkl)?.ok_or("data.pkl unreadable")?;
    let (root, _) = unpickle(&data, 0)?;
    let mut storages = HashMap::new();
    for key in storage_keys(&root) {
        if let Some(d) = read(&format!("{prefix}data/{key}"))? {
            storages.insert(key, d);
        }
    }
    Ok((root, storages))
}

/// Storage keys referenced by the tensors of a state_dict.
fn storage_keys(root: &Value) -> Vec<String> {
    let Value::Dict(entries) = root else { return Vec::new() };
    entries
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Tensor { storage, .. } => match storage.as_ref() {
                Value::Storage { key, .. } => Some(key.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The format before PyTorch 1.6: magic, protocol, system info and the object as consecutive pickles, then the
/// list of storage keys, then each storage as a little-endian u64 element count followed by its bytes.
fn read_legacy(bytes: &[u8]) -> std::result::Result<(Value, Storages), String> {
    // A pickle stream of protocol 2 or later opens with PROTO (0x80); torch.save writes protocol 2 unless told
    // otherwise, and the reader knows none of the older protocols' text opcodes.
    if bytes.first() != Some(&0x80) {
        let safetensors = bytes.len() > 8 && bytes[8] == b'{';
        return Err(if safetensors {
            "a safetensors file, not a PyTorch checkpoint: use it as it is (--weights, --init-weights)".into()
        } else {
            "not a PyTorch checkpoint: expected a zip archive (torch.save) or a pickle stream of protocol 2 or later \
             (its legacy format)"
                .into()
        });
    }
    let (magic, pos) = unpickle(bytes, 0)?;
    if magic != Value::Int(i64::MAX) {
        return Err("not a PyTorch checkpoint (neither zip nor the legacy magic number)".into());
    }
    let (_protocol, pos) = unpickle(bytes, pos)?;
    let (_sys_info, pos) = unpickle(bytes, pos)?;
    let (root, pos) = unpickle(bytes, pos)?;
    let (keys, mut pos) = unpickle(bytes, pos)?;
    let Value::List(keys) = keys else { return Err("legacy checkpoint without a storage list".into()) };
    let sizes: HashMap<String, usize> = storage_sizes(&root);
    let mut storages = HashMap::new();
    for key in keys {
        let Value::Str(key) = key else { return Err("storage key is not a string".into()) };
        if bytes.len() - pos < 8 {
            return Err(format!("truncated before storage {key}"));
        }
        let numel = u64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap()) as usize;
        pos += 8;
        let elem = sizes.get(&key).copied().unwrap_or(4);
        let len =
            numel.checked_mul(elem).filter(|&l| l <= bytes.len() - pos).ok_or(format!("storage {key} is truncated"))?;
        storages.insert(key, bytes[pos..pos + len].to_vec());
        pos += len;
    }
    Ok((root, storages))
}

fn storage_sizes(root: &Value) -> HashMap<String, usize> {
    let Value::Dict(entries) = root else { return HashMap::new() };
    entries
        .iter()
        .filter_map(|(_, v)| match v {
            Value::Tensor { storage, .. } => match storage.as_ref() {
                Value::Storage { key, dtype, .. } => Some((key.clone(), element_size(dtype))),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Loads weights from either format: a `.pth` PyTorch file or one of our safetensors checkpoints.
pub fn load_weights(path: &Path, head_for_pth: Head) -> Result<Checkpoint> {
    let mut start = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(4).read_to_end(&mut start)).at(path)?;
    if is_pth(&start) { read_pth(path, head_for_pth) } else { Ok(Checkpoint::load(path)?) }
}

/// Largest `.pth` file read: a LeNet-5 of 1,000 classes saves to well under 1 MB.
pub const MAX_PTH_BYTES: u64 = 64 << 20;
/// Largest entry read from a `.pth` zip.
const MAX_ENTRY: u64 = 64 << 20;

/// The bytes of the file at `path`, which must be at most [`MAX_PTH_BYTES`]; a larger (or endless) one is
/// refused after that many.
fn read_capped(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_PTH_BYTES + 1).read_to_end(&mut bytes)).at(path)?;
    if bytes.len() as u64 > MAX_PTH_BYTES {
        return Err(Error::format(path, format!("larger than {MAX_PTH_BYTES} bytes: not a LeNet-5 checkpoint")));
    }
    Ok(bytes)
}
