//! Builds the eBPF object, the netpath binary that embeds it, and runs the tests.
use std::process::Command;

use anyhow::Result;

use crate::sh::{self, step, workspace_root};

/// Builds `netpath-ebpf` for the BPF target with BTF, as the kernel's loader wants it.
pub fn ebpf() -> Result<()> {
    step("building the eBPF programs");
    let arch = std::env::consts::ARCH;
    let rustflags = [&format!("--cfg=bpf_target_arch=\"{arch}\""), "-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root())
        .args(["+nightly", "build", "--package", "netpath-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // Inherited from the stable `cargo run` that started xtask; they would pin the wrong toolchain.
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    sh::run(&mut cmd)
}

/// The eBPF object and the netpath binary the tests and the demo run.
pub fn all() -> Result<()> {
    ebpf()?;
    step("building netpath");
    sh::run(Command::new("cargo").current_dir(workspace_root()).args(["build", "--bins"]))
}

/// `docker_root`: where docker.io is unpacked for the tests that drive a real dockerd.
pub fn test(args: &[String], docker_root: &std::path::Path) -> Result<()> {
    step("running the tests");
    sh::run(
        Command::new("cargo")
            .current_dir(workspace_root())
            .env("NETPATH_DOCKER_ROOT", docker_root)
            .args(["test", "--"])
            .args(args),
    )
}
