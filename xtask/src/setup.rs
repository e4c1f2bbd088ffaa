//! Installs what netpath's build, tests and demo need, and is quick when all is there.
use std::process::Command;

use anyhow::Result;

use crate::sh::{self, step};

const BPF_LINKER_VERSION: &str = "0.10.1";

/// Debian packages and a binary each provides, to tell whether it is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("iputils-ping", "ping"),
    ("bpftool", "bpftool"),
    ("util-linux", "nsenter"),
    ("ethtool", "ethtool"),
    // The tests with real engines: runc (OCI hooks), containerd and ctr (CNI).
    ("runc", "runc"),
    ("containerd", "ctr"),
    // The upstream resolver of the DNS tests (the binary alone, no service).
    ("dnsmasq-base", "dnsmasq"),
];
/// Podman pulls iptables in, which the machine must not get (netpath needs none): the Podman
/// test runs it from this private prefix under the target directory instead.
pub const PODMAN_ROOT: &str = "podman-root";
/// The `dnsname` CNI plugin, which the Podman tests chain after netpath (in Podman's prefix).
const DNSNAME: &str = "golang-github-containernetworking-plugin-dnsname";
/// Prometheus's `promtool`, which checks the daemon's metrics page. Unpacked, not installed:
/// the package would start a Prometheus server, which the tests do not want.
pub const PROMETHEUS_ROOT: &str = "prometheus-root";

pub fn run() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()
}

/// What the tests need besides `run`'s: Podman and promtool in their private prefixes.
pub fn for_tests() -> Result<()> {
    let target = crate::bench::install::target_dir();
    crate::bench::install::private_prefix(&target.join(PODMAN_ROOT), &["podman", DNSNAME])?;
    crate::bench::install::private_prefix(&target.join(PROMETHEUS_ROOT), &["prometheus"]).map(drop)
}

fn rust_src() -> Result<()> {
    let installed =
        sh::output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
            .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        step("installing rust-src for the nightly toolchain");
        sh::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let version = sh::output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !version.contains(BPF_LINKER_VERSION) {
        step(&format!("installing bpf-linker {BPF_LINKER_VERSION}"));
        sh::run(Command::new("cargo").args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}"), "--locked"]))?;
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, binary)| !sh::succeeds(Command::new("sh").args(["-c", &format!("command -v {binary}")])))
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing {}", missing.join(", ")));
    sh::run(Command::new("apt-get").arg("update").arg("-q"))?;
    sh::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}
