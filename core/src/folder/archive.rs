//! Reading zip archives: the central directory (with its zip64 extension, for archives of more than 65,535
//! files or 4 GiB), and each file stored or deflated, its size and CRC-32 checked. Nothing else of the format
//! (encryption, other compression methods, multi-disk archives) is read: such a file is refused with why.
//!
//! Every offset and size comes from the archive and is checked against its length before use; a file is
//! inflated into at most the size the directory gives it (itself bounded by the caller), so a crafted archive
//! cannot make a read allocate more.

use std::io::Read;

/// One file (or folder, its name ending in `/`) of an archive.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub name: String,
    /// Its size once inflated, as the directory says.
    pub size: u64,
    method: u16,
    encrypted: bool,
    crc: u32,
    compressed: u64,
    /// Where its local header starts.
    header: u64,
}

const END: u32 = 0x0605_4b50;
const END64_LOCATOR: u32 = 0x0706_4b50;
const END64: u32 = 0x0606_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;
/// The end record is at most this far from the archive's end (its comment is at most 65,535 bytes).
const MAX_END_DISTANCE: usize = 22 + 0xffff;

/// Little-endian fields of `bytes`, each read checked against its length.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes(&self, at: u64, len: u64) -> Result<&[u8], String> {
        let end = at.checked_add(len).filter(|&e| e <= self.0.len() as u64);
        end.map(|e| &self.0[at as usize..e as usize]).ok_or_else(|| format!("truncated at byte {at}"))
    }
    fn u16(&self, at: u64) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.bytes(at, 2)?.try_into().expect("two bytes")))
    }
    fn u32(&self, at: u64) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(at, 4)?.try_into().expect("four bytes")))
    }
    fn u64(&self, at: u64) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(at, 8)?.try_into().expect("eight bytes")))
    }
}

/// The entries of the archive `bytes`, at most `max_entries` of them, in the order of its directory.
pub(crate) fn entries(bytes: &[u8], max_entries: usize) -> Result<Vec<Entry>, String> {
    let f = Fields(bytes);
    let from = bytes.len().saturating_sub(MAX_END_DISTANCE);
    let end = (from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&at| f.u32(at as u64) == Ok(END))
        .ok_or("no zip directory at its end")? as u64;
    let (mut count, mut offset) = (f.u16(end + 10)? as u64, f.u32(end + 16)? as u64);
    if count == 0xffff || offset == 0xffff_ffff {
        // Zip64: a locator just before the end record says where the larger end record is.
        let locator = end.checked_sub(20).ok_or("a zip64 archive without its locator")?;
        if f.u32(locator)? != END64_LOCATOR {
            return Err("a zip64 archive without its locator".into());
        }
        let end64 = f.u64(locator + 8)?;
        if f.u32(end64)? != END64 {
            return Err("a zip64 archive without its end record".into());
        }
        (count, offset) = (f.u64(end64 + 32)?, f.u64(end64 + 48)?);
    }
    if count > max_entries as u64 {
        return Err(format!("{count} entries, more than {max_entries}"));
    }
    // Each entry takes at least 46 bytes of the directory: a count that cannot fit allocates nothing.
    let mut out = Vec::with_capacity((count as usize).min(bytes.len() / 46));
    for _ in 0..count {
        let (entry, next) = central_entry(&f, offset)?;
        out.push(entry);
        offset = next;
    }
    Ok(out)
}

/// The directory's entry at `at`, and where the next begins.
fn central_entry(f: &Fields, at: u64) -> Result<(Entry, u64), String> {
    if f.u32(at)? != CENTRAL {
        return Err(format!("no directory entry at byte {at}"));
    }
    let (flags, method, crc) = (f.u16(at + 8)?, f.u16(at + 10)?, f.u32(at + 16)?);
    let (mut compressed, mut size) = (f.u32(at + 20)? as u64, f.u32(at + 24)? as u64);
    let (name_len, extra_len, comment_len) = (f.u16(at + 28)? as u64, f.u16(at + 30)? as u64, f.u16(at + 32)? as u64);
    let mut header = f.u32(at + 42)? as u64;
    let name_bytes = f.bytes(at + 46, name_len)?;
    // Bit 11 says the name is UTF-8; else it is in the archiver's code page, which agrees with UTF-8 on ASCII
    // (the rest is read as UTF-8 too, replaced where it is not).
    let name = String::from_utf8_lossy(name_bytes).into_owned();
    // Zip64: the fields that overflowed are in the extra field 0x0001, in this order.
    let extra = f.bytes(at + 46 + name_len, extra_len)?;
    let mut e = 0;
    while e + 4 <= extra.len() {
        let (id, len) =
            (u16::from_le_bytes([extra[e], extra[e + 1]]), u16::from_le_bytes([extra[e + 2], extra[e + 3]]));
        let data = Fields(extra.get(e + 4..e + 4 + len as usize).ok_or("a truncated extra field")?);
        if id == 1 {
            let mut k = 0;
            for field in [&mut size, &mut compressed, &mut header] {
                if *field == 0xffff_ffff {
                    *field = data.u64(k)?;
                    k += 8;
                }
            }
        }
        e += 4 + len as usize;
    }
    let entry = Entry { name, size, method, encrypted: flags & 1 == 1, crc, compressed, header };
    Ok((entry, at + 46 + name_len + extra_len + comment_len))
}

