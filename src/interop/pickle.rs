//! A restricted reader of Python's pickle format, enough for PyTorch `state_dict` files and nothing more.
//!
//! Like `torch.load(weights_only=True)`, it executes nothing: the only callables it knows are the handful a
//! state_dict needs (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the storage types), and any
//! other global, such as `os.system`, is refused before anything else happens. Every size it reads is checked
//! against the bytes that are actually there.

use std::collections::HashMap;

/// A value on the pickle machine's stack.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Insertion-ordered, like Python's dict.
    Dict(Vec<(Value, Value)>),
    /// An allowed global, e.g. `("torch", "FloatStorage")`.
    Global(String, String),
    /// A storage referenced by key (zip: file `data/KEY`; legacy: the key in the storage list).
    Storage {
        key: String,
        dtype: String,
        numel: usize,
    },
    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    Tensor {
        storage: Box<Value>,
        offset: usize,
        size: Vec<usize>,
        stride: Vec<usize>,
    },
    Mark,
}

/// The globals a state_dict may name; anything else is refused.
const ALLOWED: &[(&str, &str)] = &[
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch", "FloatStorage"),
    ("torch", "DoubleStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "LongStorage"),
    ("torch", "IntStorage"),
    ("torch", "ShortStorage"),
    ("torch", "CharStorage"),
    ("torch", "ByteStorage"),
    ("torch", "BoolStorage"),
];

/// How many value nodes a pickle may copy in total (memo and DUP copy values). A state_dict needs a few
/// hundred; the cap stops a crafted file from doubling a list until memory runs out.
const COPY_BUDGET: usize = 1_000_000;

/// Nodes in a value, counting at most `limit`.
fn weight(v: &Value, limit: usize) -> usize {
    let mut n = 1;
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Tuple(items) | Value::List(items) => Box::new(items.iter()),
        Value::Dict(pairs) => Box::new(pairs.iter().flat_map(|(k, v)| [k, v])),
        Value::Tensor { storage, .. } => Box::new(std::iter::once(storage.as_ref())),
        _ => Box::new(std::iter::empty()),
    };
    for c in children {
        if n > limit {
            break;
        }
        n += weight(c, limit - n);
    }
    n
}

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T, String> {
    Err(format!("pickle byte {pos}: {}", msg.into()))
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.data.len() - self.pos {
            return err(self.pos, format!("truncated: needs {n} more bytes, {} left", self.data.len() - self.pos));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("pickle byte {}: unterminated line", self.pos))?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(format!("{what} is not a non-negative integer: {v:?}")),
    }
}

fn as_usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|i| as_usize(i, what)).collect(),
        _ => Err(format!("{what} is not a tuple: {v:?}")),
    }
}

/// Applies an allowed callable.
fn call(func: &Value, args: Value, pos: usize) -> Result<Value, String> {
    let Value::Global(module, name) = func else { return err(pos, format!("cannot call {func:?}")) };
    let args = match args {
        Value::Tuple(a) => a,
        other => return err(pos, format!("arguments are not a tuple: {other:?}")),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return err(pos, "_rebuild_tensor needs (storage, offset, size, stride)");
            }
            if !matches!(args[0], Value::Storage { .. }) {
                return err(pos, "_rebuild_tensor's first argument is not a storage");
            }
            let size = as_usizes(&args[2], "tensor size")?;
            let stride = as_usizes(&args[3], "tensor stride")?;
            if size.len() != stride.len() {
                return err(pos, "tensor size and stride have different lengths");
            }
            Ok(Value::Tensor {
                storage: Box::new(args[0].clone()),
                offset: as_usize(&args[1], "storage offset")?,
                size,
                stride,
            })
        }
        _ => err(pos, format!("cannot call {module}.{name}")),
    }
}

/// Turns a persistent id into a storage reference. Zip format: `('storage', type, key, location, numel)`;
/// legacy: `('storage', type, key, location, numel, view_metadata)`.
fn persistent_load(pid: Value, pos: usize) -> Result<Value, String> {
    let Value::Tuple(items) = pid else { return err(pos, "persistent id is not a tuple") };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, dtype), key, _location, numel, ..] if tag == "storage" => {
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return err(pos, format!("storage key {other:?}")),
            };
            Ok(Value::Storage { key, dtype: dtype.clone(), numel: as_usize(numel, "storage size")? })
        }
        _ => err(pos, "unsupported persistent id (not a tensor storage)"),
    }
}

