//! `lenet5-core`: the LeNet-5 engine of the PyTorch tutorial recipe, with a hand-written CPU core. It trains,
//! evaluates and runs the network, reads IDX data sets and reads and writes safetensors checkpoints, and needs
//! nothing of the `lenet5` application around it (no server, plotting, downloads or command line), so it also
//! builds for `wasm32-unknown-unknown`.
//!
//! Conventions: tensors are `f32`, row-major, images NCHW `(N, 1, 28, 28)` scaled to [0, 1]. Parameters live
//! in one flat block in PyTorch's `state_dict` order (see [`nn::params`]); gradients and momentum share that
//! layout. With a fixed seed, training gives the same bits for any thread count.
//!
//! Cargo features: `threads` (on by default) runs each training step and evaluation on a team of worker
//! threads; without it everything runs on the caller's thread, with the same numbers. `images` reads image
//! folders (PNG, JPEG, BMP, GIF, PGM; on disk, in a zip archive or in memory) as data sets (the `folder`
//! module).
//!
//! Training a few steps on a made-up data set, then predicting:
//!
//! ```
//! use lenet5_core::base::IMAGE_LEN;
//! use lenet5_core::checkpoint::Checkpoint;
//! use lenet5_core::data::Split;
//! use lenet5_core::infer::Predictor;
//! use lenet5_core::nn::{Head, params::init_params_for};
//! use lenet5_core::spec::RunSpec;
//! use lenet5_core::train::Trainer;
//!
//! // 64 images, 28x28 bytes each: class k is a bright band across rows 2k..2k+4.
//! let labels: Vec<u16> = (0..64).map(|i| (i % 10) as u16).collect();
//! let images = labels
//!     .iter()
//!     .flat_map(|&k| (0..IMAGE_LEN).map(move |p| if (2 * k as usize..2 * k as usize + 4).contains(&(p / 28)) { 255 } else { 0 }))
//!     .collect();
//! let data = Split { images, labels };
//!
//! let spec = RunSpec { head: Head::Logits, lr: 0.05, ..RunSpec::default() }.validate()?;
//! let config = spec.config();
//! let mut trainer = Trainer::new(config.clone(), init_params_for(config.seed, 10), None, 2)?;
//! for epoch in 1..=5 {
//!     let (loss, accuracy) = trainer.train_epoch(&data, epoch, &mut ())?.expect("not stopped");
//!     println!("epoch {epoch}: loss {loss:.3}, accuracy {accuracy:.3}");
//! }
//!
//! let mut predictor = Predictor::new(Checkpoint::new(trainer.params().to_vec(), config.head));
//! let mut band_of_three = [0.0f32; IMAGE_LEN];
//! band_of_three[6 * 28..10 * 28].fill(1.0);
//! let prediction = &predictor.predict(&[band_of_three])[0];
//! println!("class {} with probability {:.2}", prediction.class, prediction.probabilities[prediction.class]);
//! # assert_eq!(prediction.class, 3);
//! # Ok::<(), lenet5_core::Error>(())
//! ```

mod aligned;
pub mod base;
pub mod checkpoint;
pub mod data;
pub mod digit;
pub mod error;
#[cfg(feature = "images")]
pub mod folder;
pub mod fs;
pub mod infer;
#[cfg(feature = "threads")]
pub mod machine;
pub mod math;
pub mod nn;
pub mod optim;
mod parallel;
pub mod quant;
pub mod rng;
pub mod run;
mod simd;
pub mod spec;
pub mod summary;
#[cfg(test)]
mod tests;
pub mod train;

pub use error::{Error, Result};
pub use simd::{CAP_VAR as SIMD_CAP_VAR, describe as instruction_set};
