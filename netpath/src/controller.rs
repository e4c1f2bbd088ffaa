//! The control plane's operations: each one validates everything it can before it touches the
//! kernel, records its intent in the store, creates the kernel objects, then marks the row
//! ready; on failure it removes what it made, so bad input leaves nothing behind.
use std::path::PathBuf;

use netpath_common::{EndpointInfo, NetworkInfo, network_flags};

use crate::{
    cidr::{self, Ipv4Net},
    datapath::{self, Datapath},
    error::{Error, Result},
    ipam,
    link::{self, Netlink, VethPeer},
    netns::{self, Netns},
    ports::{self, Port},
    settings::{Changes, Settings},
    store::{EndpointRecord, NetworkRecord, NewEndpoint, NewNetwork, Reservation, Store},
};

/// Where netpath keeps its state and its pins.
#[derive(Clone, Debug)]
pub struct Paths {
    pub state_dir: PathBuf,
    pub pin_root: PathBuf,
}

/// `netpath network create`.
#[derive(Clone, Debug, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    pub internal: bool,
    pub no_masquerade: bool,
    pub uplink: Option<String>,
    /// Serve inbound published ports with XDP on the uplink as well.
    pub xdp: bool,
}

/// Which namespace `netpath attach` wires.
#[derive(Clone, Debug)]
pub enum Target {
    Path(String),
    Pid(u32),
}

/// `netpath attach`.
#[derive(Clone, Debug)]
pub struct AttachSpec {
    pub network: String,
    pub target: Target,
    pub id: Option<String>,
    pub ip: Option<String>,
    pub mac: Option<String>,
    pub ifname: String,
    /// `--publish` values, Docker's syntax.
    pub publish: Vec<String>,
}

/// `netpath detach`.
#[derive(Clone, Debug)]
pub enum DetachSpec {
    Id(String),
    Netns(String),
}

pub const DEFAULT_MTU: u32 = 1500;

pub struct Controller {
    paths: Paths,
    store: Store,
    nl: Netlink,
    datapath: Option<Datapath>,
}

