//! What the commands print: text tables and key/value lists (JSON is serde's).
use serde::Serialize;

use crate::{
    core::restore::EndpointAction, core::restore::RestoreReport, error::Result, kernel::link::facts::XdpMode,
    state::settings::Settings, state::store::EndpointRecord, state::store::NetworkRecord, state::store::State,
    types::port::Port, view::output::Format, view::output::json, view::output::key_values, view::output::table,
    view::stats,
};

#[derive(Serialize)]
pub struct PortView {
    pub endpoint: String,
    pub network: String,
    #[serde(flatten)]
    pub port: Port,
    pub container_ip: std::net::Ipv4Addr,
}

pub fn ports_text(ports: &[PortView]) -> String {
    let rows = ports
        .iter()
        .map(|p| {
            let host = p.port.host_ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string());
            vec![
                p.port.proto.to_string(),
                format!("{host}:{}", p.port.host_port),
                format!("{}:{}", p.container_ip, p.port.container_port),
                p.endpoint.clone(),
                p.network.clone(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["PROTO", "HOST", "CONTAINER", "ENDPOINT", "NETWORK"], &rows)
}

pub fn settings_text(s: &Settings) -> String {
    let rows = [
        ("snat ports", format!("{}-{}", s.snat_port_min, s.snat_port_max)),
        ("snat quota", format!("{} per endpoint", s.snat_quota)),
        ("tcp established timeout", format!("{}s", s.tcp_established_timeout)),
        ("tcp transient timeout", format!("{}s", s.tcp_transient_timeout)),
        ("udp timeout", format!("{}s", s.udp_timeout)),
        ("icmp timeout", format!("{}s", s.icmp_timeout)),
        ("endpoint hook", s.endpoint_hook.as_str().to_string()),
    ];
    key_values(&rows, 24)
}

#[derive(Serialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: NetworkRecord,
    /// How `xdp_uplink` runs on the uplink, as the kernel reports it; `null` without `--xdp`.
    pub xdp_mode: Option<XdpMode>,
    pub endpoints: Vec<EndpointRecord>,
}

pub fn print<T: Serialize + ?Sized>(format: Format, value: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    match format {
        Format::Json => println!("{}", json(value)?),
        Format::Text => println!("{}", text(value)),
    }
    Ok(())
}

pub fn flags(n: &NetworkRecord) -> String {
    let mut flags = Vec::new();
    if n.internal {
        flags.push("internal");
    } else if n.masquerade {
        flags.push("masquerade");
    }
    let xdp = format!("xdp-{}", n.xdp);
    if n.xdp.is_on() {
        flags.push(&xdp);
    }
    let state = n.state.to_string();
    if n.state != State::Ready {
        flags.push(&state);
    }
    flags.join(",")
}

pub fn restore_text(r: &RestoreReport) -> String {
    let mut lines = Vec::new();
    for n in &r.networks {
        lines.push(match (&n.error, n.created.is_empty()) {
            (Some(e), _) => format!("network {}: FAILED: {e}", n.name),
            (None, true) => format!("network {}: intact", n.name),
            (None, false) => format!("network {}: {}", n.name, n.created.join(", ")),
        });
    }
    for e in &r.endpoints {
        lines.push(match &e.outcome {
            EndpointAction::Intact => format!("endpoint {} ({}): intact", e.id, e.network),
            EndpointAction::Rewired(why) => format!("endpoint {} ({}): rewired ({why})", e.id, e.network),
            EndpointAction::Released => format!("endpoint {} ({}): released, its namespace is gone", e.id, e.network),
            EndpointAction::Failed(why) => format!("endpoint {} ({}): FAILED: {why}", e.id, e.network),
        });
    }
    if !r.reaped.is_empty() {
        lines.push(gc_text(&r.reaped));
    }
    if lines.is_empty() {
        lines.push("nothing to restore".into());
    }
    lines.join("\n")
}

pub fn gc_text(r: &crate::core::gc::GcReport) -> String {
    let lists = [
        ("abandoned network", &r.abandoned_networks),
        ("abandoned endpoint", &r.abandoned_endpoints),
        ("released endpoint (namespace gone)", &r.released_endpoints),
        ("removed link", &r.links),
        ("removed pinned link", &r.pinned_links),
        ("removed map entry", &r.map_entries),
        ("removed leftover of a killed reload", &r.datapath_dirs),
    ];
    let mut lines: Vec<String> =
        lists.iter().flat_map(|(what, items)| items.iter().map(move |i| format!("{what}: {i}"))).collect();
    if lines.is_empty() {
        lines.push("nothing to collect".into());
    }
    lines.join("\n")
}

pub fn network_text(n: &NetworkRecord) -> String {
    let rows = [
        ("name", n.name.clone()),
        ("bridge", n.bridge.clone()),
        ("subnet", n.subnet.to_string()),
        ("gateway", n.gateway.to_string()),
        ("mtu", n.mtu.to_string()),
        ("flags", flags(n)),
        ("uplink", n.uplink.clone().unwrap_or_else(|| "(default route)".into())),
        ("docker id", n.external_id.clone().unwrap_or_else(|| "-".into())),
    ];
    key_values(&rows, 9)
}

/// The id Docker knows a network by, shortened as `docker network ls` shows it.
pub fn engine_id(n: &NetworkRecord) -> String {
    n.external_id.as_deref().map_or_else(|| "-".to_string(), |id| id.chars().take(12).collect())
}

/// The container end's name: Docker names the ends it was handed (eth0, eth1 …) itself.
pub fn ifname_of(e: &EndpointRecord) -> String {
    if e.handed { "(by docker)".to_string() } else { e.ifname.clone() }
}

/// The name it answers to, with how many aliases besides, for a table's one column.
fn name_of(e: &EndpointRecord) -> String {
    let name = e.name.clone().unwrap_or_else(|| "-".to_string());
    match e.aliases.len() {
        0 => name,
        n => format!("{name} (+{n})"),
    }
}

pub fn endpoint_text(e: &EndpointRecord) -> String {
    let rows = [
        ("id", e.id.clone()),
        ("name", e.name.clone().unwrap_or_default()),
        ("aliases", e.aliases.join(", ")),
        ("network", e.network.clone()),
        ("ip", format!("{}/{}", e.ip, e.prefix)),
        ("mac", e.mac.clone()),
        ("gateway", e.gateway.to_string()),
        ("ifname", ifname_of(e)),
        ("host", e.host_veth.clone()),
        ("netns", e.netns.clone()),
        ("ports", e.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    ];
    key_values(&rows, 8)
}

pub fn endpoints_table(eps: &[EndpointRecord]) -> String {
    let rows = eps
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                name_of(e),
                e.network.clone(),
                format!("{}/{}", e.ip, e.prefix),
                e.mac.clone(),
                ifname_of(e),
                e.host_veth.clone(),
                e.netns.clone(),
            ]
        })
        .collect::<Vec<_>>();
    table(&["ID", "NAME", "NETWORK", "IP", "MAC", "IFNAME", "HOST-VETH", "NETNS"], &rows)
}

