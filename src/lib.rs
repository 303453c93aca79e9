//! `lenet5`, the application around the engine in `lenet5-core`: the command line, the web page and its API,
//! pictures, PyTorch and ONNX interoperation, image preparation and data downloads.

pub mod deploy;
pub mod download;
pub mod error;
pub mod folder;
pub mod interop;
pub mod lock;
pub mod preprocess;
#[cfg(feature = "server")]
pub mod serve;
pub mod source;
pub mod text;
pub mod training;
#[cfg(feature = "pictures")]
pub mod viz;
pub mod web;

pub use error::{Error, Result};
