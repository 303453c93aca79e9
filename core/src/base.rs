//! What every layer of the crate agrees on: the size of an image, and how classes are counted and labelled.

/// Images are `IMAGE_SIZE x IMAGE_SIZE` pixels, one channel.
pub const IMAGE_SIZE: usize = 28;
/// Pixels per image.
pub const IMAGE_LEN: usize = IMAGE_SIZE * IMAGE_SIZE;

/// One 28x28 image in [0, 1], row-major.
pub type Image = [f32; IMAGE_LEN];

/// A class label: `0..K` for a network of K classes.
pub type Label = u16;
/// Fewest classes a network tells apart.
pub const MIN_CLASSES: usize = 2;
/// Most classes a network tells apart (the output layer is `(K, 84)`).
pub const MAX_CLASSES: usize = 1000;
/// Longest class name, in bytes: a name is a label to show, not a place to hide data.
pub(crate) const MAX_CLASS_NAME: usize = 256;

/// Classes of the recipe's data sets, MNIST and Fashion-MNIST.
pub(crate) const MNIST_CLASS_COUNT: usize = 10;
/// The class names of MNIST, which checkpoints without names of their own get.
pub(crate) const MNIST_CLASSES: [&str; MNIST_CLASS_COUNT] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
