//! The kernel half of `netpath status`: probes the kernel for what the datapath needs and
//! proves the embedded object verifies.
use std::path::Path;

use aya::{
    EbpfLoader,
    programs::{ProgramType, SchedClassifier, TcAttachType},
    sys::{BpfHelper, is_helper_supported},
};
use serde::Serialize;

use crate::kernel::datapath::{self, PROBE_PREFIX};

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// Something works less well than it could; not a failure.
    pub warning: bool,
    pub detail: String,
}

pub fn check(name: &'static str, outcome: std::result::Result<String, String>) -> Check {
    match outcome {
        Ok(detail) => Check { name, ok: true, warning: false, detail },
        Err(detail) => Check { name, ok: false, warning: false, detail },
    }
}

pub fn warning(name: &'static str, detail: String) -> Check {
    Check { name, ok: true, warning: true, detail }
}

/// What the kernel offers the datapath, and whether the embedded object verifies; `pin_root`
/// is where the datapath is pinned.
pub fn kernel(pin_root: &Path) -> Vec<Check> {
    vec![
        check("btf", btf()),
        check("tcx", tcx()),
        check("bpf_redirect_peer", helper(BpfHelper::BPF_FUNC_redirect_peer)),
        check("bpf_redirect_neigh", helper(BpfHelper::BPF_FUNC_redirect_neigh)),
        check("cgroup2", cgroup2()),
        check(
            "bpffs",
            datapath::ensure_bpffs(pin_root)
                .map(|()| format!("pin root {}", pin_root.display()))
                .map_err(|e| e.to_string()),
        ),
        check("ebpf-object", verify_object(pin_root)),
    ]
}

fn btf() -> std::result::Result<String, String> {
    let path = Path::new("/sys/kernel/btf/vmlinux");
    if path.exists() {
        Ok("kernel BTF at /sys/kernel/btf/vmlinux".into())
    } else {
        Err("no /sys/kernel/btf/vmlinux".into())
    }
}

/// Querying TCX programs on `lo` changes nothing and fails on kernels without TCX (< 6.6).
fn tcx() -> std::result::Result<String, String> {
    SchedClassifier::query_tcx("lo", TcAttachType::Ingress)
        .map(|(_, progs)| format!("supported ({} program(s) on lo ingress)", progs.len()))
        .map_err(|e| format!("not supported: {e}"))
}

fn helper(helper: BpfHelper) -> std::result::Result<String, String> {
    match is_helper_supported(ProgramType::SchedClassifier, helper) {
        Ok(true) => Ok("available to TC programs".into()),
        Ok(false) => Err("not available to TC programs".into()),
        Err(e) => Err(format!("cannot probe: {e}")),
    }
}

/// The cgroup v2 mount the socket programs for published ports attach to.
fn cgroup2() -> std::result::Result<String, String> {
    datapath::cgroup2_root().map(|p| format!("mounted at {}", p.display())).map_err(|e| e.to_string())
}

/// Loads every program of the embedded object into a throwaway pin directory.
fn verify_object(pin_root: &Path) -> std::result::Result<String, String> {
    let dir = pin_root.join(format!("{PROBE_PREFIX}{}", std::process::id()));
    let result = (|| {
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut ebpf =
            EbpfLoader::new().default_map_pin_directory(&dir).load(datapath::OBJECT).map_err(|e| e.to_string())?;
        let mut names = Vec::new();
        for (name, prog) in ebpf.programs_mut() {
            datapath::load_program(prog).map_err(|e| format!("{name}: {e}"))?;
            // How much work the verifier did: a program near its 1,000,000 limit is one
            // change away from being rejected.
            match prog.info().ok().and_then(|i| i.verified_instruction_count()) {
                Some(insns) => names.push(format!("{name} ({insns} insns)")),
                None => names.push(name.to_string()),
            }
        }
        names.sort();
        Ok(format!("version {} verified: {}", datapath::version(), names.join(", ")))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
