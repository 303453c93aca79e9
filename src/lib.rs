//! `lenet5`: train, evaluate and serve the classic LeNet-5 network on MNIST-style digit images, with the
//! numbers of the PyTorch reference recipe and a hand-written CPU core.
//!
//! Conventions: tensors are `f32`, row-major, images NCHW `(N, 1, 28, 28)` scaled to [0, 1]. Parameters live
//! in one flat block in PyTorch's `state_dict` order (see [`nn::model::PARAM_SPECS`]); gradients and momentum
//! share that layout.

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod infer;
pub mod interop;
pub mod machine;
pub mod nn;
pub mod optim;
pub mod parallel;
pub mod preprocess;
pub mod rng;
pub mod run;
pub mod serve;
pub mod summary;
pub mod train;
pub mod viz;

pub use error::{Error, Result};
