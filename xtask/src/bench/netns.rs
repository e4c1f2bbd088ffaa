//! Network namespaces: the ones the bench creates under /run/netns (all named `npbench-…`)
//! and the ones a container runtime made (Docker's SandboxKey). Commands run "in" one with
//! `nsenter --net`, which enters only the network namespace: `ip netns exec` would remount
//! /sys, which dockerd and bpffs users cannot live with.
use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use super::process::{SETUP_LIMIT, stdout_within};

/// Every namespace the bench creates is named with this prefix, so a crashed run's are found.
pub const PREFIX: &str = "npbench-";
const NETNS_DIR: &str = "/run/netns";

#[derive(Clone, Debug)]
pub struct Netns {
    path: PathBuf,
    /// The name under /run/netns when the bench created it (and so deletes it).
    name: Option<String>,
}

impl Netns {
    /// Creates `npbench-<name>` with its loopback up.
    pub fn create(name: &str) -> Result<Self> {
        let full = format!("{PREFIX}{name}");
        stdout_within(Command::new("ip").args(["netns", "add", &full]), SETUP_LIMIT)
            .with_context(|| format!("creating network namespace {full}"))?;
        let ns = Self { path: Path::new(NETNS_DIR).join(&full), name: Some(full) };
        ns.run(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A namespace someone else made and removes (a container's).
    pub fn existing(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), name: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The /run/netns name, for `ip link ... netns NAME`.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_else(|| self.path.to_str().unwrap_or_default())
    }

    /// `program args…` inside this namespace.
    pub fn cmd<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display())).arg(program).args(args);
        cmd
    }

    /// Runs a set-up command inside; the error names the namespace.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        stdout_within(&mut self.cmd(args[0], &args[1..]), SETUP_LIMIT)
            .with_context(|| format!("in {}", self.path.display()))
    }

    /// Writes a sysctl of this namespace (`net.*` sysctls are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let file = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(&["sh", "-c", &format!("echo {value} > {file}")]).map(drop)
    }

    /// A veth pair from this namespace to `peer`, both ends up. It is created here, never
    /// in the root namespace, so no name there can clash or linger.
    pub fn veth(&self, ifname: &str, peer: &Netns, peer_ifname: &str) -> Result<()> {
        self.run(&["ip", "link", "add", ifname, "type", "veth", "peer", "name", peer_ifname, "netns", peer.name()])?;
        self.run(&["ip", "link", "set", ifname, "up"])?;
        peer.run(&["ip", "link", "set", peer_ifname, "up"]).map(drop)
    }

    /// Adds `cidr` to `ifname`.
    pub fn address(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.run(&["ip", "addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// Deletes the namespace if the bench created it; quiet when it is already gone.
    pub fn delete(&self) {
        if let Some(name) = &self.name {
            delete_named(name);
        }
    }
}

/// Moves the calling thread (only) into the network namespace at `path`.
pub fn enter(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: setns on a descriptor this function holds open; it changes only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("entering {}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn delete_named(name: &str) {
    if Path::new(NETNS_DIR).join(name).exists() {
        let _ = stdout_within(Command::new("ip").args(["netns", "del", name]), SETUP_LIMIT);
    }
}

/// Names of the bench's namespaces that exist now (a crashed run's, or this run's).
pub fn leftover_names() -> Vec<String> {
    std::fs::read_dir(NETNS_DIR)
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(PREFIX))
                .collect()
        })
        .unwrap_or_default()
}
