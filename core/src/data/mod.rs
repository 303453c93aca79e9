//! Data: the IDX format, data sets on disk, batches, and augmentation.

pub mod augment;
pub mod dataset;
pub mod idx;

pub use augment::Augment;
pub use dataset::{Dataset, DatasetId, Split};
