//! The IDX file format of MNIST: a big-endian header (`0, 0, type, ndims`, then one u32 per dimension) followed
//! by the data. We read unsigned-byte files only: images (`magic 2051`, 3 dims) and labels (`magic 2049`, 1 dim).
//! Files may be gzip-compressed; that is detected from the content, not the name.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

pub(crate) const IMAGES_MAGIC: u32 = 2051;
pub(crate) const LABELS_MAGIC: u32 = 2049;

/// No IDX file we read decompresses to more than this (MNIST's largest is 47 MB); a larger stream is refused
/// rather than allowed to fill memory.
pub(crate) const MAX_DECOMPRESSED: u64 = 1 << 30;

/// What is wrong with the bytes of an IDX file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdxError {
    #[error("not an IDX {what} file: {len} bytes is shorter than the 4-byte magic")]
    NoMagic { what: &'static str, len: usize },
    #[error("not an IDX {what} file: magic number {found}, expected {expected}")]
    Magic { what: &'static str, found: u32, expected: u32 },
    #[error("truncated IDX header: {len} bytes, expected at least {expected}")]
    ShortHeader { len: usize, expected: usize },
    #[error("truncated: header says {dims:?} ({expected} data bytes), file holds {found}")]
    Truncated { dims: Vec<usize>, expected: usize, found: usize },
    #[error("{} trailing bytes after the {expected} data bytes of {dims:?}", found - expected)]
    Trailing { dims: Vec<usize>, expected: usize, found: usize },
    #[error("dimensions {dims:?} overflow")]
    Overflow { dims: Vec<usize> },
    #[error("corrupt gzip stream ({0})")]
    Gzip(String),
    #[error("decompresses to more than {MAX_DECOMPRESSED} bytes")]
    TooLarge,
}

/// Images as stored: `count` images of `rows x cols` bytes, row-major.
#[derive(Clone, Debug)]
pub(crate) struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Decompresses `raw` if it starts with the gzip magic, else returns it as is.
pub fn decompress_if_gzip(raw: Vec<u8>) -> std::result::Result<Vec<u8>, IdxError> {
    if raw.len() < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
        return Ok(raw);
    }
    // The gzip trailer states the decompressed size (mod 2^32). It is untrusted, so it only sizes the buffer
    // up to what the stream could possibly hold (deflate expands at most ~1032:1) and the global cap.
    let stated = u32::from_le_bytes(raw[raw.len().saturating_sub(4)..].try_into().unwrap_or([0; 4])) as u64;
    let bound = (raw.len() as u64).saturating_mul(1032).min(MAX_DECOMPRESSED);
    let mut out = Vec::with_capacity(stated.min(bound) as usize);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| IdxError::Gzip(e.to_string()))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(IdxError::TooLarge);
    }
    Ok(out)
}

/// Parses the header; returns the dimensions and the byte offset of the data.
fn parse_header(bytes: &[u8], magic: u32, what: &'static str) -> std::result::Result<(Vec<usize>, usize), IdxError> {
    if bytes.len() < 4 {
        return Err(IdxError::NoMagic { what, len: bytes.len() });
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        return Err(IdxError::Magic { what, found, expected: magic });
    }
    let ndims = (magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(IdxError::ShortHeader { len: bytes.len(), expected: header_len });
    }
    let dims = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    Ok((dims, header_len))
}

/// Checks that the data after the header is exactly `expected` bytes.
fn check_len(
    bytes: &[u8],
    header_len: usize,
    expected: Option<usize>,
    dims: &[usize],
) -> std::result::Result<(), IdxError> {
    let (found, dims) = (bytes.len() - header_len, dims.to_vec());
    match expected {
        Some(expected) if expected == found => Ok(()),
        Some(expected) if found < expected => Err(IdxError::Truncated { dims, expected, found }),
        Some(expected) => Err(IdxError::Trailing { dims, expected, found }),
        None => Err(IdxError::Overflow { dims }),
    }
}

/// Parses an images file held in memory.
#[cfg(test)]
pub(crate) fn parse_images(bytes: &[u8]) -> std::result::Result<IdxImages, IdxError> {
    parse_images_owned(bytes.to_vec())
}

/// Parses an images file, reusing its buffer for the pixels (no second copy of a 47 MB file).
pub(crate) fn parse_images_owned(mut bytes: Vec<u8>) -> std::result::Result<IdxImages, IdxError> {
    let (dims, header_len) = parse_header(&bytes, IMAGES_MAGIC, "images")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    check_len(&bytes, header_len, count.checked_mul(rows).and_then(|n| n.checked_mul(cols)), &dims)?;
    bytes.drain(..header_len);
    Ok(IdxImages { count, rows, cols, pixels: bytes })
}

