//! The eBPF datapath: loaded once, pinned under the pin root, reused by every later process.
//!
//! Layout under the pin root (a bpffs; mounted by netpath when missing):
//!
//! ```text
//! <pin root>/<version>/NETWORKS, ENDPOINTS, VETHS, CONFIG, STATS, EVENTS  maps
//! <pin root>/<version>/CT, CT_NEW, PORTMAP, HOST_ADDRS, SOCK_REVNAT  (more maps)
//! <pin root>/<version>/ENDPOINT_COUNTERS, STAGE_RUNS, TAIL_CALLS, XDP_TARGETS
//! <pin root>/<version>/from_container, from_uplink                     TC programs
//! <pin root>/<version>/connect4, sendmsg4, recvmsg4, getpeername4      cgroup programs
//! <pin root>/<version>/xdp_uplink                                      XDP program
//! <pin root>/<version>/dns_steer, DNS_SOCKETS          sk_lookup program (the daemon attaches it)
//! <pin root>/<version>/links/<interface>                               TCX links
//! <pin root>/<version>/links/cgroup-<program>                          cgroup links
//! <pin root>/<version>/links/xdp-<uplink>                              XDP links
//! ```
//!
//! `<version>` is a hash of the embedded object, so a netpath build never mixes its programs
//! with maps of another layout: it finds the other version and says what to do
//! (`datapath reload`, see `reload`, which stages the new one in `reload-<pid>`).
use std::{
    fs::File,
    path::{Path, PathBuf},
};

use aya::maps::{Array, DevMapHash, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap};
use netpath_common::{
    Config, Counter, CtEntry, CtKey, EndpointCounters, EndpointInfo, NetworkInfo, PortKey, PortTarget, StatKey,
    VethInfo, names,
};
use nix::fcntl::Flock;

use crate::{error::Context, error::Error, error::Result};

mod attach;
pub mod dns;
mod keys;
mod maps;
mod pins;

pub use keys::{map_key, port_key};
pub use pins::*;

/// How `attach_xdp` left the uplink.
pub enum XdpAttach {
    Native,
    /// Generic mode, and why native mode was refused.
    Generic(String),
    /// A link was attached already.
    Kept,
}

/// The pinned datapath, opened from its pins.
pub struct Datapath {
    dir: PathBuf,
    /// Where the lock that serializes loading and shared attachments lives.
    lock_dir: PathBuf,
    networks: HashMap<MapData, u32, NetworkInfo>,
    endpoints: HashMap<MapData, u32, EndpointInfo>,
    stats: PerCpuHashMap<MapData, StatKey, Counter>,
    endpoint_counters: PerCpuArray<MapData, EndpointCounters>,
    config: Array<MapData, Config>,
    veths: HashMap<MapData, u32, VethInfo>,
    /// Established connections, and those not answered yet (see the datapath's conntrack).
    ct: HashMap<MapData, CtKey, CtEntry>,
    ct_new: HashMap<MapData, CtKey, CtEntry>,
    portmap: HashMap<MapData, PortKey, PortTarget>,
    host_addrs: HashMap<MapData, u32, u32>,
    xdp_targets: DevMapHash<MapData>,
    /// Runs of each tail-called stage, by `stage` slot (counted by the stages themselves).
    stage_runs: PerCpuArray<MapData, u64>,
}

/// How often one program ran, and for how long when the kernel measured it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    pub program: &'static str,
    pub runs: u64,
    /// Total run time; `None` for a tail-called stage, whose time the kernel counts as part of
    /// the program that called it.
    pub run_ns: Option<u64>,
}

impl Datapath {
    /// Opens the pinned datapath, loading and pinning it first if this is the first use.
    /// `lock_dir` holds the lock that keeps concurrent first uses from loading twice.
    pub fn open(pin_root: &Path, lock_dir: &Path) -> Result<Self> {
        let dir = pin_root.join(version());
        // Pins another user could have swapped are never used, loaded or not.
        check_pin_root(pin_root)?;
        let _lock = lock(lock_dir)?;
        if !is_pinned(pin_root) {
            ensure_bpffs(pin_root)?;
            if let Some(other) = other_version(pin_root)? {
                return Err(Error::conflict(format!(
                    "the datapath pinned at {} was loaded by another netpath build; run `netpath datapath reload` to replace it with this one",
                    pin_root.join(other).display()
                )));
            }
            load(&dir)?;
        }
        Self::from_pins(dir, lock_dir.to_path_buf())
    }

    pub(super) fn from_pins(dir: PathBuf, lock_dir: PathBuf) -> Result<Self> {
        let map = |name: &str| -> Result<Map> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).context(|| format!("cannot open pinned map {}", path.display()))?;
            Map::from_map_data(data).context(|| format!("unexpected map type at {}", path.display()))
        };
        fn wrong(name: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
            move |e| Error::system(format!("pinned map {name} has an unexpected layout"), e)
        }
        Ok(Self {
            networks: map(names::NETWORKS)?.try_into().map_err(wrong(names::NETWORKS))?,
            endpoints: map(names::ENDPOINTS)?.try_into().map_err(wrong(names::ENDPOINTS))?,
            stats: map(names::STATS)?.try_into().map_err(wrong(names::STATS))?,
            endpoint_counters: map(names::ENDPOINT_COUNTERS)?.try_into().map_err(wrong(names::ENDPOINT_COUNTERS))?,
            config: map(names::CONFIG)?.try_into().map_err(wrong(names::CONFIG))?,
            veths: map(names::VETHS)?.try_into().map_err(wrong(names::VETHS))?,
            ct: map(names::CT)?.try_into().map_err(wrong(names::CT))?,
            ct_new: map(names::CT_NEW)?.try_into().map_err(wrong(names::CT_NEW))?,
            portmap: map(names::PORTMAP)?.try_into().map_err(wrong(names::PORTMAP))?,
            host_addrs: map(names::HOST_ADDRS)?.try_into().map_err(wrong(names::HOST_ADDRS))?,
            xdp_targets: map(names::XDP_TARGETS)?.try_into().map_err(wrong(names::XDP_TARGETS))?,
            stage_runs: map(names::STAGE_RUNS)?.try_into().map_err(wrong(names::STAGE_RUNS))?,
            dir,
            lock_dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Serializes changes to what several processes share (uplink, XDP and cgroup
    /// attachments) with loading and attaching.
    pub fn lock(&self) -> Result<Flock<File>> {
        lock(&self.lock_dir)
    }
}
