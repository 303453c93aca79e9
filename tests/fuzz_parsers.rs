//! Property tests: arbitrary and mutated bytes thrown at the application's parsers (pickle, `.pth`, images).
//! Each must return an error or a value, never panic, and never allocate for sizes the input cannot hold. The
//! case count is fixed so CI stays fast and repeatable.

use std::path::Path;

use lenet5_core::nn::model::Head;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// A valid file with some bytes overwritten and a random length cut.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (proptest::collection::vec((0..len, any::<u8>()), 0..8), 0..=len).prop_map(move |(edits, cut)| {
        let mut v = valid.clone();
        for (i, b) in edits {
            v[i] = b;
        }
        v.truncate(cut.max(1));
        v
    })
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

fn small_png() -> Vec<u8> {
    let img = image::GrayImage::from_fn(12, 9, |x, y| image::Luma([((x * 20 + y * 7) % 256) as u8]));
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..config() })]

    #[test]
    fn pickle_reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = lenet5::interop::pickle::load(&bytes, 0);
    }

    #[test]
    fn pth_reader_never_panics_on_mutated_zip_files(bytes in mutated(fixture("tutorial.pth"))) {
        let _ = lenet5::interop::pth::from_pth_bytes(&bytes, Path::new("fuzz.pth"), Head::Sigmoid);
    }

    #[test]
    fn pth_reader_never_panics_on_mutated_legacy_files(bytes in mutated(fixture("tutorial_legacy.pth"))) {
        let _ = lenet5::interop::pth::from_pth_bytes(&bytes, Path::new("fuzz.pth"), Head::Sigmoid);
    }

    #[test]
    fn image_decoding_never_panics(bytes in mutated(small_png())) {
        if let Ok(img) = lenet5::preprocess::decode(&bytes) {
            let _ = lenet5::preprocess::preprocess(&img);
        }
    }
}
