//! The general layers, written for any shape and each forward beside its backward: the definitions that the
//! model's kernels (written for LeNet-5's shapes and each instruction set) are tested against, and what the
//! finite-difference gradient checks run on. Shapes are in each function's documentation.

pub(crate) use super::activation::{relu_backward, relu_forward, sigmoid_backward, sigmoid_forward};
pub(crate) use super::conv::{conv2d_backward, conv2d_forward};
pub(crate) use super::linear::{linear_backward, linear_forward};
pub(crate) use super::loss::cross_entropy;
pub(crate) use super::pool::{avgpool2_backward, avgpool2_forward};
pub(crate) use super::{Conv2dDims, LinearDims, Pool2Dims};
