//! The controller: one store, one netlink socket and the pinned datapath, which every
//! operation (`network`, `endpoint`, `publish`, `ensure`, `gc`, `restore`, …) keeps in step.
//! Each operation validates everything it can before it touches the kernel, records its
//! intent in the store, creates the kernel objects, then marks the row ready; on failure it
//! removes what it made, so bad input leaves nothing behind.

use crate::kernel::sysctl;
use crate::{
    core::session::Paths, error::Error, error::Result, kernel::datapath, kernel::datapath::Datapath,
    kernel::link::Netlink, kernel::netns, kernel::reload, kernel::reload::ReloadReport, state::lock::Locks,
    state::lock::Mode, state::settings::Changes, state::settings::Settings, state::store::EndpointRecord,
    state::store::NetworkRecord, state::store::State, state::store::Store,
};

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
            // A map a reload kept from a build without the quota holds 0 there.
            let cfg = dp.config()?;
            if cfg.snat_port_min == 0 || cfg.snat_quota == 0 {
                dp.set_config(&Settings::load(&self.store, sysctl::local_port_range()?)?.to_config(netns::cookie()?))?;
            }
            self.datapath = Some(dp);
        }
        self.datapath.as_mut().ok_or_else(|| Error::system("datapath", "not opened"))
    }

    pub fn settings(&self) -> Result<Settings> {
        Settings::load(&self.store, sysctl::local_port_range()?)
    }

    /// `netpath datapath configure`: records the settings and applies them at once. A SNAT
    /// range must leave out every published port, as a publication must stay out of it.
    pub fn configure(&mut self, changes: &Changes) -> Result<Settings> {
        let settings = self.settings()?.apply(changes, sysctl::local_port_range()?)?;
        let snat = settings.snat_ports();
        if let Some((ep, port)) = self.ports()?.into_iter().find(|(_, p)| snat.contains(&p.host_port)) {
            return Err(Error::conflict(format!(
                "SNAT ports {}-{} include host port {}/{} that endpoint '{}' publishes; pick ports outside the published ones",
                snat.start(),
                snat.end(),
                port.host_port,
                port.proto,
                ep.id
            )));
        }
        settings.save(&self.store)?;
        self.datapath()?.set_config(&settings.to_config(netns::cookie()?))?;
        Ok(settings)
    }

    pub fn networks(&self) -> Result<Vec<NetworkRecord>> {
        self.store.networks()
    }

    pub fn network(&self, name: &str) -> Result<NetworkRecord> {
        self.store.network(name)
    }

    /// The endpoints of a network, whatever state it is in.
    pub fn network_endpoints(&self, net: &NetworkRecord) -> Result<Vec<EndpointRecord>> {
        self.store.endpoints(Some(net.id))
    }

    /// The network, if it exists: for frontends that create it on first use.
    pub fn find_network(&self, name: &str) -> Result<Option<NetworkRecord>> {
        self.store.find_network(name)
    }

    /// The endpoint, if it exists: for frontends that ask before they act.
    pub fn find_endpoint(&self, id: &str) -> Result<Option<EndpointRecord>> {
        self.store.endpoint(id)
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
        let networks: Vec<u32> = self.store.networks()?.iter().map(|n| n.id).collect();
        let report = reload::reload(&self.paths.pin_root, &self.paths.state_dir, &networks)?;
        self.restore_locked().await?.into_result()?;
        Ok(report)
    }

    /// Whether this build's datapath is pinned; teardown of objects made before it existed
    /// must not load it just to remove entries that cannot be there.
    pub fn datapath_pinned(&self) -> bool {
        self.datapath.is_some() || datapath::is_pinned(&self.paths.pin_root)
    }
}
