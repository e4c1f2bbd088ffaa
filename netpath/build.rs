//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
use std::path::PathBuf;

fn main() {
    let object = match std::env::var_os("NETPATH_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => {
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
            let target =
                std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| manifest.join("../target"));
            target.join("bpfel-unknown-none/release/netpath-ebpf")
        }
    };
    println!("cargo::rerun-if-env-changed=NETPATH_EBPF_OBJECT");
    println!("cargo::rerun-if-changed={}", object.display());
    if !object.exists() {
        println!("cargo::error=eBPF object {} is missing; run `cargo xtask build-ebpf` first", object.display());
        return;
    }
    println!("cargo::rustc-env=NETPATH_EBPF_OBJECT={}", object.display());
}
