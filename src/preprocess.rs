//! Turning a user's picture into what the network expects, the way MNIST was made: grey, light ink on a dark
//! background, the digit cropped, scaled to fit a 20x20 box keeping its aspect, and placed in a 28x28 field
//! with its centre of mass at the centre.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Luma};

use lenet5_core::error::IoContext;

use crate::error::{Error, Result};
use lenet5_core::nn::model::{IMAGE_LEN, IMAGE_SIZE};

/// Larger files are refused before decoding.
pub const MAX_FILE_BYTES: u64 = 32 << 20;
/// Larger images are refused by the decoder, before it allocates for them.
pub const MAX_SIDE: u32 = 8192;
/// The box the digit is scaled into, as in MNIST.
const BOX: u32 = 20;

/// A 28x28 image in [0, 1], row-major.
pub type Digit = [f32; IMAGE_LEN];

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("empty file")]
    EmptyFile,
    #[error("{len} bytes is larger than the {MAX_FILE_BYTES}-byte limit")]
    TooLarge { len: u64 },
    #[error("not a PNG, JPEG, BMP, GIF or PGM image")]
    UnknownFormat,
    #[error("cannot read ({0})")]
    Unreadable(String),
    #[error("cannot decode image ({0})")]
    Undecodable(String),
    #[error("image has no pixels")]
    NoPixels,
    #[error("no digit found: the image is blank or has too little contrast")]
    NoDigit,
}

/// Decodes PNG, JPEG, BMP, GIF or PNM bytes, refusing images larger than [`MAX_SIDE`] on a side.
pub fn decode(bytes: &[u8]) -> std::result::Result<DynamicImage, ImageError> {
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Unreadable(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageError::UnknownFormat);
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    reader.decode().map_err(|e| ImageError::Undecodable(e.to_string()))
}

/// Reads and preprocesses one image file.
pub fn load_digit(path: &Path) -> Result<Digit> {
    let image = |source| Error::Image { path: path.to_path_buf(), source };
    let len = std::fs::metadata(path).at(path)?.len();
    if len == 0 {
        return Err(image(ImageError::EmptyFile));
    }
    if len > MAX_FILE_BYTES {
        return Err(image(ImageError::TooLarge { len }));
    }
    let bytes = std::fs::read(path).at(path)?;
    preprocess(&decode(&bytes).map_err(image)?).map_err(image)
}

/// Grey levels with transparency composited over white (drawings often have a transparent background).
fn to_grey(img: &DynamicImage) -> GrayImage {
    let la = img.to_luma_alpha8();
    GrayImage::from_fn(la.width(), la.height(), |x, y| {
        let p = la.get_pixel(x, y);
        let (l, a) = (p[0] as f32, p[1] as f32 / 255.0);
        Luma([(a * l + (1.0 - a) * 255.0).round() as u8])
    })
}

/// MNIST-style preprocessing of any picture holding one digit.
pub fn preprocess(img: &DynamicImage) -> std::result::Result<Digit, ImageError> {
    let mut grey = to_grey(img);
    let (w, h) = grey.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageError::NoPixels);
    }
    // The border tells the background: a light one means dark ink, which MNIST stores inverted.
    let border: Vec<u8> = (0..w)
        .flat_map(|x| [grey.get_pixel(x, 0)[0], grey.get_pixel(x, h - 1)[0]])
        .chain((0..h).flat_map(|y| [grey.get_pixel(0, y)[0], grey.get_pixel(w - 1, y)[0]]))
        .collect();
    let border_mean = border.iter().map(|&v| v as f32).sum::<f32>() / border.len() as f32;
    if border_mean > 127.0 {
        image::imageops::invert(&mut grey);
    }
    let mut sorted = border.clone();
    sorted.sort_unstable();
    let background = if border_mean > 127.0 { 255 - sorted[sorted.len() / 2] } else { sorted[sorted.len() / 2] };
    let peak = grey.pixels().map(|p| p[0]).max().unwrap_or(0);
    if peak as i32 - (background as i32) < 32 {
        return Err(ImageError::NoDigit);
    }
    // Stretch ink to [0, 255] over the background, then crop to the ink.
    let range = (peak - background) as f32;
    let stretched = GrayImage::from_fn(w, h, |x, y| {
        let v = grey.get_pixel(x, y)[0].saturating_sub(background) as f32 / range;
        Luma([(v.clamp(0.0, 1.0) * 255.0).round() as u8])
    });
    let threshold = 64;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in stretched.enumerate_pixels() {
        if p[0] > threshold {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    let (cw, ch) = (x1 - x0 + 1, y1 - y0 + 1);
    let crop = image::imageops::crop_imm(&stretched, x0, y0, cw, ch).to_image();
    // Fit into 20x20 keeping the aspect ratio.
    let scale = BOX as f32 / cw.max(ch) as f32;
    let (nw, nh) =
        (((cw as f32 * scale).round() as u32).clamp(1, BOX), ((ch as f32 * scale).round() as u32).clamp(1, BOX));
    let filter = if scale < 1.0 { FilterType::Triangle } else { FilterType::CatmullRom };
    let small = image::imageops::resize(&crop, nw, nh, filter);
    // Centre of mass to the centre of the 28x28 field.
    let (mut mass, mut mx, mut my) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y, p) in small.enumerate_pixels() {
        let v = p[0] as f32;
        mass += v;
        mx += v * x as f32;
        my += v * y as f32;
    }
    let (cx, cy) = if mass > 0.0 { (mx / mass, my / mass) } else { (nw as f32 / 2.0, nh as f32 / 2.0) };
    let centre = IMAGE_SIZE as f32 / 2.0 - 0.5;
    let ox = ((centre - cx).round() as i64).clamp(0, (IMAGE_SIZE as u32 - nw) as i64) as usize;
    let oy = ((centre - cy).round() as i64).clamp(0, (IMAGE_SIZE as u32 - nh) as i64) as usize;
    let mut digit = [0.0f32; IMAGE_LEN];
    for (x, y, p) in small.enumerate_pixels() {
        digit[(oy + y as usize) * IMAGE_SIZE + ox + x as usize] = p[0] as f32 / 255.0;
    }
    Ok(digit)
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

    fn canvas(w: u32, h: u32, bg: u8, ink: u8) -> GrayImage {
        // A thick vertical bar: a "1".
        GrayImage::from_fn(w, h, |x, y| {
            let on = x >= w * 2 / 5 && x < w * 3 / 5 && y >= h / 6 && y < h * 5 / 6;
            Luma([if on { ink } else { bg }])
        })
    }

    #[test]
    fn dark_on_light_and_light_on_dark_give_the_same_digit() {
        let a = preprocess(&DynamicImage::ImageLuma8(canvas(90, 120, 255, 0))).unwrap();
        let b = preprocess(&DynamicImage::ImageLuma8(canvas(90, 120, 0, 255))).unwrap();
        assert_eq!(a, b);
        // ink in the middle, background at the corners, the digit 20 pixels tall
        assert!(a[14 * 28 + 14] > 0.9);
        assert_eq!(a[0], 0.0);
        let rows: Vec<usize> = (0..28).filter(|y| (0..28).any(|x| a[y * 28 + x] > 0.5)).collect();
        assert!((19..=21).contains(&rows.len()), "{rows:?}");
    }

    #[test]
    fn blank_and_undecodable_images_are_refused() {
        assert!(
            preprocess(&DynamicImage::ImageLuma8(GrayImage::new(30, 30))).unwrap_err().to_string().contains("no digit")
        );
        assert!(decode(b"definitely not an image").is_err());
        assert!(decode(&[]).is_err());
    }
}
