//! Embeds the eBPF object built by `cargo xtask build-ebpf`, with its version: FNV-1a over the
//! object, hashed here once rather than in every command (a millisecond for the whole object).
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
    let bytes = std::fs::read(&object).expect("the eBPF object exists");
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    println!("cargo::rustc-env=NETPATH_EBPF_VERSION={hash:016x}");
}
