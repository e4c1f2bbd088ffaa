//! `netpath stats`: the datapath's per-CPU counters, summed and put next to the endpoints.
use std::time::Duration;

use netpath_common::{EndpointCounters, drop_reason, stat_kind};
use serde::Serialize;

use crate::{
    core::controller::Controller,
    error::{Context, Result},
    kernel::datapath::ProgramRuns,
    state::store::State,
};

#[derive(Debug, Default, Serialize)]
pub struct EndpointStats {
    pub id: String,
    /// The name it answers to on its network, if it has one.
    pub name: Option<String>,
    pub network: String,
    pub ip: String,
    pub host_veth: String,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct DropStats {
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub endpoints: Vec<EndpointStats>,
    /// Drops are counted datapath-wide, whatever network they came from.
    pub drops: Vec<DropStats>,
    /// Packets the XDP variant redirected to endpoints, datapath-wide.
    pub xdp_redirected: Counter,
}

#[derive(Debug, Default, Serialize)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

pub async fn collect(ctl: &mut Controller, network: Option<&str>) -> Result<Report> {
    let endpoints = ctl.endpoints(network)?;
    let counters = ctl.datapath()?.counters()?;
    let mut out = Vec::new();
    for ep in endpoints {
        // A slot still being handed over (`creating`) may hold its last owner's counts.
        let c = if ep.state == State::Ready {
            ctl.datapath()?.endpoint_counters(ep.slot)?
        } else {
            EndpointCounters::default()
        };
        out.push(EndpointStats {
            id: ep.id,
            name: ep.name,
            network: ep.network,
            ip: ep.ip.to_string(),
            host_veth: ep.host_veth,
            tx_packets: c.tx.packets,
            tx_bytes: c.tx.bytes,
            rx_packets: c.rx.packets,
            rx_bytes: c.rx.bytes,
        });
    }
    let drops = drop_reason::ALL
        .iter()
        .map(|&reason| {
            let c = counters
                .iter()
                .find(|(k, _)| k.kind == stat_kind::DROP && k.id == reason)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            DropStats { reason: drop_reason::name(reason), packets: c.packets, bytes: c.bytes }
        })
        .collect();
    let xdp = counters.iter().find(|(k, _)| k.kind == stat_kind::XDP_REDIRECT).map(|(_, c)| *c).unwrap_or_default();
    Ok(Report { endpoints: out, drops, xdp_redirected: Counter { packets: xdp.packets, bytes: xdp.bytes } })
}

/// What one program costs: how often it ran and for how long, over a measured window or since
/// it was loaded.
#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub program: &'static str,
    pub runs: u64,
    /// Who counted `runs`: `kernel` (its run-time statistics, while they are on) or `netpath`
    /// (a tail-called stage's own counter, always on: the kernel does not count those).
    pub counted_by: &'static str,
    /// `None` when not measured: the kernel times a tail-called stage as part of the program
    /// that called it.
    pub run_ns: Option<u64>,
    pub ns_per_run: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ProgramReport {
    /// The window the figures cover; `None`: since each program was loaded.
    pub window_seconds: Option<f64>,
    /// Whether `kernel.bpf_stats_enabled` is on, so that cumulative figures mean anything.
    pub kernel_stats_enabled: bool,
    pub programs: Vec<ProgramCost>,
}

/// `netpath stats --programs [--for SECONDS]`. With a window, run-time statistics are turned
/// on through `BPF_ENABLE_STATS` for just that long: the kernel turns them off again when the
/// file descriptor closes, so no sysctl is left changed, even if netpath is killed.
pub async fn programs(ctl: &mut Controller, window: Option<Duration>) -> Result<ProgramReport> {
    let kernel_stats_enabled =
        std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1");
    let Some(window) = window else {
        let now = ctl.datapath()?.program_runs()?;
        return Ok(ProgramReport { window_seconds: None, kernel_stats_enabled, programs: costs(&now, None) });
    };
    let _stats_on = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context(|| "cannot turn on the kernel's BPF run-time statistics")?;
    let before = ctl.datapath()?.program_runs()?;
    tokio::time::sleep(window).await;
    let after = ctl.datapath()?.program_runs()?;
    Ok(ProgramReport {
        window_seconds: Some(window.as_secs_f64()),
        kernel_stats_enabled,
        programs: costs(&after, Some(&before)),
    })
}

/// Each program's runs and time, less what `before` had already counted.
fn costs(now: &[ProgramRuns], before: Option<&[ProgramRuns]>) -> Vec<ProgramCost> {
    now.iter()
        .map(|p| {
            let earlier = before.and_then(|b| b.iter().find(|e| e.program == p.program));
            let runs = p.runs.saturating_sub(earlier.map_or(0, |e| e.runs));
            let run_ns = p.run_ns.map(|ns| ns.saturating_sub(earlier.and_then(|e| e.run_ns).unwrap_or(0)));
            let ns_per_run = run_ns.filter(|_| runs > 0).map(|ns| ns as f64 / runs as f64);
            let counted_by = if p.run_ns.is_some() { "kernel" } else { "netpath" };
            ProgramCost { program: p.program, runs, counted_by, run_ns, ns_per_run }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_counted_by_netpath_and_their_time_is_not_measured() {
        let before = [
            ProgramRuns { program: "from_container", runs: 10, run_ns: Some(1_000) },
            ProgramRuns { program: "from_container_egress", runs: 2, run_ns: None },
        ];
        let after = [
            ProgramRuns { program: "from_container", runs: 30, run_ns: Some(5_000) },
            ProgramRuns { program: "from_container_egress", runs: 7, run_ns: None },
        ];
        let costs = costs(&after, Some(&before));
        assert_eq!((costs[0].runs, costs[0].run_ns, costs[0].ns_per_run), (20, Some(4_000), Some(200.0)));
        assert_eq!(costs[0].counted_by, "kernel");
        assert_eq!((costs[1].runs, costs[1].run_ns, costs[1].ns_per_run), (5, None, None));
        assert_eq!(costs[1].counted_by, "netpath");
    }
}
