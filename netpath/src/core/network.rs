//! Networks: created, published to the datapath, torn down.
use netpath_common::{NetworkInfo, network_flags};

use crate::core::request::{ipv4_addr, ipv4_subnet};
use crate::error::{Field, Message};
use crate::kernel::sysctl;
use crate::types::name::{check_name, ifname_problem};
use crate::{
    core::{controller::Controller, request::*},
    error::Error,
    error::Result,
    fault,
    kernel::datapath,
    kernel::datapath::XdpAttach,
    kernel::link,
    state::lock::Mode,
    state::store::NetworkRecord,
    state::store::NewNetwork,
    state::store::State,
};

impl Controller {
    pub async fn network_create(&mut self, spec: &NetworkSpec) -> Result<NetworkRecord> {
        check_name("network name", &spec.name)?;
        let bridge = spec.bridge.clone().unwrap_or_else(|| format!("np-{}", spec.name));
        if let Some(problem) = ifname_problem(&bridge) {
            return Err(Error::invalid(
                Message::from(format!("bridge name {problem}; pass ")).and_field(Field::Bridge),
            ));
        }
        let subnet = spec.subnet.map(ipv4_subnet).transpose()?;
        let gateway = spec.gateway.map(|g| ipv4_addr(Field::Gateway, g)).transpose()?;
        if let (Some(_), None) = (gateway, subnet) {
            return Err(Error::invalid(Message::field(Field::Gateway).and(" needs ").and_field(Field::Subnet)));
        }
        if let Some(mtu) = spec.mtu.filter(|m| !(68..=65535).contains(m)) {
            return Err(Error::invalid(Message::field(Field::Mtu).and(format!(" {mtu} is out of range (68-65535)"))));
        }
        let uplink = if spec.internal { None } else { self.resolve_uplink(spec.uplink.as_deref()).await? };
        let mtu = match spec.mtu {
            Some(mtu) => mtu,
            None => self.uplink_mtu(uplink.as_deref()).await?,
        };
        if spec.xdp.is_on() && uplink.is_none() {
            return Err(Error::invalid(
                Message::field(Field::Xdp)
                    .and(" needs an uplink; the network is internal or the host has no default route"),
            ));
        }
        let _all = self.locks.global(Mode::Shared)?;
        let _lock = self.locks.network(&spec.name, Mode::Exclusive)?;
        if let Some(existing) = self.store.find_network(&spec.name)? {
            match existing.state {
                // Its creator died: the lock we hold was free.
                State::Creating => self.teardown_network(&existing).await?,
                State::Ready if self.nl.index_of(&existing.bridge).await?.is_none() => {
                    return Err(Error::stale(format!(
                        "network '{}' exists but its bridge '{}' does not (after a reboot?); run `netpath restore`",
                        spec.name, existing.bridge
                    )));
                }
                State::Ready => {
                    return Err(Error::conflict(format!("network '{}' already exists; pick another name", spec.name)));
                }
            }
        }
        if self.nl.index_of(&bridge).await?.is_some() {
            return Err(Error::conflict(
                Message::from(format!(
                    "interface '{bridge}' already exists in the host network namespace; pass another "
                ))
                .and_field(Field::Bridge),
            ));
        }
        let routes = self.nl.ipv4_routes().await?;
        let request = NewNetwork {
            name: spec.name.clone(),
            bridge,
            subnet,
            gateway,
            mtu,
            internal: spec.internal,
            masquerade: !spec.no_masquerade && !spec.internal,
            uplink,
            xdp: spec.xdp,
            external_id: spec.external_id.clone(),
        };
        let record = self.reserve_reaping(|store| store.create_network(&request, &routes)).await?;
        fault::step("network:reserved");
        match self.ensure_network(&record).await {
            Ok(_) => {
                fault::step("network:built");
                self.store.set_network_ready(record.id)?;
                self.store.network(&record.name)
            }
            Err(e) => {
                let _ = self.teardown_network(&record).await;
                Err(e)
            }
        }
    }

    /// The interface `--uplink` names, or the device of the host's default route.
    async fn resolve_uplink(&self, requested: Option<&str>) -> Result<Option<String>> {
        match requested {
            Some(uplink) => {
                if let Some(problem) = ifname_problem(uplink) {
                    return Err(Error::invalid(Message::field(Field::Uplink).and(format!(" {problem}"))));
                }
                if self.nl.index_of(uplink).await?.is_none() {
                    return Err(Error::not_found(format!(
                        "uplink interface '{uplink}' does not exist in the host network namespace"
                    )));
                }
                Ok(Some(uplink.to_string()))
            }
            None => match self.nl.default_route_device().await? {
                Some(index) => self.nl.name_of(index).await,
                None => Ok(None),
            },
        }
    }

    /// A network's default MTU: its uplink's, so that what leaves fits without fragmenting.
    async fn uplink_mtu(&self, uplink: Option<&str>) -> Result<u32> {
        let Some(uplink) = uplink else {
            return Ok(DEFAULT_MTU);
        };
        let index = self.nl.require_index(uplink).await?;
        Ok(self.nl.mtu_of(index).await?.unwrap_or(DEFAULT_MTU))
    }

