//! Turning a user's picture into what the network expects, the way MNIST was made: grey, light ink on a dark
//! background, the digit cropped, scaled to fit a 20x20 box keeping its aspect, and placed in a 28x28 field
//! with its centre of mass at the centre.

use std::path::Path;

use image::{GrayImage, Luma};
use lenet5_core::digit::GreyImage;
use lenet5_core::folder::ImageFiles;

use lenet5_core::error::IoContext;

pub use crate::error::ImageError;
use crate::error::{Error, Result};
use lenet5_core::nn::model::{IMAGE_LEN, IMAGE_SIZE};

pub use lenet5_core::digit::Preprocess;

/// How the network in `ck` wants its pictures: as its training images were made (the `data.preprocess` of a
/// network trained on an image folder), else MNIST's framing.
pub fn preprocess_of(ck: &lenet5_core::checkpoint::Checkpoint) -> Preprocess {
    ck.metadata.get("data.preprocess").and_then(|p| Preprocess::parse(p)).unwrap_or(Preprocess::Mnist)
}

/// Larger files are refused before decoding.
pub const MAX_FILE_BYTES: u64 = ImageFiles::MAX_FILE_BYTES;
/// Larger images are refused by the decoder, before it allocates for them.
pub const MAX_SIDE: u32 = ImageFiles::MAX_SIDE;

/// A 28x28 image in [0, 1], row-major.
pub type Digit = [f32; IMAGE_LEN];

/// Decodes PNG, JPEG, BMP, GIF or PNM bytes to grey levels (transparency over white paper), refusing images
/// larger than [`MAX_SIDE`] on a side.
pub fn decode(bytes: &[u8]) -> std::result::Result<GreyImage, ImageError> {
    GreyImage::decode(bytes, MAX_SIDE, 512 << 20)
}

/// Reads one image file and prepares it as MNIST was made.
pub fn load_digit(path: &Path) -> Result<Digit> {
    load_image(path, Preprocess::Mnist)
}

/// Reads one image file and prepares it with `preprocess`.
pub fn load_image(path: &Path, preprocess: Preprocess) -> Result<Digit> {
    let image = |source| Error::Image { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).at(path)?.len();
    if len == 0 {
        return Err(image(ImageError::EmptyFile));
    }
    if len > MAX_FILE_BYTES {
        return Err(image(ImageError::TooLarge { len, limit: MAX_FILE_BYTES }));
    }
    let bytes = std::fs::read(path).at(path)?;
    preprocess.input(&decode(&bytes).map_err(image)?).map_err(image)
}

/// A digit as an 8-bit grey image (for `--save-preprocessed` and the web page).
pub fn digit_to_image(digit: &Digit) -> GrayImage {
    GrayImage::from_fn(IMAGE_SIZE as u32, IMAGE_SIZE as u32, |x, y| {
        Luma([(digit[y as usize * IMAGE_SIZE + x as usize].clamp(0.0, 1.0) * 255.0).round() as u8])
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::DynamicImage;

    /// `img` as a PNG file's bytes, decoded and framed as MNIST was made.
    fn preprocess(img: &DynamicImage) -> std::result::Result<Digit, String> {
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        Preprocess::Mnist.input(&decode(&png).unwrap()).map_err(|e| e.to_string())
    }

    fn canvas(w: u32, h: u32, bg: u8, ink: u8) -> GrayImage {
        // A thick vertical bar: a "1".
        GrayImage::from_fn(w, h, |x, y| {
            let on = x >= w * 2 / 5 && x < w * 3 / 5 && y >= h / 6 && y < h * 5 / 6;
            Luma([if on { ink } else { bg }])
        })
    }

    #[test]
    fn a_transparent_background_reads_as_white_paper() {
        let opaque = preprocess(&DynamicImage::ImageLuma8(canvas(90, 120, 255, 0))).unwrap();
        // The same dark bar on a fully transparent background (whose colour is black, and must not count).
        let ink = canvas(90, 120, 255, 0);
        let transparent = image::RgbaImage::from_fn(90, 120, |x, y| {
            if ink.get_pixel(x, y)[0] == 0 { image::Rgba([0, 0, 0, 255]) } else { image::Rgba([0, 0, 0, 0]) }
        });
        assert_eq!(preprocess(&DynamicImage::ImageRgba8(transparent)).unwrap(), opaque);
        assert!(opaque[14 * 28 + 14] > 0.9 && opaque[0] == 0.0);
    }

    #[test]
    fn blank_and_undecodable_images_are_refused() {
        assert!(preprocess(&DynamicImage::ImageLuma8(GrayImage::new(30, 30))).unwrap_err().contains("no digit"));
        assert!(decode(b"definitely not an image").is_err());
        assert!(decode(&[]).is_err());
    }
}
