//! Data augmentation: a random affine transform of each training image, drawn afresh every epoch, as
//! torchvision's `RandomAffine(degrees, translate, scale)` does (rotation about the centre, scaling, then a
//! shift; pixels from outside the image are 0), with bilinear sampling.
//!
//! The transform of an image depends only on (seed, epoch, the image's index in the data set), never on the
//! batch it lands in or the worker that draws it: runs stay bit-identical across thread counts and resumes.

use serde::{Deserialize, Serialize};

use crate::base::{IMAGE_LEN, IMAGE_SIZE};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// The ranges transforms are drawn from, uniformly.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Rotation in degrees, in `[-degrees, degrees]`.
    pub degrees: f32,
    /// Shift in pixels along each axis, in `[-translate, translate]`.
    pub translate: f32,
    /// Scale factor, in `[scale_min, scale_max]`.
    pub scale_min: f32,
    pub scale_max: f32,
}

/// The draws of the augmentation's random numbers (see [`Rng::derived`]).
const PURPOSE: u64 = 4;

impl Augment {
    /// Checks that every range is one the transform can take: rotation up to 180°, a shift of at most half the
    /// image, a scale from 0.1 to 10.
    pub fn check(&self) -> Result<()> {
        let bad = |setting, value: String, expected| Err(Error::Setting { setting, value, expected });
        if !(self.degrees.is_finite() && (0.0..=180.0).contains(&self.degrees)) {
            return bad("rotate", self.degrees.to_string(), "in 0..=180 degrees");
        }
        if !(self.translate.is_finite() && (0.0..=IMAGE_SIZE as f32 / 2.0).contains(&self.translate)) {
            return bad("shift", self.translate.to_string(), "in 0..=14 pixels");
        }
        let (lo, hi) = (self.scale_min, self.scale_max);
        if !(lo.is_finite() && hi.is_finite() && 0.1 <= lo && lo <= hi && hi <= 10.0) {
            return bad("scale", format!("{lo},{hi}"), "MIN,MAX with 0.1 <= MIN <= MAX <= 10");
        }
        Ok(())
    }

    /// The transform of image `index` in epoch `epoch` of a run seeded `seed`.
    pub(crate) fn transform(&self, seed: u64, epoch: usize, index: u32) -> Affine {
        let mut rng = Rng::derived(seed, PURPOSE, ((epoch as u64) << 32) | index as u64);
        let angle = rng.uniform(-self.degrees, self.degrees).to_radians();
        let (tx, ty) = (rng.uniform(-self.translate, self.translate), rng.uniform(-self.translate, self.translate));
        let scale = rng.uniform(self.scale_min, self.scale_max);
        Affine { angle, scale, shift: (tx, ty) }
    }
}

/// Rotation by `angle` (radians, counter-clockwise on screen) and scaling by `scale` about the image's centre,
/// then a shift by `shift` pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Affine {
    pub angle: f32,
    pub scale: f32,
    pub shift: (f32, f32),
}

/// Side of the padded source: the image with a border of zeros, one pixel before and three after, so that
/// every coordinate clamped to [-1, 28] reads either the image or zeros, without a test per pixel.
const PADDED: usize = IMAGE_SIZE + 4;
const _: () = assert!((PADDED * PADDED).is_power_of_two());

impl Affine {
    /// Writes into `out` the image `pixels` (28x28 bytes) transformed, scaled to [0, 1] as `ToTensor` does.
    ///
    /// Each output pixel is read from where the inverse transform puts it in the source, bilinearly; those
    /// coordinates change by the same step from one pixel of a row to the next, so a row costs only additions.
    pub fn apply(&self, pixels: &[u8], out: &mut [f32]) {
        assert!(pixels.len() == IMAGE_LEN && out.len() == IMAGE_LEN);
        let mut padded = [0.0f32; PADDED * PADDED];
        for (y, row) in pixels.chunks_exact(IMAGE_SIZE).enumerate() {
            let dst = &mut padded[(y + 1) * PADDED + 1..][..IMAGE_SIZE];
            for (d, &p) in dst.iter_mut().zip(row) {
                *d = p as f32;
            }
        }
        let c = (IMAGE_SIZE as f32 - 1.0) / 2.0;
        // The inverse, from an output pixel q to the source: p = c + R(q - c - shift) / scale, where R turns by
        // `angle` the way that, with y growing downwards, makes the picture turn counter-clockwise on screen.
        // Our own sine and cosine: the platform's may differ in the last bit, and a browser's run then in all.
        let (sin, cos) = crate::math::sin_cos(self.angle);
        let (a, b) = (cos / self.scale, sin / self.scale);
        let (qx, qy) = (-c - self.shift.0, -c - self.shift.1);
        // The source of output pixel (0, 0); each step right adds (a, b), each step down (-b, a).
        let origin = (c + a * qx - b * qy, c + b * qx + a * qy);
        warp(&padded, origin, (a, b), out);
    }
}

/// Column numbers as floats, for the source coordinates of a row without a running sum (which would keep the
/// compiler from computing several at once).
const COLUMNS: [f32; IMAGE_SIZE] = {
    let mut c = [0.0; IMAGE_SIZE];
    let mut i = 0;
    while i < IMAGE_SIZE {
        c[i] = i as f32;
        i += 1;
    }
    c
};