impl Controller {
    /// Opens the store and a netlink socket in the current (host) namespace. Must run inside
    /// a tokio runtime.
    pub fn open(paths: Paths) -> Result<Self> {
        let store = Store::open(&paths.state_dir)?;
        Ok(Self { store, nl: Netlink::connect()?, datapath: None, paths })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The pinned datapath, loaded on first use; a fresh one gets its settings from the
    /// database.
    pub fn datapath(&mut self) -> Result<&mut Datapath> {
        if self.datapath.is_none() {
            let mut dp = Datapath::open(&self.paths.pin_root, &self.paths.state_dir)?;
            if dp.config()?.snat_port_min == 0 {
                dp.set_config(&Settings::load(&self.store)?.to_config(netns::cookie()?))?;
            }
            self.datapath = Some(dp);
        }
        Ok(self.datapath.as_mut().expect("just opened"))
    }

    pub fn settings(&self) -> Result<Settings> {
        Settings::load(&self.store)
    }

    /// `netpath datapath configure`: records the settings and applies them at once.
    pub fn configure(&mut self, changes: &Changes) -> Result<Settings> {
        let settings = self.settings()?.apply(changes, link::local_port_range()?)?;
        settings.save(&self.store)?;
        self.datapath()?.set_config(&settings.to_config(netns::cookie()?))?;
        Ok(settings)
    }

    pub async fn network_create(&mut self, spec: &NetworkSpec) -> Result<NetworkRecord> {
        check_name("network name", &spec.name)?;
        let bridge = spec.bridge.clone().unwrap_or_else(|| format!("np-{}", spec.name));
        link::check_ifname("bridge name", &bridge).map_err(|e| Error::invalid(format!("{e}; pass --bridge")))?;
        let subnet = spec.subnet.as_deref().map(str::parse::<Ipv4Net>).transpose()?;
        let gateway = spec.gateway.as_deref().map(|g| cidr::parse_ip("--gateway", g)).transpose()?;
        if let (Some(_), None) = (gateway, subnet) {
            return Err(Error::invalid("--gateway needs --subnet"));
        }
        if let Some(mtu) = spec.mtu.filter(|m| !(68..=65535).contains(m)) {
            return Err(Error::invalid(format!("--mtu {mtu} is out of range (68-65535)")));
        }
        let uplink = if spec.internal { None } else { self.resolve_uplink(spec.uplink.as_deref()).await? };
        let mtu = match spec.mtu {
            Some(mtu) => mtu,
            None => self.uplink_mtu(uplink.as_deref()).await?,
        };
        if spec.xdp && uplink.is_none() {
            return Err(Error::invalid(
                "--xdp needs an uplink; the network is internal or the host has no default route",
            ));
        }
        if self.store.find_network(&spec.name)?.is_some() {
            return Err(Error::conflict(format!("network '{}' already exists; pick another name", spec.name)));
        }
        if self.nl.index_of(&bridge).await?.is_some() {
            return Err(Error::conflict(format!(
                "interface '{bridge}' already exists in the host network namespace; pass another --bridge"
            )));
        }
        self.reap_abandoned().await?;
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
        };
        let record = self.store.create_network(&request, &routes)?;
        match self.build_network(&record).await {
            Ok(()) => {
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
                link::check_ifname("--uplink", uplink)?;
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

    async fn build_network(&mut self, net: &NetworkRecord) -> Result<()> {
        let index = self.nl.create_bridge(&net.bridge, net.mtu).await?;
        self.nl.add_address(index, net.gateway, net.subnet.prefix()).await?;
        self.nl.set_up(index).await?;
        self.publish_network(net).await
    }

    /// Writes the network to the datapath and attaches `from_uplink` to its uplink.
    async fn publish_network(&mut self, net: &NetworkRecord) -> Result<()> {
        let info = self.network_info(net).await?;
        if let Some(uplink) = &net.uplink {
            link::enable_forwarding(&net.bridge)?;
            self.datapath()?.attach_uplink(uplink)?;
            if net.xdp {
                self.datapath()?.attach_xdp(uplink)?;
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
                    Error::invalid(format!(
                        "uplink '{uplink}' has no IPv4 address to masquerade with; pass another --uplink"
                    ))
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
            mask: net.subnet.mask().to_be(),
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
    /// is attempted even when one fails, so a broken datapath cannot strand a bridge or a row.
    async fn teardown_network(&mut self, net: &NetworkRecord) -> Result<()> {
        let datapath = self.forget_network(net);
        let bridge = self.nl.delete_by_name(&net.bridge).await;
        self.store.remove_network(net.id)?;
        datapath.and(bridge)
    }

    fn forget_network(&mut self, net: &NetworkRecord) -> Result<()> {
        if !self.datapath_pinned() {
            return Ok(());
        }
        self.datapath()?.remove_network(net.id)?;
        let Some(uplink) = &net.uplink else {
            return Ok(());
        };
        // Under the lock, a network created meanwhile on the same uplink is seen and kept.
        let _lock = self.datapath()?.lock()?;
        let others: Vec<NetworkRecord> =
            self.store.networks()?.into_iter().filter(|n| n.id != net.id && n.uplink == net.uplink).collect();
        if !others.iter().any(|n| n.xdp) {
            self.datapath()?.detach_xdp(uplink)?;
        }
        if others.is_empty() {
            self.datapath()?.detach_uplink(uplink)?;
        }
        Ok(())
    }

    pub async fn network_rm(&mut self, name: &str, force: bool) -> Result<()> {
        let net = self
            .store
            .find_network(name)?
            .ok_or_else(|| Error::not_found(format!("network '{name}' does not exist; see `netpath network ls`")))?;
        let endpoints = self.store.endpoints(Some(net.id))?;
        if !endpoints.is_empty() && !force {
            return Err(Error::conflict(format!(
                "network '{name}' has {} endpoint(s) attached; detach them or pass --force",
                endpoints.len()
            )));
        }
        for ep in &endpoints {
            self.teardown_endpoint(ep).await?;
        }
        self.teardown_network(&net).await
    }

    pub async fn attach(&mut self, spec: &AttachSpec) -> Result<EndpointRecord> {
        let network = self.store.network(&spec.network)?;
        link::check_ifname("--ifname", &spec.ifname)?;
        let ip = spec.ip.as_deref().map(|s| cidr::parse_ip("--ip", s)).transpose()?;
        let mac = spec.mac.as_deref().map(ipam::parse_mac).transpose()?;
        let ports = spec.publish.iter().map(|p| ports::parse_publish(p)).collect::<Result<Vec<_>>>()?.concat();
        if network.internal && !ports.is_empty() {
            return Err(Error::invalid(format!(
                "network '{}' is internal: nothing outside it may reach its endpoints, so they cannot publish ports; drop -p or use another network",
                network.name
            )));
        }
        let id = match &spec.id {
            Some(id) => {
                check_name("endpoint id", id)?;
                id.clone()
            }
            None => random_id()?,
        };
        let ns = match &spec.target {
            Target::Path(path) => Netns::open(path)?,
            Target::Pid(pid) => Netns::of_pid(*pid)?,
        };
        if ns.id == Netns::current()?.id {
            return Err(Error::invalid(format!(
                "'{}' is the host network namespace; pass a container's namespace",
                ns.path
            )));
        }
        self.reap_abandoned().await?;
        let host_veth = host_veth_name(&id);
        if self.store.endpoint(&id)?.is_none() && self.nl.index_of(&host_veth).await?.is_some() {
            return Err(Error::conflict(format!(
                "interface '{host_veth}' already exists in the host network namespace; pass another --id"
            )));
        }
        let request = NewEndpoint {
            host_veth,
            id,
            network,
            ip,
            mac,
            ifname: spec.ifname.clone(),
            netns_path: ns.path.clone(),
            netns_id: ns.id,
            ports,
        };
        let record = match self.store.reserve_endpoint(&request)? {
            Reservation::Existing(record) => return Ok(record),
            Reservation::New(record) => record,
        };
        match self.build_endpoint(&record, &request.network, &ns).await {
            Ok(()) => {
                self.store.set_endpoint_ready(&record.id)?;
                Ok(self.store.endpoint(&record.id)?.expect("endpoint row just written"))
            }
            Err(e) => {
                let _ = self.teardown_endpoint(&record).await;
                Err(e)
            }
        }
    }

    /// The datapath is attached before the container's side comes up, so not one packet of
    /// the endpoint can take the bridge's path untranslated.
    async fn build_endpoint(&mut self, ep: &EndpointRecord, net: &NetworkRecord, ns: &Netns) -> Result<()> {
        let bridge = self.nl.require_index(&net.bridge).await?;
        let mac = ep.mac_bytes()?;
        let peer = VethPeer { name: &ep.ifname, mac, netns: ns };
        let host_ifindex = self.nl.create_veth(&ep.host_veth, bridge, net.mtu, &peer).await?;
        let info = EndpointInfo { host_ifindex, network_id: net.id, mac, _pad: 0 };
        self.datapath()?.attach_endpoint(&ep.host_veth, ep.ip, &info)?;
        self.publish(ep).await?;

        netns::run_in(ns, || link::disable_ipv6(&ep.ifname))??;
        let inside = Netlink::connect_in(ns)?;
        let index = inside.require_index(&ep.ifname).await?;
        inside.add_address(index, ep.ip, ep.prefix).await?;
        inside.set_up(index).await?;
        inside.set_up(inside.require_index("lo").await?).await?;
        inside.add_default_route(ep.gateway).await
    }

    /// Publishes the endpoint's ports, with the host addresses they answer on.
    async fn publish(&mut self, ep: &EndpointRecord) -> Result<()> {
        if ep.ports.is_empty() {
            return Ok(());
        }
        let addrs = self.nl.all_ipv4_addresses().await?;
        let dp = self.datapath()?;
        dp.set_host_addrs(&addrs)?;
        dp.publish(ep.ip, &ep.ports)?;
        dp.attach_sock_programs()
    }

    /// Every published port, with its endpoint.
    pub fn ports(&self) -> Result<Vec<(EndpointRecord, Port)>> {
        let endpoints = self.store.endpoints(None)?;
        Ok(endpoints.into_iter().flat_map(|ep| ep.ports.clone().into_iter().map(move |p| (ep.clone(), p))).collect())
    }

    /// Removes an endpoint's veth pair, then its datapath entries and connections, then its
    /// row, attempting every part even when one fails. The veth goes first: while it exists,
    /// its traffic must keep going through the datapath.
    async fn teardown_endpoint(&mut self, ep: &EndpointRecord) -> Result<()> {
        let ifindex = self.nl.index_of(&ep.host_veth).await?;
        let veth = match ifindex {
            Some(index) => self.nl.delete(index).await,
            None => Ok(()),
        };
        let datapath = match self.datapath_pinned() {
            true => self.datapath().and_then(|dp| {
                dp.unpublish(&ep.ports)?;
                dp.detach_endpoint(&ep.host_veth, ep.ip, ifindex)?;
                dp.forget_connections(Some(&[datapath::map_key(ep.ip)])).map(drop)
            }),
            false => Ok(()),
        };
        self.store.remove_endpoint(&ep.id)?;
        let sock = match self.datapath_pinned() {
            true => self.detach_sock_programs_if_unused(),
            false => Ok(()),
        };
        veth.and(datapath).and(sock)
    }

    /// The socket programs see every connect() on the machine: none without a published port.
    /// Checked under the lock, so a concurrent publish is not left without them.
    fn detach_sock_programs_if_unused(&mut self) -> Result<()> {
        let _lock = self.datapath()?.lock()?;
        if self.store.has_published_ports()? { Ok(()) } else { self.datapath()?.detach_sock_programs() }
    }

    pub async fn detach(&mut self, spec: &DetachSpec) -> Result<Vec<EndpointRecord>> {
        let endpoints = match spec {
            DetachSpec::Id(id) => vec![self.store.endpoint(id)?.ok_or_else(|| {
                Error::not_found(format!("endpoint '{id}' does not exist; see `netpath endpoint ls`"))
            })?],
            DetachSpec::Netns(path) => {
                // A namespace that is gone can still be named by the path it was attached with.
                let id = Netns::open(path).ok().map(|ns| ns.id);
                let found: Vec<_> = self
                    .store
                    .endpoints(None)?
                    .into_iter()
                    .filter(|e| Some(e.netns_id) == id || e.netns == *path)
                    .collect();
                if found.is_empty() {
                    return Err(Error::not_found(format!("no endpoint is attached to network namespace '{path}'")));
                }
                found
            }
        };
        for ep in &endpoints {
            self.teardown_endpoint(ep).await?;
        }
        Ok(endpoints)
    }

    pub fn endpoint(&self, id: &str) -> Result<EndpointRecord> {
        self.store
            .endpoint(id)?
            .ok_or_else(|| Error::not_found(format!("endpoint '{id}' does not exist; see `netpath endpoint ls`")))
    }

    pub fn endpoints(&self, network: Option<&str>) -> Result<Vec<EndpointRecord>> {
        let id = network.map(|n| self.store.network(n).map(|n| n.id)).transpose()?;
        self.store.endpoints(id)
    }

    /// The ifindex of each endpoint's host veth, for matching counters keyed by ifindex.
    pub async fn host_ifindex(&self, ep: &EndpointRecord) -> Result<Option<u32>> {
        self.nl.index_of(&ep.host_veth).await
    }

    /// Replaces the pinned datapath with this build's and rebuilds its maps and links from the
    /// database. Endpoints fall back to the bridge for the moment in between.
    pub async fn datapath_reload(&mut self) -> Result<()> {
        self.datapath = None;
        datapath::unload_all(&self.paths.pin_root)?;
        for net in self.store.networks()? {
            if self.nl.index_of(&net.bridge).await?.is_some() {
                self.publish_network(&net).await?;
            }
        }
        for ep in self.store.endpoints(None)? {
            if let Some(host_ifindex) = self.nl.index_of(&ep.host_veth).await? {
                let info = EndpointInfo { host_ifindex, network_id: ep.network_id, mac: ep.mac_bytes()?, _pad: 0 };
                self.datapath()?.attach_endpoint(&ep.host_veth, ep.ip, &info)?;
                self.publish(&ep).await?;
            }
        }
        Ok(())
    }

    /// Cleans up after processes that died between reserving and finishing.
    async fn reap_abandoned(&mut self) -> Result<()> {
        let (networks, endpoints) = self.store.abandoned()?;
        for ep in &endpoints {
            self.teardown_endpoint(ep).await?;
        }
        for net in &networks {
            if self.store.endpoints(Some(net.id))?.is_empty() {
                self.teardown_network(net).await?;
            }
        }
        Ok(())
    }

    /// Whether this build's datapath is pinned; teardown of objects made before it existed
    /// must not load it just to remove entries that cannot be there.
    fn datapath_pinned(&self) -> bool {
        self.datapath.is_some() || datapath::is_pinned(&self.paths.pin_root)
    }
}

/// Names of networks and endpoint ids: what Docker accepts for names.
fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {what} '{name}': use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

/// The host end of an endpoint's veth: `npv` and a hash of the endpoint id (≤ 15 bytes).
pub fn host_veth_name(id: &str) -> String {
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("npv{hash:08x}")
}

fn random_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n as usize == buf.len() { Ok(()) } else { Err(Error::system("getrandom", std::io::Error::last_os_error())) }
}
