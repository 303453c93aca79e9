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

/// Writes `bytes` to `path` so that readers see the old content or the new, never a mix: a temporary file in
/// the same directory, `fsync`, rename, then `fsync` of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let _writing = pause_writes();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        {
            let mut f = std::fs::File::create(&tmp).at(&tmp)?;
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
