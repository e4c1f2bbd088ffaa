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
//!
//! Waits are bounded (`NETPATH_LOCK_TIMEOUT` seconds, 60 by default, as long as the database's
//! busy timeout): a holder that never lets go (a stopped process, a stuck command) makes the
//! others fail naming its pid instead of freezing every attach, CNI call, hook and the daemon.
use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::fcntl::{Flock, FlockArg};

use crate::{error::Context, error::Error, error::Result, state::dir};

/// How long a command waits for a lock unless `NETPATH_LOCK_TIMEOUT` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// flock(2) cannot time out, so a waiter polls: first after this pause, doubling up to
/// `MAX_PAUSE`. Most locks are held for milliseconds.
const FIRST_PAUSE: Duration = Duration::from_micros(100);
const MAX_PAUSE: Duration = Duration::from_millis(5);

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

    /// Held by the daemon while its resolver answers on the gateways; `None` when another
    /// process holds it.
    pub fn try_resolver(&self) -> Result<Option<Held>> {
        self.acquire("resolver", Mode::Exclusive, false)
    }

    /// Whether a daemon's resolver answers now: its lock is held.
    pub fn resolver_answers(&self) -> Result<bool> {
        Ok(self.acquire("resolver", Mode::Shared, false)?.is_none())
    }

    fn acquire(&self, name: &str, mode: Mode, wait: bool) -> Result<Option<Held>> {
        dir::private_dir(&self.dir)?;
        let path = self.dir.join(format!("{name}.lock"));
        let deadline = if wait { Some(Instant::now() + timeout()?) } else { None };
        // Endpoint lock files are removed with their endpoint; a lock taken on a file that was
        // removed (or replaced) meanwhile guards nothing, so take it again on the new one.
        loop {
            let Some(flock) = lock_by(dir::open_private(&path)?, mode, deadline, &path)? else {
                return Ok(None);
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

/// The lock on `file`, or None when it is busy and there is no `deadline` to wait for.
fn lock_by(file: File, mode: Mode, deadline: Option<Instant>, path: &Path) -> Result<Option<Flock<File>>> {
    let arg = match mode {
        Mode::Shared => FlockArg::LockSharedNonblock,
        Mode::Exclusive => FlockArg::LockExclusiveNonblock,
    };
    let mut file = file;
    let mut pause = FIRST_PAUSE;
    loop {
        match Flock::lock(file, arg) {
            Ok(flock) => return Ok(Some(flock)),
            Err((busy, nix::errno::Errno::EWOULDBLOCK)) => file = busy,
            Err((_, e)) => return Err(Error::system(format!("cannot lock {}", path.display()), e)),
        }
        match deadline {
            None => return Ok(None),
            Some(deadline) if Instant::now() >= deadline => return Err(held_too_long(&file, path)),
            Some(_) => std::thread::sleep(pause),
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

fn timeout() -> Result<Duration> {
    match std::env::var("NETPATH_LOCK_TIMEOUT") {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(text) => text.parse().map(Duration::from_secs).map_err(|_| {
            Error::invalid(format!(
                "NETPATH_LOCK_TIMEOUT={text} is not a number of seconds; set it to one (60 is the default)"
            ))
        }),
    }
}

fn held_too_long(file: &File, path: &Path) -> Error {
    let holders = file.metadata().map(|m| holders(m.dev(), m.ino())).unwrap_or_default();
    let who = match holders.as_slice() {
        [] => "another process".to_string(),
        pids => pids.iter().map(|pid| describe(*pid)).collect::<Vec<_>>().join(", "),
    };
    Error::conflict(format!(
        "lock {} is still held by {who} after {} s; wait for it to finish, or stop it if it is stuck",
        path.display(),
        timeout().unwrap_or(DEFAULT_TIMEOUT).as_secs()
    ))
}

/// The pids holding a lock on the file `dev`/`ino`, from `/proc/locks`: flock keeps no owner
/// in the file, and a shared lock has many.
fn holders(dev: u64, ino: u64) -> Vec<i32> {
    let id = format!("{:02x}:{:02x}:{ino}", nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let table = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut pids: Vec<i32> = table
        .lines()
        // Waiters are listed as `N: -> FLOCK ...`: they hold nothing.
        .filter(|line| !line.contains("->"))
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(5) == Some(&id.as_str())).then(|| fields.get(4)?.parse().ok()).flatten()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn describe(pid: i32) -> String {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => format!("pid {pid} ({})", comm.trim_end()),
        Err(_) => format!("pid {pid}"),
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
    fn the_holders_of_a_lock_are_found_by_pid() {
        let (locks, dir) = locks();
        let held = locks.network("web", Mode::Shared).unwrap();
        let meta = std::fs::metadata(dir.join("locks/network-web.lock")).unwrap();
        assert_eq!(holders(meta.dev(), meta.ino()), [std::process::id() as i32]);
        drop(held);
        assert_eq!(holders(meta.dev(), meta.ino()), Vec::<i32>::new());
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
