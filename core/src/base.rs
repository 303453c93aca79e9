//! What every layer of the crate agrees on: the size of an image and the number of classes.

/// Images are `IMAGE_SIZE x IMAGE_SIZE` pixels, one channel.
pub const IMAGE_SIZE: usize = 28;
/// Pixels per image.
pub const IMAGE_LEN: usize = IMAGE_SIZE * IMAGE_SIZE;
/// Classes the network tells apart.
pub const NUM_CLASSES: usize = 10;

/// One 28x28 image in [0, 1], row-major.
pub type Image = [f32; IMAGE_LEN];

/// The class names of MNIST, which checkpoints without names of their own get.
pub const MNIST_CLASSES: [&str; NUM_CLASSES] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
