//! Writing files so that a crash never leaves half of one, and making directories with errors that say what
//! was in the way.
//!
//! Every file is written atomically: to a temporary file in the same directory, flushed to disk, then renamed
//! over the target, so a crash leaves either the old file or the new one, never half of either.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Error, IoContext, Result};

/// Held by [`write_atomic`] for the whole of each write.
static WRITES: Mutex<()> = Mutex::new(());

/// Waits for the [`write_atomic`] in progress, if any, to finish, and keeps any other from starting while the
/// guard lives: for a process about to exit at once (a second Ctrl-C), so that it leaves no temporary file.
pub fn pause_writes() -> MutexGuard<'static, ()> {
    WRITES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a path that is not a regular file is, for the error that refuses to replace it.
fn kind_of(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        match file_type {
            t if t.is_fifo() => return "a FIFO",
            t if t.is_socket() => return "a socket",
            t if t.is_char_device() => return "a character device",
            t if t.is_block_device() => return "a block device",
            _ => {}
        }
    }
    if file_type.is_dir() { "a directory" } else { "not a regular file" }
}

/// The file a write to `path` replaces: `path` itself when it is missing or a regular file, the file a symbolic
/// link ends at when that is a regular file (written in place, in its own directory, so the link stays a link).
/// Anything else — a directory, a FIFO, a socket, a device, a link to one of those or to nothing — is refused:
/// an output never replaces what is not a regular file.
fn destination(path: &Path) -> Result<PathBuf> {
    let refuse = |what: &str| Error::format(path, format!("is {what}; an output replaces only a regular file"));
    match std::fs::symlink_metadata(path) {
        Err(_) => Ok(path.to_path_buf()),
        Ok(m) if m.file_type().is_file() => Ok(path.to_path_buf()),
        Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(path) {
            Ok(target) if target.is_file() => std::fs::canonicalize(path).at(path),
            Ok(target) => Err(refuse(&format!("a link to {}", kind_of(target.file_type())))),
            Err(_) => Err(refuse("a link to nothing")),
        },
        Ok(m) => Err(refuse(kind_of(m.file_type()))),
    }
}

/// Checks that `path` is an output [`write_atomic`] may replace: missing, a regular file, or a link to one.
pub(crate) fn check_output(path: &Path) -> Result<()> {
    destination(path).map(|_| ())
}

/// Writes `bytes` to `path` so that readers see the old content or the new, never a mix: a temporary file in
/// the same directory, `fsync`, rename, then `fsync` of the directory. A symbolic link to a regular file is
/// followed, and its target replaced; a path that is not a regular file is refused (a directory, a FIFO, a
/// socket, a device, a link to one of those or to nothing).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let _writing = pause_writes();
    let path = &destination(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        {
            // A fresh file, never whatever (a link, a FIFO) may already stand at the temporary name.
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).at(&tmp)?;
            f.write_all(bytes).at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
        std::fs::rename(&tmp, path).at(path)?;
        // Make the rename itself durable. Not every platform can open a directory; that is not an error.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates directory `dir` and any missing parents; a file in the way is named as such, not as "File exists".
pub fn create_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::format(dir, "exists and is not a directory; a directory was expected here"));
    }
    std::fs::create_dir_all(dir).at(dir)
}

/// Whether `name` is one of [`write_atomic`]'s temporary files.
pub fn is_temp_file(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp.")
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Every kind of thing an output path can name, made in `dir`: its name, and whether a write may replace it.
    fn paths(dir: &Path) -> Vec<(PathBuf, bool)> {
        let at = |name: &str| dir.join(name);
        std::fs::write(at("regular"), b"old").unwrap();
        std::fs::create_dir(at("directory")).unwrap();
        let fifo = std::ffi::CString::new(at("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid path; makes a FIFO.
        assert_eq!(unsafe { libc_mkfifo(fifo.as_ptr(), 0o600) }, 0);
        std::fs::write(at("target"), b"old").unwrap();
        std::os::unix::fs::symlink(at("target"), at("link-to-file")).unwrap();
        std::os::unix::fs::symlink(at("fifo"), at("link-to-fifo")).unwrap();
        std::os::unix::fs::symlink(at("directory"), at("link-to-directory")).unwrap();
        std::os::unix::fs::symlink("/dev/null", at("link-to-device")).unwrap();
        std::os::unix::fs::symlink(at("nothing"), at("link-to-nothing")).unwrap();
        std::os::unix::net::UnixListener::bind(at("socket")).unwrap();
        let mut all = vec![(at("new"), true), (at("regular"), true), (at("link-to-file"), true)];
        for refused in
            ["directory", "fifo", "link-to-fifo", "link-to-directory", "link-to-device", "link-to-nothing", "socket"]
        {
            all.push((at(refused), false));
        }
        all
    }

    unsafe extern "C" {
        #[link_name = "mkfifo"]
        fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
    }

    #[test]
    fn only_regular_files_are_ever_replaced_and_links_to_them_stay_links() {
        let tmp = tempfile::tempdir().unwrap();
        for (path, allowed) in paths(tmp.path()) {
            let before = std::fs::symlink_metadata(&path).ok().map(|m| m.file_type());
            let result = write_atomic(&path, b"new");
            let after = std::fs::symlink_metadata(&path).ok().map(|m| m.file_type());
            assert_eq!(result.is_ok(), allowed, "{}: {result:?}", path.display());
            if allowed {
                assert_eq!(std::fs::read(&path).unwrap(), b"new", "{}", path.display());
                assert!(before.is_none() || before == after, "{} changed kind", path.display());
            } else {
                assert_eq!(before, after, "{} was replaced", path.display());
                let message = result.unwrap_err().to_string();
                assert!(message.contains("an output replaces only a regular file"), "{message}");
            }
        }
        assert_eq!(std::fs::read(tmp.path().join("target")).unwrap(), b"new", "the link's target was written");
        assert!(std::fs::symlink_metadata(tmp.path().join("link-to-file")).unwrap().file_type().is_symlink());
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .flatten()
            .filter(|e| is_temp_file(&e.file_name().to_string_lossy()))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
}
