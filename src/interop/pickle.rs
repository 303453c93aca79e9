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
/// How deeply values may nest. A state_dict nests four deep; a million nested tuples fit in 2 MB of pickle,
/// and building, copying, comparing, printing or dropping them recursively would overflow the stack.
pub const MAX_DEPTH: usize = 64;
/// Values a pickle may create, beyond one for every 8 of its bytes: each takes some 60 bytes of memory, so this
/// keeps memory within a small multiple of the file's size (a state_dict makes a few hundred).
const NODES_FREE: usize = 10_000;

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

/// Why a pickle was refused: the byte where it went wrong, and what was wrong there.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("pickle byte {pos}: {reason}")]
pub struct PickleError {
    pub pos: usize,
    pub reason: String,
}

fn err<T>(pos: usize, reason: impl Into<String>) -> Result<T, PickleError> {
    Err(PickleError { pos, reason: reason.into() })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        if n > self.data.len() - self.pos {
            return err(self.pos, format!("truncated: needs {n} more bytes, {} left", self.data.len() - self.pos));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self) -> Result<usize, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else { return err(self.pos, "unterminated line") };
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }
    /// `n` bytes as text.
    fn text(&mut self, n: usize) -> Result<Value, PickleError> {
        Ok(Value::Str(String::from_utf8_lossy(self.take(n)?).into_owned()))
    }
    /// LONG1's little-endian two's complement of `n` bytes.
    fn long(&mut self) -> Result<Value, PickleError> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        if n > 8 {
            return Ok(Value::Int(i64::MAX)); // only the legacy magic number is this long
        }
        let mut v: i64 = 0;
        for (i, &x) in b.iter().enumerate() {
            v |= (x as i64) << (8 * i);
        }
        if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
            v -= 1 << (8 * n);
        }
        Ok(Value::Int(v))
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        _ => Err(format!("{what} is not a non-negative integer: {}", brief(v))),
    }
}

fn as_usizes(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(items) | Value::List(items) => items.iter().map(|i| as_usize(i, what)).collect(),
        _ => Err(format!("{what} is not a tuple: {}", brief(v))),
    }
}

/// Applies an allowed callable.
fn call(func: &Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = func else { return Err(format!("cannot call {}", brief(func))) };
    let args = match args {
        Value::Tuple(a) => a,
        other => return Err(format!("arguments are not a tuple: {}", brief(&other))),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            if args.len() < 4 {
                return Err("_rebuild_tensor needs (storage, offset, size, stride)".into());
            }
            if !matches!(args[0], Value::Storage { .. }) {
                return Err("_rebuild_tensor's first argument is not a storage".into());
            }
            let size = as_usizes(&args[2], "tensor size")?;
            let stride = as_usizes(&args[3], "tensor stride")?;
            if size.len() != stride.len() {
                return Err("tensor size and stride have different lengths".into());
            }
            Ok(Value::Tensor {
                storage: Box::new(args[0].clone()),
                offset: as_usize(&args[1], "storage offset")?,
                size,
                stride,
            })
        }
        _ => Err(format!("cannot call {module}.{name}")),
    }
}

/// Turns a persistent id into a storage reference. Zip format: `('storage', type, key, location, numel)`;
/// legacy: `('storage', type, key, location, numel, view_metadata)`.
fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else { return Err("persistent id is not a tuple".into()) };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, dtype), key, _location, numel, ..] if tag == "storage" => {
            let key = match key {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("storage key {}", brief(other))),
            };
            Ok(Value::Storage { key, dtype: dtype.clone(), numel: as_usize(numel, "storage size")? })
        }
        _ => Err("unsupported persistent id (not a tensor storage)".into()),
    }
}

/// Runs one pickle from `data[start..]`; returns the value and the position after its STOP.
pub fn load(data: &[u8], start: usize) -> Result<(Value, usize), PickleError> {
    let nodes = NODES_FREE + data.len().saturating_sub(start) / 8;
    let r = Reader { data, pos: start };
    let mut machine = Machine { r, stack: Vec::new(), memo: HashMap::new(), budget: COPY_BUDGET, nodes };
    loop {
        let pos = machine.r.pos;
        match machine.r.u8()? {
            b'.' => return Ok((machine.pop(pos)?.0, machine.r.pos)), // STOP
            op => machine.step(op, pos)?,
        }
    }
}

/// A value and how deeply it nests (1 for one that holds no other).
type Nested = (Value, usize);

