//! netpath talks to the kernel directly; say so at once when it cannot.
use crate::{error::Error, error::Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Fails unless the process has CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF in its effective set.
pub fn require() -> Result<()> {
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
