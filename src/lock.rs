//! An exclusive lock on a run directory, held for a whole training run, so that two processes never train into
//! the same directory (one's results would silently replace the other's). The lock is the kernel's (`flock`),
//! so a process that dies, however it dies, leaves no lock behind.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The lock file in a run directory; it holds the process id of the holder, for the message of another.
pub const LOCK_FILE: &str = ".lock";

/// Held while it lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the lock of directory `dir` (which must exist), or says which process holds it.
pub fn lock_dir(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    let io = |e| Error::Core(lenet5_core::Error::io(&path, e));
    let mut file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
    if !try_lock(&file) {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(Error::Locked { dir: dir.to_path_buf(), holder: holder.trim().to_string() });
    }
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DirLock { _file: file })
}

#[cfg(unix)]
fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this function's caller owns; it touches no memory.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> bool {
    true
}

/// Removes the temporary files that a process killed while writing may have left in `dir`; call it holding
/// the directory's lock, when no other process can be writing there.
pub fn remove_stale_temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if lenet5_core::fs::is_temp_file(&entry.file_name().to_string_lossy())
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed.push(entry.path());
        }
    }
    removed
}
