//! Garbage collection: rows whose owner is gone, and kernel objects no row owns.
//!
//! Two parts. The cheap one, [`Controller::reap`], runs when a reservation collides with
//! something (see [`Controller::reserve_reaping`]) and, in part, at `restore`: it removes rows
//! a killed command left `creating` (their lock is free) and releases endpoints whose
//! namespace is gone (their veth died with it and no name or process holds a namespace with
//! their device and inode). The full one, `netpath gc`, also removes
//! netpath-named links, pinned links and map entries that no row owns. Connections are not
//! walked: those of an endpoint no row owns end when its `VETHS` entry goes, and the LRU
//! reuses their room.
use std::{collections::BTreeSet, net::Ipv4Addr};

use serde::Serialize;

use crate::{
    core::controller::Controller, error::Error, error::Result, kernel::datapath::map_key, kernel::link,
    kernel::link::BRIDGE_PREFIX, kernel::link::HOST_VETH_PREFIX, kernel::link::facts::LinkFacts, kernel::netns::Netns,
    kernel::reload, state::lock::Mode, state::store::EndpointRecord, state::store::State, state::store::Store,
};

/// What `reap` and `gc` removed.
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// Rows a killed command left half-created, with their kernel objects.
    pub abandoned_networks: Vec<String>,
    pub abandoned_endpoints: Vec<String>,
    /// Endpoints whose namespace is gone: address, ports and entries freed.
    pub released_endpoints: Vec<String>,
    /// Interfaces netpath made (named, marked and of the kind it makes) that no row owns.
    pub links: Vec<String>,
    /// Pinned links (`links/<name>`) that no row owns.
    pub pinned_links: Vec<String>,
    /// Map entries no row owns, as `MAP key`.
    pub map_entries: Vec<String>,
    /// Datapath directories a killed `datapath reload` left (staged or retired).
    pub datapath_dirs: Vec<String>,
}

impl GcReport {
    pub fn is_empty(&self) -> bool {
        self.abandoned_networks.is_empty()
            && self.abandoned_endpoints.is_empty()
            && self.released_endpoints.is_empty()
            && self.links.is_empty()
            && self.pinned_links.is_empty()
            && self.map_entries.is_empty()
            && self.datapath_dirs.is_empty()
    }
}

impl Controller {
    /// The cheap part of gc; see the module comment. Rows somebody is working on (their lock
    /// is held) are left alone, so it can run at any time.
    pub async fn reap(&mut self) -> Result<GcReport> {
        let mut report = self.reap_abandoned().await?;
        let mut errors = Vec::new();
        for ep in self.dead_endpoints().await? {
            let Some(lock) = self.locks.try_endpoint(&ep.id)? else { continue };
            let Some(ep) = self.store.endpoint(&ep.id)? else { continue };
            match self.teardown_endpoint(&ep).await {
                Ok(()) => {
                    lock.remove();
                    report.released_endpoints.push(ep.id);
                }
                Err(e) => errors.push(e),
            }
        }
        Error::all(errors)?;
        Ok(report)
    }

    /// Runs `reserve`, and once more after a reap when it collided with something the reap
    /// then freed.
    ///
    /// Why not reap before every reservation: finding the dead costs one row and one interface
    /// lookup per endpoint, so every attach grew with the endpoints already there. A dead
    /// endpoint, or a row a killed command left, harms nobody until what it holds (an address,
    /// the last free one of the pool, a name or alias, a published port, a MAC, a counter slot,
    /// a subnet) is asked for; the reservation refuses each of those as a conflict, so that is
    /// when it is released, and no request ever fails for what the dead hold ("address
    /// already allocated"). Otherwise they wait for `gc`. A conflict no reap can resolve (an
    /// id attached to another network) pays for one reap on its way to failing.
    pub(crate) async fn reserve_reaping<T>(&mut self, reserve: impl Fn(&mut Store) -> Result<T>) -> Result<T> {
        match reserve(&mut self.store) {
            Err(Error::Conflict(_)) if !self.reap().await?.is_empty() => reserve(&mut self.store),
            reserved => reserved,
        }
    }

