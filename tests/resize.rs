//! The engine's resize (used to frame a digit in 28x28, in the command line, the server and the browser page)
//! against the `image` crate's `imageops::resize`, which the application used before: the same bytes for
//! random pictures, sizes and both filters.

use image::imageops::FilterType;
use image::{GrayImage, Luma};
use lenet5_core::digit::{Filter, GreyImage, resize};
use lenet5_core::rng::Rng;

#[test]
fn resize_gives_the_bytes_of_the_image_crate() {
    let mut rng = Rng::new(5);
    for case in 0..600 {
        let (w, h) = (1 + rng.below(120) as u32, 1 + rng.below(120) as u32);
        let img = GrayImage::from_fn(w, h, |_, _| Luma([rng.below(256) as u8]));
        let (nw, nh) = (1 + rng.below(40) as u32, 1 + rng.below(40) as u32);
        let grey = GreyImage::new(w as usize, h as usize, img.as_raw().clone()).unwrap();
        for (theirs, ours) in [(FilterType::Triangle, Filter::Triangle), (FilterType::CatmullRom, Filter::CatmullRom)] {
            let want = image::imageops::resize(&img, nw, nh, theirs);
            let got = resize(&grey, nw as usize, nh as usize, ours);
            assert_eq!((got.width, got.height), (nw as usize, nh as usize));
            assert_eq!(want.as_raw(), &got.pixels, "case {case}: {w}x{h} -> {nw}x{nh}, {ours:?}");
        }
    }
}
