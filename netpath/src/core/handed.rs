//! Endpoints whose container side an engine wires itself: Docker's remote driver gets the
//! container end of the veth in the host namespace, moves it into the sandbox, names it and
//! gives it its address. netpath still makes the pair and attaches the datapath to the host end
//! before that end joins the bridge and the peer is handed over, so no packet of the endpoint
//! bypasses eBPF.
//!
//! Also what such an engine needs around it: networks found by the engine's id, an address
//! claimed before the endpoint is wired, ports published after it is, and IPAM pools and
//! addresses from netpath's allocator.
use std::net::{IpAddr, Ipv4Addr};

use crate::kernel::ports;
use crate::kernel::sysctl;
use crate::types::creator::Creator;
use crate::types::mac;
use crate::{
    core::controller::Controller, core::names::host_veth_name, core::request::DetachSpec,
    core::restore::EndpointAction, error::Error, error::Result, kernel::link, state::lock::Mode,
    state::store::EndpointRecord, state::store::NetworkRecord, state::store::NewEndpoint, state::store::Reservation,
    state::store::State, types::identity::NsIdentity, types::net::Ipv4Net, types::port::Port, types::port::Proto,
};

/// The first host port tried for a publication that names none (`docker run -P`): below the
/// ephemeral range, where the host's own connections never are (the SNAT ports, which may be
/// configured there, are skipped).
const FIRST_AUTO_PORT: u16 = 20000;

/// What the engine needs to move and configure the container end.
#[derive(Clone, Debug)]
pub struct Handed {
    /// The container end's name in the host namespace, until the engine moves it.
    pub ifname: String,
    pub gateway: Ipv4Addr,
}

/// A publication as an engine asks for it: a host port of 0 asks netpath to pick one, and a
/// range `host_port..=host_port_end` for one free port in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRequest {
    pub proto: Proto,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_port: u16,
}

impl Controller {
    pub fn network_by_external_id(&self, external_id: &str) -> Result<NetworkRecord> {
        match self.store.network_by_external_id(external_id)? {
            Some(net) if net.state == State::Ready => Ok(net),
            _ => Err(Error::not_found(format!("no netpath network has engine id '{external_id}'"))),
        }
    }

    /// Records the address (and MAC, by default derived from it) an engine gave an endpoint
    /// it will join later. Returns the MAC.
    pub fn claim_endpoint(
        &mut self,
        net: &NetworkRecord,
        id: &str,
        ip: Ipv4Addr,
        mac: Option<[u8; 6]>,
    ) -> Result<[u8; 6]> {
        if !net.subnet.is_host(ip) || ip == net.gateway {
            return Err(Error::invalid(format!("address {ip} is not a free host address of {}", net.subnet)));
        }
        let mac = mac.unwrap_or_else(|| mac::mac_for(ip));
        self.store.claim_endpoint(id, net.id, ip, &mac)?;
        Ok(mac)
    }

    pub fn release_claim(&mut self, id: &str) -> Result<()> {
        self.store.remove_claim(id)
    }

    /// The claim's address and MAC, for the engine's questions about an endpoint.
    pub fn claim(&self, id: &str) -> Result<Option<(Ipv4Addr, [u8; 6])>> {
        Ok(self.store.claim(id)?.map(|(_, ip, mac)| (ip, mac)))
    }

    /// Wires a claimed endpoint whose container end the engine will move into `sandbox`:
    /// the pair is made in the host namespace, the host end on the bridge with the datapath
    /// attached, the peer under a temporary name. A row left from an earlier join of the same
    /// id is torn down first: the engine is the authority on its endpoints.
    pub async fn join_handed(&mut self, id: &str, sandbox: &str) -> Result<Handed> {
        let (network_id, ip, mac) = self
            .store
            .claim(id)?
            .ok_or_else(|| Error::not_found(format!("endpoint '{id}' was not created; create it before joining it")))?;
        let _all = self.locks.global(Mode::Shared)?;
        let network = self.store.networks()?.into_iter().find(|n| n.id == network_id && n.state == State::Ready);
        let network = network.ok_or_else(|| Error::not_found(format!("the network of endpoint '{id}' is gone")))?;
        let _net_lock = self.locks.network(&network.name, Mode::Shared)?;
        self.require_bridge(&network).await?;
        let ep_lock = self.locks.endpoint(id)?;
        if let Some(existing) = self.store.endpoint(id)? {
            self.teardown_endpoint(&existing).await?;
        }
        let host_veth = host_veth_name(id);
        // `npv` + hash for the host end; the peer gets the same hash under `npc`.
        let peer = format!("npc{}", &host_veth[3..]);
        let request = NewEndpoint {
            id: id.to_string(),
            network: network.clone(),
            ip: Some(ip),
            mac: Some(mac),
            ifname: peer.clone(),
            host_veth,
            // The engine makes the namespace after the join (runc creates it, Docker binds it
            // at the sandbox key later): netpath never knows its identity, and the host end
            // tells whether the endpoint lives (its peer dies with the namespace).
            netns_path: sandbox.to_string(),
            netns_id: NsIdentity::default(),
            ports: Vec::new(),
            // Docker serves its containers' names itself (its embedded resolver) and passes
            // none to a driver.
            name: None,
            aliases: Vec::new(),
            handed: true,
            creator: Creator::Engine,
        };
        let Reservation::New(record) = self.reserve_reaping(|store| store.reserve_endpoint(&request)).await? else {
            return Err(Error::conflict(format!("endpoint '{id}' is being joined by another request; retry")));
        };
        match self.wire_veth(&record, &network, None).await {
            Ok(()) => {
                self.store.set_endpoint_ready(id)?;
                drop(ep_lock);
                Ok(Handed { ifname: peer, gateway: network.gateway })
            }
            Err(e) => {
                let _ = self.teardown_endpoint(&record).await;
                ep_lock.remove();
                Err(e)
            }
        }
    }