#[inline(always)]
fn warp_body<const FMA: bool>(padded: &[f32; PADDED * PADDED], origin: (f32, f32), step: (f32, f32), out: &mut [f32]) {
    let (a, b) = step;
    for (y, row) in out.chunks_exact_mut(IMAGE_SIZE).enumerate() {
        let (x0, y0) = (origin.0 - b * y as f32, origin.1 + a * y as f32);
        for (v, &x) in row.iter_mut().zip(&COLUMNS) {
            *v = bilinear(padded, x0 + a * x, y0 + b * x) * (1.0 / 255.0);
        }
    }
}

crate::simd::dispatch! {
    /// Output pixel (x, y) is the source at `origin + x * step + y * (-step.1, step.0)`, bilinearly.
    fn warp(padded: &[f32; PADDED * PADDED], origin: (f32, f32), step: (f32, f32), out: &mut [f32]) => warp_body
}

/// The source at (x, y), interpolated between its four neighbours; 0 outside the image.
#[inline(always)]
fn bilinear(padded: &[f32; PADDED * PADDED], x: f32, y: f32) -> f32 {
    let last = IMAGE_SIZE as f32;
    // In [0, 29] after the shift by the border: the integer part is the floor, and the pixel after it exists.
    let (x, y) = (x.clamp(-1.0, last) + 1.0, y.clamp(-1.0, last) + 1.0);
    let (xi, yi) = (x as i32, y as i32);
    let (fx, fy) = (x - xi as f32, y - yi as f32);
    // The mask keeps each index inside the array. It changes none, and spares a bounds check that would stop
    // the compiler from vectorising.
    let at = |d: i32| padded[((yi * PADDED as i32 + xi + d) as usize) & (PADDED * PADDED - 1)];
    let (p00, p01, p10, p11) = (at(0), at(1), at(PADDED as i32), at(PADDED as i32 + 1));
    let top = p00 + fx * (p01 - p00);
    let bottom = p10 + fx * (p11 - p10);
    top + fy * (bottom - top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> Vec<u8> {
        (0..IMAGE_LEN).map(|i| ((i * 37) % 251) as u8).collect()
    }

    #[test]
    fn the_identity_gives_the_image_and_a_whole_pixel_shift_moves_it() {
        let px = image();
        let mut out = vec![0.0; IMAGE_LEN];
        Affine { angle: 0.0, scale: 1.0, shift: (0.0, 0.0) }.apply(&px, &mut out);
        assert!(out.iter().zip(&px).all(|(&o, &p)| o == p as f32 * (1.0 / 255.0)));
        Affine { angle: 0.0, scale: 1.0, shift: (2.0, -1.0) }.apply(&px, &mut out);
        for (y, x) in [(5usize, 7usize), (0, 27), (20, 2)] {
            let want = match (x.checked_sub(2), (y + 1 < IMAGE_SIZE).then_some(y + 1)) {
                (Some(sx), Some(sy)) => px[sy * IMAGE_SIZE + sx] as f32 / 255.0,
                _ => 0.0,
            };
            assert!((out[y * IMAGE_SIZE + x] - want).abs() < 1e-6, "({x}, {y})");
        }
    }

    #[test]
    fn a_quarter_turn_maps_pixels_as_rotating_the_picture_does() {
        let px = image();
        let mut out = vec![0.0; IMAGE_LEN];
        Affine { angle: std::f32::consts::FRAC_PI_2, scale: 1.0, shift: (0.0, 0.0) }.apply(&px, &mut out);
        // Turned counter-clockwise on screen: the source's top-right corner lands top-left.
        let (s, n) = (IMAGE_SIZE, IMAGE_SIZE - 1);
        assert!((out[0] - px[n] as f32 / 255.0).abs() < 1e-4);
        assert!((out[3 * s + 5] - px[5 * s + (n - 3)] as f32 / 255.0).abs() < 1e-4);
    }

    #[test]
    fn transforms_depend_on_seed_epoch_and_index_alone_and_stay_in_range() {
        let aug = Augment { degrees: 10.0, translate: 2.0, scale_min: 0.9, scale_max: 1.1 };
        assert_eq!(aug.transform(1, 2, 3), aug.transform(1, 2, 3));
        assert_ne!(aug.transform(1, 2, 3), aug.transform(1, 3, 3));
        assert_ne!(aug.transform(1, 2, 3), aug.transform(1, 2, 4));
        assert_ne!(aug.transform(1, 2, 3), aug.transform(2, 2, 3));
        for i in 0..1000 {
            let t = aug.transform(0, 1, i);
            assert!(t.angle.abs() <= 10f32.to_radians() && (0.9..=1.1).contains(&t.scale));
            assert!(t.shift.0.abs() <= 2.0 && t.shift.1.abs() <= 2.0);
        }
        assert!(aug.check().is_ok());
        assert!(
            Augment { scale_min: 1.2, ..aug }.check().is_err() && Augment { degrees: f32::NAN, ..aug }.check().is_err()
        );
    }
}
