//! Tests of the engine against the real thing, inside the crate so that they reach the layers' internals:
//! finite-difference gradient checks of every layer, and PyTorch's reference tensors for the forward pass, the
//! loss, every gradient and a few steps of training.

mod gradcheck;
mod parsers;
mod pytorch;
