//! The general layers, written for any shape and each forward beside its backward: the definitions that the
//! model's kernels (written for LeNet-5's shapes and each instruction set) are tested against, and what the
//! finite-difference gradient checks run on. Shapes are in each function's documentation.

pub use super::activation::{relu_backward, relu_forward, sigmoid_backward, sigmoid_forward};
pub use super::conv::{conv2d_backward, conv2d_forward, im2col};
pub use super::gemm::{MatRef, sgemm_reference};
pub use super::linear::{linear_backward, linear_forward};
pub use super::loss::{argmax, cross_entropy, softmax};
pub use super::pool::{avgpool2_backward, avgpool2_forward};
pub use super::{Conv2dDims, LinearDims, Pool2Dims};
