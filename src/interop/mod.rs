//! Interoperation with PyTorch and ONNX: reading `.pth` state_dicts safely, writing ONNX models.

pub mod onnx;
pub mod pickle;
pub mod pth;
