//! What the figures were measured on: the machine, and the version of everything measured.
use std::{
    collections::BTreeMap,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use super::{Ctx, process::stdout_within};

#[derive(Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub hypervisor: Option<String>,
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
        };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 =
            field(&meminfo, "MemTotal").and_then(|v| v.trim_end_matches(" kB").parse().ok()).unwrap_or(0.0);
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os = field(&os_release.replace('=', ":"), "PRETTY_NAME").unwrap_or_default().trim_matches('"').to_string();
        // "hypervisor" among the CPU flags says it is a VM; the vendor shows in dmesg only.
        let hypervisor = field(&cpuinfo, "flags")
            .filter(|f| f.split(' ').any(|x| x == "hypervisor"))
            .map(|_| "yes (virtual machine)".to_string());
        Self {
            cpu: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
            os,
            hypervisor,
        }
    }

    /// One line for the report's header.
    pub fn summary(&self) -> String {
        let vm = if self.hypervisor.is_some() { ", virtual machine" } else { "" };
        format!("{}, {} cores, {} GiB, Linux {}, {}{vm}", self.cpu, self.cores, self.memory_gib, self.kernel, self.os)
    }
}

/// Debian package versions of the peers and tools, plus netpath's own.
pub fn versions(ctx: &Ctx) -> BTreeMap<String, String> {
    let mut versions = ctx.peers.versions.clone();
    let netpath =
        stdout_within(Command::new(&ctx.netpath).arg("--version"), Duration::from_secs(10)).unwrap_or_default();
    versions.insert("netpath".into(), netpath.trim().trim_start_matches("netpath ").to_string());
    // Read-only git: the commit, and whether the tree differs from it (then "+dirty").
    let root = crate::sh::workspace_root().display().to_string();
    let git = |args: &[&str]| {
        let mut cmd = Command::new("git");
        cmd.args(["-C", &root]).args(args);
        stdout_within(&mut cmd, Duration::from_secs(10))
    };
    if let Ok(commit) = git(&["rev-parse", "--short", "HEAD"]) {
        let dirty = if git(&["diff", "--quiet", "HEAD", "--"]).is_err() { "+dirty" } else { "" };
        versions.insert("netpath-commit".into(), format!("{}{dirty}", commit.trim()));
    }
    versions
}

/// Now in UTC: `(2026-11-25T18:52:07Z, 20261125T185207Z)` — for humans and for a directory.
pub fn timestamp() -> (String, String) {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let (hh, mm, ss) = (rest / 3600, rest % 3600 / 60, rest % 60);
    (format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"), format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z"))
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(super::civil_from_days(20_507), (2026, 2, 23));
    }
}
