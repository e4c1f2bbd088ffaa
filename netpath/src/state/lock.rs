//! Per-operation locks: `flock` on files under `<state-dir>/locks/`.
//!
//! A lock is released by the kernel when its holder dies, however it dies, so "is the process
//! that is creating this row still at work?" is answered by trying its lock, never by guessing
//! from a PID that may have been reused.
//!
//! Order, to keep processes from waiting on each other in a circle: a network's lock, then an
//! endpoint's, then the datapath's (`datapath.lock`). Attach and detach hold their network's
//! lock shared, `network create`/`rm` hold it exclusively, so `network rm` and `attach` never
//! interleave. An endpoint's lock is exclusive and held from before its row is reserved until
//! the row is ready or gone.
use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

use crate::{error::Context, error::Error, error::Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Held {
    _flock: Flock<File>,
    /// Set for locks whose file is removed with the object they guard.
    path: Option<PathBuf>,
}

impl Held {
    /// Removes the lock file while still holding it: the object it guarded is gone. Waiters
    /// that opened the old file notice that the path no longer names it and retry.
    pub fn remove(mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Clone, Debug)]
pub struct Locks {
    dir: PathBuf,
}

impl Locks {
    pub fn new(state_dir: &Path) -> Self {
        Self { dir: state_dir.join("locks") }
    }

    /// The lock every mutating command holds shared and `gc`/`restore` hold exclusively, so
    /// they see no operation half-way.
    pub fn global(&self, mode: Mode) -> Result<Held> {
        self.acquire("all", mode, true)?.ok_or_else(|| unreachable_busy("all"))
    }

    /// The lock of a network, by name (names are file-name safe: `check_name`).
    pub fn network(&self, name: &str, mode: Mode) -> Result<Held> {
        self.acquire(&format!("network-{name}"), mode, true)?.ok_or_else(|| unreachable_busy(name))
    }

    pub fn try_network(&self, name: &str) -> Result<Option<Held>> {
        self.acquire(&format!("network-{name}"), Mode::Exclusive, false)
    }

    /// The lock of an endpoint id, exclusive.
    pub fn endpoint(&self, id: &str) -> Result<Held> {
        self.acquire(&format!("endpoint-{id}"), Mode::Exclusive, true)?.ok_or_else(|| unreachable_busy(id))
    }

    /// The endpoint's lock if nobody holds it: a `creating` row whose lock is free was left by
    /// a process that died.
    pub fn try_endpoint(&self, id: &str) -> Result<Option<Held>> {
        self.acquire(&format!("endpoint-{id}"), Mode::Exclusive, false)
    }

    fn acquire(&self, name: &str, mode: Mode, wait: bool) -> Result<Option<Held>> {
        std::fs::create_dir_all(&self.dir).context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(format!("{name}.lock"));
        let arg = match (mode, wait) {
            (Mode::Shared, true) => FlockArg::LockShared,
            (Mode::Shared, false) => FlockArg::LockSharedNonblock,
            (Mode::Exclusive, true) => FlockArg::LockExclusive,
            (Mode::Exclusive, false) => FlockArg::LockExclusiveNonblock,
        };
        // Endpoint lock files are removed with their endpoint; a lock taken on a file that was
        // removed (or replaced) meanwhile guards nothing, so take it again on the new one.
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .context(|| format!("cannot open lock {}", path.display()))?;
            let flock = match Flock::lock(file, arg) {
                Ok(flock) => flock,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
                Err((_, e)) => return Err(Error::system(format!("cannot lock {}", path.display()), e)),
            };
            let held = flock.metadata().context(|| format!("cannot stat {}", path.display()))?;
            match std::fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    let removable = name.starts_with("endpoint-");
                    return Ok(Some(Held { _flock: flock, path: removable.then_some(path) }));
                }
                _ => continue,
            }
        }
    }
}

fn unreachable_busy(name: &str) -> Error {
    Error::system(format!("cannot lock {name}"), "a blocking lock reported busy")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locks() -> (Locks, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "netpath-locks-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        (Locks::new(&dir), dir)
    }

    #[test]
    fn an_endpoint_lock_excludes_others_until_dropped_or_removed() {
        let (locks, dir) = locks();
        let held = locks.endpoint("a").unwrap();
        assert!(locks.try_endpoint("a").unwrap().is_none(), "held elsewhere in this process");
        assert!(locks.try_endpoint("b").unwrap().is_some());
        held.remove();
        let again = locks.try_endpoint("a").unwrap().expect("free once removed");
        drop(again);
        assert!(locks.try_endpoint("a").unwrap().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn shared_network_locks_coexist_and_exclude_exclusive() {
        let (locks, dir) = locks();
        let a = locks.network("web", Mode::Shared).unwrap();
        let b = locks.network("web", Mode::Shared).unwrap();
        assert!(locks.try_network("web").unwrap().is_none());
        drop((a, b));
        assert!(locks.try_network("web").unwrap().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
