//! `netpath daemon --metrics`: the counters of `netpath stats`, the conntrack tables' fill,
//! the numbers of networks and endpoints and the daemon's own operations, as a Prometheus
//! scrape page. Everything is read from user space (per-CPU maps summed, hash maps walked),
//! which costs the datapath nothing.
mod dns;
mod operations;
mod text;

use std::collections::BTreeMap;

use netpath_common::limits::{MAX_CT, MAX_CT_NEW};

use crate::{
    core::controller::Controller,
    error::Result,
    view::stats::{self, DropStats, EndpointStats, Report},
};
pub use dns::{DnsQueries, QueryResult};
pub use operations::Operations;
pub use text::CONTENT_TYPE;
use text::{Exposition, Kind};

/// A family of counters: its name, what it counts, and where a record of `netpath stats`
/// holds it.
type Counters<T> = (&'static str, &'static str, fn(&T) -> u64);

/// `tx` is what the container sent, `rx` what it was sent.
const ENDPOINT_COUNTERS: [Counters<EndpointStats>; 4] = [
    ("netpath_endpoint_transmit_packets_total", "Packets the endpoint's container sent.", |e| e.tx_packets),
    ("netpath_endpoint_transmit_bytes_total", "Bytes the endpoint's container sent.", |e| e.tx_bytes),
    ("netpath_endpoint_receive_packets_total", "Packets delivered to the endpoint's container.", |e| e.rx_packets),
    ("netpath_endpoint_receive_bytes_total", "Bytes delivered to the endpoint's container.", |e| e.rx_bytes),
];

const DROP_COUNTERS: [Counters<DropStats>; 2] = [
    ("netpath_dropped_packets_total", "Packets the datapath dropped, by reason.", |d| d.packets),
    ("netpath_dropped_bytes_total", "Bytes the datapath dropped, by reason.", |d| d.bytes),
];

/// The whole page. A datapath that is not loaded is not loaded for a scrape: its families
/// are left without samples and `netpath_datapath_loaded` says why.
pub async fn render(ctl: &mut Controller, operations: &Operations, queries: &DnsQueries) -> Result<String> {
    let mut page = Exposition::default();
    inventory(ctl, &mut page)?;
    let loaded = ctl.datapath_pinned();
    let help = "Whether the eBPF datapath is loaded (1) or not (0).";
    single(&mut page, "netpath_datapath_loaded", Kind::Gauge, help, Some(u8::from(loaded)));
    let report = if loaded { Some(stats::collect(ctl, None).await?) } else { None };
    endpoint_counters(&mut page, report.as_ref());
    drops(&mut page, report.as_ref());
    let usage = if loaded { Some(ctl.datapath()?.conntrack_usage()) } else { None };
    conntrack(&mut page, usage);
    operations.write(&mut page);
    queries.write(&mut page);
    Ok(page.finish())
}

/// How many networks there are, and endpoints in each (whatever their state).
fn inventory(ctl: &Controller, page: &mut Exposition) -> Result<()> {
    let networks = ctl.networks()?;
    let mut endpoints: BTreeMap<String, usize> = networks.iter().map(|n| (n.name.clone(), 0)).collect();
    for ep in ctl.endpoints(None)? {
        *endpoints.entry(ep.network).or_default() += 1;
    }
    single(page, "netpath_networks", Kind::Gauge, "Networks netpath manages.", Some(networks.len()));
    page.family("netpath_endpoints", Kind::Gauge, "Endpoints attached to each network.");
    for (network, n) in &endpoints {
        page.sample("netpath_endpoints", &[("network", network)], n);
    }
    Ok(())
}

/// Per-endpoint traffic. There is no per-network counter on purpose: summing the endpoints of
/// a network would go down when one detaches, which Prometheus takes for a reset; a query's
/// `sum by (network) (rate(...))` adds them up correctly instead.
fn endpoint_counters(page: &mut Exposition, report: Option<&Report>) {
    let endpoints = report.map_or(&[][..], |r| &r.endpoints[..]);
    for (name, help, value) in ENDPOINT_COUNTERS {
        page.family(name, Kind::Counter, help);
        for ep in endpoints {
            let mut labels = vec![("network", ep.network.as_str()), ("endpoint", &ep.id)];
            labels.extend(ep.name.as_deref().map(|n| ("name", n)));
            page.sample(name, &labels, value(ep));
        }
    }
}

/// Drops by the reasons `netpath stats` names, and the XDP variant's redirects.
fn drops(page: &mut Exposition, report: Option<&Report>) {
    let drops = report.map_or(&[][..], |r| &r.drops[..]);
    for (name, help, value) in DROP_COUNTERS {
        page.family(name, Kind::Counter, help);
        for d in drops {
            page.sample(name, &[("reason", d.reason)], value(d));
        }
    }
    let xdp = report.map(|r| &r.xdp_redirected);
    let help = "Packets the XDP variant redirected to endpoints.";
    single(page, "netpath_xdp_redirected_packets_total", Kind::Counter, help, xdp.map(|c| c.packets));
    let help = "Bytes the XDP variant redirected to endpoints.";
    single(page, "netpath_xdp_redirected_bytes_total", Kind::Counter, help, xdp.map(|c| c.bytes));
}

/// Entries in the established (`CT`) and unanswered (`CT_NEW`) tables and what each holds.
/// `conntrack_usage` walks keys only, which leaves the LRU's recency alone: a scrape never
/// changes which connection a full table evicts.
fn conntrack(page: &mut Exposition, usage: Option<(usize, usize)>) {
    page.family("netpath_conntrack_entries", Kind::Gauge, "Entries in each conntrack table (two per connection).");
    if let Some((ct, ct_new)) = usage {
        page.sample("netpath_conntrack_entries", &[("table", "CT")], ct);
        page.sample("netpath_conntrack_entries", &[("table", "CT_NEW")], ct_new);
    }
    page.family("netpath_conntrack_entries_limit", Kind::Gauge, "How many entries each conntrack table holds.");
    page.sample("netpath_conntrack_entries_limit", &[("table", "CT")], MAX_CT);
    page.sample("netpath_conntrack_entries_limit", &[("table", "CT_NEW")], MAX_CT_NEW);
}

/// A family of one unlabelled sample, or none when its value is not known.
fn single(page: &mut Exposition, name: &str, kind: Kind, help: &str, value: Option<impl std::fmt::Display>) {
    page.family(name, kind, help);
    if let Some(v) = value {
        page.sample(name, &[], v);
    }
}
