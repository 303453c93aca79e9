//! Nothing but a home for `tests/onnx.rs`: the ONNX models `lenet5 export --onnx` writes, run in tract, an ONNX
//! runtime written independently of ours. It is a crate of its own so that the quick test suite does not wait
//! for tract to compile; CI runs it with `cargo test --release -p lenet5-onnx-check`.