    /// Removes the rows (and kernel objects) that killed commands left `creating`.
    pub async fn reap_abandoned(&mut self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut errors = Vec::new();
        let (networks, endpoints) = self.store.creating()?;
        for ep in endpoints {
            let Some(lock) = self.locks.try_endpoint(&ep.id)? else { continue };
            // Re-read under the lock: its creator may have finished or failed meanwhile.
            match self.store.endpoint(&ep.id)? {
                Some(ep) if ep.state == State::Creating => match self.teardown_endpoint(&ep).await {
                    Ok(()) => {
                        lock.remove();
                        report.abandoned_endpoints.push(ep.id);
                    }
                    Err(e) => errors.push(e),
                },
                _ => {}
            }
        }
        for net in networks {
            let Some(_lock) = self.locks.try_network(&net.name)? else { continue };
            let Some(net) = self.store.find_network(&net.name)? else { continue };
            if net.state != State::Creating || !self.store.endpoints(Some(net.id))?.is_empty() {
                continue;
            }
            match self.teardown_network(&net).await {
                Ok(()) => report.abandoned_networks.push(net.name),
                Err(e) => errors.push(e),
            }
        }
        Error::all(errors)?;
        Ok(report)
    }

    /// Ready endpoints whose namespace is gone (without their ports: the caller re-reads the
    /// row under its lock). A live namespace keeps the container end of the veth and so the
    /// host end: only endpoints whose host veth is missing are looked for by namespace
    /// identity, so this stays cheap when everything is fine. The host veths are looked up by
    /// name, one `SIOCGIFINDEX` each (microseconds), not in a dump of every interface with
    /// its attributes and statistics, which costs milliseconds with hundreds of endpoints.
    async fn dead_endpoints(&self) -> Result<Vec<EndpointRecord>> {
        let names = link::facts::NameLookup::new()?;
        let mut dead = Vec::new();
        for ep in self.store.endpoints_bare()? {
            if ep.state == State::Ready
                && !names.exists(&ep.host_veth)?
                && Netns::find(&ep.netns_id, &ep.netns).is_none()
            {
                dead.push(ep);
            }
        }
        Ok(dead)
    }

    /// `netpath gc`: the cheap part, then every kernel object no row owns. Holds the global
    /// lock exclusively, so no command is half-way through creating what it would take for
    /// an orphan.
    pub async fn gc(&mut self) -> Result<GcReport> {
        let _all = self.locks.global(Mode::Exclusive)?;
        let mut report = self.reap().await?;
        let networks = self.store.networks()?;
        let endpoints = self.store.endpoints(None)?;

        let veths: BTreeSet<&str> = endpoints.iter().map(|e| e.host_veth.as_str()).collect();
        let bridges: BTreeSet<&str> = networks.iter().map(|n| n.bridge.as_str()).collect();
        let mut errors = Vec::new();
        for (name, index) in orphan_links(&self.nl.links().await?, &veths, &bridges) {
            match self.nl.delete(index).await {
                Ok(()) => report.links.push(name),
                Err(e) => errors.push(e),
            }
        }
        // A reload holds the global lock as we do: what it staged or retired is a leftover.
        for dir in reload::leftovers(&self.paths.pin_root)? {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => report.datapath_dirs.push(dir.display().to_string()),
                Err(e) => errors.push(Error::system(format!("cannot remove {}", dir.display()), e)),
            }
        }
        if !self.datapath_pinned() {
            Error::all(errors)?;
            return Ok(report);
        }

