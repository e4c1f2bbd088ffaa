//! What the bench needs on a fresh machine.
//!
//! Load generators and the container runtime's own pieces (iperf3, sockperf, runc,
//! containerd) bring no packet filter and are installed system-wide. The peers that need
//! iptables (docker.io, netavark, the CNI plugins) are not: netpath claims to need no
//! iptables, so the machine must not get one. Their Debian packages and the dependencies the
//! machine lacks are unpacked into a private prefix under the cargo target directory, and the
//! peers run with PATH, LD_LIBRARY_PATH and XTABLES_LIBDIR pointing there.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::process::{output_within, stdout_within};
use crate::sh::{step, workspace_root};

/// Debian packages installed system-wide, each with a binary that tells it is there.
const SYSTEM: &[(&str, &str)] = &[
    ("iperf3", "iperf3"),
    ("sockperf", "sockperf"),
    ("runc", "runc"),
    ("containerd", "containerd"),
    ("iproute2", "ip"),
    ("util-linux", "nsenter"),
];
/// Debian packages unpacked into the private prefix, with what they pull in.
const PRIVATE: &[&str] = &["docker.io", "netavark", "containernetworking-plugins", "busybox-static"];
/// Names that must never be installed system-wide by the bench.
const FORBIDDEN: &[&str] = &["iptables", "nftables", "arptables", "ebtables"];
/// The names Debian's alternatives would give xtables-nft-multi (its default backend).
const IPTABLES_LINKS: &[&str] =
    &["iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"];
const APT_LIMIT: Duration = Duration::from_secs(900);

/// The private prefix and what is in it.
pub struct Peers {
    root: PathBuf,
    /// Debian package → version, for every package the bench uses.
    pub versions: BTreeMap<String, String>,
}

/// The cargo target directory: `$CARGO_TARGET_DIR`, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir().map(|cwd| cwd.join(&dir)).unwrap_or_else(|_| dir.into()),
        None => workspace_root().join("target"),
    }
}

pub fn install() -> Result<Peers> {
    system_packages(&[])?;
    let root = target_dir().join("bench-root");
    let mut versions = private_prefix(&root, PRIVATE)?;
    for (package, _) in SYSTEM {
        versions.insert(package.to_string(), installed_version(package)?);
    }
    Ok(Peers { root, versions })
}

fn has_binary(binary: &str) -> bool {
    crate::sh::succeeds(Command::new("sh").args(["-c", &format!("command -v {binary}")]))
}

fn apt(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// Packages `apt-get install` would add for `packages`, without installing anything.
fn would_install(packages: &[&str]) -> Result<Vec<String>> {
    let out = stdout_within(apt(&["install", "-s", "-q", "--no-install-recommends"]).args(packages), APT_LIMIT)?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect())
}

fn apt_update() -> Result<()> {
    output_within(&mut apt(&["update", "-q"]), APT_LIMIT).map(drop).context("apt-get update")
}

/// What the tests' real dockerd needs (`tests/tests/docker.rs`): runc, containerd and nsenter
/// system-wide, docker.io and busybox-static in the private prefix, which it returns.
pub fn docker_for_tests() -> Result<PathBuf> {
    system_packages(&["runc", "containerd", "util-linux"])?;
    let root = target_dir().join("bench-root");
    private_prefix(&root, PRIVATE)?;
    Ok(root)
}

fn system_packages(only: &[&str]) -> Result<()> {
    let wanted = SYSTEM.iter().filter(|(pkg, _)| only.is_empty() || only.contains(pkg));
    let missing: Vec<&str> = wanted.filter(|(_, bin)| !has_binary(bin)).map(|(pkg, _)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing {}", missing.join(", ")));
    apt_update()?;
    let pulled = would_install(&missing)?;
    if let Some(bad) = pulled.iter().find(|p| FORBIDDEN.contains(&p.as_str())) {
        bail!(
            "installing {} system-wide would bring {bad}; refusing (the machine must stay without a packet filter)",
            missing.join(", ")
        );
    }
    output_within(apt(&["install", "-y", "-q", "--no-install-recommends"]).args(&missing), APT_LIMIT)
        .map(drop)
        .with_context(|| format!("installing {}", missing.join(", ")))
}

fn installed_version(package: &str) -> Result<String> {
    stdout_within(Command::new("dpkg-query").args(["-W", "-f", "${Version}", package]), Duration::from_secs(30))
        .with_context(|| format!("version of {package}"))
}

/// Unpacks `wanted` (the iptables-needing peers, or Podman for the tests) into `root` once;
/// later runs read the record.
pub(crate) fn private_prefix(root: &Path, wanted: &[&str]) -> Result<BTreeMap<String, String>> {
    let record = root.join("installed.json");
    if let Ok(text) = std::fs::read_to_string(&record) {
        let installed: BTreeMap<String, String> = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt; remove {}", record.display(), root.display()))?;
        // A prefix unpacked before a package joined the list is unpacked again.
        if wanted.iter().all(|p| installed.contains_key(*p)) {
            return Ok(installed);
        }
    }
    step(&format!("unpacking {} into {} (not system-wide)", wanted.join(", "), root.display()));
    let debs = root.join("debs");
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    apt_update()?;
    let mut packages: Vec<String> = wanted.iter().map(|p| p.to_string()).collect();
    for p in would_install(wanted)? {
        // What may be installed system-wide is, so the peers find one runc and containerd.
        if !packages.contains(&p) && !SYSTEM.iter().any(|(s, _)| *s == p) {
            packages.push(p);
        }
    }
    output_within(
        apt(&["download", "-q", "-o", "APT::Sandbox::User=root"]).args(&packages).current_dir(&debs),
        APT_LIMIT,
    )
    .context("apt-get download")?;
    let mut versions = BTreeMap::new();
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        output_within(Command::new("dpkg").arg("-x").arg(&deb).arg(root), APT_LIMIT)
            .with_context(|| format!("unpacking {}", deb.display()))?;
        let fields =
            stdout_within(Command::new("dpkg-deb").arg("-f").arg(&deb).args(["Package", "Version"]), APT_LIMIT)?;
        let field = |name: &str| fields.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
        if let (Some(p), Some(v)) = (field("Package:"), field("Version:")) {
            versions.insert(p, v);
        }
    }
    let sbin = root.join("usr/sbin");
    if sbin.join("xtables-nft-multi").exists() {
        for name in IPTABLES_LINKS {
            let link = sbin.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("xtables-nft-multi", &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    std::fs::write(&record, serde_json::to_string_pretty(&versions)?)?;
    Ok(versions)
}

impl Peers {
    /// A file of the prefix, e.g. `usr/sbin/dockerd`.
    pub fn file(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Points `cmd` at the prefix: its binaries first on PATH, its libraries and iptables
    /// extensions before the system's.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let multiarch = self.multiarch_lib();
        let path = ["usr/sbin", "usr/bin", "sbin", "bin"].iter().map(|d| self.root.join(d).display().to_string());
        let path = path.chain(std::env::var("PATH").ok()).collect::<Vec<_>>().join(":");
        cmd.env("PATH", path).env("LD_LIBRARY_PATH", &multiarch).env("XTABLES_LIBDIR", multiarch.join("xtables"))
    }

    /// `usr/lib/<triplet>` of the prefix (x86_64-linux-gnu here; found, not assumed).
    fn multiarch_lib(&self) -> PathBuf {
        let lib = self.root.join("usr/lib");
        std::fs::read_dir(&lib)
            .ok()
            .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with("-linux-gnu")))
            .unwrap_or(lib)
    }
}
