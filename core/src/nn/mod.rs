//! The numeric core: each layer's forward and backward side by side, and the LeNet-5 model built from them.

pub mod activation;
pub mod conv;
pub mod conv1_direct;
pub mod conv2_direct;
pub mod conv2_winograd;
pub mod gemm;
pub mod linear;
pub mod loss;
pub mod model;
pub mod params;
pub mod pool;

pub use model::{Head, Workspace};
pub use params::{NUM_PARAMS, PARAM_SPECS, Param, Tensors};
