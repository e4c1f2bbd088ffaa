//! One bench at a time: two would share the run directory and namespace names, and each
//! one's sweep of stale state would tear down the other.
use std::{fs::File, os::fd::AsRawFd, path::PathBuf};

use anyhow::{Context, Result, bail};

const LOCK: &str = "/run/lock/npbench.lock";

/// Held for the whole run; the file goes when it is dropped (the kernel releases the lock
/// itself if the bench dies).
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    pub fn acquire() -> Result<Self> {
        let path = PathBuf::from(LOCK);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {LOCK}"))?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("another `cargo xtask bench` is running (it holds {LOCK})");
        }
        Ok(Self { _file: file, path })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