/// Parses a labels file held in memory.
pub(crate) fn parse_labels(bytes: &[u8]) -> std::result::Result<Vec<u8>, IdxError> {
    let (dims, header_len) = parse_header(bytes, LABELS_MAGIC, "labels")?;
    check_len(bytes, header_len, Some(dims[0]), &dims)?;
    Ok(bytes[header_len..].to_vec())
}

/// Reads an images file (raw or gzip).
pub(crate) fn read_images(path: &Path) -> Result<IdxImages> {
    Ok(read_images_digest(path)?.0)
}

/// Reads a labels file (raw or gzip).
pub(crate) fn read_labels(path: &Path) -> Result<Vec<u8>> {
    Ok(read_labels_digest(path)?.0)
}

/// [`read_images`], with the hex SHA-256 of the file's decompressed content (which names a published data set).
pub(crate) fn read_images_digest(path: &Path) -> Result<(IdxImages, String)> {
    let (dims, pixels, digest) = read_idx(path, IMAGES_MAGIC, "images")?;
    Ok((IdxImages { count: dims[0], rows: dims[1], cols: dims[2], pixels }, digest))
}

/// [`read_labels`], with the hex SHA-256 of the file's decompressed content.
pub(crate) fn read_labels_digest(path: &Path) -> Result<(Vec<u8>, String)> {
    let (_, labels, digest) = read_idx(path, LABELS_MAGIC, "labels")?;
    Ok((labels, digest))
}

