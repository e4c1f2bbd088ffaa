//! `cargo xtask bench`: netpath side by side with a bare veth pair, a plain Linux bridge,
//! Docker's datapath, Podman's netavark and the CNI reference plugins, each built by its own
//! tool in its own throwaway namespaces, measured in interleaved runs with iperf3, sockperf
//! and np-connrate, and reported as `results.json`, a Markdown table and SVG charts.
//!
//! Nothing runs in the root network namespace and nothing is sent anywhere but between the
//! bench's own namespaces; afterwards the machine is checked to be exactly as before.
mod attach;
mod charts;
mod cost;
mod datapath;
mod dns;
mod goals;
pub(crate) mod install;
mod leftovers;
mod lock;
mod machine;
mod netns;
mod process;
mod progress;
mod report;
mod results;
mod runner;
mod sandbox;
mod scale;
mod scenario;
mod topology;
mod traffic;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::sh::{self, step, workspace_root};
use install::Peers;
pub use install::docker_for_tests;
use scenario::Scenario;

/// Everything the bench creates at run time lives here (plus namespaces `npbench-*`).
pub const RUN_DIR: &str = "/run/npbench";

#[derive(clap::Args)]
pub struct Options {
    /// A short run (one run of 1 s per figure, smaller attach sweep): minutes, not half an hour.
    #[arg(long)]
    quick: bool,
    /// Runs per figure (default: 3, or 1 with --quick); every figure shows the min–max across them.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: Option<u32>,
    /// Only these scenarios (repeatable): c2c-tcp-1, c2c-tcp-4, egress-tcp, ingress-tcp,
    /// host-tcp, latency, connrate, udp-rate, udp-in, flood, conntrack-pressure, ports, attach,
    /// attach-concurrent, scale, dns.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Only these datapaths besides netpath (repeatable): netpath-xdp (XDP filters, published
    /// ports on TC), netpath-xdp-redirect (XDP also redirects published ports), netpath-tcx
    /// (`--endpoint-hook tcx`: a TCX link per endpoint instead of the tc block), netpath-daemon
    /// (attaches through `netpath daemon`, the Docker driver; the driver calls timed),
    /// netpath-daemon-engine (the same, the engine's namespace work timed too), veth, bridge,
    /// docker, netavark, cni, redirect-ref.
    #[arg(long = "datapath", value_name = "NAME")]
    datapaths: Vec<String>,
    /// Where results go: a directory named after the run's start time is made in it.
    #[arg(long, value_name = "DIR", default_value_os_t = workspace_root().join("bench/results"))]
    out: PathBuf,
}

/// How long and how often.
pub struct Config {
    pub quick: bool,
    pub runs: usize,
    pub seconds: u32,
    pub port_counts: Vec<u32>,
    pub endpoint_counts: Vec<u32>,
    /// The points of the scale sweep, ascending: endpoints on one network.
    pub scale_counts: Vec<u32>,
}

impl Config {
    fn new(quick: bool, runs: Option<u32>) -> Self {
        let cfg = if quick {
            Self {
                quick,
                runs: 1,
                seconds: 1,
                port_counts: vec![10, 1000, 10000],
                endpoint_counts: vec![100, 500],
                scale_counts: vec![10, 200, 400],
            }
        } else {
            Self {
                quick,
                runs: 3,
                seconds: 3,
                port_counts: vec![10, 1000, 10000],
                endpoint_counts: vec![10, 100, 500],
                scale_counts: vec![10, 500, 1000],
            }
        };
        Self { runs: runs.map_or(cfg.runs, |n| n as usize), ..cfg }
    }

