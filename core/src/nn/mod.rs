//! The numeric core: each layer's forward and backward side by side, and the LeNet-5 model built from them.
//!
//! Public: the model ([`model`]: forward, backward, the loss, the workspace), its parameter block ([`params`]),
//! and the general layers that the specialised kernels are checked against (`reference`). The kernels
//! themselves, one directory per layer with a portable version beside the AVX-512 and AVX2 ones, are private.

pub(crate) mod activation;
pub(crate) mod conv;
pub(crate) mod conv1_direct;
pub(crate) mod conv2_direct;
pub(crate) mod conv2_winograd;
pub(crate) mod gemm;
pub(crate) mod linear;
pub(crate) mod loss;
pub mod model;
pub mod params;
pub(crate) mod pool;
#[cfg(test)]
pub(crate) mod reference;

pub use conv::Conv2dDims;
pub(crate) use linear::LinearDims;
pub use loss::argmax;
pub use model::Head;
pub use params::{Param, Tensors, num_params};
pub use pool::Pool2Dims;
