//! What every frontend needs before it drives the controller: where the state and the pins
//! live, the privileges netpath needs (said at once when missing), and a runtime in the host
//! network namespace.
use std::path::PathBuf;

use crate::{
    error::{Error, Result},
    kernel::netns::{self, Netns},
};

/// Where the state database lives unless a frontend is told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/netpath";
/// The pin root unless a frontend is told otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/netpath";

/// Where netpath keeps its state and its pins.
#[derive(Clone, Debug)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub pin_root: PathBuf,
}

/// Checks the privileges, enters the host namespace (`host_netns`) while the process has one
/// thread, as setns needs, and starts the single-threaded runtime the controller runs on.
pub fn host_runtime(host_netns: Option<&str>) -> Result<tokio::runtime::Runtime> {
    require_privileges()?;
    if let Some(path) = host_netns {
        netns::enter(&Netns::open(path)?)?;
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::system("cannot start the async runtime", e))
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Fails unless the process has CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF in its effective set.
pub fn require_privileges() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|e| Error::system("cannot read /proc/self/status", e))?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [(CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_BPF, "CAP_BPF")]
        .into_iter()
        .filter(|(bit, _)| effective & (1 << bit) == 0)
        .map(|(_, name)| name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(format!("netpath needs {}; run it as root", missing.join(", "))))
    }
}
