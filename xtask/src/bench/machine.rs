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

/// The packet-filter tools whose presence the run checks for (and must not change).
pub const FILTER_BINARIES: &[&str] = &["iptables", "iptables-legacy", "iptables-nft", "ip6tables", "nft", "ebtables"];
/// Netfilter modules, and the kernel options that build the same in.
const FILTER_MODULES: &[&str] = &[
    "x_tables",
    "ip_tables",
    "ip6_tables",
    "iptable_filter",
    "iptable_nat",
    "nf_tables",
    "nf_conntrack",
    "nf_nat",
    "br_netfilter",
];
const FILTER_OPTIONS: &[&str] = &[
    "CONFIG_NETFILTER",
    "CONFIG_NETFILTER_XTABLES",
    "CONFIG_IP_NF_IPTABLES",
    "CONFIG_NF_TABLES",
    "CONFIG_NF_CONNTRACK",
    "CONFIG_NF_NAT",
    "CONFIG_BRIDGE_NETFILTER",
];

/// What the machine had of a packet filter when it was checked, each as found (`None`: the
/// source could not be read).
#[derive(Serialize)]
pub struct PacketFilter {
    /// Of [`FILTER_BINARIES`], those on PATH.
    pub binaries: Vec<String>,
    /// Of [`FILTER_MODULES`], those in /proc/modules; `None` without /proc/modules (a kernel
    /// without loadable modules).
    pub modules: Option<Vec<String>>,
    /// Of [`FILTER_OPTIONS`], those built in (`=y` in /proc/config.gz).
    pub built_in: Option<Vec<String>>,
    /// /proc/net/ip_tables_names of the root namespace: the iptables tables in use there.
    pub ip_tables: Option<Vec<String>>,
    /// /proc/sys/net/netfilter/nf_conntrack_count of the root namespace.
    pub conntrack_entries: Option<u64>,
}

impl PacketFilter {
    pub fn check() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let config = stdout_within(Command::new("zcat").arg("/proc/config.gz"), Duration::from_secs(10)).ok();
        Self {
            binaries: FILTER_BINARIES.iter().filter(|b| super::leftovers::on_path(b)).map(|b| b.to_string()).collect(),
            modules: read("/proc/modules").map(|m| loaded_modules(&m)),
            built_in: config.map(|c| built_in(&c)),
            ip_tables: read("/proc/net/ip_tables_names").map(|t| t.split_whitespace().map(String::from).collect()),
            conntrack_entries: read("/proc/sys/net/netfilter/nf_conntrack_count").and_then(|n| n.trim().parse().ok()),
        }
    }

    /// One sentence of what was found, for the method text.
    pub fn describe(&self) -> String {
        let list = |found: &[String]| if found.is_empty() { "none".to_string() } else { found.join(", ") };
        let unreadable = || "not readable".to_string();
        let modules = match &self.modules {
            Some(loaded) => format!("netfilter modules loaded (/proc/modules): {}", list(loaded)),
            None => "no /proc/modules (no loadable modules)".into(),
        };
        let built_in = self.built_in.as_deref().map_or_else(unreadable, list);
        let tables = self.ip_tables.as_deref().map_or_else(|| "absent".into(), list);
        let conntrack = self.conntrack_entries.map_or_else(unreadable, |n| n.to_string());
        format!(
            "{} on PATH: {}; {modules}; netfilter built into the kernel (/proc/config.gz): {built_in}; root namespace's iptables tables (/proc/net/ip_tables_names): {tables}; its conntrack entries: {conntrack}",
            FILTER_BINARIES.join(", "),
            list(&self.binaries),
        )
    }
}

/// The netfilter modules among the lines of /proc/modules.
fn loaded_modules(proc_modules: &str) -> Vec<String> {
    let names = proc_modules.lines().filter_map(|l| l.split_whitespace().next());
    names.filter(|n| FILTER_MODULES.contains(n)).map(String::from).collect()
}

/// The netfilter options a kernel config builds in.
fn built_in(config: &str) -> Vec<String> {
    let set = config.lines().filter_map(|l| l.strip_suffix("=y"));
    set.filter(|o| FILTER_OPTIONS.contains(o)).map(String::from).collect()
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
    use super::*;

    #[test]
    fn netfilter_modules_and_options_are_picked_out() {
        let modules =
            "nf_tables 352256 0 - Live 0x0\nveth 40960 0 - Live 0x0\nnf_conntrack 180224 1 nf_nat, Live 0x0\n";
        assert_eq!(loaded_modules(modules), ["nf_tables", "nf_conntrack"]);
        let config = "CONFIG_NF_TABLES=y\n# CONFIG_IP_NF_IPTABLES is not set\nCONFIG_NF_NAT=m\nCONFIG_NETFILTER=y\n";
        assert_eq!(built_in(config), ["CONFIG_NF_TABLES", "CONFIG_NETFILTER"]);
    }

    #[test]
    fn the_packet_filter_is_described_as_found() {
        let found = PacketFilter {
            binaries: vec!["nft".into()],
            modules: None,
            built_in: Some(vec!["CONFIG_NF_TABLES".into()]),
            ip_tables: Some(vec![]),
            conntrack_entries: Some(0),
        };
        let text = found.describe();
        assert!(text.contains("ebtables on PATH: nft;"), "{text}");
        assert!(text.contains("no /proc/modules"), "{text}");
        assert!(text.contains("(/proc/config.gz): CONFIG_NF_TABLES;"), "{text}");
        assert!(text.contains("(/proc/net/ip_tables_names): none;"), "{text}");
        let none = PacketFilter {
            binaries: vec![],
            modules: Some(vec![]),
            built_in: None,
            ip_tables: None,
            conntrack_entries: None,
        };
        let text = none.describe();
        assert!(text.contains("on PATH: none;") && text.contains("/proc/modules): none;"), "{text}");
        assert!(text.contains("ip_tables_names): absent;") && text.contains("not readable"), "{text}");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_507), (2026, 2, 23));
    }
}
