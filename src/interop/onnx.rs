//! ONNX export: the model as a standard ONNX graph (opset 13), written with a small protocol-buffers encoder.
//!
//! `input [N,1,28,28]` -> Conv -> Relu -> AveragePool -> Conv -> Relu -> AveragePool -> Flatten -> Gemm -> Relu
//! -> Gemm -> Relu -> Gemm [-> Sigmoid] -> `output [N,10]`, the batch axis dynamic, the weights stored as
//! initializers under their `state_dict` names, bit for bit.

use lenet5_core::checkpoint::Checkpoint;
use lenet5_core::nn::model::{CONV1, CONV2, Head, IMAGE_SIZE};
use lenet5_core::nn::params::Param;
use lenet5_core::quant::QuantModel;

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

/// TensorProto's data types.
const INT8: i64 = 3;
const INT32: i64 = 6;

/// `x` quantized to int8 at `scale` (zero point -128) and back: the int8 values the engine holds, as reals.
/// Returns the name of the dequantized tensor.
fn qdq(nodes: &mut Vec<Msg>, x: &str, scale: &str) -> String {
    let (q, dq) = (format!("{x}_q"), format!("{x}_dq"));
    nodes.push(node("QuantizeLinear", &q, &[x, scale, "zero_point"], &q, vec![]));
    nodes.push(node("DequantizeLinear", &dq, &[&q, scale, "zero_point"], &dq, vec![]));
    dq
}

/// A 2x2 average pool of int8 values at `act`'s scale, rounded as the engine (and TFLite) round it: halves up.
/// The mean of four int8 values is a multiple of a quarter of the scale; an eighth added before
/// `QuantizeLinear` (which rounds halves to even) moves each half up and leaves every other value's rounding
/// as it was.
fn average_pool(nodes: &mut Vec<Msg>, name: &str, x: &str, act: &str) -> String {
    let (mean, nudged) = (format!("{name}_mean"), format!("{name}_nudged"));
    nodes.push(node("AveragePool", name, &[x], &mean, pool_attrs()));
    nodes.push(node("Add", &nudged, &[&mean, &format!("{act}.eighth")], &nudged, vec![]));
    qdq(nodes, &nudged, &format!("{act}.scale"))
}

