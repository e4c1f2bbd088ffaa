//! `netpath stats`: the datapath's per-CPU counters, summed and put next to the endpoints.
use netpath_common::{drop_reason, stat_kind};
use serde::Serialize;

use crate::{controller::Controller, error::Result};

#[derive(Debug, Default, Serialize)]
pub struct EndpointStats {
    pub id: String,
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
        let ifindex = ctl.host_ifindex(&ep).await?;
        let mut row = EndpointStats {
            id: ep.id.clone(),
            network: ep.network.clone(),
            ip: ep.ip.to_string(),
            host_veth: ep.host_veth.clone(),
            ..Default::default()
        };
        for (key, c) in counters.iter().filter(|(k, _)| Some(k.id) == ifindex) {
            match key.kind {
                stat_kind::ENDPOINT_TX => (row.tx_packets, row.tx_bytes) = (c.packets, c.bytes),
                stat_kind::ENDPOINT_RX => (row.rx_packets, row.rx_bytes) = (c.packets, c.bytes),
                _ => {}
            }
        }
        out.push(row);
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