/// The pickle machine: its stack, its memo, and what it may still copy and create.
struct Machine<'a> {
    r: Reader<'a>,
    stack: Vec<Nested>,
    memo: HashMap<usize, Nested>,
    /// Value nodes it may still copy (see [`COPY_BUDGET`]).
    budget: usize,
    /// Values it may still create (see [`NODES_FREE`]).
    nodes: usize,
}

impl Machine<'_> {
    /// Runs opcode `op`, read at byte `pos`.
    fn step(&mut self, op: u8, pos: usize) -> Result<(), PickleError> {
        if let Some(v) = self.literal(op)? {
            return self.push(v, 1, pos);
        }
        match op {
            0x80 => drop(self.r.u8()?),    // PROTO n
            0x95 => drop(self.r.take(8)?), // FRAME
            b'q' | b'r' | 0x94 | b'h' | b'j' | b'2' | b'0' => self.memo_and_stack(op, pos)?,
            b't' | 0x85..=0x87 | b'l' | b'a' | b'e' | b'd' | b's' | b'u' => self.containers(op, pos)?,
            b'c' | 0x93 | b'R' | b'b' | b'Q' => self.objects(op, pos)?,
            other => return err(pos, format!("unsupported pickle opcode 0x{other:02x}")),
        }
        Ok(())
    }

    /// Pushes `v`, which nests `depth` deep, within the bounds on depth and on the values made.
    fn push(&mut self, v: Value, depth: usize, pos: usize) -> Result<(), PickleError> {
        if depth > MAX_DEPTH {
            return err(pos, format!("values nested more than {MAX_DEPTH} deep, which no state_dict is"));
        }
        if self.nodes == 0 {
            return err(pos, "the pickle makes more values than its size allows a state_dict");
        }
        self.nodes -= 1;
        self.stack.push((v, depth));
        Ok(())
    }

    /// The value that opcode `op` pushes by itself (a mark, an empty container, a number, a string), if it is
    /// one of those.
    fn literal(&mut self, op: u8) -> Result<Option<Value>, PickleError> {
        let r = &mut self.r;
        Ok(Some(match op {
            b'(' => Value::Mark,
            b'}' => Value::Dict(Vec::new()),
            b']' => Value::List(Vec::new()),
            b')' => Value::Tuple(Vec::new()),
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'K' => Value::Int(r.u8()? as i64),
            b'M' => Value::Int(r.u16()? as i64),
            b'J' => {
                let b = r.take(4)?;
                Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
            }
            0x8a => r.long()?,
            b'G' => Value::Float(f64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"))),
            b'X' | b'T' => {
                let n = r.u32()?;
                r.text(n)?
            }
            0x8c | b'U' => {
                let n = r.u8()? as usize;
                r.text(n)?
            }
            b'C' => {
                let n = r.u8()? as usize;
                Value::Bytes(r.take(n)?.to_vec())
            }
            b'B' => {
                let n = r.u32()?;
                Value::Bytes(r.take(n)?.to_vec())
            }
            _ => return Ok(None),
        }))
    }

    /// MEMOIZE, PUT, GET, DUP and POP: copies between the memo and the stack, each paid for from the budget.
    fn memo_and_stack(&mut self, op: u8, pos: usize) -> Result<(), PickleError> {
        match op {
            b'q' | b'r' | 0x94 => {
                let i = match op {
                    b'q' => self.r.u8()? as usize,
                    b'r' => self.r.u32()?,
                    _ => self.memo.len(),
                };
                let Some((top, depth)) = self.stack.last() else { return err(pos, "empty stack") };
                let v = copy(&mut self.budget, top, pos)?;
                self.memo.insert(i, (v, *depth));
            }
            b'h' | b'j' => {
                let i = if op == b'h' { self.r.u8()? as usize } else { self.r.u32()? };
                let Some((v, depth)) = self.memo.get(&i) else { return err(pos, format!("memo {i} unset")) };
                let (v, depth) = (copy(&mut self.budget, v, pos)?, *depth);
                self.push(v, depth, pos)?;
            }
            b'2' => {
                let Some((top, depth)) = self.stack.last() else { return err(pos, "empty stack") };
                let (top, depth) = (copy(&mut self.budget, top, pos)?, *depth);
                self.push(top, depth, pos)?;
            }
            _ => drop(self.pop(pos)?),
        }
        Ok(())
    }

    /// Tuples, lists and dicts, built from the top of the stack.
    fn containers(&mut self, op: u8, pos: usize) -> Result<(), PickleError> {
        match op {
            b't' | b'l' | b'd' => {
                let (items, depth) = self.pop_mark(pos)?;
                let v = match op {
                    b't' => Value::Tuple(items),
                    b'l' => Value::List(items),
                    _ => Value::Dict(pairs(items)),
                };
                self.push(v, depth + 1, pos)?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    return err(pos, "stack underflow");
                }
                let (items, depth) = unzip(self.stack.split_off(self.stack.len() - n));
                self.push(Value::Tuple(items), depth + 1, pos)?;
            }
            b'a' | b'e' => {
                let (items, depth) = if op == b'a' {
                    let (v, d) = self.pop(pos)?;
                    (vec![v], d)
                } else {
                    self.pop_mark(pos)?
                };
                let Some((Value::List(list), list_depth)) = self.stack.last_mut() else {
                    return err(pos, "APPEND to a non-list");
                };
                list.extend(items);
                *list_depth = (*list_depth).max(depth + 1);
                if *list_depth > MAX_DEPTH {
                    return err(pos, format!("values nested more than {MAX_DEPTH} deep, which no state_dict is"));
                }
            }
            _ => {
                let (items, depth) = if op == b's' {
                    let (v, dv) = self.pop(pos)?;
                    let (k, dk) = self.pop(pos)?;
                    (vec![k, v], dv.max(dk))
                } else {
                    self.pop_mark(pos)?
                };
                let Some((Value::Dict(dict), dict_depth)) = self.stack.last_mut() else {
                    return err(pos, "SETITEM on a non-dict");
                };
                dict.extend(pairs(items));
                *dict_depth = (*dict_depth).max(depth + 1);
                if *dict_depth > MAX_DEPTH {
                    return err(pos, format!("values nested more than {MAX_DEPTH} deep, which no state_dict is"));
                }
            }
        }
        Ok(())
    }

    /// GLOBAL (only the allowed ones), REDUCE, BUILD and persistent ids: what a state_dict makes of tensors.
    fn objects(&mut self, op: u8, pos: usize) -> Result<(), PickleError> {
        let at = |reason: String| PickleError { pos, reason };
        match op {
            b'c' => {
                let module = self.r.line()?;
                let name = self.r.line()?;
                if !ALLOWED.iter().any(|(m, n)| *m == module && *n == name) {
                    return err(
                        pos,
                        format!(
                            "refusing to load: the file asks for `{}.{}`, which a state_dict of tensors never needs (nothing was executed)",
                            shorten(&module),
                            shorten(&name)
                        ),
                    );
                }
                self.push(Value::Global(module, name), 1, pos)?;
            }
            0x93 => return err(pos, "refusing to load: STACK_GLOBAL is not used by state_dict files"),
            b'R' => {
                let (args, depth) = self.pop(pos)?;
                let (func, _) = self.pop(pos)?;
                self.push(call(&func, args).map_err(at)?, depth + 1, pos)?;
            }
            b'b' => {
                // BUILD: state for the object below; a state_dict's `_metadata` is not needed.
                self.pop(pos)?;
                if self.stack.is_empty() {
                    return err(pos, "BUILD on an empty stack");
                }
            }
            _ => {
                let (pid, depth) = self.pop(pos)?;
                self.push(persistent_load(pid).map_err(at)?, depth + 1, pos)?;
            }
        }
        Ok(())
    }

    fn pop(&mut self, pos: usize) -> Result<Nested, PickleError> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => err(pos, "stack underflow"),
        }
    }

    /// The values above the topmost mark, which is removed, and the deepest nesting among them.
    fn pop_mark(&mut self, pos: usize) -> Result<(Vec<Value>, usize), PickleError> {
        let Some(m) = self.stack.iter().rposition(|(v, _)| matches!(v, Value::Mark)) else {
            return err(pos, "no mark");
        };
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(unzip(items))
    }
}

/// Values without their depths, and the deepest of those (0 for none).
fn unzip(items: Vec<Nested>) -> (Vec<Value>, usize) {
    let depth = items.iter().map(|(_, d)| *d).max().unwrap_or(0);
    (items.into_iter().map(|(v, _)| v).collect(), depth)
}

/// A value as an error message shows it: the start of its debug form.
fn brief(v: &Value) -> String {
    shorten(&format!("{v:?}"))
}

/// At most 100 characters of `text`, for an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// A copy of `v`, paid for from `budget`.
fn copy(budget: &mut usize, v: &Value, pos: usize) -> Result<Value, PickleError> {
    let w = weight(v, *budget + 1);
    if w > *budget {
        return err(pos, "the pickle copies more values than any state_dict needs");
    }
    *budget -= w;
    Ok(v.clone())
}

/// `[k0, v0, k1, v1, ...]` as pairs (an odd last item is dropped).
fn pairs(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut it = items.into_iter();
    let mut pairs = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        pairs.push((k, v));
    }
    pairs
}
