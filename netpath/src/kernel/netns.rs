//! Network namespaces: opening and validating them, and running code inside one.
use std::{
    fs::File,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
};

use nix::sched::{CloneFlags, setns};

use crate::types::identity::NsIdentity;
use crate::{error::Context, error::Error, error::Result};

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// This boot's id: namespaces never outlive a boot.
pub fn boot_id() -> Result<String> {
    let path = "/proc/sys/kernel/random/boot_id";
    Ok(std::fs::read_to_string(path).context(|| format!("cannot read {path}"))?.trim().to_string())
}

/// An open network namespace.
pub struct Netns {
    file: File,
    pub path: String,
    /// (device, inode) of the nsfs file: the identity of the namespace.
    pub id: (u64, u64),
}

impl Netns {
    /// Opens any nsfs path: `/run/netns/NAME`, `/var/run/docker/netns/ID`, `/proc/PID/ns/net`.
    pub fn open(path: &str) -> Result<Self> {
        // O_NONBLOCK: opening a FIFO someone passed as a namespace must fail, not hang.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!("network namespace '{path}' does not exist")),
            _ => Error::system(format!("cannot open network namespace '{path}'"), e),
        })?;
        let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if ty != libc::CLONE_NEWNET {
            return Err(Error::invalid(format!("'{path}' is not a network namespace")));
        }
        let meta = file.metadata().context(|| format!("cannot stat '{path}'"))?;
        Ok(Self { file, path: path.to_string(), id: (meta.dev(), meta.ino()) })
    }

    /// Its full identity (reads its cookie from a socket opened inside it).
    pub fn identity(&self) -> Result<NsIdentity> {
        Ok(NsIdentity { dev: self.id.0, ino: self.id.1, cookie: run_in(self, cookie)??, boot: boot_id()? })
    }

    /// Whether this is the namespace `identity` recorded.
    pub fn is(&self, identity: &NsIdentity) -> bool {
        if self.id != (identity.dev, identity.ino) {
            return false;
        }
        let same_boot = identity.boot.is_empty() || boot_id().is_ok_and(|b| b == identity.boot);
        let same_cookie =
            identity.cookie == 0 || run_in(self, cookie).is_ok_and(|c| c.is_ok_and(|c| c == identity.cookie));
        same_boot && same_cookie
    }

    /// The namespace `identity` recorded, if it still exists: at `hint` (the path it was
    /// attached with), else wherever a name or a process holds it. Paths and PIDs are reused,
    /// and so are inode numbers; see `NsIdentity`.
    pub fn find(identity: &NsIdentity, hint: &str) -> Option<Self> {
        let id = (identity.dev, identity.ino);
        if let Ok(ns) = Self::open(hint) {
            if ns.is(identity) {
                return Some(ns);
            }
        }
        let named = ["/run/netns", "/var/run/docker/netns"]
            .into_iter()
            .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()));
        let processes = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .map(|e| e.path().join("ns/net"));
        named.chain(processes).find_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            if (meta.dev(), meta.ino()) != id {
                return None;
            }
            Self::open(path.to_str()?).ok().filter(|ns| ns.is(identity))
        })
    }

    pub fn of_pid(pid: u32) -> Result<Self> {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(Error::not_found(format!("process {pid} does not exist")));
        }
        Self::open(&format!("/proc/{pid}/ns/net"))
    }

    /// The namespace this thread is in.
    pub fn current() -> Result<Self> {
        Self::open(&format!("/proc/self/task/{}/ns/net", nix::unistd::gettid()))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// Moves the calling thread into `ns`. Only for a thread that is about to run everything
/// there (the main thread before any other starts, or a dedicated thread).
pub fn enter(ns: &Netns) -> Result<()> {
    setns(ns.fd(), CloneFlags::CLONE_NEWNET).context(|| format!("cannot enter network namespace '{}'", ns.path))
}

/// Runs `f` on a dedicated thread inside `ns`; the caller's thread never changes namespace,
/// and sockets `f` opens stay bound to `ns`.
pub fn run_in<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(ns)?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(Error::system("namespace worker", "thread panicked")))
    })
}

/// `SO_NETNS_COOKIE` from asm-generic/socket.h (Linux 5.14).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the current thread's network namespace, as `bpf_get_netns_cookie` reports it.
pub fn cookie() -> Result<u64> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").context(|| "cannot open a socket to read the netns cookie")?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(Error::system("cannot read the network namespace cookie", std::io::Error::last_os_error()));
    }
    Ok(cookie)
}
