//! Endpoints: attached (the veth pair, the datapath entries, the container's side), attached
//! again, detached.

use std::collections::BTreeSet;

use crate::core::request::ipv4_addr;
use crate::error::{Field, Message};
use crate::kernel::sysctl;
use crate::state::settings::Settings;
use crate::types::mac;
use crate::types::name::{Hostname, Naming, check_name, ifname_problem};
use crate::{
    core::{controller::Controller, names::*, request::*},
    error::Error,
    error::Result,
    fault,
    kernel::link,
    kernel::link::Netlink,
    kernel::link::VethPeer,
    kernel::netns::Netns,
    state::lock::Mode,
    state::store::EndpointRecord,
    state::store::NetworkRecord,
    state::store::NewEndpoint,
    state::store::Reservation,
    state::store::State,
    types::port::Port,
};

impl Controller {
    pub async fn attach(&mut self, spec: &AttachSpec) -> Result<EndpointRecord> {
        if let Some(problem) = ifname_problem(&spec.ifname) {
            return Err(Error::invalid(Message::field(Field::Ifname).and(format!(" {problem}"))));
        }
        let ip = spec.ip.map(|ip| ipv4_addr(Field::Ip, ip)).transpose()?;
        let (mac, ports) = (spec.mac, spec.ports.clone());
        let aliases = distinct_aliases(&spec.aliases)?;
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
            name: spec.name.clone(),
            aliases,
            handed: false,
            creator: spec.creator,
        };
        if let Some(existing) = self.store.endpoint(&request.id)? {
            match existing.state {
                // We hold its lock, so the process that was creating it is gone.
                State::Creating => self.teardown_endpoint(&existing).await?,
                State::Ready => return self.reattach(existing, &request, &ns).await,
            }
        }
        if self.nl.index_of(&request.host_veth).await?.is_some() {
            return Err(Error::conflict(
                Message::from(format!(
                    "interface '{}' already exists in the host network namespace; pass another ",
                    request.host_veth
                ))
                .and_field(Field::EndpointId),
            ));
        }
        self.check_host_ports(&request.ports).await?;
        let record = match self.reserve_reaping(|store| store.reserve_endpoint(&request)).await? {
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
                let _ = self.teardown_endpoint(&record).await;
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
            let attached = Message::from(format!("endpoint '{}' is attached with ", ep.id));
            return Err(Error::conflict(attached.and_message(difference).and("; detach it first to change it")));
        }
        if !ns.is(&ep.netns_id) {
            self.store.set_endpoint_netns(&ep.id, &ns.path, &req.netns_id)?;
        }
        let ep = self.endpoint(&ep.id)?;
        self.ensure_endpoint(&ep, &req.network, ns).await?;
        self.endpoint(&ep.id)
    }

    /// Publishes a new endpoint in the datapath, on its new host veth, from a zeroed counter slot.
    pub(crate) fn attach_datapath(&mut self, ep: &EndpointRecord, host_ifindex: u32) -> Result<()> {
        let info = ep.datapath_info(host_ifindex)?;
        let hook = Settings::endpoint_hook(&self.store)?;
        self.datapath()?.attach_endpoint(&ep.host_veth, ep.ip, &info, ep.network_xdp.redirects(), hook)
    }

    /// Writes an intact endpoint's datapath entries again, keeping its counters.
    pub(crate) fn refresh_datapath(&mut self, ep: &EndpointRecord, host_ifindex: u32) -> Result<()> {
        let info = ep.datapath_info(host_ifindex)?;
        let hook = Settings::endpoint_hook(&self.store)?;
        self.datapath()?.refresh_endpoint(&ep.host_veth, ep.ip, &info, ep.network_xdp.redirects(), hook)
    }

    /// The datapath is attached before the container's side comes up, so not one packet of
    /// the endpoint can take the bridge's path untranslated.
    pub(crate) async fn build_endpoint(&mut self, ep: &EndpointRecord, net: &NetworkRecord, ns: &Netns) -> Result<()> {
        self.wire_veth(ep, net, Some(ns)).await?;
        self.publish(ep).await?;
        fault::step("attach:published");

        let inside = Netlink::connect_in_after(ns, || sysctl::disable_ipv6(&ep.ifname))?;
        let index = inside.require_index(&ep.ifname).await?;
        inside.add_address(index, ep.ip, ep.prefix).await?;
        inside.set_up(index).await?;
        inside.set_up(inside.require_index("lo").await?).await?;
        inside.add_default_route(ep.gateway).await?;
        fault::step("attach:addressed");
        Ok(())
    }

    /// Makes the endpoint's veth pair (the peer in `ns`, or left here for an engine to move)
    /// and attaches the datapath to its host end before that end joins the bridge and comes
    /// up: the peer may belong to a container that already runs, and not one of its frames
    /// may reach the bridge or the host unchecked.
    pub(crate) async fn wire_veth(
        &mut self,
        ep: &EndpointRecord,
        net: &NetworkRecord,
        ns: Option<&Netns>,
    ) -> Result<()> {
        let bridge = self.nl.require_index(&net.bridge).await?;
        let peer = VethPeer { name: &ep.ifname, mac: ep.mac_bytes()?, netns: ns, gro: ep.network_xdp.redirects() };
        let host_ifindex = self.nl.create_veth(&ep.host_veth, net.mtu, &peer).await?;
        fault::step("attach:veth");
        self.attach_datapath(ep, host_ifindex)?;
        self.nl.join_bridge(host_ifindex, (bridge, &net.bridge), &link::veth_mark(&ep.id)).await?;
        fault::step("attach:datapath");
        Ok(())
    }

    /// Removes an endpoint's veth pair, then its datapath entries, then its row (its
    /// connections end with its `VETHS` entry: the datapath checks it on every packet). The veth goes first: while it exists, its traffic must keep
    /// going through the datapath; when it cannot be deleted, nothing else is touched and the
    /// row stays for a retry. After that every part is attempted and every failure reported.
    pub(crate) async fn teardown_endpoint(&mut self, ep: &EndpointRecord) -> Result<()> {
        let mut errors = self.unwire(ep).await?;
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
    pub(crate) async fn unwire(&mut self, ep: &EndpointRecord) -> Result<Vec<Error>> {
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
                let results = [dp.unpublish(&ep.ports), dp.detach_endpoint(&ep.host_veth, ep.ip, ifindex)];
                errors.extend(results.into_iter().filter_map(Result::err));
            }
            Err(e) => errors.push(e),
        }
        Ok(errors)
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
            match self.teardown_endpoint(&ep).await {
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
}

