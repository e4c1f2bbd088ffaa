//! The embedded object and its pins: the version, bpffs, loading the programs and maps
//! into a directory, and the lock that orders the processes that change them.
use std::{
    fs::File,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::ProgramArray,
    programs::{Program, ProgramError, SchedClassifier},
};
use netpath_common::names;
use nix::fcntl::{Flock, FlockArg};

use crate::{error::Context, error::Error, error::Result};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("NETPATH_EBPF_OBJECT"));
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Directories `netpath status` loads a throwaway copy into; never a datapath version.
/// (bpffs refuses names with a dot.)
pub const PROBE_PREFIX: &str = "probe-";

/// Where the new datapath is built before it takes over (bpffs names cannot hold a dot).
pub const STAGING_PREFIX: &str = "reload-";

/// Where the old one waits to be removed once the new one has its name.
pub const RETIRED_PREFIX: &str = "retired-";

/// A short, stable name for this build's datapath: FNV-1a over the object, computed by the
/// build script (hashing the object costs a millisecond, in every command that asked).
pub fn version() -> String {
    env!("NETPATH_EBPF_VERSION").to_string()
}

pub(super) fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 == BPF_FS_MAGIC).unwrap_or(false)
}

/// Makes sure `pin_root` lies on a bpffs. A pin root on a bpffs (a directory in one, or the
/// root of a dedicated mount) is used as it is; a directory inside one is created; otherwise
/// bpffs is mounted on the pin root itself (created if missing), never over a parent that
/// holds other things (`--bpffs /run/netpath` must not hide `/run`).
pub fn ensure_bpffs(pin_root: &Path) -> Result<()> {
    check_pin_root(pin_root)?;
    if is_bpffs(pin_root) {
        return Ok(());
    }
    if pin_root.parent().is_some_and(is_bpffs) {
        return match std::fs::create_dir(pin_root) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(Error::system(format!("cannot create pin root {}", pin_root.display()), e))
            }
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(pin_root).context(|| format!("cannot create pin root {}", pin_root.display()))?;
    nix::mount::mount(Some("bpf"), pin_root, Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
        .context(|| format!("cannot mount bpffs at {}", pin_root.display()))
}

/// A pin root that exists must be a directory owned by root that nobody else can write:
/// whoever can write there can swap the programs and maps every container's traffic runs
/// through. One that does not exist yet is made by netpath, as root, mode 0700.
pub fn check_pin_root(pin_root: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(pin_root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::system(format!("cannot inspect pin root {}", pin_root.display()), e)),
    };
    let path = pin_root.display();
    let problem = if !meta.is_dir() {
        "is not a directory (a symbolic link?); pass a directory owned by root".to_string()
    } else if meta.uid() != 0 {
        format!("is owned by uid {}, not root; run `chown root {path}` or pass another pin root", meta.uid())
    } else if meta.mode() & 0o022 != 0 {
        format!(
            "is writable by group or others (mode {:o}); run `chmod go-w {path}` or pass another pin root",
            meta.mode() & 0o7777
        )
    } else {
        return Ok(());
    };
    Err(Error::invalid(format!("pin root {path} {problem}")))
}

/// Whether this build's datapath is loaded and pinned under `pin_root`.
pub fn is_pinned(pin_root: &Path) -> bool {
    let dir = pin_root.join(version());
    names::PROGRAMS.iter().all(|p| dir.join(p).exists())
}

/// The cgroup v2 mount (the root of the unified hierarchy), from /proc/self/mountinfo.
pub fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context(|| "cannot read /proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| Error::not_found("no cgroup v2 hierarchy is mounted; mount one to publish ports to the host"))
}

pub(crate) fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect::<std::io::Result<_>>().context(|| format!("cannot list {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::system(format!("cannot list {}", dir.display()), e)),
    }
}

/// Another build's datapath directory. Only directories count: the root of a bpffs mount
/// has files of its own (`maps.debug`, `progs.debug`).
pub(super) fn other_version(pin_root: &Path) -> Result<Option<String>> {
    let mine = version();
    Ok(read_dir(pin_root)?
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| *n != mine && ![PROBE_PREFIX, STAGING_PREFIX, RETIRED_PREFIX].iter().any(|p| n.starts_with(p))))
}

pub(crate) fn load(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(dir)
        .load(OBJECT)
        .context(|| "cannot load netpath's eBPF object")?;
    for name in names::PROGRAMS {
        // A load interrupted half-way left some pins: keep them.
        if dir.join(name).exists() {
            continue;
        }
        let prog =
            ebpf.program_mut(name).ok_or_else(|| Error::system("eBPF object", format!("it has no {name} program")))?;
        load_program(prog).context(|| format!("the kernel rejected {name}"))?;
        prog.pin(dir.join(name)).context(|| format!("cannot pin {name}"))?;
    }
    link_tail_calls(&mut ebpf, dir)
}

/// Puts the tail-called programs where `from_container` finds them. Taken from their pins,
/// which an earlier, interrupted load may have made.
pub(super) fn link_tail_calls(ebpf: &mut aya::Ebpf, dir: &Path) -> Result<()> {
    let map =
        ebpf.map_mut(names::TAIL_CALLS).ok_or_else(|| Error::system("eBPF object", "it has no TAIL_CALLS map"))?;
    let mut slots = ProgramArray::try_from(map).context(|| "TAIL_CALLS is not a program array")?;
    for (slot, name) in (0u32..).zip(names::TAIL_CALLED) {
        let path = dir.join(name);
        let prog = SchedClassifier::from_pin(&path).context(|| format!("cannot open {}", path.display()))?;
        let fd = prog.fd().context(|| format!("{} has no file descriptor", path.display()))?;
        slots.set(slot, fd, 0).context(|| format!("cannot put {name} in TAIL_CALLS"))?;
    }
    Ok(())
}

pub fn load_program(prog: &mut Program) -> Result<(), ProgramError> {
    match prog {
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::Xdp(p) => p.load(),
        Program::SkLookup(p) => p.load(),
        _ => Err(ProgramError::UnexpectedProgramType),
    }
}

pub(crate) fn lock(dir: &Path) -> Result<Flock<File>> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("datapath.lock");
    // 0600 in the state directory: another user must not be able to hold it.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .context(|| format!("cannot create {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::system(format!("cannot lock {}", path.display()), e))
}
