//! `lenet5-core`: the LeNet-5 engine of the PyTorch tutorial recipe, with a hand-written CPU core.
//!
//! Conventions: tensors are `f32`, row-major, images NCHW `(N, 1, 28, 28)` scaled to [0, 1]. Parameters live
//! in one flat block in PyTorch's `state_dict` order (see [`nn::model::PARAM_SPECS`]); gradients and momentum
//! share that layout.

pub mod aligned;
pub mod base;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod fs;
pub mod infer;
pub mod machine;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod rng;
pub mod run;
pub mod simd;
pub mod summary;
pub mod train;

pub use error::{Error, Result, Setting};