/// The inflated bytes of `entry`, refused when its size is over `limit` or it is not what the directory says.
pub(crate) fn read(bytes: &[u8], entry: &Entry, limit: u64) -> Result<Vec<u8>, String> {
    if entry.size > limit {
        return Err(format!("{} bytes is larger than the {limit}-byte limit", entry.size));
    }
    if entry.encrypted {
        return Err("encrypted".into());
    }
    let f = Fields(bytes);
    if f.u32(entry.header)? != LOCAL {
        return Err(format!("no file header at byte {}", entry.header));
    }
    let start = entry.header + 30 + f.u16(entry.header + 26)? as u64 + f.u16(entry.header + 28)? as u64;
    let data = f.bytes(start, entry.compressed)?;
    let mut out = Vec::with_capacity(entry.size as usize);
    match entry.method {
        0 => out.extend_from_slice(data),
        8 => {
            let inflate = flate2::read::DeflateDecoder::new(data);
            inflate.take(entry.size + 1).read_to_end(&mut out).map_err(|e| format!("cannot inflate ({e})"))?;
        }
        m => return Err(format!("compression method {m}, of which only stored (0) and deflate (8) are read")),
    }
    if out.len() as u64 != entry.size {
        return Err(format!("the archive says {} bytes, and it holds {}", entry.size, out.len()));
    }
    let mut crc = flate2::Crc::new();
    crc.update(&out);
    if crc.sum() != entry.crc {
        return Err("damaged (its CRC-32 does not match)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An archive of `files` (name, bytes), each stored or deflated.
    fn archive(files: &[(&str, &[u8])], deflated: bool) -> Vec<u8> {
        let method = if deflated { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, bytes) in files {
            zip.start_file(*name, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
        entries(bytes, 1 << 20)?.iter().map(|e| Ok((e.name.clone(), read(bytes, e, 1 << 20)?))).collect()
    }

    #[test]
    fn stored_and_deflated_files_read_back() {
        let text = b"lenet5 ".repeat(1000);
        for deflated in [false, true] {
            let zip = archive(&[("a/1.png", b"one"), ("b/", b""), ("b/two.txt", &text)], deflated);
            let got = read_all(&zip).unwrap();
            let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["a/1.png", "b/", "b/two.txt"]);
            assert_eq!((got[0].1.as_slice(), got[2].1.as_slice()), (b"one".as_slice(), text.as_slice()));
        }
    }

    #[test]
    fn more_than_65535_files_are_read_through_zip64() {
        let names: Vec<String> = (0..70_000).map(|i| format!("c/{i}")).collect();
        let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), b"x".as_slice())).collect();
        let zip = archive(&files, false);
        let list = entries(&zip, 1 << 20).unwrap();
        assert_eq!((list.len(), list[69_999].name.as_str()), (70_000, "c/69999"));
        assert_eq!(read(&zip, &list[69_999], 10).unwrap(), b"x");
        assert_eq!(entries(&zip, 1000).unwrap_err(), "70000 entries, more than 1000");
    }

    #[test]
    fn a_damaged_or_lying_archive_is_refused_with_why() {
        let zip = archive(&[("a.png", b"0123456789")], false);
        let entry = &entries(&zip, 10).unwrap()[0];
        let mut flipped = zip.clone();
        let at = flipped.windows(10).position(|w| w == b"0123456789").unwrap();
        flipped[at] = b'9';
        assert_eq!(read(&flipped, entry, 100).unwrap_err(), "damaged (its CRC-32 does not match)");
        let lying = Entry { size: 5, ..entry.clone() };
        assert_eq!(read(&zip, &lying, 100).unwrap_err(), "the archive says 5 bytes, and it holds 10");
        assert!(read(&zip, entry, 9).unwrap_err().contains("larger than the 9-byte limit"));
        assert_eq!(entries(b"not a zip at all, just text", 10).unwrap_err(), "no zip directory at its end");
        // Every cut of the archive is refused or read, never a panic.
        for len in 0..zip.len() {
            if let Ok(list) = entries(&zip[..len], 10) {
                for e in &list {
                    let _ = read(&zip[..len], e, 100);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn a_mutated_archive_never_panics(at in 0usize..200, byte in proptest::num::u8::ANY, deflated in proptest::bool::ANY) {
            let mut zip = archive(&[("a/1.png", b"some bytes of an image"), ("b/2.png", b"more")], deflated);
            let at = at % zip.len();
            zip[at] = byte;
            if let Ok(list) = entries(&zip, 10) {
                for e in &list {
                    let _ = read(&zip, e, 1 << 10);
                }
            }
        }
    }
}