/// Runs one pickle from `data[start..]`; returns the value and the position after its STOP.
pub fn load(data: &[u8], start: usize) -> Result<(Value, usize), String> {
    let mut r = Reader { data, pos: start };
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<usize, Value> = HashMap::new();
    let mut budget = COPY_BUDGET;
    // Every copy of a value is paid for from the budget.
    let mut copy = |v: &Value, pos: usize| -> Result<Value, String> {
        let w = weight(v, budget + 1);
        if w > budget {
            return err(pos, "the pickle copies more values than any state_dict needs");
        }
        budget -= w;
        Ok(v.clone())
    };
    let pop =
        |stack: &mut Vec<Value>, pos: usize| stack.pop().ok_or_else(|| format!("pickle byte {pos}: stack underflow"));
    let pop_mark = |stack: &mut Vec<Value>, pos: usize| -> Result<Vec<Value>, String> {
        let m = stack.iter().rposition(|v| *v == Value::Mark).ok_or_else(|| format!("pickle byte {pos}: no mark"))?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let pos = r.pos;
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?; // PROTO n
            }
            0x95 => {
                r.take(8)?; // FRAME
            }
            b'.' => return Ok((pop(&mut stack, pos)?, r.pos)), // STOP
            b'(' => stack.push(Value::Mark),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(r.u8()? as i64)),
            b'M' => stack.push(Value::Int(r.u16()? as i64)),
            b'J' => {
                let b = r.take(4)?;
                stack.push(Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    stack.push(Value::Int(i64::MAX)); // only the legacy magic number is this long
                } else {
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1 << (8 * n);
                    }
                    stack.push(Value::Int(v));
                }
            }
            b'G' => {
                let b = r.take(8)?;
                stack.push(Value::Float(f64::from_be_bytes(b.try_into().unwrap())));
            }
            b'X' => {
                let n = r.u32()?;
                stack.push(Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            b'U' => {
                let n = r.u8()? as usize;
                stack.push(Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            b'T' => {
                let n = r.u32()?;
                stack.push(Value::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'B' => {
                let n = r.u32()?;
                stack.push(Value::Bytes(r.take(n)?.to_vec()));
            }
            b'q' | b'r' | 0x94 => {
                let i = match op {
                    b'q' => r.u8()? as usize,
                    b'r' => r.u32()?,
                    _ => memo.len(),
                };
                let top = stack.last().ok_or_else(|| format!("pickle byte {pos}: empty stack"))?;
                memo.insert(i, copy(top, pos)?);
            }
            b'h' | b'j' => {
                let i = if op == b'h' { r.u8()? as usize } else { r.u32()? };
                let v = memo.get(&i).ok_or_else(|| format!("pickle byte {pos}: memo {i} unset"))?;
                stack.push(copy(v, pos)?);
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                if !ALLOWED.iter().any(|(m, n)| *m == module && *n == name) {
                    return err(
                        pos,
                        format!(
                            "refusing to load: the file asks for `{module}.{name}`, which a state_dict of tensors never needs (nothing was executed)"
                        ),
                    );
                }
                stack.push(Value::Global(module, name));
            }
            0x93 => return err(pos, "refusing to load: STACK_GLOBAL is not used by state_dict files"),
            b't' => {
                let items = pop_mark(&mut stack, pos)?;
                stack.push(Value::Tuple(items));
            }
            0x85 => {
                let a = pop(&mut stack, pos)?;
                stack.push(Value::Tuple(vec![a]));
            }
            0x86 => {
                let b = pop(&mut stack, pos)?;
                let a = pop(&mut stack, pos)?;
                stack.push(Value::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = pop(&mut stack, pos)?;
                let b = pop(&mut stack, pos)?;
                let a = pop(&mut stack, pos)?;
                stack.push(Value::Tuple(vec![a, b, c]));
            }
            b'l' => {
                let items = pop_mark(&mut stack, pos)?;
                stack.push(Value::List(items));
            }
            b'a' => {
                let v = pop(&mut stack, pos)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return err(pos, "APPEND to a non-list"),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, pos)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return err(pos, "APPENDS to a non-list"),
                }
            }
            b'd' => {
                let items = pop_mark(&mut stack, pos)?;
                let mut pairs = Vec::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                stack.push(Value::Dict(pairs));
            }
            b's' => {
                let v = pop(&mut stack, pos)?;
                let k = pop(&mut stack, pos)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return err(pos, "SETITEM on a non-dict"),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack, pos)?;
                let Some(Value::Dict(d)) = stack.last_mut() else { return err(pos, "SETITEMS on a non-dict") };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'R' => {
                let args = pop(&mut stack, pos)?;
                let func = pop(&mut stack, pos)?;
                stack.push(call(&func, args, pos)?);
            }
            b'b' => {
                // BUILD: state for the object below; a state_dict's `_metadata` is not needed.
                pop(&mut stack, pos)?;
                if stack.is_empty() {
                    return err(pos, "BUILD on an empty stack");
                }
            }
            b'Q' => {
                let pid = pop(&mut stack, pos)?;
                stack.push(persistent_load(pid, pos)?);
            }
            b'0' => {
                pop(&mut stack, pos)?;
            }
            b'2' => {
                let top = stack.last().ok_or_else(|| format!("pickle byte {pos}: empty stack"))?;
                let top = copy(top, pos)?;
                stack.push(top);
            }
            other => return err(pos, format!("unsupported pickle opcode 0x{other:02x}")),
        }
    }
}