/// Whether a repeated attach names the endpoint differently: its chosen name (a derived one
/// may have been left out), or its set of aliases, less its name, which the store does not
/// keep as an alias too (names compare without case).
fn names_difference(ep: &EndpointRecord, req: &NewEndpoint) -> Option<Message> {
    fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        names.into_iter().map(str::to_ascii_lowercase).collect()
    }
    let shown = |names: &BTreeSet<String>| match names.is_empty() {
        true => "none".to_string(),
        false => names.iter().cloned().collect::<Vec<_>>().join(","),
    };
    let differ = |field: Field, had: BTreeSet<String>, asked: BTreeSet<String>| {
        (had != asked).then(|| Message::field(field).and(format!(" {}, not {}", shown(&had), shown(&asked))))
    };
    let name = match &req.name {
        Some(Naming::Derived(_)) => None,
        chosen => differ(Field::Name, set(ep.name.as_deref()), set(chosen.as_ref().map(|n| n.hostname().as_str()))),
    };
    let mut asked = set(req.aliases.iter().map(Hostname::as_str));
    asked.retain(|alias| !ep.name.as_ref().is_some_and(|name| name.eq_ignore_ascii_case(alias)));
    name.or_else(|| differ(Field::Alias, set(ep.aliases.iter().map(String::as_str)), asked))
}

/// What a repeated attach of an id asks for differently from the endpoint it has, if anything.
fn difference(ep: &EndpointRecord, req: &NewEndpoint) -> Option<Message> {
    let field = |field: Field, had: &dyn std::fmt::Display, asked: &dyn std::fmt::Display| {
        Some(Message::field(field).and(format!(" {had}, not {asked}")))
    };
    if ep.network_id != req.network.id {
        return Some(format!("network '{}', not '{}'", ep.network, req.network.name).into());
    }
    if let Some(ip) = req.ip.filter(|ip| *ip != ep.ip) {
        return field(Field::Ip, &ep.ip, &ip);
    }
    if let Some(mac) = req.mac.map(|m| mac::format_mac(&m)).filter(|m| *m != ep.mac) {
        return field(Field::Mac, &ep.mac, &mac);
    }
    if ep.ifname != req.ifname {
        return field(Field::Ifname, &ep.ifname, &req.ifname);
    }
    if let Some(names) = names_difference(ep, req) {
        return Some(names);
    }
    let sorted = |ports: &[Port]| {
        let mut ports = ports.to_vec();
        ports.sort_by_key(|p| (p.proto.number(), p.host_ip, p.host_port, p.container_port));
        ports
    };
    let (had, asked) = (sorted(&ep.ports), sorted(&req.ports));
    if had != asked {
        let list = |message: Message, ports: &[Port]| match ports {
            [] => message.and("no ").and_field(Field::Publish),
            _ => ports.iter().enumerate().fold(message, |m, (i, p)| {
                m.and(if i == 0 { "" } else { " " }).and_field(Field::Publish).and(format!(" {p}"))
            }),
        };
        return Some(list(list(Message::default(), &had).and(", not "), &asked));
    }
    None
}
