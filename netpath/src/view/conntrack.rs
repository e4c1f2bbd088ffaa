//! `netpath conntrack`: the datapath's connection table, read and pruned from userspace.
use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
};

use netpath_common::{Config, CtEntry, CtKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ct_dir, ct_state};
use serde::Serialize;

use crate::{core::controller::Controller, error::Result};

#[derive(Debug, Serialize)]
pub struct Connection {
    pub proto: &'static str,
    pub endpoint: Option<String>,
    pub network: Option<String>,
    /// The first packet's source and destination, as it arrived.
    pub source: String,
    pub destination: String,
    /// What they were translated to.
    pub translated_source: String,
    pub translated_destination: String,
    pub state: &'static str,
    /// Seconds until the entry expires without traffic.
    pub expires_in: u64,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// What the datapath reads to tell whether a connection is over.
struct Clock {
    cfg: Config,
    now: u64,
    /// The host veths in `VETHS`: a connection ends with the endpoint at either of its ends.
    attached: HashSet<u32>,
}

impl Clock {
    fn read(ctl: &mut Controller) -> Result<Self> {
        let dp = ctl.datapath()?;
        Ok(Clock { cfg: dp.config()?, now: monotonic_ns(), attached: dp.veth_ifindexes()?.into_iter().collect() })
    }

    /// Seconds left before an original-direction entry expires; `None` once its connection is
    /// over, by expiry or by a detach, as the datapath sees it.
    fn remaining(&self, key: &CtKey, entry: &CtEntry) -> Option<u64> {
        let attached = |veth: u32| veth == 0 || self.attached.contains(&veth);
        let timeout = u64::from(self.cfg.timeout(key.proto, entry.state)) * 1_000_000_000;
        let idle = self.now.saturating_sub(entry.last_seen);
        (idle <= timeout && attached(entry.src_veth) && attached(entry.dst_veth))
            .then(|| (timeout - idle).div_ceil(1_000_000_000))
    }
}

fn proto_name(proto: u8) -> &'static str {
    match proto {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        IPPROTO_ICMP => "icmp",
        _ => "other",
    }
}

/// An address and port as people write them; ICMP echo has an identifier, or nothing where
/// the key holds 0 for it.
fn endpoint(addr: u32, port: u16, proto: u8) -> String {
    let ip = Ipv4Addr::from(addr.to_ne_bytes());
    match (proto, u16::from_be(port)) {
        (IPPROTO_ICMP, 0) => ip.to_string(),
        (IPPROTO_ICMP, id) => format!("{ip} id {id}"),
        (_, port) => format!("{ip}:{port}"),
    }
}

/// The original-direction entries whose reply entry points back at them: the connections the
/// datapath translates (a half whose partner was evicted, or taken by another flow, is not one).
fn paired(entries: Vec<(CtKey, CtEntry)>) -> Vec<(CtKey, CtEntry)> {
    let replies: HashSet<(CtKey, CtKey)> =
        entries.iter().filter(|(_, e)| e.dir == ct_dir::REPLY).map(|(k, e)| (*k, CtKey::partner(e, k.proto))).collect();
    entries
        .into_iter()
        .filter(|(k, e)| e.dir == ct_dir::ORIGINAL && replies.contains(&(CtKey::partner(e, k.proto), *k)))
        .collect()
}

/// Live connections, optionally of one network's endpoints.
pub fn list(ctl: &mut Controller, network: Option<&str>) -> Result<Vec<Connection>> {
    let owners: HashMap<Ipv4Addr, (String, String)> =
        ctl.endpoints(network)?.into_iter().map(|e| (e.ip, (e.id, e.network))).collect();
    let owner_of = |key: &CtKey, entry: &CtEntry| {
        [key.saddr, entry.daddr].into_iter().find_map(|a| owners.get(&Ipv4Addr::from(a.to_ne_bytes())))
    };
    let clock = Clock::read(ctl)?;
    let mut out = Vec::new();
    for (key, entry) in paired(ctl.datapath()?.conntrack()?) {
        let Some(expires_in) = clock.remaining(&key, &entry) else {
            continue;
        };
        let owner = owner_of(&key, &entry);
        if network.is_some() && owner.is_none() {
            continue;
        }
        out.push(Connection {
            proto: proto_name(key.proto),
            endpoint: owner.map(|o| o.0.clone()),
            network: owner.map(|o| o.1.clone()),
            source: endpoint(key.saddr, key.sport, key.proto),
            destination: endpoint(key.daddr, key.dport, key.proto),
            translated_source: endpoint(entry.saddr, entry.sport, key.proto),
            translated_destination: endpoint(entry.daddr, entry.dport, key.proto),
            state: ct_state::name(entry.state),
            expires_in,
        });
    }
    out.sort_by(|a, b| (&a.network, &a.source, &a.destination).cmp(&(&b.network, &b.source, &b.destination)));
    Ok(out)
}

/// Removes the connections of one network's endpoints (or all), both directions.
pub fn flush(ctl: &mut Controller, network: Option<&str>) -> Result<usize> {
    let addrs: Option<Vec<u32>> = match network {
        Some(n) => Some(ctl.endpoints(Some(n))?.iter().map(|e| u32::from_ne_bytes(e.ip.octets())).collect()),
        None => None,
    };
    ctl.datapath()?.forget_connections(addrs.as_deref())
}

/// Removes connections that are over (expired, or an endpoint detached) and reply entries
/// whose connection is gone. The datapath already treats them as absent, and the LRU reuses
/// their room when it needs it: this gives it back at once, at the cost of a walk over both
/// tables.
pub fn gc(ctl: &mut Controller) -> Result<usize> {
    let clock = Clock::read(ctl)?;
    let dp = ctl.datapath()?;
    let entries: HashMap<CtKey, CtEntry> = dp.conntrack()?.into_iter().collect();
    let live = |key: &CtKey, entry: &CtEntry| clock.remaining(key, entry).is_some();
    let mut removed = 0;
    for (key, entry) in &entries {
        let dead = if entry.dir == ct_dir::ORIGINAL {
            !live(key, entry)
        } else {
            let okey = CtKey::partner(entry, key.proto);
            entries.get(&okey).is_none_or(|o| o.dir != ct_dir::ORIGINAL || !o.reverses(key) || !live(&okey, o))
        };
        if dead {
            dp.remove_conntrack(key)?;
            removed += usize::from(entry.dir == ct_dir::ORIGINAL);
        }
    }
    Ok(removed)
}
