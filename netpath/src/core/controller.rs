//! The control plane's operations: each one validates everything it can before it touches the
//! kernel, records its intent in the store, creates the kernel objects, then marks the row
//! ready; on failure it removes what it made, so bad input leaves nothing behind.
use std::path::PathBuf;

use netpath_common::{NetworkInfo, network_flags};

use crate::{
    error::Error, error::Result, fault, kernel::datapath, kernel::datapath::Datapath, kernel::datapath::XdpAttach,
    kernel::link, kernel::link::Netlink, kernel::link::VethPeer, kernel::netns, kernel::netns::Netns, kernel::reload,
    kernel::reload::ReloadReport, state::ipam, state::lock::Locks, state::lock::Mode, state::settings::Changes,
    state::settings::Settings, state::store::EndpointRecord, state::store::NetworkRecord, state::store::NewEndpoint,
    state::store::NewNetwork, state::store::Reservation, state::store::State, state::store::Store, state::store::Xdp,
    types::net, types::net::Ipv4Net, types::port, types::port::Port,
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
    /// What XDP on the uplink does for the network.
    pub xdp: Xdp,
    /// The id an engine (Docker) knows the network by.
    pub external_id: Option<String>,
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
    pub(crate) paths: Paths,
    pub(crate) store: Store,
    pub(crate) nl: Netlink,
    pub(crate) datapath: Option<Datapath>,
    pub(crate) locks: Locks,
    /// Whether this command may load a fresh datapath while the database has networks: only
    /// `restore` and `datapath reload`, which rebuild it from the database. Anything else
    /// would serve those networks from empty maps.
    pub(crate) may_load: bool,
}