    /// `restore` for a handed endpoint: its host end tells whether it lives. Present, its
    /// datapath entries are refreshed; gone (the container's namespace died), it is released.
    pub(crate) async fn restore_handed(&mut self, ep: &EndpointRecord, network_broken: bool) -> EndpointAction {
        let outcome = async {
            match self.nl.facts(&ep.host_veth).await? {
                None => {
                    self.teardown_endpoint(ep).await?;
                    if let Some(lock) = self.locks.try_endpoint(&ep.id)? {
                        lock.remove();
                    }
                    Ok(EndpointAction::Released)
                }
                Some(_) if network_broken => {
                    Ok(EndpointAction::Failed(format!("network '{}' could not be restored", ep.network)))
                }
                Some(host) => {
                    self.nl.ensure_mark(&host, &link::veth_mark(&ep.id)).await?;
                    self.refresh_datapath(ep, host.index)?;
                    self.publish(ep).await?;
                    Ok::<_, Error>(EndpointAction::Intact)
                }
            }
        };
        outcome.await.unwrap_or_else(|e| EndpointAction::Failed(e.to_string()))
    }

    /// Removes a joined endpoint (veth, datapath entries, ports, row); one that is not there
    /// is fine, as the engine may ask twice.
    pub async fn leave(&mut self, id: &str) -> Result<()> {
        match self.detach(&DetachSpec::Id(id.to_string())).await {
            Err(Error::NotFound(_)) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Publishes the ports of a joined endpoint, replacing what it published before (the
    /// engine sends the whole set, and may send it again), picking host ports where the
    /// request leaves the choice to netpath. Returns what was published.
    pub async fn publish_ports(&mut self, id: &str, requests: &[PortRequest]) -> Result<Vec<Port>> {
        let _all = self.locks.global(Mode::Shared)?;
        let ep = self.endpoint(id)?;
        let _net_lock = self.locks.network(&ep.network, Mode::Shared)?;
        let _ep_lock = self.locks.endpoint(id)?;
        let net = self.store.network(&ep.network)?;
        if net.internal && !requests.is_empty() {
            return Err(Error::invalid(format!(
                "network '{}' is internal: its endpoints cannot publish ports",
                net.name
            )));
        }
        self.withdraw_ports(id)?;
        let taken: Vec<Port> = self.ports()?.into_iter().map(|(_, p)| p).collect();
        let snat = self.settings()?.snat_ports();
        let mut ports: Vec<Port> = Vec::new();
        for req in requests {
            let (first, last) = match (req.host_port, req.host_port_end) {
                (0, _) => (FIRST_AUTO_PORT, sysctl::local_port_range()?.0.saturating_sub(1)),
                (port, end) => (port, end.max(port)),
            };
            // A port named exactly is taken as it is: the checks below refuse it, naming why.
            let exact = first == last;
            let free = (first..=last)
                .map(|host_port| Port {
                    proto: req.proto,
                    host_ip: req.host_ip,
                    host_port,
                    container_port: req.container_port,
                })
                .find(|p| {
                    exact
                        || (!snat.contains(&p.host_port)
                            && !taken.iter().chain(&ports).any(|t| t.collides(p))
                            && !ports::host_port_in_use(p))
                });
            let port = free.ok_or_else(|| {
                Error::conflict(format!(
                    "no free host port in {first}-{last}/{} to publish port {}",
                    req.proto, req.container_port
                ))
            })?;
            ports.push(port);
        }
        self.check_host_ports(&ports).await?;
        self.store.add_ports(id, &ports)?;
        let ep = self.endpoint(id)?;
        if let Err(e) = self.publish(&ep).await {
            let _ = self.withdraw_ports(id);
            return Err(e);
        }
        Ok(ports)
    }

    /// Withdraws every port an endpoint publishes.
    pub async fn unpublish_ports(&mut self, id: &str) -> Result<()> {
        let _all = self.locks.global(Mode::Shared)?;
        let Some(ep) = self.store.endpoint(id)? else { return Ok(()) };
        let _net_lock = self.locks.network(&ep.network, Mode::Shared)?;
        let _ep_lock = self.locks.endpoint(id)?;
        self.withdraw_ports(id)
    }

    /// `unpublish_ports` for a caller that holds the endpoint's locks.
    fn withdraw_ports(&mut self, id: &str) -> Result<()> {
        let Some(ep) = self.store.endpoint(id)? else { return Ok(()) };
        if ep.ports.is_empty() {
            return Ok(());
        }
        if self.datapath_pinned() {
            self.datapath()?.unpublish(&ep.ports)?;
        }
        self.store.remove_ports(id)?;
        if self.datapath_pinned() {
            self.detach_sock_programs_if_unused()?;
        }
        Ok(())
    }

    /// An IPAM pool: the one asked for, or a free subnet as `network create` would pick.
    pub async fn request_pool(&mut self, pool: Option<Ipv4Net>) -> Result<Ipv4Net> {
        let routes = if pool.is_none() { self.nl.ipv4_routes().await? } else { Vec::new() };
        self.store.request_pool(pool, &routes)
    }

    pub fn release_pool(&mut self, pool: Ipv4Net) -> Result<()> {
        self.store.release_pool(pool)
    }

    pub fn request_address(&mut self, pool: Ipv4Net, ip: Option<Ipv4Addr>, gateway: bool) -> Result<Ipv4Addr> {
        self.store.request_address(pool, ip, gateway)
    }

    pub fn release_address(&mut self, pool: Ipv4Net, ip: Ipv4Addr) -> Result<()> {
        self.store.release_address(pool, ip)
    }
}
