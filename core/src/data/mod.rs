//! Data: the IDX format, data sets on disk, and batches.

pub mod dataset;
pub mod idx;

pub use dataset::{Dataset, DatasetId, Split};
