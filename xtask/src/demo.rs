//! `cargo xtask demo`: a network in throwaway namespaces, two containers pinging each other
//! through the eBPF datapath, the network and the counters, then a clean slate.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::sh::{self, step, workspace_root};

const HOST: &str = "np-demo-host";
const CONTAINERS: [&str; 2] = ["np-demo-c1", "np-demo-c2"];
const RUN_DIR: &str = "/run/netpath-demo";

struct Demo {
    netpath: PathBuf,
    run_dir: PathBuf,
}

pub fn run() -> Result<()> {
    let demo = Demo { netpath: workspace_root().join("target/debug/netpath"), run_dir: PathBuf::from(RUN_DIR) };
    demo.cleanup();
    let result = demo.show();
    step("cleaning up");
    demo.cleanup();
    result
}

impl Demo {
    fn netpath(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.netpath);
        cmd.arg("--state-dir")
            .arg(self.run_dir.join("state"))
            .arg("--bpffs")
            .arg(self.run_dir.join("bpffs/netpath"))
            .arg("--host-netns")
            .arg(netns_path(HOST))
            .args(args);
        cmd
    }

    fn show(&self) -> Result<()> {
        step("creating namespaces: a host and two containers");
        for ns in std::iter::once(HOST).chain(CONTAINERS) {
            sh::run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        step("netpath network create demo");
        sh::run(&mut self.netpath(&["network", "create", "demo"]))?;
        let mut ips = Vec::new();
        for (i, ns) in CONTAINERS.iter().enumerate() {
            let id = format!("c{}", i + 1);
            step(&format!("netpath attach --network demo --netns {} --id {id}", netns_path(ns).display()));
            let json = sh::output(&mut self.netpath(&[
                "attach", "--network", "demo", "--netns", &netns_path(ns).to_string_lossy(), "--id", &id, "--format", "json",
            ]))?;
            print!("{json}");
            ips.push(field(&json, "ip")?);
        }
        step(&format!("c1 pings c2 ({})", ips[1]));
        sh::run(Command::new("ip").args(["netns", "exec", CONTAINERS[0], "ping", "-c", "3", "-i", "0.2", &ips[1]]))?;
        step(&format!("c2 pings c1 ({})", ips[0]));
        sh::run(Command::new("ip").args(["netns", "exec", CONTAINERS[1], "ping", "-c", "3", "-i", "0.2", &ips[0]]))?;
        step("netpath network inspect demo");
        sh::run(&mut self.netpath(&["network", "inspect", "demo"]))?;
        step("netpath stats: the eBPF datapath carried the pings");
        sh::run(&mut self.netpath(&["stats"]))?;
        Ok(())
    }

    /// Removes everything the demo may have made; quiet about what is not there.
    fn cleanup(&self) {
        if self.run_dir.join("state").exists() && netns_path(HOST).exists() {
            let _ = sh::succeeds(&mut self.netpath(&["network", "rm", "demo", "--force"]));
        }
        for ns in std::iter::once(HOST).chain(CONTAINERS) {
            if netns_path(ns).exists() {
                let _ = sh::succeeds(Command::new("ip").args(["netns", "del", ns]));
            }
        }
        let bpffs = self.run_dir.join("bpffs");
        if bpffs.exists() {
            let _ = sh::succeeds(Command::new("umount").arg(&bpffs));
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// A string field of netpath's JSON output, without pulling a JSON parser into xtask.
fn field(json: &str, name: &str) -> Result<String> {
    let key = format!("\"{name}\": \"");
    let start = json.find(&key).map(|i| i + key.len()).ok_or_else(|| anyhow::anyhow!("no {name} in {json}"))?;
    let end = json[start..].find('"').ok_or_else(|| anyhow::anyhow!("unterminated {name}"))?;
    Ok(json[start..start + end].to_string())
}
