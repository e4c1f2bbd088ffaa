//! One idempotent way to bring each object's kernel side in line with its row: `network
//! create`, `attach`, `datapath reload` and `restore` all go through here. Each function
//! compares what the database says with what the kernel has and changes only what differs.
use serde::Serialize;

use crate::kernel::sysctl;
use crate::{
    core::controller::Controller, error::Error, error::Result, kernel::link, kernel::link::Netlink, kernel::netns,
    kernel::netns::Netns, state::store::EndpointRecord, state::store::NetworkRecord,
};

/// What `ensure_endpoint` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "lowercase")]
pub enum Wiring {
    /// The veth pair was in place; the datapath entries were refreshed.
    Intact,
    /// It was wired anew, for the reason given.
    Rebuilt(String),
}

impl Controller {
    /// Makes the kernel hold the network as its row describes: the bridge, its gateway
    /// address, up, forwarding on it, its NETWORKS entry and its uplink programs. Returns what
    /// it had to create.
    pub async fn ensure_network(&mut self, net: &NetworkRecord) -> Result<Vec<String>> {
        let mut done = Vec::new();
        let mark = link::bridge_mark(&net.name);
        let index = match self.nl.facts(&net.bridge).await? {
            // Its row proves a bridge an older release made, without a mark, is netpath's.
            Some(bridge) => {
                if self.nl.ensure_mark(&bridge, &mark).await? {
                    done.push(format!("marked bridge {} as netpath's", net.bridge));
                }
                self.nl.pin_mac(bridge.index).await?;
                bridge.index
            }
            None => {
                done.push(format!("created bridge {}", net.bridge));
                self.nl.create_bridge(&net.bridge, net.mtu, &mark).await?
            }
        };
        if !self.nl.ipv4_addresses(index).await?.contains(&net.gateway) {
            self.nl.add_address(index, net.gateway, net.subnet.prefix()).await?;
            done.push(format!("added {}/{}", net.gateway, net.subnet.prefix()));
        }
        self.nl.set_up(index).await?;
        if net.uplink.is_some() && !sysctl::forwarding_enabled(&net.bridge) {
            done.push(format!("turned forwarding on for {}", net.bridge));
        }
        self.publish_network(net).await?;
        Ok(done)
    }

    /// An attach or `network create` needs the network's bridge; after a reboot it is gone
    /// while the row stays.
    pub(crate) async fn require_bridge(&self, net: &NetworkRecord) -> Result<()> {
        match self.nl.index_of(&net.bridge).await? {
            Some(_) => Ok(()),
            None => Err(Error::stale(format!(
                "network '{}' has no bridge '{}' in the kernel (after a reboot?); run `netpath restore`",
                net.name, net.bridge
            ))),
        }
    }

    /// Why the endpoint's veth pair is not what its row says, if it is not: the host end
    /// must exist on the network's bridge, and its peer must be the row's interface inside
    /// `ns`, with the row's address.
    pub async fn endpoint_problem(
        &self,
        ep: &EndpointRecord,
        net: &NetworkRecord,
        ns: &Netns,
    ) -> Result<Option<String>> {
        let Some(host) = self.nl.facts(&ep.host_veth).await? else {
            return Ok(Some(format!("host veth {} is missing", ep.host_veth)));
        };
        let bridge = self.nl.index_of(&net.bridge).await?;
        if host.controller.is_none() || host.controller != bridge {
            return Ok(Some(format!("host veth {} is not on bridge {}", ep.host_veth, net.bridge)));
        }
        let inside = Netlink::connect_in(ns)?;
        let Some(peer) = inside.facts(&ep.ifname).await? else {
            return Ok(Some(format!("{} is missing in {}", ep.ifname, ns.path)));
        };
        if peer.peer != Some(host.index) {
            return Ok(Some(format!("{} in {} is not the peer of {}", ep.ifname, ns.path, ep.host_veth)));
        }
        if !inside.ipv4_addresses(peer.index).await?.contains(&ep.ip) {
            return Ok(Some(format!("{} in {} lacks {}", ep.ifname, ns.path, ep.ip)));
        }
        Ok(None)
    }

    /// Makes the kernel hold the endpoint as its row describes, in `ns`: a veth pair that is
    /// in place keeps its counters and only gets its datapath entries refreshed; anything
    /// else is unwired and built again with the row's address, MAC and ports.
    pub async fn ensure_endpoint(&mut self, ep: &EndpointRecord, net: &NetworkRecord, ns: &Netns) -> Result<Wiring> {
        match self.endpoint_problem(ep, net, ns).await? {
            None => {
                let host = self.nl.facts(&ep.host_veth).await?;
                let host =
                    host.ok_or_else(|| Error::not_found(format!("interface '{}' does not exist", ep.host_veth)))?;
                // As for bridges: the row proves an unmarked veth of an older release netpath's.
                self.nl.ensure_mark(&host, &link::veth_mark(&ep.id)).await?;
                let host_ifindex = host.index;
                // An endpoint wired by an older build may lack it (GRO turned on while both
                // ends are up is seen too); `refresh_endpoint` makes it an XDP
                // target. Other endpoints are left as they are: no namespace switch.
                if ep.network_xdp.redirects() {
                    netns::run_in(ns, || sysctl::enable_gro(&ep.ifname))??;
                }
                self.refresh_datapath(ep, host_ifindex)?;
                self.publish(ep).await?;
                Ok(Wiring::Intact)
            }
            Some(problem) => {
                // Stale datapath entries first: they point at an ifindex that is gone.
                Error::all(self.unwire(ep).await?)?;
                self.build_endpoint(ep, net, ns).await?;
                Ok(Wiring::Rebuilt(problem))
            }
        }
    }
}