pub fn program_stats_text(r: &stats::ProgramReport) -> String {
    const NOT_MEASURED: &str = "not measured";
    let rows = r
        .programs
        .iter()
        .map(|p| {
            let (run_ns, per_run) = match p.run_ns {
                None => (NOT_MEASURED.to_string(), NOT_MEASURED.to_string()),
                Some(ns) => (ns.to_string(), p.ns_per_run.map_or_else(|| "-".to_string(), |ns| format!("{ns:.0}"))),
            };
            vec![p.program.to_string(), p.runs.to_string(), run_ns, per_run]
        })
        .collect::<Vec<_>>();
    let scope = match r.window_seconds {
        Some(seconds) => format!("over {seconds:.0} s"),
        None if r.kernel_stats_enabled => "since each program was loaded".to_string(),
        None => "since load; kernel.bpf_stats_enabled is 0, so the kernel counted nothing (the tail-called stages' \
                 own counts are shown): pass --for SECONDS"
            .to_string(),
    };
    let stages: Vec<&str> = r.programs.iter().filter(|p| p.run_ns.is_none()).map(|p| p.program).collect();
    let note = if stages.is_empty() {
        String::new()
    } else {
        format!(
            "\n{}: tail-called stages. The kernel does not count their runs; netpath's own counter does \
             (STAGE_RUNS). Their run time is not measured apart: it is part of the ns/run of the program that \
             called them (from_container, from_uplink).",
            stages.join(", ")
        )
    };
    format!(
        "{}

{scope}{note}",
        table(&["PROGRAM", "RUNS", "RUN-NS", "NS/RUN"], &rows)
    )
}

pub fn stats_text(r: &stats::Report) -> String {
    let rows = r
        .endpoints
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.network.clone(),
                e.ip.clone(),
                e.tx_packets.to_string(),
                e.tx_bytes.to_string(),
                e.rx_packets.to_string(),
                e.rx_bytes.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    let drops = r
        .drops
        .iter()
        .map(|d| vec![d.reason.to_string(), d.packets.to_string(), d.bytes.to_string()])
        .collect::<Vec<_>>();
    format!(
        "{}\n\n{}\n\nxdp redirected {} packets, {} bytes",
        table(&["ENDPOINT", "NETWORK", "IP", "TX-PKTS", "TX-BYTES", "RX-PKTS", "RX-BYTES"], &rows),
        table(&["DROP-REASON", "PACKETS", "BYTES"], &drops),
        r.xdp_redirected.packets,
        r.xdp_redirected.bytes
    )
}