    /// The method, in words, for the report; `filter` is the packet filter as checked before
    /// the run and after its teardown.
    fn method(&self, filter: &[machine::PacketFilter; 2]) -> Vec<String> {
        vec![
            format!("{} run(s); in each run every datapath is measured once per scenario, in an order rotated from run to run; every figure is the median of the runs with their min–max, every ratio the median of the run-by-run ratios with theirs", self.runs),
            format!("iperf3 runs {} s (TCP: receiver's throughput; UDP: 64-byte datagrams at full speed, datagrams that arrived per second)", self.seconds),
            "sockperf ping-pong over UDP, one message in flight, client and server pinned to the same CPU (across CPUs this VM's wake-up, ~30 µs, would swamp the path): half the round trip, 50th and 99th percentile".into(),
            "np-connrate (xtask/src/bin/np-connrate.rs): 2 threads each connect, send 64 bytes, read 64 bytes, and the server closes".into(),
            "CPU cost: the whole machine's busy time (all CPUs in /proc/stat: user, nice, system, irq and softirq, i.e. all but idle, iowait and steal) read just before and just after the load generator runs, divided by the work it reports: bytes the iperf3 receiver got (CPU-s/GB, 1 GB = 10⁹ bytes), datagrams that arrived (CPU-s/Mpkt), connections np-connrate completed (CPU-s/kconn); it counts both ends, the tools' start and whatever else the machine ran meanwhile (other users' builds on a shared machine show up as spread)".into(),
            "program cost (ns/packet): on the container → container scenarios, a second pass of the same traffic right after the first, with the kernel's BPF run-time statistics on for that pass only (BPF_ENABLE_STATS, off again when its descriptor closes; the first pass's figures do not pay for them): run time over runs of the program every packet leaving a container passes, netpath's from_container and, in `redirect-ref`, the reference program that only calls bpf_redirect_peer (netpath-ebpf/src/reference.rs); for TCP a packet is an skb as the program sees it".into(),
            "flood: np-connrate to the published port while np-flood (xtask/src/bin/np-flood.rs) sends unsolicited 64-byte UDP datagrams from the outside to the server container's own address (ports 20000-29999, sendmmsg, at most 20 M packets and the run's length); reported as conn/s under the flood and as its ratio to a run without flood measured just before; each run records the datagrams np-flood sent, how long before the measurement it began and after it ended (np-flood's and the bench's wall clock), the packets the uplink received while it ran and, on netpath, the unsolicited drops; a run whose flood began after the measurement or ended before it gives no figure".into(),
            "conntrack-pressure: np-blindack (xtask/src/bin/np-blindack.rs) opens a connection to the published np-connrate port, leaves it idle 3 s, then sends from the outside 150,000 spoofed tuples (at most 30 s; sources .100-.107 of the outside's /24, nobody's), each a SYN and, once a burst of 2048 SYNs has been answered, an ACK that acknowledges nothing the server sent, then makes its request on the idle connection: reported as the flood's tuples per second and tuples sent; a run whose idle connection got no response gives no figure; where the bench attaches endpoints itself (netpath's CLI and daemon, the CNI bridge plugin, netavark), one endpoint is attached (untimed) and detached (timed) right before the flood and another right after it, with the tables as full as the flood left them (only the first run starts from empty tables: the unanswered opens of one flood are still there at the next run's first detach)".into(),
            "netpath's own account on the inbound paths: before and after every run, `netpath network inspect` (xdp_mode) and `netpath stats` (xdp_redirected, unsolicited drops), recorded with the run; a run of netpath-xdp or netpath-xdp-redirect whose XDP is not in native mode, or of netpath-xdp-redirect that redirected nothing, gives no figure".into(),
            "the outside end of the uplink sends as a NIC delivers: tx checksum offload and TSO off, for every datapath (XDP rewrites checksums by hand and needs whole ones; the TC paths get the same frames)".into(),
            "published-port sweep: N ports published in total, the measured two among N-2 filler ports (Docker: its own DNAT/ACCEPT/MASQUERADE rules for each filler, loaded with iptables-restore ahead of the measured container's; netpath: a filler endpoint publishing a port range)".into(),
            format!("attach sweep: N namespaces made beforehand, then one attach command per endpoint, one after another, each timed end to end: p50 and p99 per attach and the whole series as their sum (N = {:?}); netpath is its release build", self.endpoint_counts),
            "netpath-daemon and netpath-daemon-engine attach as dockerd does through `netpath daemon` (the Docker network and IPAM driver, started once, keeping the datapath open): IpamDriver.RequestAddress, NetworkDriver.CreateEndpoint and NetworkDriver.Join over its unix socket, a connection per call (the daemon answers `Connection: close`), then the engine's part as dockerd does it, in-process netlink from the bench (the handed veth end moved into the namespace, renamed eth0, addressed, up, default route through the gateway); netpath-daemon-engine times all of it, like for like with the CLI, netavark and CNI, netpath-daemon only the three driver calls, the engine's part done after the clock stopped (after each attach, or after the whole concurrent batch); detach is Leave, DeleteEndpoint, ReleaseAddress".into(),
            format!("scale sweep (netpath's CLI): one network on a /20 of its own grows, one timed attach after another, to N = {:?} endpoints (not 2,000: a Linux bridge takes at most 1023 ports, and the kernel refuses the 1024th with EXFULL); at each point: attach p50 of the last ten attaches, detach p50 of five (an extra endpoint attached untimed before each), both also as ratios to the first point of the same run; `netpath gc` with nothing to collect (it must say so), `netpath endpoint ls --format json` (it must list N), `netpath restore` with everything intact, and the kernel's bytes_memlock of the datapath's pinned maps; the network is removed with `network rm --force` afterwards", self.scale_counts),
            format!("concurrent attach: {} namespaces made beforehand, then {} attach commands launched at once from as many threads, timed until the last returned; fails unless every endpoint got its own address", attach::CONCURRENT, attach::CONCURRENT),
            dns::method(self),
            "every peer runs in its own host namespace with its own state; Docker, netavark and the CNI plugins use iptables-nft from a private prefix, with PATH and LD_LIBRARY_PATH pointing there for them alone".into(),
            format!("the machine's packet filter, checked before the run: {}", filter[0].describe()),
            format!("and after the teardown: {}", filter[1].describe()),
        ]
    }
}

