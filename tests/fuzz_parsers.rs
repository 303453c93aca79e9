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
            let _ = lenet5::preprocess::Preprocess::Mnist.input(&img);
        }
    }
}

/// `data` with the `k`-th integer opcode of its first pickles (BININT1 `K`, BININT2 `M` or BININT `J`, and
/// their operand) replaced by `value` as a LONG1 of 8 bytes: how a crafted file states a huge size, stride,
/// offset or element count. (A byte that only looks like such an opcode is replaced too, which is just another
/// mutation.)
fn with_extreme_int(data: &[u8], k: usize, value: i64) -> Vec<u8> {
    let operand = |op: u8| match op {
        b'K' => Some(1),
        b'M' => Some(2),
        b'J' => Some(4),
        _ => None,
    };
    let end = data.len().min(4096);
    let positions: Vec<usize> =
        (0..end.saturating_sub(4)).filter(|&i| operand(data[i]).is_some_and(|n| i + n < data.len())).collect();
    if positions.is_empty() {
        return data.to_vec();
    }
    let at = positions[k % positions.len()];
    let mut out = data[..at].to_vec();
    out.extend_from_slice(&[0x8a, 8]);
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&data[at + 1 + operand(data[at]).unwrap()..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..config() })]

    /// Tuples nested to any depth, up to a million (2 MB of pickle), are refused past 64 levels; none crashes
    /// the reader in building, copying, printing or dropping them.
    #[test]
    fn pickles_nested_to_any_depth_are_refused_past_the_bound(depth in prop_oneof![0usize..130, 999_000usize..1_000_000]) {
        let mut bytes = vec![0x80, 2, b')'];
        bytes.extend(std::iter::repeat_n(0x85u8, depth)); // TUPLE1: wrap the top in a tuple
        bytes.extend([b'2', b'.']); // DUP, STOP
        let result = lenet5::interop::pickle::load(&bytes, 0);
        prop_assert_eq!(result.is_ok(), depth < lenet5::interop::pickle::MAX_DEPTH, "{:?}", result.err());
    }

    /// Extreme integers (sizes, strides, offsets, element counts) in a `.pth` are errors, never a wrapped size
    /// or an index out of range.
    #[test]
    fn pth_files_with_extreme_integers_never_panic(
        k in 0usize..4096,
        value in prop_oneof![Just(i64::MAX), Just(1i64 << 62), Just((1i64 << 61) + 1), Just(-1i64), Just(0i64), any::<i64>()],
    ) {
        let bytes = with_extreme_int(&fixture("tutorial_legacy.pth"), k, value);
        let _ = lenet5::interop::pth::from_pth_bytes(&bytes, Path::new("extreme.pth"), Head::Sigmoid);
    }
}

/// A flat pickle of millions of values is refused before it takes more than a small multiple of its size.
#[test]
fn flat_pickles_are_bounded_by_their_size() {
    let mut bytes = vec![0x80, 2, b'('];
    bytes.extend(std::iter::repeat_n(b'N', 4_000_000)); // four million Nones
    bytes.extend([b'l', b'.']);
    let e = lenet5::interop::pickle::load(&bytes, 0).unwrap_err().to_string();
    assert!(e.contains("more values than its size allows"), "{e}");
    let small: Vec<u8> = [&[0x80u8, 2, b'('][..], &[b'N'; 1000][..], &[b'l', b'.'][..]].concat();
    assert!(lenet5::interop::pickle::load(&small, 0).is_ok());
}
