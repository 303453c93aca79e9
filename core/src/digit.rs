//! Turning a grey picture of one digit into what the network expects, the way MNIST was made: light ink on a
//! dark background, the digit cropped, scaled to fit a 20x20 box keeping its aspect ratio, and placed in a
//! 28x28 field with its centre of mass at the centre (`frame`). `Preprocess` is the one way a user's
//! picture becomes the network's input: `lenet5 predict`, the server, image folders, Python's
//! `Model.predict(preprocess=...)` and the browser page all go through it.
//!
//! Scaling is `resize`: separable filtering (a triangle to shrink, Catmull-Rom to enlarge), in `f32`, the
//! vertical pass first, as the `image` crate's `imageops::resize` does it, to the bit.

use crate::base::{IMAGE_LEN, IMAGE_SIZE, Image};

/// The box the digit is scaled into, as in MNIST.
const BOX: usize = 20;

/// A grey picture, row-major, one byte per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreyImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl GreyImage {
    /// A picture of `width x height` pixels; `None` when `pixels` does not hold exactly that many.
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Option<GreyImage> {
        (width.checked_mul(height) == Some(pixels.len())).then_some(GreyImage { width, height, pixels })
    }

    fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }
}

/// Why a picture, or the file holding it, cannot be read as a network's input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("empty file")]
    EmptyFile,
    #[error("{len} bytes is larger than the {limit}-byte limit")]
    TooLarge { len: u64, limit: u64 },
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
    #[error("image is {width}x{height}, expected 28x28")]
    Size { width: usize, height: usize },
}

/// How a grey picture becomes the network's 28x28 input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preprocess {
    /// Resized to 28x28 (bilinear); a 28x28 picture is taken as it is.
    Resize,
    /// The framing a photo of a digit needs (`frame`): light ink on dark, cropped to the ink, fitted in 20x20
    /// and centred by its centre of mass.
    Mnist,
    /// None: the picture must already be 28x28.
    None,
}

impl Preprocess {
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::Resize => "resize",
            Preprocess::Mnist => "mnist",
            Preprocess::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Preprocess> {
        [Preprocess::Resize, Preprocess::Mnist, Preprocess::None].into_iter().find(|p| p.name() == s)
    }

    /// The network's input for `grey`, in [0, 1]: MNIST's framing keeps its fractions, the others are bytes / 255.
    pub fn input(self, grey: &GreyImage) -> Result<Image, ImageError> {
        match self {
            Preprocess::Mnist => frame(grey),
            _ => Ok(self.bytes(grey)?.map(|p| p as f32 / 255.0)),
        }
    }

    /// The 28x28 grey bytes of `grey`, as a data set stores its images.
    pub fn bytes(self, grey: &GreyImage) -> Result<[u8; IMAGE_LEN], ImageError> {
        let exact = |g: GreyImage| <[u8; IMAGE_LEN]>::try_from(g.pixels).expect("a 28x28 picture");
        match self {
            Preprocess::Mnist => Ok(frame(grey)?.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)),
            Preprocess::Resize => Ok(exact(resize(grey, IMAGE_SIZE, IMAGE_SIZE, Filter::Triangle))),
            Preprocess::None if (grey.width, grey.height) != (IMAGE_SIZE, IMAGE_SIZE) => {
                Err(ImageError::Size { width: grey.width, height: grey.height })
            }
            Preprocess::None => Ok(exact(grey.clone())),
        }
    }
}

