//! Leaving nothing behind: sweeping what a crashed or interrupted run left, and proving
//! after a run that the root namespace and the machine are as they were.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::MetadataExt,
    path::Path,
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Result, bail};

use super::{
    RUN_DIR,
    machine::FILTER_BINARIES,
    netns::{self, PREFIX},
    process::{alive, signal, stdout_within},
};

/// The cgroup dockerd puts the bench's containers in (see the docker datapath).
const CGROUP: &str = "npbench-docker";
/// Paths the peers may create outside the run directory; each must be as it was.
const WATCHED_PATHS: &[&str] = &["/etc/docker", "/run/docker", "/run/containerd", "/var/lib/cni", "/etc/cni", RUN_DIR];

/// Stops every process of a previous run, removes its namespaces, mounts and directories.
/// Everything is found by what the bench names and owns, and processes are stopped by PID.
pub fn sweep(netpath: &Path) {
    release_netpath(netpath);
    let pids = stray_pids();
    for &pid in &pids {
        signal(pid, libc::SIGTERM);
    }
    for _ in 0..50 {
        if pids.iter().all(|&p| !alive(p)) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        signal(pid, libc::SIGKILL);
    }
    for mount in mounts_under(RUN_DIR).into_iter().rev() {
        let _ = stdout_within(Command::new("umount").arg("-l").arg(&mount), Duration::from_secs(30));
    }
    for name in netns::leftover_names() {
        netns::delete_named(&name);
    }
    for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        let dir = controller.path().join(CGROUP);
        for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(child.path());
        }
        let _ = std::fs::remove_dir(&dir);
    }
    let _ = std::fs::remove_dir_all(RUN_DIR);
}

/// netpath's own teardown for any state a previous run left, while its host namespace
/// still exists: it detaches its programs from the uplink and the cgroup.
fn release_netpath(netpath: &Path) {
    for entry in std::fs::read_dir(RUN_DIR).into_iter().flatten().flatten() {
        let label = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path().join("netpath");
        let host = format!("/run/netns/{PREFIX}{label}-host");
        if dir.join("state").exists() && Path::new(&host).exists() {
            let mut cmd = Command::new(netpath);
            cmd.arg("--state-dir")
                .arg(dir.join("state"))
                .arg("--bpffs")
                .arg(dir.join("bpffs/netpath"))
                .arg("--host-netns")
                .arg(&host);
            let _ = stdout_within(cmd.args(["network", "rm", "bench", "--force"]), Duration::from_secs(60));
        }
    }
}

/// Waits up to `limit` for the processes whose command line names `dir` to exit (a daemon's
/// helpers, e.g. containerd shims, outlive it by a moment). Returns whether they did.
pub fn wait_for_exit(dir: &Path, limit: Duration) -> bool {
    let dir = dir.to_string_lossy();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if pids_naming(&dir).next().is_none() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

/// PIDs of the processes (other than this one) whose command line contains `text`.
fn pids_naming(text: &str) -> impl Iterator<Item = u32> + '_ {
    let me = std::process::id();
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(move |entry| {
        let pid = entry.file_name().to_string_lossy().parse::<u32>().ok().filter(|&p| p != me)?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&cmdline).contains(text).then_some(pid)
    })
}

/// Processes that belong to the bench: whose command line names the run directory (dockerd,
/// containerd, shims), that live in one of its network namespaces (servers), or that sit in
/// its containers' cgroup.
fn stray_pids() -> Vec<u32> {
    let mut namespaces: BTreeSet<u64> = netns::leftover_names()
        .iter()
        .filter_map(|n| std::fs::metadata(format!("/run/netns/{n}")).ok())
        .map(|m| m.ino())
        .collect();
    namespaces.extend(mounts_under(RUN_DIR).iter().filter_map(|m| std::fs::metadata(m).ok()).map(|m| m.ino()));
    let mut in_cgroup = BTreeSet::new();
    for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        for child in std::fs::read_dir(controller.path().join(CGROUP)).into_iter().flatten().flatten() {
            let procs = std::fs::read_to_string(child.path().join("cgroup.procs")).unwrap_or_default();
            in_cgroup.extend(procs.lines().filter_map(|l| l.parse::<u32>().ok()));
        }
    }
    let me = std::process::id();
    let in_namespace =
        |pid: &u32| std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| namespaces.contains(&m.ino()));
    let mut pids: BTreeSet<u32> = pids_naming(RUN_DIR).collect();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() {
            if pid != me && (in_namespace(&pid) || in_cgroup.contains(&pid)) {
                pids.insert(pid);
            }
        }
    }
    pids.into_iter().collect()
}

/// Mount points at or under `dir`, parents before children.
fn mounts_under(dir: &str) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(dir))
        .map(String::from)
        .collect();
    points.sort();
    points.dedup();
    points
}

/// The state of the root namespace and of the machine that a run must not change.
#[derive(PartialEq, Eq)]
pub struct Snapshot(BTreeMap<&'static str, BTreeSet<String>>);

impl Snapshot {
    pub fn take() -> Self {
        let ip = |args: &[&str]| -> BTreeSet<String> {
            stdout_within(Command::new("ip").args(args), Duration::from_secs(30))
                .unwrap_or_default()
                .lines()
                .map(clean_line)
                .collect()
        };
        let mut parts = BTreeMap::new();
        parts.insert("links", ip(&["-o", "link", "show"]));
        parts.insert("addresses", ip(&["-o", "addr", "show"]));
        parts.insert("routes", ip(&["route", "show", "table", "all"]));
        parts.insert("rules", ip(&["rule", "show"]));
        parts.insert("namespaces", netns::leftover_names().into_iter().collect());
        parts.insert("mounts", mounts_under("/").into_iter().filter(|m| m.contains("npbench")).collect());
        parts.insert("processes", stray_pids().into_iter().map(describe_pid).collect());
        parts.insert("paths", WATCHED_PATHS.iter().filter(|p| Path::new(p).exists()).map(|p| p.to_string()).collect());
        parts.insert("sysctls", sysctls("/proc/sys/net"));
        parts.insert(
            "packet filter binaries",
            FILTER_BINARIES.iter().filter(|b| on_path(b)).map(|b| b.to_string()).collect(),
        );
        Self(parts)
    }

    /// Fails, listing each difference, unless `after` equals `self`.
    pub fn compare(&self, after: &Snapshot) -> Result<()> {
        let mut changes = Vec::new();
        for (part, before) in &self.0 {
            let now = &after.0[part];
            changes.extend(now.difference(before).map(|x| format!("{part}: new {x}")));
            changes.extend(before.difference(now).map(|x| format!("{part}: gone {x}")));
        }
        if !changes.is_empty() {
            bail!("the run changed the machine:\n  {}", changes.join("\n  "));
        }
        Ok(())
    }
}

/// A link or address line without its counters and lifetimes, which change by themselves.
fn clean_line(line: &str) -> String {
    let line = line.split("valid_lft").next().unwrap_or(line);
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn describe_pid(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    format!("{pid} {}", String::from_utf8_lossy(&cmdline).replace('\0', " ").trim())
}

/// Every readable sysctl under `dir` as `path=value`.
fn sysctls(dir: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![std::path::PathBuf::from(dir)];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        } else if let Ok(value) = std::fs::read_to_string(&path) {
            found.insert(format!("{}={}", path.display(), value.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
    }
    found
}

pub fn on_path(binary: &str) -> bool {
    crate::sh::succeeds(Command::new("sh").args(["-c", &format!("command -v {binary}")]))
}
