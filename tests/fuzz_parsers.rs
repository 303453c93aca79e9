//! Property tests: arbitrary and mutated bytes thrown at every parser we own. Each must return an error or a
//! value, never panic, and never allocate for sizes the input cannot hold. The case count is fixed so CI
//! stays fast and repeatable.

use std::path::Path;

use lenet5::checkpoint::Checkpoint;
use lenet5::data::idx::{decompress_if_gzip, encode_images, encode_labels, parse_images, parse_labels};
use lenet5::nn::model::{Head, init_params};
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

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn idx_parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_images(&bytes);
        let _ = parse_labels(&bytes);
        if let Ok(raw) = decompress_if_gzip(bytes) {
            let _ = parse_images(&raw);
        }
    }

    #[test]
    fn idx_parsers_never_panic_on_mutated_files(bytes in mutated(encode_images(3, 28, 28, &[7; 3 * 784]))) {
        match parse_images(&bytes) {
            Ok(img) => prop_assert_eq!(img.pixels.len(), img.count * img.rows * img.cols),
            Err(e) => prop_assert!(!e.is_empty()),
        }
        let _ = parse_labels(&bytes);
    }

    #[test]
    fn labels_parser_never_panics_on_mutated_files(bytes in mutated(encode_labels(&[1, 2, 3, 4, 5, 6, 7, 8]))) {
        if let Ok(l) = parse_labels(&bytes) {
            prop_assert!(l.len() <= bytes.len());
        }
    }

    #[test]
    fn gzip_reader_never_panics_on_mutated_streams(bytes in mutated(gzip(&encode_labels(&[3; 300])))) {
        if let Ok(raw) = decompress_if_gzip(bytes) {
            let _ = parse_labels(&raw);
        }
    }

    #[test]
    fn checkpoint_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Checkpoint::from_bytes(&bytes, Path::new("fuzz.safetensors"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    #[test]
    fn checkpoint_reader_never_panics_on_mutated_checkpoints(
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 1..8),
        cut in 0usize..300_000,
    ) {
        let mut bytes = Checkpoint::new(init_params(1), Head::Sigmoid).to_bytes().unwrap();
        for (i, b) in edits {
            let i = i % bytes.len().min(4096);
            bytes[i] = b;
        }
        bytes.truncate(cut.max(1).min(bytes.len()));
        let _ = Checkpoint::from_bytes(&bytes, Path::new("fuzz.safetensors"));
    }
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