/// An initializer: a constant tensor of `dims` (none for a scalar), its values as little-endian `raw` bytes.
fn initializer(name: &str, dims: &[usize], data_type: i64, raw: &[u8]) -> Msg {
    let mut t = Msg::default();
    for &d in dims {
        t.int(1, d as i64);
    }
    t.int(2, data_type).str(8, name).bytes(9, raw);
    t
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The attributes of LeNet-5's layers.
fn conv_attrs(d: &lenet5_core::nn::Conv2dDims) -> Vec<Msg> {
    let (k, p) = (d.kernel as i64, d.padding as i64);
    vec![ints_attr("kernel_shape", &[k, k]), ints_attr("pads", &[p, p, p, p]), ints_attr("strides", &[1, 1])]
}

fn pool_attrs() -> Vec<Msg> {
    vec![ints_attr("kernel_shape", &[2, 2]), ints_attr("strides", &[2, 2])]
}

fn gemm_attrs() -> Vec<Msg> {
    vec![int_attr("transB", 1)]
}

/// The model around `graph` (its nodes and initializers already in it): inputs, outputs, opset and the head
/// and class names as metadata.
fn model(mut graph: Msg, head: Head, class_names: &[String]) -> Vec<u8> {
    graph.str(2, "lenet5");
    let s = IMAGE_SIZE as i64;
    graph.msg(11, &value_info("input", &[None, Some(1), Some(s), Some(s)]));
    graph.msg(12, &value_info("output", &[None, Some(class_names.len() as i64)]));
    let mut opset = Msg::default();
    opset.str(1, "").int(2, OPSET);
    let mut model = Msg::default();
    model.int(1, IR_VERSION).str(2, "lenet5").str(3, env!("CARGO_PKG_VERSION")).msg(7, &graph).msg(8, &opset);
    for (k, v) in
        [("head", head.name().to_string()), ("class_names", serde_json::to_string(class_names).unwrap_or_default())]
    {
        let mut kv = Msg::default();
        kv.str(1, k).str(2, &v);
        model.msg(14, &kv);
    }
    model.0
}

/// The ONNX model bytes for these weights.
pub fn export(ck: &Checkpoint) -> Vec<u8> {
    let mut graph = Msg::default();
    let last = if ck.head == Head::Sigmoid { "logits" } else { "output" };
    let nodes = [
        node("Conv", "conv1", &["input", "conv1.weight", "conv1.bias"], "conv1_out", conv_attrs(&CONV1)),
        node("Relu", "relu1", &["conv1_out"], "relu1_out", vec![]),
        node("AveragePool", "pool1", &["relu1_out"], "pool1_out", pool_attrs()),
        node("Conv", "conv2", &["pool1_out", "conv2.weight", "conv2.bias"], "conv2_out", conv_attrs(&CONV2)),
        node("Relu", "relu2", &["conv2_out"], "relu2_out", vec![]),
        node("AveragePool", "pool2", &["relu2_out"], "pool2_out", pool_attrs()),
        node("Flatten", "flatten", &["pool2_out"], "flat", vec![int_attr("axis", 1)]),
        node("Gemm", "linear1", &["flat", "linear1.weight", "linear1.bias"], "linear1_out", gemm_attrs()),
        node("Relu", "relu3", &["linear1_out"], "relu3_out", vec![]),
        node("Gemm", "linear2", &["relu3_out", "linear2.weight", "linear2.bias"], "linear2_out", gemm_attrs()),
        node("Relu", "relu4", &["linear2_out"], "relu4_out", vec![]),
        node("Gemm", "output", &["relu4_out", "output.weight", "output.bias"], last, gemm_attrs()),
    ];
    for n in &nodes {
        graph.msg(1, n);
    }
    if ck.head == Head::Sigmoid {
        graph.msg(1, &node("Sigmoid", "sigmoid", &["logits"], "output", vec![]));
    }
    let classes = ck.classes();
    for p in Param::ALL {
        graph.msg(5, &initializer(p.name(), &p.shape(classes), FLOAT, &f32_bytes(&ck.params[p.range(classes)])));
    }
    model(graph, ck.head, &ck.class_names)
}

/// The ONNX model of an int8 network, in the QDQ form ONNX Runtime and TensorRT run as int8: each layer's int8
/// weights and int32 biases are initializers dequantized per output channel (`DequantizeLinear`, axis 0), and
/// every activation passes through `QuantizeLinear`/`DequantizeLinear` at its int8 scale and zero point (-128),
/// the input at 1/255. The scores leave as the last layer's float output. A runtime rounds as ONNX defines
/// (half to even, in float), where the engine follows TFLite's fixed point, so a score can differ from the
/// engine's by a unit of the last activations' rounding now and then.
pub fn export_int8(q: &QuantModel) -> Vec<u8> {
    let mut graph = Msg::default();
    let [a1, a2, a3, a4] = q.activation_scales;
    let input_scale = QuantModel::INPUT_SCALE;
    // The activations' scales, and the int8 zero point all of them share (each follows a ReLU, or is the input).
    for (name, scale) in [("input", input_scale), ("act1", a1), ("act2", a2), ("act3", a3), ("act4", a4)] {
        graph.msg(5, &initializer(&format!("{name}.scale"), &[], FLOAT, &scale.to_le_bytes()));
    }
    for (name, scale) in [("act1", a1), ("act2", a2)] {
        graph.msg(5, &initializer(&format!("{name}.eighth"), &[], FLOAT, &(scale / 8.0).to_le_bytes()));
    }
    graph.msg(5, &initializer("zero_point", &[], INT8, &[(-128i8) as u8]));
    let layer_inputs = [input_scale, a1, a2, a3, a4];
    for (l, (name, weight, bias)) in q.layers().into_iter().enumerate() {
        let scales = &q.weight_scales[l];
        let outputs = bias.len();
        let dims = match l {
            0 => vec![outputs, 1, 5, 5],
            1 => vec![outputs, weight.len() / outputs / 25, 5, 5],
            _ => vec![outputs, weight.len() / outputs],
        };
        let weight_bytes: Vec<u8> = weight.iter().map(|&w| w as u8).collect();
        graph.msg(5, &initializer(&format!("{name}.weight_quantized"), &dims, INT8, &weight_bytes));
        graph.msg(5, &initializer(&format!("{name}.weight_scale"), &[outputs], FLOAT, &f32_bytes(scales)));
        graph.msg(5, &initializer(&format!("{name}.weight_zero_point"), &[outputs], INT8, &vec![0u8; outputs]));
        let bias_scales: Vec<f32> = scales.iter().map(|s| s * layer_inputs[l]).collect();
        let bias_bytes: Vec<u8> = bias.iter().flat_map(|b| b.to_le_bytes()).collect();
        graph.msg(5, &initializer(&format!("{name}.bias_quantized"), &[outputs], INT32, &bias_bytes));
        graph.msg(5, &initializer(&format!("{name}.bias_scale"), &[outputs], FLOAT, &f32_bytes(&bias_scales)));
        graph.msg(5, &initializer(&format!("{name}.bias_zero_point"), &[outputs], INT32, &vec![0u8; 4 * outputs]));
        for part in ["weight", "bias"] {
            let inputs = [
                format!("{name}.{part}_quantized"),
                format!("{name}.{part}_scale"),
                format!("{name}.{part}_zero_point"),
            ];
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            graph.msg(
                1,
                &node(
                    "DequantizeLinear",
                    &format!("{name}.{part}_dq"),
                    &inputs,
                    &format!("{name}.{part}"),
                    vec![int_attr("axis", 0)],
                ),
            );
        }
    }
    let mut nodes = Vec::new();
    let input = qdq(&mut nodes, "input", "input.scale");
    nodes.push(node("Conv", "conv1", &[&input, "conv1.weight", "conv1.bias"], "conv1_out", conv_attrs(&CONV1)));
    nodes.push(node("Relu", "relu1", &["conv1_out"], "relu1", vec![]));
    let relu1 = qdq(&mut nodes, "relu1", "act1.scale");
    let pool1 = average_pool(&mut nodes, "pool1", &relu1, "act1");
    nodes.push(node("Conv", "conv2", &[&pool1, "conv2.weight", "conv2.bias"], "conv2_out", conv_attrs(&CONV2)));
    nodes.push(node("Relu", "relu2", &["conv2_out"], "relu2", vec![]));
    let relu2 = qdq(&mut nodes, "relu2", "act2.scale");
    let pool2 = average_pool(&mut nodes, "pool2", &relu2, "act2");
    nodes.push(node("Flatten", "flatten", &[&pool2], "flat", vec![int_attr("axis", 1)]));
    nodes.push(node("Gemm", "linear1", &["flat", "linear1.weight", "linear1.bias"], "linear1_out", gemm_attrs()));
    nodes.push(node("Relu", "relu3", &["linear1_out"], "relu3", vec![]));
    let relu3 = qdq(&mut nodes, "relu3", "act3.scale");
    nodes.push(node("Gemm", "linear2", &[&relu3, "linear2.weight", "linear2.bias"], "linear2_out", gemm_attrs()));
    nodes.push(node("Relu", "relu4", &["linear2_out"], "relu4", vec![]));
    let relu4 = qdq(&mut nodes, "relu4", "act4.scale");
    let last = if q.head == Head::Sigmoid { "logits" } else { "output" };
    nodes.push(node("Gemm", "output", &[&relu4, "output.weight", "output.bias"], last, gemm_attrs()));
    if q.head == Head::Sigmoid {
        nodes.push(node("Sigmoid", "sigmoid", &["logits"], "output", vec![]));
    }
    for n in &nodes {
        graph.msg(1, n);
    }
    model(graph, q.head, &q.class_names)
}