impl Controller {
    /// Opens the store and a netlink socket in the current (host) namespace. Must run inside
    /// a tokio runtime.
    pub fn open(paths: Paths) -> Result<Self> {
        let store = Store::open(&paths.state_dir)?;
        let locks = Locks::new(&paths.state_dir);
        Ok(Self { store, nl: Netlink::connect()?, datapath: None, locks, may_load: false, paths })
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
            if !self.may_load
                && !datapath::is_pinned(&self.paths.pin_root)
                && self.store.networks()?.iter().any(|n| n.state == State::Ready)
            {
                return Err(Error::stale(format!(
                    "the datapath is not loaded at {} but the database has networks (after a reboot?); run `netpath restore`",
                    self.paths.pin_root.display()
                )));
            }
            let mut dp = Datapath::open(&self.paths.pin_root, &self.paths.state_dir)?;
            if dp.config()?.snat_port_min == 0 {
                dp.set_config(&Settings::load(&self.store)?.to_config(netns::cookie()?))?;
            }
            self.datapath = Some(dp);
        }
        self.datapath.as_mut().ok_or_else(|| Error::system("datapath", "not opened"))
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
        let gateway = spec.gateway.as_deref().map(|g| net::parse_ip("--gateway", g)).transpose()?;
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
        if spec.xdp.is_on() && uplink.is_none() {
            return Err(Error::invalid(
                "--xdp needs an uplink; the network is internal or the host has no default route",
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
            return Err(Error::conflict(format!(
                "interface '{bridge}' already exists in the host network namespace; pass another --bridge"
            )));
        }
        self.reap().await?;
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
        let record = self.store.create_network(&request, &routes)?;
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

    /// How `xdp_uplink` runs on the network's uplink, as the kernel reports it; `None` for a
    /// network without `--xdp` (another network's program on the same uplink is not its own).
    pub async fn xdp_mode(&self, net: &NetworkRecord) -> Result<Option<link::XdpMode>> {
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
            link::enable_forwarding(&net.bridge)?;
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
            return Err(Error::conflict(format!(
                "network '{name}' has {attached} endpoint(s) attached; detach them or pass --force"
            )));
        }
        let mut errors = Vec::new();
        for ep in &endpoints {
            let lock = self.locks.endpoint(&ep.id)?;
            match self.teardown_endpoint(ep, false).await {
                Ok(()) => lock.remove(),
                Err(e) => errors.push(e),
            }
        }
        // One pass over conntrack for every endpoint, not one per endpoint.
        if self.datapath_pinned() {
            let addrs: Vec<u32> = endpoints.iter().map(|e| datapath::map_key(e.ip)).collect();
            if let Err(e) = self.datapath().and_then(|dp| dp.forget_connections(Some(&addrs))) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            self.teardown_network(&net).await?;
        }
        Error::all(errors)
    }

    pub async fn attach(&mut self, spec: &AttachSpec) -> Result<EndpointRecord> {
        link::check_ifname("--ifname", &spec.ifname)?;
        let ip = spec.ip.as_deref().map(|s| net::parse_ip("--ip", s)).transpose()?;
        let mac = spec.mac.as_deref().map(ipam::parse_mac).transpose()?;
        let ports = spec.publish.iter().map(|p| port::parse_publish(p)).collect::<Result<Vec<_>>>()?.concat();
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
        // Lock order: global, network, endpoint (see `lock`).
        let _all = self.locks.global(Mode::Shared)?;
        // A name no network can have is not looked for (nor made into a lock file's name).
        if check_name("network name", &spec.network).is_err() {
            return Err(Error::not_found(format!(
                "network '{}' does not exist; see `netpath network ls`",
                spec.network
            )));
        }
        let _net_lock = self.locks.network(&spec.network, Mode::Shared)?;
        let network = self.store.network(&spec.network)?;
        if network.internal && !ports.is_empty() {
            return Err(Error::invalid(format!(
                "network '{}' is internal: nothing outside it may reach its endpoints, so they cannot publish ports; drop -p or use another network",
                network.name
            )));
        }
        self.require_bridge(&network).await?;
        let ep_lock = self.locks.endpoint(&id)?;
        fault::step("attach:locked");
        self.reap().await?;
        let host_veth = host_veth_name(&id);
        let request = NewEndpoint {
            host_veth,
            id,
            network,
            ip,
            mac,
            ifname: spec.ifname.clone(),
            netns_path: ns.path.clone(),
            netns_id: ns.identity()?,
            ports,
            handed: false,
        };
        if let Some(existing) = self.store.endpoint(&request.id)? {
            match existing.state {
                // We hold its lock, so the process that was creating it is gone.
                State::Creating => self.teardown_endpoint(&existing, true).await?,
                State::Ready => return self.reattach(existing, &request, &ns).await,
            }
        }
        if self.nl.index_of(&request.host_veth).await?.is_some() {
            return Err(Error::conflict(format!(
                "interface '{}' already exists in the host network namespace; pass another --id",
                request.host_veth
            )));
        }
        self.check_host_ports(&request.ports).await?;
        let record = match self.store.reserve_endpoint(&request)? {
            Reservation::Existing(record) => return self.reattach(record, &request, &ns).await,
            Reservation::New(record) => record,
        };
        fault::step("attach:reserved");
        match self.build_endpoint(&record, &request.network, &ns).await {
            Ok(()) => {
                self.store.set_endpoint_ready(&record.id)?;
                fault::step("attach:ready");
                drop(ep_lock);
                self.endpoint(&record.id)
            }
            Err(e) => {
                let _ = self.teardown_endpoint(&record, true).await;
                ep_lock.remove();
                Err(e)
            }
        }
    }

    /// The same id again. The same request in the same, still wired namespace is the same
    /// endpoint; a container that restarted in a new namespace, or whose veth is gone, is
    /// wired anew with its address; a request that differs is refused.
    async fn reattach(&mut self, ep: EndpointRecord, req: &NewEndpoint, ns: &Netns) -> Result<EndpointRecord> {
        if let Some(difference) = difference(&ep, req) {
            return Err(Error::conflict(format!(
                "endpoint '{}' is attached with {difference}; detach it first to change it",
                ep.id
            )));
        }
        if !ns.is(&ep.netns_id) {
            self.store.set_endpoint_netns(&ep.id, &ns.path, &req.netns_id)?;
        }
        let ep = self.endpoint(&ep.id)?;
        self.ensure_endpoint(&ep, &req.network, ns).await?;
        self.endpoint(&ep.id)
    }

    /// Refuses host ports a host process already listens on, and host addresses the host
    /// does not have: the publication would silently steal or never see the traffic.
    pub(crate) async fn check_host_ports(&self, ports: &[Port]) -> Result<()> {
        if ports.is_empty() {
            return Ok(());
        }
        let addrs = self.nl.all_ipv4_addresses().await?;
        for port in ports {
            if let Some(ip) = port.host_ip {
                if !addrs.contains(&ip) {
                    return Err(Error::invalid(format!(
                        "host address {ip} of -p {port} is not an address of this host; pick one of its addresses or leave it out"
                    )));
                }
            }
            if port::host_port_in_use(port) {
                return Err(Error::conflict(format!(
                    "host port {}/{} is in use by a process of this host; pick another",
                    port.host_port, port.proto
                )));
            }
        }
        Ok(())
    }

    /// Publishes a new endpoint in the datapath, on its new host veth, from a zeroed counter slot.
    pub(crate) fn attach_datapath(&mut self, ep: &EndpointRecord, host_ifindex: u32) -> Result<()> {
        let info = ep.datapath_info(host_ifindex)?;
        self.datapath()?.attach_endpoint(&ep.host_veth, ep.ip, &info, ep.network_xdp.redirects())
    }

    /// Writes an intact endpoint's datapath entries again, keeping its counters.
    pub(crate) fn refresh_datapath(&mut self, ep: &EndpointRecord, host_ifindex: u32) -> Result<()> {
        let info = ep.datapath_info(host_ifindex)?;
        self.datapath()?.refresh_endpoint(&ep.host_veth, ep.ip, &info, ep.network_xdp.redirects())
    }

    /// The datapath is attached before the container's side comes up, so not one packet of
    /// the endpoint can take the bridge's path untranslated.
    pub(crate) async fn build_endpoint(&mut self, ep: &EndpointRecord, net: &NetworkRecord, ns: &Netns) -> Result<()> {
        let bridge = self.nl.require_index(&net.bridge).await?;
        let mac = ep.mac_bytes()?;
        let peer = VethPeer { name: &ep.ifname, mac, netns: Some(ns), gro: ep.network_xdp.redirects() };
        let host_ifindex = self.nl.create_veth(&ep.host_veth, bridge, net.mtu, &peer).await?;
        fault::step("attach:veth");
        self.attach_datapath(ep, host_ifindex)?;
        fault::step("attach:datapath");
        self.publish(ep).await?;
        fault::step("attach:published");

        let inside = Netlink::connect_in_after(ns, || link::disable_ipv6(&ep.ifname))?;
        let index = inside.require_index(&ep.ifname).await?;
        inside.add_address(index, ep.ip, ep.prefix).await?;
        inside.set_up(index).await?;
        inside.set_up(inside.require_index("lo").await?).await?;
        inside.add_default_route(ep.gateway).await?;
        fault::step("attach:addressed");
        Ok(())
    }

    /// Publishes the endpoint's ports, with the host addresses they answer on.
    pub(crate) async fn publish(&mut self, ep: &EndpointRecord) -> Result<()> {
        if ep.ports.is_empty() {
            return Ok(());
        }
        self.refresh_host_addrs().await?;
        let dp = self.datapath()?;
        dp.publish(ep.ip, &ep.ports)?;
        dp.attach_sock_programs()
    }

    /// Writes the host's current addresses to `HOST_ADDRS`: where ports published on every
    /// address answer, and how the datapath tells the host's own addresses from the outside
    /// when the routing lookup is unavailable (see the datapath's `route_into`).
    async fn refresh_host_addrs(&mut self) -> Result<()> {
        let addrs = self.nl.all_ipv4_addresses().await?;
        self.datapath()?.set_host_addrs(&addrs)
    }

    /// Every published port, with its endpoint.
    pub fn ports(&self) -> Result<Vec<(EndpointRecord, Port)>> {
        let endpoints = self.store.endpoints(None)?;
        Ok(endpoints.into_iter().flat_map(|ep| ep.ports.clone().into_iter().map(move |p| (ep.clone(), p))).collect())
    }

    /// Removes an endpoint's veth pair, then its datapath entries (and with `forget_ct` its
    /// connections), then its row. The veth goes first: while it exists, its traffic must keep
    /// going through the datapath; when it cannot be deleted, nothing else is touched and the
    /// row stays for a retry. After that every part is attempted and every failure reported.
    pub(crate) async fn teardown_endpoint(&mut self, ep: &EndpointRecord, forget_ct: bool) -> Result<()> {
        let mut errors = self.unwire(ep, forget_ct).await?;
        fault::step("detach:datapath");
        match self.store.remove_endpoint(&ep.id) {
            Ok(()) => fault::step("detach:row"),
            Err(e) => errors.push(e),
        }
        if self.datapath_pinned() {
            if let Err(e) = self.detach_sock_programs_if_unused() {
                errors.push(e);
            }
        }
        Error::all(errors)
    }

    /// The kernel half of a teardown, shared with a rebuild that keeps the row: deletes the
    /// veth (its failure stops everything) and removes the endpoint's datapath entries,
    /// returning what failed of the latter.
    pub(crate) async fn unwire(&mut self, ep: &EndpointRecord, forget_ct: bool) -> Result<Vec<Error>> {
        let ifindex = self.nl.index_of(&ep.host_veth).await?;
        if let Some(index) = ifindex {
            self.nl.delete(index).await?;
        }
        fault::step("detach:veth");
        let mut errors = Vec::new();
        if !self.datapath_pinned() {
            return Ok(errors);
        }
        match self.datapath() {
            Ok(dp) => {
                let key = datapath::map_key(ep.ip);
                let results = [
                    dp.unpublish(&ep.ports),
                    dp.detach_endpoint(&ep.host_veth, ep.ip, ifindex),
                    if forget_ct { dp.forget_connections(Some(&[key])).map(drop) } else { Ok(()) },
                ];
                errors.extend(results.into_iter().filter_map(Result::err));
            }
            Err(e) => errors.push(e),
        }
        Ok(errors)
    }

    /// The socket programs see every connect() on the machine: none without a published port.
    /// Checked under the lock, so a concurrent publish is not left without them.
    pub(crate) fn detach_sock_programs_if_unused(&mut self) -> Result<()> {
        let _lock = self.datapath()?.lock()?;
        if self.store.has_published_ports()? { Ok(()) } else { self.datapath()?.detach_sock_programs() }
    }

    /// Each endpoint is torn down under its network's lock (shared) and its own: a detach
    /// waits for an attach of the same id to finish instead of pulling its row from under it.
    pub async fn detach(&mut self, spec: &DetachSpec) -> Result<Vec<EndpointRecord>> {
        let _all = self.locks.global(Mode::Shared)?;
        let missing = |id: &str| Error::not_found(format!("endpoint '{id}' does not exist; see `netpath endpoint ls`"));
        let candidates = match spec {
            DetachSpec::Id(id) => vec![self.store.endpoint(id)?.ok_or_else(|| missing(id))?],
            DetachSpec::Netns(path) => {
                // A namespace that is gone can still be named by the path it was attached with.
                let ns = Netns::open(path).ok();
                let found: Vec<_> = self
                    .store
                    .endpoints(None)?
                    .into_iter()
                    .filter(|e| ns.as_ref().is_some_and(|ns| ns.is(&e.netns_id)) || e.netns == *path)
                    .collect();
                if found.is_empty() {
                    return Err(Error::not_found(format!("no endpoint is attached to network namespace '{path}'")));
                }
                found
            }
        };
        let mut detached = Vec::new();
        let mut errors = Vec::new();
        for candidate in candidates {
            let _net_lock = self.locks.network(&candidate.network, Mode::Shared)?;
            let lock = self.locks.endpoint(&candidate.id)?;
            fault::step("detach:locked");
            // Another detach, or a failed attach, may have removed it while we waited.
            let Some(ep) = self.store.endpoint(&candidate.id)? else {
                continue;
            };
            match self.teardown_endpoint(&ep, true).await {
                Ok(()) => {
                    lock.remove();
                    detached.push(ep);
                }
                Err(e) => errors.push(e),
            }
        }
        Error::all(errors)?;
        match (spec, detached.is_empty()) {
            (DetachSpec::Id(id), true) => Err(missing(id)),
            _ => Ok(detached),
        }
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

    /// Replaces the pinned datapath with this build's without a gap (`reload`), then brings
    /// the maps it made anew in line with the database through the same `ensure` path as
    /// `restore`. Holds the global lock throughout: no command changes anything meanwhile.
    pub async fn datapath_reload(&mut self) -> Result<ReloadReport> {
        let _all = self.locks.global(Mode::Exclusive)?;
        self.may_load = true;
        self.datapath = None;
        let report = reload::reload(&self.paths.pin_root, &self.paths.state_dir)?;
        self.restore_locked().await?.into_result()?;
        Ok(report)
    }

    /// Whether this build's datapath is pinned; teardown of objects made before it existed
    /// must not load it just to remove entries that cannot be there.
    pub(crate) fn datapath_pinned(&self) -> bool {
        self.datapath.is_some() || datapath::is_pinned(&self.paths.pin_root)
    }
}

/// What a repeated attach of an id asks for differently from the endpoint it has, if anything.
fn difference(ep: &EndpointRecord, req: &NewEndpoint) -> Option<String> {
    if ep.network_id != req.network.id {
        return Some(format!("network '{}', not '{}'", ep.network, req.network.name));
    }
    if let Some(ip) = req.ip.filter(|ip| *ip != ep.ip) {
        return Some(format!("--ip {}, not {ip}", ep.ip));
    }
    if let Some(mac) = req.mac.map(|m| ipam::format_mac(&m)).filter(|m| *m != ep.mac) {
        return Some(format!("--mac {}, not {mac}", ep.mac));
    }
    if ep.ifname != req.ifname {
        return Some(format!("--ifname {}, not {}", ep.ifname, req.ifname));
    }
    let sorted = |ports: &[Port]| {
        let mut ports = ports.to_vec();
        ports.sort_by_key(|p| (p.proto.number(), p.host_ip.map(u32::from), p.host_port, p.container_port));
        ports
    };
    let (had, asked) = (sorted(&ep.ports), sorted(&req.ports));
    if had != asked {
        let list = |ports: &[Port]| match ports.len() {
            0 => "no -p".to_string(),
            _ => ports.iter().map(|p| format!("-p {p}")).collect::<Vec<_>>().join(" "),
        };
        return Some(format!("{}, not {}", list(&had), list(&asked)));
    }
    None
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

/// What the host end of every endpoint's veth is named with.
pub const HOST_VETH_PREFIX: &str = "npv";

/// The host end of an endpoint's veth: `npv` and a hash of the endpoint id (≤ 15 bytes).
pub fn host_veth_name(id: &str) -> String {
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("{HOST_VETH_PREFIX}{hash:08x}")
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