/// The hex SHA-256 of a file's decompressed content: its header, then its data.
fn content_sha256(header: &[u8], data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new().chain_update(header).chain_update(data).finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Trailing bytes read, at most, to say that a file goes on after its data.
const TRAILING_PROBE: u64 = 1 << 20;

/// Reads an IDX file (raw or gzip) from disk: its header first, then exactly the data the header declares (at
/// most [`MAX_DECOMPRESSED`] bytes), then checks that nothing follows. Nothing is read before the header says
/// how much there is, and never much more than that: a huge or endless file with a bad header costs a few
/// bytes.
fn read_idx(path: &Path, magic: u32, what: &'static str) -> Result<(Vec<usize>, Vec<u8>, String)> {
    use std::io::BufRead;
    let mut file = std::io::BufReader::new(std::fs::File::open(path).at(path)?);
    let head = file.fill_buf().at(path)?;
    let gzip = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
    let mut stream: Box<dyn Read> =
        if gzip { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let fail = |e: IdxError| Error::format(path, e.to_string());
    let io = |e: std::io::Error| if gzip { fail(IdxError::Gzip(e.to_string())) } else { Error::io(path, e) };
    let mut header = Vec::new();
    (&mut stream).take(4).read_to_end(&mut header).map_err(io)?;
    let ndims = if header.len() == 4 { (u32::from_be_bytes(header[..4].try_into().unwrap()) & 0xff) as u64 } else { 0 };
    if header.len() == 4 && u32::from_be_bytes(header[..4].try_into().unwrap()) == magic {
        (&mut stream).take(4 * ndims).read_to_end(&mut header).map_err(io)?;
    }
    let (dims, _) = parse_header(&header, magic, what).map_err(fail)?;
    let expected = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let expected = expected.ok_or_else(|| fail(IdxError::Overflow { dims: dims.clone() }))?;
    if expected as u64 > MAX_DECOMPRESSED {
        return Err(fail(IdxError::TooLarge));
    }
    let (data, digest) = read_and_hash(&mut stream, &header, expected).map_err(io)?;
    if data.len() < expected {
        return Err(fail(IdxError::Truncated { dims, expected, found: data.len() }));
    }
    let mut rest = Vec::new();
    stream.take(TRAILING_PROBE).read_to_end(&mut rest).map_err(io)?;
    if !rest.is_empty() {
        return Err(fail(IdxError::Trailing { dims, expected, found: expected + rest.len() }));
    }
    Ok((dims, data, digest))
}

/// Bytes decompressed between two hand-overs to the hashing thread.
const HASH_CHUNK: usize = 1 << 20;

/// At most `len` bytes of `stream` (fewer when it ends first), and the hex SHA-256 of `header` followed by them.
/// With threads, a second thread hashes each megabyte (and appends it to the data) while the next one is read and
/// decompressed, so that checking a data set's files costs almost no time on top of reading them. Memory grows
/// with the bytes read, never with what a header claims.
fn read_and_hash(stream: &mut dyn Read, header: &[u8], len: usize) -> std::io::Result<(Vec<u8>, String)> {
    use sha2::{Digest, Sha256};
    if !cfg!(feature = "threads") || len <= HASH_CHUNK {
        let mut data = Vec::new();
        stream.take(len as u64).read_to_end(&mut data)?;
        let digest = content_sha256(header, &data);
        return Ok((data, digest));
    }
    let (data, sha) = std::thread::scope(|scope| {
        let (chunks, hashed) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let hasher = scope.spawn(move || {
            let (mut sha, mut data) = (Sha256::new().chain_update(header), Vec::new());
            for chunk in hashed {
                sha.update(&chunk);
                data.extend_from_slice(&chunk);
            }
            (data, sha)
        });
        let read = (|| {
            let mut left = len;
            while left > 0 {
                let want = left.min(HASH_CHUNK);
                let mut chunk = Vec::with_capacity(want);
                (&mut *stream).take(want as u64).read_to_end(&mut chunk)?;
                let got = chunk.len();
                // The hasher is gone only if it panicked, which the join below reports.
                let _ = chunks.send(chunk);
                if got < want {
                    break;
                }
                left -= got;
            }
            Ok::<_, std::io::Error>(())
        })();
        drop(chunks);
        read.map(|()| hasher.join().expect("hashing never panics"))
    })?;
    let digest = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((data, digest))
}

/// Encodes an images file (used by tests and tools that write small data sets).
pub(crate) fn encode_images(count: usize, rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [IMAGES_MAGIC, count as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes a labels file.
pub(crate) fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_and_hashing_on_two_threads_gives_the_bytes_and_digest_of_one_pass() {
        let header = encode_images(1, 1, 1, &[]);
        let content: Vec<u8> = (0..3 * HASH_CHUNK + 12_345).map(|i| (i * 31 % 251) as u8).collect();
        // Whole, a chunk's length exactly, and streams that end early (a truncated file), at and off a chunk.
        for (len, available) in [(content.len(), content.len()), (HASH_CHUNK * 2, HASH_CHUNK * 2)]
            .into_iter()
            .chain([HASH_CHUNK, HASH_CHUNK + 7, 3].map(|end| (content.len(), end)))
        {
            let mut stream = &content[..available];
            let (data, digest) = read_and_hash(&mut stream, &header, len).unwrap();
            assert_eq!(data, &content[..len.min(available)], "{len} of {available}");
            assert_eq!(digest, content_sha256(&header, &data), "{len} of {available}");
        }
    }

    #[test]
    fn round_trip() {
        let px: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let img = parse_images(&encode_images(2, 3, 4, &px)).unwrap();
        assert_eq!((img.count, img.rows, img.cols), (2, 3, 4));
        assert_eq!(img.pixels, px);
        assert_eq!(parse_labels(&encode_labels(&[1, 2, 3])).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn rejects_wrong_magic_truncation_and_trailing_bytes() {
        let good = encode_images(2, 3, 4, &[0; 24]);
        assert!(parse_labels(&good).unwrap_err().to_string().contains("magic number 2051, expected 2049"));
        assert!(parse_images(&good[..good.len() - 1]).unwrap_err().to_string().contains("truncated"));
        assert!(parse_images(&good[..10]).unwrap_err().to_string().contains("truncated IDX header"));
        let mut long = good.clone();
        long.push(0);
        assert!(parse_images(&long).unwrap_err().to_string().contains("trailing"));
        assert!(parse_images(&[]).unwrap_err().to_string().contains("shorter"));
        // a header claiming 4 billion images must not allocate for them (where a size holds 32 bits, as in
        // WebAssembly, their byte count does not fit one)
        let huge = encode_images(u32::MAX as usize, 28, 28, &[]);
        let want = if usize::BITS > 32 { "truncated" } else { "overflow" };
        assert!(parse_images(&huge).unwrap_err().to_string().contains(want));
    }

    #[test]
    fn gzip_is_detected_by_content() {
        use std::io::Write;
        let plain = encode_labels(&[7; 5]);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&plain).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decompress_if_gzip(gz.clone()).unwrap(), plain);
        assert!(decompress_if_gzip(gz[..gz.len() / 2].to_vec()).unwrap_err().to_string().contains("corrupt gzip"));
    }
}
