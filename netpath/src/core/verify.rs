//! Read-only checks of what the kernel holds against the database, for frontends that must
//! answer "is this endpoint whole?" (CNI CHECK) and "can this network take endpoints?" (CNI
//! STATUS) without repairing anything on the way, unlike `ensure`.
use crate::types::mac;
use crate::{
    core::controller::Controller, error::Result, kernel::datapath, kernel::link::Netlink, kernel::netns::Netns,
    state::store::EndpointRecord, state::store::State,
};

/// Whether a network can take endpoints, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// No endpoint can be attached now; nothing attached is affected.
    NotReady(String),
    /// Endpoints that are attached are affected too (after a reboot, before `restore`).
    Degraded(String),
}

impl Controller {
    /// What is wrong with an endpoint, if anything: its veth pair and address (the same test
    /// as `ensure`), the default route inside its namespace, and its datapath entries
    /// (ENDPOINTS, VETHS, PORTMAP). `netns` is where the caller believes it is.
    pub async fn endpoint_fault(&mut self, ep: &EndpointRecord, netns: &str) -> Result<Option<String>> {
        if ep.state != State::Ready {
            return Ok(Some(format!("endpoint '{}' is still being attached", ep.id)));
        }
        let net = self.store.network(&ep.network)?;
        let ns = Netns::open(netns)?;
        if !ns.is(&ep.netns_id) {
            return Ok(Some(format!("endpoint '{}' is attached to another network namespace than {netns}", ep.id)));
        }
        if let Some(problem) = self.endpoint_problem(ep, &net, &ns).await? {
            return Ok(Some(problem));
        }
        if let Some(problem) = route_problem(ep, &ns).await? {
            return Ok(Some(problem));
        }
        let host_ifindex = self.nl.require_index(&ep.host_veth).await?;
        if !datapath::is_pinned(&self.paths.pin_root) {
            return Ok(Some(format!("the datapath is not loaded at {}", self.paths.pin_root.display())));
        }
        let dp = self.datapath()?;
        let entry = dp.endpoints()?.into_iter().find(|(ip, _)| *ip == ep.ip).map(|(_, info)| info);
        match entry {
            None => return Ok(Some(format!("{} is missing from the datapath's ENDPOINTS map", ep.ip))),
            Some(info) if info.host_ifindex != host_ifindex || info.network_id != net.id => {
                return Ok(Some(format!(
                    "the ENDPOINTS entry of {} points at interface {} of network {}, not {} of {}",
                    ep.ip, info.host_ifindex, info.network_id, host_ifindex, net.id
                )));
            }
            Some(info) if mac::format_mac(&info.mac) != ep.mac => {
                return Ok(Some(format!("the ENDPOINTS entry of {} has MAC {}", ep.ip, mac::format_mac(&info.mac))));
            }
            Some(_) => {}
        }
        if !dp.veth_ifindexes()?.contains(&host_ifindex) {
            return Ok(Some(format!("{} is missing from the datapath's VETHS map", ep.host_veth)));
        }
        let published = dp.published()?;
        for port in &ep.ports {
            let key = datapath::port_key(port);
            let target = published
                .iter()
                .find(|(k, _)| key.is_some_and(|key| (k.addr, k.port, k.proto) == (key.addr, key.port, key.proto)));
            let leads_here = target.is_some_and(|(_, t)| {
                t.addr == datapath::map_key(ep.ip) && u16::from_be(t.port) == port.container_port
            });
            if !leads_here {
                return Ok(Some(format!("published port {port} does not lead to {} in the PORTMAP map", ep.ip)));
            }
        }
        Ok(None)
    }

    /// The MAC address of a link of the host (a bridge, a host veth), if the link exists.
    pub async fn link_mac(&self, name: &str) -> Result<Option<String>> {
        let Some(index) = self.nl.index_of(name).await? else {
            return Ok(None);
        };
        Ok(self.nl.mac_of(index).await?.map(|mac| mac::format_mac(&mac)))
    }

    /// Whether an endpoint could be attached to `network` now: the datapath is loaded, and
    /// the network (if it exists yet; an absent one is created on demand) is ready, has its
    /// bridge and a free address.
    pub async fn readiness(&mut self, network: &str) -> Result<Readiness> {
        let networks = self.store.networks()?;
        if !datapath::is_pinned(&self.paths.pin_root) {
            let at = self.paths.pin_root.display();
            return Ok(if networks.iter().any(|n| n.state == State::Ready) {
                Readiness::Degraded(format!(
                    "the datapath is not loaded at {at} but the database has networks (after a reboot?); run `netpath restore`"
                ))
            } else {
                Readiness::NotReady(format!(
                    "the datapath is not loaded at {at}; run `netpath status` or create a network to load it"
                ))
            });
        }
        let Some(net) = networks.into_iter().find(|n| n.name == network) else {
            return Ok(Readiness::Ready);
        };
        if net.state != State::Ready {
            return Ok(Readiness::NotReady(format!("network '{network}' is being created")));
        }
        if self.nl.index_of(&net.bridge).await?.is_none() {
            return Ok(Readiness::Degraded(format!(
                "network '{network}' has no bridge '{}' (after a reboot?); run `netpath restore`",
                net.bridge
            )));
        }
        let used = self.store.endpoints(Some(net.id))?.len() as u64;
        // Every host address but the gateway can be an endpoint's.
        if u128::from(used) + 1 >= net.subnet.host_count() {
            return Ok(Readiness::NotReady(format!(
                "network '{network}' has no free address left in {} ({used} endpoints)",
                net.subnet
            )));
        }
        Ok(Readiness::Ready)
    }
}

/// Why the namespace's default route does not lead to the endpoint's gateway through its
/// interface, if it does not.
async fn route_problem(ep: &EndpointRecord, ns: &Netns) -> Result<Option<String>> {
    let inside = Netlink::connect_in(ns)?;
    let ifindex = inside.require_index(&ep.ifname).await?;
    match inside.default_route_device().await? {
        Some(index) if index == ifindex => Ok(None),
        Some(_) => Ok(Some(format!("the default route in {} does not leave through {}", ns.path, ep.ifname))),
        None => Ok(Some(format!("{} has no default route via {}", ns.path, ep.gateway))),
    }
}