    /// How `xdp_uplink` runs on the network's uplink, as the kernel reports it; `None` for a
    /// network without `--xdp` (another network's program on the same uplink is not its own).
    pub async fn xdp_mode(&self, net: &NetworkRecord) -> Result<Option<link::facts::XdpMode>> {
        match (&net.uplink, net.xdp.is_on()) {
            (Some(uplink), true) => match self.nl.index_of(uplink).await? {
                Some(index) => self.nl.xdp_mode(index).await,
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    /// Writes the network to the datapath and attaches `from_uplink` to its uplink.
    pub(crate) async fn publish_network(&mut self, net: &NetworkRecord) -> Result<()> {
        let info = self.network_info(net).await?;
        self.refresh_host_addrs().await?;
        if let Some(uplink) = &net.uplink {
            sysctl::enable_forwarding(&net.bridge)?;
            self.datapath()?.attach_uplink(uplink)?;
            if net.xdp.is_on() {
                if let XdpAttach::Generic(why) = self.datapath()?.attach_xdp(uplink)? {
                    eprintln!("notice: {uplink} has no native XDP ({why}); xdp_uplink runs in generic mode");
                }
            }
        }
        self.datapath()?.set_network(net.id, &info)
    }

    async fn network_info(&self, net: &NetworkRecord) -> Result<NetworkInfo> {
        let bridge = self.nl.require_index(&net.bridge).await?;
        let gateway_mac = self.nl.mac_of(bridge).await?.unwrap_or_default();
        let (uplink_ifindex, snat_addr) = match &net.uplink {
            Some(uplink) => {
                let index = self.nl.require_index(uplink).await?;
                let addr = self.nl.ipv4_addresses(index).await?.first().copied();
                let addr = addr.ok_or_else(|| {
                    Error::invalid(
                        Message::from(format!(
                            "uplink '{uplink}' has no IPv4 address to masquerade with; pass another "
                        ))
                        .and_field(Field::Uplink),
                    )
                })?;
                (index, datapath::map_key(addr))
            }
            None => (0, 0),
        };
        let mut flags = 0;
        if net.internal {
            flags |= network_flags::INTERNAL;
        }
        if net.masquerade {
            flags |= network_flags::MASQUERADE;
        }
        Ok(NetworkInfo {
            subnet: datapath::map_key(net.subnet.addr()),
            mask: u32::from(net.subnet.mask()).to_be(),
            gateway: datapath::map_key(net.gateway),
            bridge_ifindex: bridge,
            uplink_ifindex,
            snat_addr,
            flags,
            gateway_mac,
            _pad: 0,
        })
    }

    /// Removes a network's kernel objects and row; what is already gone is fine. Every part
    /// is attempted even when one fails, and every failure is reported; a bridge that cannot
    /// be deleted keeps its row, so the next `network rm` or `gc` finds it.
    pub(crate) async fn teardown_network(&mut self, net: &NetworkRecord) -> Result<()> {
        let mut errors = Vec::new();
        if let Err(e) = self.forget_network(net) {
            errors.push(e);
        }
        match self.nl.delete_by_name(&net.bridge).await {
            Ok(()) => {
                if let Err(e) = self.store.remove_network(net.id) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        Error::all(errors)
    }

    fn forget_network(&mut self, net: &NetworkRecord) -> Result<()> {
        if !self.datapath_pinned() {
            return Ok(());
        }
        let mut errors = Vec::new();
        if let Err(e) = self.datapath()?.remove_network(net.id) {
            errors.push(e);
        }
        if let Some(uplink) = &net.uplink {
            // Under the lock, a network created meanwhile on the same uplink is seen and kept.
            let _lock = self.datapath()?.lock()?;
            let others: Vec<NetworkRecord> =
                self.store.networks()?.into_iter().filter(|n| n.id != net.id && n.uplink == net.uplink).collect();
            if !others.iter().any(|n| n.xdp.is_on()) {
                errors.extend(self.datapath()?.detach_xdp(uplink).err());
            }
            if others.is_empty() {
                errors.extend(self.datapath()?.detach_uplink(uplink).err());
            }
        }
        Error::all(errors)
    }

    /// Holds the network's lock exclusively, so no attach to it runs meanwhile: its
    /// `creating` endpoints were left by dead processes and go with it.
    pub async fn network_rm(&mut self, name: &str, force: bool) -> Result<()> {
        let missing = || Error::not_found(format!("network '{name}' does not exist; see `netpath network ls`"));
        let _all = self.locks.global(Mode::Shared)?;
        if check_name("network name", name).is_err() {
            return Err(missing());
        }
        let _lock = self.locks.network(name, Mode::Exclusive)?;
        let net = self.store.find_network(name)?.ok_or_else(missing)?;
        let endpoints = self.store.endpoints(Some(net.id))?;
        let attached = endpoints.iter().filter(|e| e.state == State::Ready).count();
        if attached > 0 && !force {
            return Err(Error::conflict(
                Message::from(format!("network '{name}' has {attached} endpoint(s) attached; detach them or pass "))
                    .and_field(Field::Force),
            ));
        }
        let mut errors = Vec::new();
        for ep in &endpoints {
            let lock = self.locks.endpoint(&ep.id)?;
            match self.teardown_endpoint(ep).await {
                Ok(()) => lock.remove(),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            self.teardown_network(&net).await?;
        }
        Error::all(errors)
    }
}