/// What every part of the bench needs.
pub struct Ctx {
    pub cfg: Config,
    pub peers: Peers,
    pub netpath: PathBuf,
    pub connrate: PathBuf,
    pub run_dir: PathBuf,
    logs: PathBuf,
}

impl Ctx {
    /// The log file of a server or daemon; logs stay after the run (under the target dir).
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let scenarios: Vec<&'static Scenario> = if opts.scenarios.is_empty() {
        scenario::ALL.iter().collect()
    } else {
        opts.scenarios.iter().map(|s| Scenario::by_name(s)).collect::<Result<_>>()?
    };
    let mut datapaths = datapath::all();
    for name in &opts.datapaths {
        if !datapaths.iter().any(|d| d.name() == name) {
            bail!(
                "no datapath {name:?}; there are: {}",
                datapaths.iter().map(|d| d.name()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if !opts.datapaths.is_empty() {
        datapaths.retain(|d| d.name() == datapath::REFERENCE || opts.datapaths.iter().any(|n| n == d.name()));
    }
    let _lock = lock::RunLock::acquire()?;
    process::catch_interrupts();
    let peers = install::install()?;
    // np-flood and np-blindack are found next to np-connrate.
    let connrate = build_release(
        "np-connrate",
        &["-p", "xtask", "--bin", "np-connrate", "--bin", "np-flood", "--bin", "np-blindack"],
    )?;
    // What users run: a debug build would spend its time in unoptimised code.
    let netpath = build_release("netpath", &["-p", "netpath", "--bin", "netpath"])?;
    step("sweeping what an earlier run may have left");
    leftovers::sweep(&netpath);
    let before = leftovers::Snapshot::take();
    let filter_before = machine::PacketFilter::check();
    let logs = install::target_dir().join("bench-logs");
    let _ = std::fs::remove_dir_all(&logs);
    for dir in [Path::new(RUN_DIR), &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let ctx = Ctx { cfg: Config::new(opts.quick, opts.runs), peers, netpath, connrate, run_dir: RUN_DIR.into(), logs };
    let (started, stamp) = machine::timestamp();
    let mut results = results::Results::new(ctx.cfg.runs);

    let outcome = runner::run(&ctx, &mut datapaths, &scenarios, &mut results);
    step("tearing everything down");
    process::start_cleanup();
    for dp in datapaths.iter_mut().rev() {
        dp.down(&ctx);
    }
    leftovers::sweep(&ctx.netpath);
    let unchanged = before.compare(&leftovers::Snapshot::take());
    let packet_filter = [filter_before, machine::PacketFilter::check()];
    outcome?;

    let observations = results.observations();
    let cells = results.finish(datapath::REFERENCE);
    let report = results::Report {
        started,
        finished: machine::timestamp().0,
        quick: ctx.cfg.quick,
        runs: ctx.cfg.runs,
        seconds_per_measurement: ctx.cfg.seconds,
        port_counts: ctx.cfg.port_counts.clone(),
        endpoint_counts: ctx.cfg.endpoint_counts.clone(),
        scale_counts: ctx.cfg.scale_counts.clone(),
        reference: datapath::REFERENCE,
        machine: machine::Machine::describe(),
        versions: machine::versions(&ctx),
        datapaths: datapaths
            .iter()
            .map(|d| results::DatapathInfo { name: d.name(), description: d.description() })
            .collect(),
        scenarios: scenarios.iter().map(|s| results::ScenarioInfo::from(*s)).collect(),
        goals: goals::evaluate(goals::GOALS, &cells),
        cells,
        observations,
        method: ctx.cfg.method(&packet_filter),
        packet_filter,
    };
    let dir = opts.out.join(&stamp);
    write_outputs(&dir, &report)?;
    unchanged.context("after tearing down")?;
    step("the root namespace and the machine are as they were before the run");
    Ok(())
}

/// `results.json`, `results.md` and the charts, into `dir`; the table goes to stdout too.
fn write_outputs(dir: &Path, report: &results::Report) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(report)?)?;
    let datapaths: Vec<&str> = report.datapaths.iter().map(|d| d.name).collect();
    let charts = charts::draw(dir, &report.cells, &datapaths)?;
    let chart_names: Vec<String> =
        charts.iter().filter_map(|c| c.file_name()).map(|n| n.to_string_lossy().into_owned()).collect();
    let markdown = report::markdown(report, &chart_names);
    std::fs::write(dir.join("results.md"), &markdown)?;
    println!("{markdown}");
    step(&format!("results in {}", dir.display()));
    Ok(())
}

/// An optimised build of binary `bin` (cargo arguments `args`): the load generators, so that
/// they do not measure themselves, and netpath as users run it.
fn build_release(bin: &str, args: &[&str]) -> Result<PathBuf> {
    step(&format!("building {bin} (release)"));
    sh::run(Command::new("cargo").current_dir(workspace_root()).args(["build", "--quiet", "--release"]).args(args))?;
    let path = install::target_dir().join("release").join(bin);
    if !path.exists() {
        bail!("{} is missing: the build did not produce it", path.display());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: Options,
    }

    fn runs(args: &[&str]) -> Result<usize, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Ok(Config::new(cli.bench.quick, cli.bench.runs).runs)
    }

    #[test]
    fn runs_default_to_three_or_one_when_quick_and_can_be_chosen() {
        assert_eq!(runs(&[]).unwrap(), 3);
        assert_eq!(runs(&["--quick"]).unwrap(), 1);
        assert_eq!(runs(&["--quick", "--runs", "2"]).unwrap(), 2);
        assert_eq!(runs(&["--runs", "5"]).unwrap(), 5);
    }

    #[test]
    fn runs_refuses_zero_and_nonsense() {
        for bad in ["0", "-1", "two", "101"] {
            assert!(runs(&["--runs", bad]).is_err(), "--runs {bad} was accepted");
        }
    }
}
