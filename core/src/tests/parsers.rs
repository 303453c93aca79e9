//! Property tests: arbitrary and mutated bytes thrown at the engine's parsers (IDX, gzip, checkpoints). Each must return an error or a
//! value, never panic, and never allocate for sizes the input cannot hold. The case count is fixed so CI
//! stays fast and repeatable.

use std::path::Path;

use crate::checkpoint::Checkpoint;
use crate::data::idx::{decompress_if_gzip, encode_images, encode_labels, parse_images, parse_labels};
use crate::nn::model::Head;
use crate::nn::params::init_params;
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
            Err(e) => prop_assert!(!e.to_string().is_empty()),
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

/// Files are read header first and only as far as the header says: an endless stream of zeros is refused at its
/// magic number, a header that promises more than a data set can hold is refused before anything is allocated,
/// and what follows the data is noticed after a look at its first megabyte.
#[test]
#[cfg_attr(target_family = "wasm", ignore = "WASI has no temporary directory")]
fn idx_files_are_read_no_further_than_their_header_says() {
    use crate::data::idx::{read_images, read_labels};
    let dir = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        let zeros = dir.path().join("zeros-idx3-ubyte");
        std::os::unix::fs::symlink("/dev/zero", &zeros).unwrap();
        let e = read_images(&zeros).unwrap_err().to_string();
        assert!(e.contains("magic number 0, expected 2051"), "{e}");
    }
    let huge = dir.path().join("huge-idx3-ubyte");
    let mut header = vec![0, 0, 8, 3];
    for d in [100_000_000u32, 28, 28] {
        header.extend_from_slice(&d.to_be_bytes());
    }
    std::fs::write(&huge, &header).unwrap();
    let e = read_images(&huge).unwrap_err().to_string();
    assert!(e.contains("more than"), "{e}");
    let long = dir.path().join("long-idx1-ubyte");
    let mut bytes = encode_labels(&[1, 2, 3]);
    bytes.extend(std::iter::repeat_n(7u8, 3 << 20));
    std::fs::write(&long, bytes).unwrap();
    let e = read_labels(&long).unwrap_err().to_string();
    assert!(e.contains("trailing bytes"), "{e}");
    std::fs::write(&long, encode_labels(&[1, 2, 3])).unwrap();
    assert_eq!(read_labels(&long).unwrap(), [1, 2, 3]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    /// A NaN or an infinity anywhere in the weights or the momentum of a checkpoint, of any number of classes,
    /// is refused on load, naming the tensor that holds it.
    #[test]
    fn non_finite_values_anywhere_are_refused_naming_their_tensor(
        classes in 2usize..40,
        at in any::<prop::sample::Index>(),
        in_momentum in any::<bool>(),
        bad in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)],
    ) {
        let params = crate::nn::params::init_params_for(3, classes);
        let i = at.index(params.len());
        let mut ck = Checkpoint::new(params.clone(), Head::Logits);
        ck.momentum = Some(params);
        let target = if in_momentum { ck.momentum.as_mut().unwrap() } else { &mut ck.params };
        target[i] = bad;
        let bytes = ck.to_bytes().unwrap();
        let e = Checkpoint::from_bytes(&bytes, Path::new("x.safetensors")).unwrap_err().to_string();
        let tensor = crate::nn::Param::ALL.into_iter().find(|p| p.range(classes).contains(&i)).unwrap();
        prop_assert!(e.contains(tensor.name()) && e.contains("must be finite"), "{}", e);
        prop_assert_eq!(e.contains("optimizer.momentum."), in_momentum, "{}", e);
    }
}
