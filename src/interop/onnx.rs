//! ONNX export: the model as a standard ONNX graph (opset 13), written with a small protocol-buffers encoder.
//!
//! `input [N,1,28,28]` -> Conv -> Relu -> AveragePool -> Conv -> Relu -> AveragePool -> Flatten -> Gemm -> Relu
//! -> Gemm -> Relu -> Gemm [-> Sigmoid] -> `output [N,10]`, the batch axis dynamic, the weights stored as
//! initializers under their `state_dict` names, bit for bit.

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::nn::model::{CONV1, CONV2, Head, IMAGE_SIZE};
use lenet5_core::nn::params::Param;

pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 7;
const FLOAT: i64 = 1;

/// Protocol-buffers wire format, just what ONNX needs.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u32) {
        self.varint(((field << 3) | wire) as u64);
    }
    fn int(&mut self, field: u32, v: i64) -> &mut Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u32, m: &Msg) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// AttributeProto with a list of ints (type INTS = 7).
fn ints_attr(name: &str, values: &[i64]) -> Msg {
    let mut a = Msg::default();
    a.str(1, name);
    for &v in values {
        a.int(8, v);
    }
    a.int(20, 7);
    a
}

/// AttributeProto with one int (type INT = 2).
fn int_attr(name: &str, v: i64) -> Msg {
    let mut a = Msg::default();
    a.str(1, name).int(3, v).int(20, 2);
    a
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str, attrs: Vec<Msg>) -> Msg {
    let mut n = Msg::default();
    for i in inputs {
        n.str(1, i);
    }
    n.str(2, output).str(3, name).str(4, op);
    for a in &attrs {
        n.msg(5, a);
    }
    n
}

/// ValueInfoProto for a float tensor; a `None` dimension is the dynamic batch axis.
fn value_info(name: &str, dims: &[Option<i64>]) -> Msg {
    let mut shape = Msg::default();
    for d in dims {
        let mut dim = Msg::default();
        match d {
            Some(v) => dim.int(1, *v),
            None => dim.str(2, "batch"),
        };
        shape.msg(1, &dim);
    }
    let mut tensor_type = Msg::default();
    tensor_type.int(1, FLOAT).msg(2, &shape);
    let mut ty = Msg::default();
    ty.msg(1, &tensor_type);
    let mut vi = Msg::default();
    vi.str(1, name).msg(2, &ty);
    vi
}

/// The ONNX model bytes for these weights.
pub fn export(ck: &Checkpoint) -> Vec<u8> {
    let mut graph = Msg::default();
    let conv = |d: &lenet5_core::nn::Conv2dDims| {
        let (k, p) = (d.kernel as i64, d.padding as i64);
        vec![ints_attr("kernel_shape", &[k, k]), ints_attr("pads", &[p, p, p, p]), ints_attr("strides", &[1, 1])]
    };
    let pool = || vec![ints_attr("kernel_shape", &[2, 2]), ints_attr("strides", &[2, 2])];
    let gemm = || vec![int_attr("transB", 1)];
    let last = if ck.head == Head::Sigmoid { "logits" } else { "output" };
    let nodes = [
        node("Conv", "conv1", &["input", "conv1.weight", "conv1.bias"], "conv1_out", conv(&CONV1)),
        node("Relu", "relu1", &["conv1_out"], "relu1_out", vec![]),
        node("AveragePool", "pool1", &["relu1_out"], "pool1_out", pool()),
        node("Conv", "conv2", &["pool1_out", "conv2.weight", "conv2.bias"], "conv2_out", conv(&CONV2)),
        node("Relu", "relu2", &["conv2_out"], "relu2_out", vec![]),
        node("AveragePool", "pool2", &["relu2_out"], "pool2_out", pool()),
        node("Flatten", "flatten", &["pool2_out"], "flat", vec![int_attr("axis", 1)]),
        node("Gemm", "linear1", &["flat", "linear1.weight", "linear1.bias"], "linear1_out", gemm()),
        node("Relu", "relu3", &["linear1_out"], "relu3_out", vec![]),
        node("Gemm", "linear2", &["relu3_out", "linear2.weight", "linear2.bias"], "linear2_out", gemm()),
        node("Relu", "relu4", &["linear2_out"], "relu4_out", vec![]),
        node("Gemm", "output", &["relu4_out", "output.weight", "output.bias"], last, gemm()),
    ];
    for n in &nodes {
        graph.msg(1, n);
    }
    if ck.head == Head::Sigmoid {
        graph.msg(1, &node("Sigmoid", "sigmoid", &["logits"], "output", vec![]));
    }
    graph.str(2, "lenet5");
    let classes = ck.classes();
    for p in Param::ALL {
        let (shape, r) = (p.shape(classes), p.range(classes));
        let mut t = Msg::default();
        for d in shape {
            t.int(1, d as i64);
        }
        t.int(2, FLOAT).str(8, p.name());
        let raw: Vec<u8> = ck.params[r].iter().flat_map(|v| v.to_le_bytes()).collect();
        t.bytes(9, &raw);
        graph.msg(5, &t);
    }
    let s = IMAGE_SIZE as i64;
    graph.msg(11, &value_info("input", &[None, Some(1), Some(s), Some(s)]));
    graph.msg(12, &value_info("output", &[None, Some(classes as i64)]));

    let mut opset = Msg::default();
    opset.str(1, "").int(2, OPSET);
    let mut model = Msg::default();
    model.int(1, IR_VERSION).str(2, "lenet5").str(3, env!("CARGO_PKG_VERSION")).msg(7, &graph).msg(8, &opset);
    for (k, v) in [
        ("head", ck.head.name().to_string()),
        ("class_names", serde_json::to_string(&ck.class_names).unwrap_or_default()),
    ] {
        let mut kv = Msg::default();
        kv.str(1, k).str(2, &v);
        model.msg(14, &kv);
    }
    model.0
}