/// MNIST-style preparation of a picture holding one digit, dark on light or light on dark.
pub(crate) fn frame(grey: &GreyImage) -> Result<Image, ImageError> {
    let (w, h) = (grey.width, grey.height);
    if w == 0 || h == 0 {
        return Err(ImageError::NoPixels);
    }
    // The border tells the background: a light one means dark ink, which MNIST stores inverted.
    let border: Vec<u8> = (0..w)
        .flat_map(|x| [grey.at(x, 0), grey.at(x, h - 1)])
        .chain((0..h).flat_map(|y| [grey.at(0, y), grey.at(w - 1, y)]))
        .collect();
    let border_mean = border.iter().map(|&v| v as f32).sum::<f32>() / border.len() as f32;
    let light = border_mean > 127.0;
    let ink = |v: u8| if light { 255 - v } else { v };
    let mut sorted = border;
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let background = if light { 255 - median } else { median };
    let peak = grey.pixels.iter().map(|&v| ink(v)).max().unwrap_or(0);
    if (peak as i32) - (background as i32) < 32 {
        return Err(ImageError::NoDigit);
    }
    // Stretch the ink to [0, 255] over the background, then crop to it.
    let range = (peak - background) as f32;
    let stretched: Vec<u8> = grey
        .pixels
        .iter()
        .map(|&v| {
            let v = ink(v).saturating_sub(background) as f32 / range;
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect();
    let crop = crop_to_ink(&GreyImage { width: w, height: h, pixels: stretched });
    // Fit into 20x20 keeping the aspect ratio.
    let scale = BOX as f32 / crop.width.max(crop.height) as f32;
    let fit = |side: usize| ((side as f32 * scale).round() as usize).clamp(1, BOX);
    let filter = if scale < 1.0 { Filter::Triangle } else { Filter::CatmullRom };
    let small = resize(&crop, fit(crop.width), fit(crop.height), filter);
    Ok(centre_of_mass(&small))
}

/// The smallest box holding every pixel brighter than a quarter.
fn crop_to_ink(img: &GreyImage) -> GreyImage {
    const THRESHOLD: u8 = 64;
    let (mut x0, mut y0, mut x1, mut y1) = (img.width, img.height, 0, 0);
    for y in 0..img.height {
        for x in 0..img.width {
            if img.at(x, y) > THRESHOLD {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    let (width, height) = (x1 - x0 + 1, y1 - y0 + 1);
    let pixels = (y0..=y1).flat_map(|y| (x0..=x1).map(move |x| img.at(x, y))).collect();
    GreyImage { width, height, pixels }
}

/// `small` (at most 28x28) placed in the 28x28 field with its centre of mass at the centre, in [0, 1].
fn centre_of_mass(small: &GreyImage) -> Image {
    let (mut mass, mut mx, mut my) = (0.0f32, 0.0f32, 0.0f32);
    for y in 0..small.height {
        for x in 0..small.width {
            let v = small.at(x, y) as f32;
            mass += v;
            mx += v * x as f32;
            my += v * y as f32;
        }
    }
    let (nw, nh) = (small.width, small.height);
    let (cx, cy) = if mass > 0.0 { (mx / mass, my / mass) } else { (nw as f32 / 2.0, nh as f32 / 2.0) };
    let centre = IMAGE_SIZE as f32 / 2.0 - 0.5;
    let ox = ((centre - cx).round() as i64).clamp(0, (IMAGE_SIZE - nw) as i64) as usize;
    let oy = ((centre - cy).round() as i64).clamp(0, (IMAGE_SIZE - nh) as i64) as usize;
    let mut digit = [0.0f32; IMAGE_LEN];
    for y in 0..nh {
        for x in 0..nw {
            digit[(oy + y) * IMAGE_SIZE + ox + x] = small.at(x, y) as f32 / 255.0;
        }
    }
    digit
}

/// The filters [`resize`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filter {
    /// Linear interpolation, support 1 (`image`'s `FilterType::Triangle`).
    Triangle,
    /// The Catmull-Rom cubic, support 2 (`image`'s `FilterType::CatmullRom`).
    CatmullRom,
}

impl Filter {
    fn support(self) -> f32 {
        match self {
            Filter::Triangle => 1.0,
            Filter::CatmullRom => 2.0,
        }
    }

    fn weight(self, x: f32) -> f32 {
        match self {
            Filter::Triangle if x.abs() < 1.0 => 1.0 - x.abs(),
            Filter::Triangle => 0.0,
            Filter::CatmullRom => cubic_spline(x, 0.0, 0.5),
        }
    }
}

/// Mitchell and Netravali's cubic with parameters `b` and `c` (Catmull-Rom is `b = 0, c = 1/2`).
fn cubic_spline(x: f32, b: f32, c: f32) -> f32 {
    let a = x.abs();
    let k = if a < 1.0 {
        (12.0 - 9.0 * b - 6.0 * c) * a.powi(3) + (-18.0 + 12.0 * b + 6.0 * c) * a.powi(2) + (6.0 - 2.0 * b)
    } else if a < 2.0 {
        (-b - 6.0 * c) * a.powi(3)
            + (6.0 * b + 30.0 * c) * a.powi(2)
            + (-12.0 * b - 48.0 * c) * a
            + (8.0 * b + 24.0 * c)
    } else {
        0.0
    };
    k / 6.0
}

/// The normalised weights of the input samples `start..start + weights.len()` for each of `new_len` output
/// samples of a line of `len` inputs.
fn weights(len: usize, new_len: usize, filter: Filter) -> Vec<(usize, Vec<f32>)> {
    let ratio = len as f32 / new_len as f32;
    let stretch = if ratio < 1.0 { 1.0 } else { ratio };
    let support = filter.support() * stretch;
    (0..new_len)
        .map(|out| {
            // The input position of the output sample's centre, and the inputs within the filter's reach.
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, len as i64 - 1) as usize;
            let right = ((centre + support).ceil() as i64).clamp(left as i64 + 1, len as i64) as usize;
            let centre = centre - 0.5;
            let ws: Vec<f32> = (left..right).map(|i| filter.weight((i as f32 - centre) / stretch)).collect();
            let mut sum = 0.0f32;
            for w in &ws {
                sum += w;
            }
            let mut ws = ws;
            for w in &mut ws {
                *w /= sum;
            }
            (left, ws)
        })
        .collect()
}

/// `img` scaled to `width x height`: the columns filtered first (keeping `f32`), then the rows, rounded.
pub(crate) fn resize(img: &GreyImage, width: usize, height: usize, filter: Filter) -> GreyImage {
    if img.width == 0 || img.height == 0 {
        return GreyImage { width, height, pixels: vec![0; width * height] };
    }
    if (width, height) == (img.width, img.height) {
        return img.clone();
    }
    let mut columns = vec![0.0f32; img.width * height];
    for (y, (top, ws)) in weights(img.height, height, filter).into_iter().enumerate() {
        for x in 0..img.width {
            let mut t = 0.0f32;
            for (i, w) in ws.iter().enumerate() {
                t += img.at(x, top + i) as f32 * w;
            }
            columns[y * img.width + x] = t;
        }
    }
    let mut pixels = vec![0u8; width * height];
    for (x, (left, ws)) in weights(img.width, width, filter).into_iter().enumerate() {
        for y in 0..height {
            let mut t = 0.0f32;
            for (i, w) in ws.iter().enumerate() {
                t += columns[y * img.width + left + i] * w;
            }
            pixels[y * width + x] = t.clamp(0.0, 255.0).round() as u8;
        }
    }
    GreyImage { width, height, pixels }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canvas(w: usize, h: usize, bg: u8, ink: u8) -> GreyImage {
        // A thick vertical bar: a "1".
        let pixels = (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    let on = x >= w * 2 / 5 && x < w * 3 / 5 && y >= h / 6 && y < h * 5 / 6;
                    if on { ink } else { bg }
                })
            })
            .collect();
        GreyImage::new(w, h, pixels).unwrap()
    }

    #[test]
    fn dark_on_light_and_light_on_dark_give_the_same_digit() {
        let a = frame(&canvas(90, 120, 255, 0)).unwrap();
        let b = frame(&canvas(90, 120, 0, 255)).unwrap();
        assert_eq!(a, b);
        // ink in the middle, background at the corners, the digit 20 pixels tall
        assert!(a[14 * 28 + 14] > 0.9);
        assert_eq!(a[0], 0.0);
        let rows: Vec<usize> = (0..28).filter(|y| (0..28).any(|x| a[y * 28 + x] > 0.5)).collect();
        assert!((19..=21).contains(&rows.len()), "{rows:?}");
    }

    #[test]
    fn blank_and_empty_pictures_are_refused() {
        assert_eq!(frame(&GreyImage::new(30, 30, vec![0; 900]).unwrap()), Err(ImageError::NoDigit));
        assert_eq!(frame(&GreyImage::new(0, 5, vec![]).unwrap()), Err(ImageError::NoPixels));
        assert_eq!(GreyImage::new(3, 3, vec![0; 8]), None);
    }

    #[test]
    fn resizing_keeps_a_flat_picture_flat_and_its_size() {
        for filter in [Filter::Triangle, Filter::CatmullRom] {
            for (w, h) in [(1, 1), (7, 3), (20, 20), (64, 5)] {
                let flat = GreyImage::new(13, 9, vec![173; 117]).unwrap();
                let out = resize(&flat, w, h, filter);
                assert_eq!((out.width, out.height), (w, h));
                assert!(out.pixels.iter().all(|&v| v == 173), "{filter:?} {w}x{h}: {:?}", out.pixels);
            }
        }
    }
}