        // Pinned links: endpoint veths, uplinks, XDP on uplinks, cgroup programs while a port
        // is published.
        let mut owned: BTreeSet<String> = veths.iter().map(|v| v.to_string()).collect();
        for net in &networks {
            if let Some(uplink) = &net.uplink {
                owned.insert(uplink.clone());
                if net.xdp.is_on() {
                    owned.insert(format!("xdp-{uplink}"));
                }
            }
        }
        if self.store.has_published_ports()? {
            owned.extend(netpath_common::names::SOCK_PROGRAMS.iter().map(|p| format!("cgroup-{p}")));
        }
        let pins = self.datapath()?.link_pins()?;
        for pin in pins.into_iter().filter(|p| !owned.contains(p)) {
            match self.datapath()?.unpin_link(&pin) {
                Ok(()) => report.pinned_links.push(pin),
                Err(e) => errors.push(e),
            }
        }

        let ips: BTreeSet<Ipv4Addr> = endpoints.iter().map(|e| e.ip).collect();
        let mut ifindexes = BTreeSet::new();
        for ep in &endpoints {
            if let Some(index) = self.nl.index_of(&ep.host_veth).await? {
                ifindexes.insert(index);
            }
        }
        let net_ids: BTreeSet<u32> = networks.iter().map(|n| n.id).collect();
        let published: Vec<crate::types::port::Port> = endpoints.iter().flat_map(|e| e.ports.iter().copied()).collect();
        let dp = self.datapath()?;
        let mut collect = |what: String, r: Result<()>| match r {
            Ok(()) => report.map_entries.push(what),
            Err(e) => errors.push(e),
        };
        for (ip, _) in dp.endpoints()?.into_iter().filter(|(ip, _)| !ips.contains(ip)) {
            collect(format!("ENDPOINTS {ip}"), dp.remove_endpoint_entry(ip));
        }
        for id in dp.network_ids()?.into_iter().filter(|id| !net_ids.contains(id)) {
            collect(format!("NETWORKS {id}"), dp.remove_network(id));
        }
        for ifindex in dp.veth_ifindexes()?.into_iter().filter(|i| !ifindexes.contains(i)) {
            collect(format!("VETHS {ifindex}"), dp.remove_veth(ifindex));
        }
        for (key, target) in dp.published()? {
            let owned = published.iter().any(|p| crate::kernel::datapath::port_key(p) == Some(key))
                && ips.iter().any(|ip| map_key(*ip) == target.addr);
            if !owned {
                let port = u16::from_be(key.port);
                collect(format!("PORTMAP {}:{port}/{}", Ipv4Addr::from(key.addr.to_ne_bytes()), key.proto), {
                    dp.remove_published(&key)
                });
            }
        }
        Error::all(errors)?;
        Ok(report)
    }
}

/// The links netpath made that no row owns, with their index: a bridge `np-*` that carries a
/// network's mark, and a veth `npv*` that carries an endpoint's mark and sits on such a bridge
/// or on none. A name proves nothing (an administrator's `npvadmin0`, an uplink that happens to
/// be called `np-…`), and neither does a mark on a link of another kind or on another bridge.
fn orphan_links(links: &[(String, LinkFacts)], veths: &BTreeSet<&str>, bridges: &BTreeSet<&str>) -> Vec<(String, u32)> {
    let netpath_bridge =
        |name: &str, l: &LinkFacts| name.starts_with(BRIDGE_PREFIX) && l.is_bridge() && l.marked_as(link::bridge_mark);
    let netpath_bridges: BTreeSet<u32> =
        links.iter().filter(|(name, l)| netpath_bridge(name, l)).map(|(_, l)| l.index).collect();
    let netpath_veth = |name: &str, l: &LinkFacts| {
        name.starts_with(HOST_VETH_PREFIX)
            && l.is_veth()
            && l.marked_as(link::veth_mark)
            && l.controller.is_none_or(|c| netpath_bridges.contains(&c))
    };
    links
        .iter()
        .filter(|(name, l)| {
            (netpath_veth(name, l) && !veths.contains(name.as_str()))
                || (netpath_bridge(name, l) && !bridges.contains(name.as_str()))
        })
        .map(|(name, l)| (name.clone(), l.index))
        .collect()
}
