//! The eBPF datapath: loaded once, pinned under the pin root, reused by every later process.
//!
//! Layout under the pin root (a bpffs; mounted by netpath when missing):
//!
//! ```text
//! <pin root>/<version>/NETWORKS, ENDPOINTS, VETHS, CONFIG, STATS, EVENTS  maps
//! <pin root>/<version>/CT, CT_NEW, PORTMAP, HOST_ADDRS, SOCK_REVNAT  (more maps)
//! <pin root>/<version>/from_container, from_uplink                     TC programs
//! <pin root>/<version>/connect4, sendmsg4, recvmsg4, getpeername4      cgroup programs
//! <pin root>/<version>/xdp_uplink                                      XDP program
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
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{Array, DevMapHash, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, PerCpuValues, ProgramArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSockAddr, Program, ProgramError, ProgramInfo, SchedClassifier, Xdp,
        cgroup_sock_addr::CgroupSockAddrAttachType,
        links::{FdLink, PinnedLink},
        xdp::XdpMode,
    },
};
use aya_obj::programs::XdpAttachType;
use netpath_common::{
    Config, Counter, CtEntry, CtKey, EndpointCounters, EndpointInfo, NetworkInfo, PortKey, PortTarget, StatKey,
    VethInfo, ct_dir, names,
};
use nix::fcntl::{Flock, FlockArg};

use crate::{error, error::Context, error::Error, error::Result, kernel::bpflink, kernel::reload, types::port::Port};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at compile time.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("NETPATH_EBPF_OBJECT"));

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Directories `netpath status` loads a throwaway copy into; never a datapath version.
/// (bpffs refuses names with a dot.)
pub const PROBE_PREFIX: &str = "probe-";

/// A short, stable name for this build's datapath: FNV-1a over the object, computed by the
/// build script (hashing the object costs a millisecond, in every command that asked).
pub fn version() -> String {
    env!("NETPATH_EBPF_VERSION").to_string()
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 == BPF_FS_MAGIC).unwrap_or(false)
}

/// Makes sure `pin_root` lies on a bpffs. A pin root on a bpffs (a directory in one, or the
/// root of a dedicated mount) is used as it is; a directory inside one is created; otherwise
/// bpffs is mounted on the pin root itself (created if missing), never over a parent that
/// holds other things (`--bpffs /run/netpath` must not hide `/run`).
pub fn ensure_bpffs(pin_root: &Path) -> Result<()> {
    if is_bpffs(pin_root) {
        return Ok(());
    }
    if pin_root.parent().is_some_and(is_bpffs) {
        return match std::fs::create_dir(pin_root) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(Error::system(format!("cannot create pin root {}", pin_root.display()), e))
            }
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(pin_root).context(|| format!("cannot create pin root {}", pin_root.display()))?;
    nix::mount::mount(Some("bpf"), pin_root, Some("bpf"), nix::mount::MsFlags::empty(), Some("mode=0700"))
        .context(|| format!("cannot mount bpffs at {}", pin_root.display()))
}

/// Whether this build's datapath is loaded and pinned under `pin_root`.
pub fn is_pinned(pin_root: &Path) -> bool {
    let dir = pin_root.join(version());
    names::PROGRAMS.iter().all(|p| dir.join(p).exists())
}

fn sock_attach_type(program: &str) -> CgroupSockAddrAttachType {
    match program {
        names::CONNECT4 => CgroupSockAddrAttachType::Connect4,
        names::SENDMSG4 => CgroupSockAddrAttachType::UDPSendMsg4,
        names::RECVMSG4 => CgroupSockAddrAttachType::UDPRecvMsg4,
        _ => CgroupSockAddrAttachType::GetPeerName4,
    }
}

/// The cgroup v2 mount (the root of the unified hierarchy), from /proc/self/mountinfo.
pub fn cgroup2_root() -> Result<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").context(|| "cannot read /proc/self/mountinfo")?;
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .ok_or_else(|| Error::not_found("no cgroup v2 hierarchy is mounted; mount one to publish ports to the host"))
}

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
}

impl Datapath {
    /// Opens the pinned datapath, loading and pinning it first if this is the first use.
    /// `lock_dir` holds the lock that keeps concurrent first uses from loading twice.
    pub fn open(pin_root: &Path, lock_dir: &Path) -> Result<Self> {
        let dir = pin_root.join(version());
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

    fn from_pins(dir: PathBuf, lock_dir: PathBuf) -> Result<Self> {
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
            dir,
            lock_dir,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn set_network(&mut self, id: u32, info: &NetworkInfo) -> Result<()> {
        self.networks.insert(id, info, 0).context(|| format!("cannot write network {id} to the NETWORKS map"))
    }

    pub fn remove_network(&mut self, id: u32) -> Result<()> {
        ignore_missing(self.networks.remove(&id))
            .context(|| format!("cannot remove network {id} from the NETWORKS map"))
    }

    /// Attaches `from_container` to the endpoint's host veth (TCX ingress, pinned link) and
    /// publishes the endpoint in the maps; an `xdp_target` also in `XDP_TARGETS`.
    pub fn attach_endpoint(
        &mut self,
        host_veth: &str,
        ip: Ipv4Addr,
        info: &EndpointInfo,
        xdp_target: bool,
    ) -> Result<()> {
        let zero = PerCpuValues::try_from(vec![EndpointCounters::default(); possible_cpus()?])
            .context(|| "cannot size per-CPU counters")?;
        self.endpoint_counters
            .set(u32::from(info.slot), zero, 0)
            .context(|| format!("cannot reset counter slot {} for {host_veth}", info.slot))?;
        self.refresh_endpoint(host_veth, ip, info, xdp_target)
    }

    /// Makes a wired endpoint's datapath side whole again without resetting its counters:
    /// its map entries, and its TCX link if the pin is gone or points at an interface that no
    /// longer exists. `attach_endpoint` ends here too: every entry an endpoint needs is
    /// written in this one place.
    pub fn refresh_endpoint(
        &mut self,
        host_veth: &str,
        ip: Ipv4Addr,
        info: &EndpointInfo,
        xdp_target: bool,
    ) -> Result<()> {
        self.endpoints.insert(map_key(ip), info, 0).context(|| format!("cannot write {ip} to the ENDPOINTS map"))?;
        let veth = VethInfo { addr: map_key(ip), network_id: info.network_id, mac: info.mac, slot: info.slot };
        self.veths
            .insert(info.host_ifindex, veth, 0)
            .context(|| format!("cannot write {host_veth} to the VETHS map"))?;
        // `xdp_uplink` passes traffic to endpoints outside `XDP_TARGETS` to `from_uplink`: only
        // a `redirect` network's are in it. Callers turn GRO on at their container's side first
        // (`link::enable_gro`): a veth takes frames redirected by XDP only with NAPI there. An
        // entry an older build wrote for every endpoint goes here.
        if xdp_target {
            self.xdp_targets
                .insert(info.host_ifindex, info.host_ifindex, None, 0)
                .map_err(|e| Error::system(format!("cannot write {host_veth} to the XDP_TARGETS map"), e))?;
        } else {
            ignore_missing(self.xdp_targets.remove(info.host_ifindex))
                .context(|| format!("cannot remove {host_veth} from XDP_TARGETS"))?;
        }
        self.ensure_tcx(names::FROM_CONTAINER, host_veth, info.host_ifindex)
    }

    /// Attaches `program` to `ifname` unless a pinned link already serves that very
    /// interface; a defunct link (its interface was deleted and made again) is replaced.
    fn ensure_tcx(&mut self, program: &str, ifname: &str, ifindex: u32) -> Result<()> {
        match bpflink::pinned_ifindex(&self.link_pin(ifname))? {
            Some(current) if current == ifindex => return Ok(()),
            Some(_) => self.detach(ifname)?,
            None => {}
        }
        self.attach(program, ifname, ifindex)
    }

    /// Undoes `attach_endpoint`; parts that are already gone are fine.
    pub fn detach_endpoint(&mut self, host_veth: &str, ip: Ipv4Addr, host_ifindex: Option<u32>) -> Result<()> {
        self.detach(host_veth)?;
        // A veth that died with its namespace has no ifindex left to ask for: the ENDPOINTS
        // entry remembers it, so its VETHS entry still goes. It goes before the entry that
        // remembers its ifindex, so a process killed in between leaves nothing the next
        // teardown cannot find.
        let host_ifindex = host_ifindex.or_else(|| self.endpoints.get(&map_key(ip), 0).ok().map(|i| i.host_ifindex));
        if let Some(ifindex) = host_ifindex {
            ignore_missing(self.veths.remove(&ifindex)).context(|| format!("cannot remove {host_veth} from VETHS"))?;
            ignore_missing(self.xdp_targets.remove(ifindex))
                .context(|| format!("cannot remove {host_veth} from XDP_TARGETS"))?;
        }
        ignore_missing(self.endpoints.remove(&map_key(ip))).context(|| format!("cannot remove {ip} from ENDPOINTS"))
    }

    /// Attaches `from_uplink` to the uplink unless it is there already.
    pub fn attach_uplink(&mut self, uplink: &str) -> Result<()> {
        let _lock = lock(&self.lock_dir)?;
        self.ensure_tcx(names::FROM_UPLINK, uplink, ifindex_of(uplink)?)
    }

    pub fn detach_uplink(&mut self, uplink: &str) -> Result<()> {
        self.detach(uplink)
    }

    /// Attaches `xdp_uplink` to the uplink unless it is there already: in native (driver) mode,
    /// or in generic (skb) mode when the device has no XDP of its own. Says which mode it took;
    /// a link already there is left as it is (`Kept`).
    pub fn attach_xdp(&mut self, uplink: &str) -> Result<XdpAttach> {
        let _lock = lock(&self.lock_dir)?;
        let pin = self.link_pin(&format!("xdp-{uplink}"));
        match bpflink::pinned_ifindex(&pin)? {
            Some(current) if current == ifindex_of(uplink)? => return Ok(XdpAttach::Kept),
            Some(_) => self.detach(&format!("xdp-{uplink}"))?,
            None => {}
        }
        let mut prog = Xdp::from_pin(self.dir.join(names::XDP_UPLINK), XdpAttachType::Interface)
            .context(|| "cannot open the pinned xdp_uplink program")?;
        let (link, attached) = match prog.attach(uplink, XdpMode::Driver) {
            Ok(link) => (link, XdpAttach::Native),
            Err(native) => {
                let link =
                    prog.attach(uplink, XdpMode::Skb).context(|| format!("cannot attach xdp_uplink to {uplink}"))?;
                (link, XdpAttach::Generic(error::chain(&native)))
            }
        };
        let link: FdLink =
            prog.take_link(link).context(|| "cannot take the XDP link")?.try_into().context(|| "XDP link")?;
        std::fs::create_dir_all(self.dir.join("links")).context(|| "cannot create the links directory")?;
        link.pin(&pin).context(|| format!("cannot pin the XDP link of {uplink}"))?;
        Ok(attached)
    }

    pub fn detach_xdp(&mut self, uplink: &str) -> Result<()> {
        self.detach(&format!("xdp-{uplink}"))
    }

    /// Attaches the socket programs to the cgroup v2 root unless they are there already.
    pub fn attach_sock_programs(&mut self) -> Result<()> {
        // Concurrent attaches that publish ports must not both attach.
        let _lock = lock(&self.lock_dir)?;
        let root = cgroup2_root()?;
        for name in names::SOCK_PROGRAMS {
            let pin = self.link_pin(&format!("cgroup-{name}"));
            if pin.exists() {
                continue;
            }
            let cgroup = File::open(&root).context(|| format!("cannot open cgroup {}", root.display()))?;
            let mut prog = CgroupSockAddr::from_pin(self.dir.join(name), sock_attach_type(name))
                .context(|| format!("cannot open the pinned {name} program"))?;
            // A link attachment: the kernel wants no mode flags, and links always coexist with
            // other programs on the same cgroup.
            let link = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .context(|| format!("cannot attach {name} to cgroup {}", root.display()))?;
            let link: FdLink =
                prog.take_link(link).context(|| "cannot take the cgroup link")?.try_into().context(|| "cgroup link")?;
            std::fs::create_dir_all(self.dir.join("links")).context(|| "cannot create the links directory")?;
            link.pin(&pin).context(|| format!("cannot pin the cgroup link of {name}"))?;
        }
        Ok(())
    }

    pub fn detach_sock_programs(&mut self) -> Result<()> {
        names::SOCK_PROGRAMS.iter().try_for_each(|name| self.detach(&format!("cgroup-{name}")))
    }

    fn link_pin(&self, ifname: &str) -> PathBuf {
        self.dir.join("links").join(ifname)
    }

    /// Attaches a pinned program to an interface's TCX ingress and pins the link, so it stays
    /// attached after this process exits. Through the raw syscall: aya would first probe the
    /// kernel's features with a dozen test loads, on every attach.
    fn attach(&mut self, program: &str, ifname: &str, ifindex: u32) -> Result<()> {
        let prog = bpflink::open_pinned(&self.dir.join(program))?;
        let link = bpflink::attach_tcx_ingress(&prog, ifindex)
            .map_err(|e| Error::system(format!("cannot attach {program} to {ifname} (TCX ingress)"), e))?;
        let links = self.dir.join("links");
        std::fs::create_dir_all(&links).context(|| format!("cannot create {}", links.display()))?;
        bpflink::pin(&link, &self.link_pin(ifname))
    }

    /// Unpinning the link detaches the program once no process holds the link open.
    fn detach(&mut self, ifname: &str) -> Result<()> {
        if let Ok(link) = PinnedLink::from_pin(self.link_pin(ifname)) {
            link.unpin().context(|| format!("cannot unpin the TCX link of {ifname}"))?;
        }
        Ok(())
    }

    /// Points the endpoint's published ports at it.
    pub fn publish(&mut self, ip: Ipv4Addr, ports: &[Port]) -> Result<()> {
        for port in ports {
            let target = PortTarget { addr: map_key(ip), port: port.container_port.to_be(), _pad: 0 };
            self.portmap.insert(port_key(port), target, 0).context(|| format!("cannot publish {port}"))?;
        }
        Ok(())
    }

    pub fn unpublish(&mut self, ports: &[Port]) -> Result<()> {
        for port in ports {
            ignore_missing(self.portmap.remove(&port_key(port))).context(|| format!("cannot unpublish {port}"))?;
        }
        Ok(())
    }

    /// Every published port the datapath knows.
    pub fn published(&self) -> Result<Vec<(PortKey, PortTarget)>> {
        self.portmap.iter().map(|e| e.context(|| "cannot read the PORTMAP map")).collect()
    }

    /// Replaces the set of host addresses ports published on "every address" answer on.
    /// Loopback addresses are left out: packets never reach a port published on them (the
    /// socket programs serve those to host processes).
    pub fn set_host_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        let wanted: Vec<u32> = addrs.iter().filter(|a| !a.is_loopback()).map(|a| map_key(*a)).collect();
        let stale: Vec<u32> = self
            .host_addrs
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()
            .context(|| "cannot read the HOST_ADDRS map")?
            .into_iter()
            .filter(|a| !wanted.contains(a))
            .collect();
        for addr in stale {
            ignore_missing(self.host_addrs.remove(&addr)).context(|| "cannot update HOST_ADDRS")?;
        }
        for addr in wanted {
            self.host_addrs.insert(addr, 1, 0).context(|| "cannot update HOST_ADDRS")?;
        }
        Ok(())
    }

    /// The drop events the datapath reports, to read as they come.
    pub fn events(&self) -> Result<RingBuf<MapData>> {
        let path = self.dir.join(names::EVENTS);
        let data = MapData::from_pin(&path).context(|| format!("cannot open pinned map {}", path.display()))?;
        Map::from_map_data(data)
            .context(|| "unexpected EVENTS map")?
            .try_into()
            .map_err(|e| Error::system("pinned map EVENTS has an unexpected layout", e))
    }

    pub fn config(&self) -> Result<Config> {
        self.config.get(&0, 0).context(|| "cannot read the CONFIG map")
    }

    pub fn set_config(&mut self, config: &Config) -> Result<()> {
        self.config.set(0, config, 0).context(|| "cannot write the CONFIG map")
    }

    /// Every conntrack entry, both directions, established or not.
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        self.ct.iter().chain(self.ct_new.iter()).map(|e| e.context(|| "cannot read the CT maps")).collect()
    }

    /// How many entries the established and the unanswered table hold.
    pub fn conntrack_usage(&self) -> (usize, usize) {
        (self.ct.keys().count(), self.ct_new.keys().count())
    }

    /// Removes every connection involving one of `addrs` (all, with `None`), both directions.
    /// Returns how many connections went.
    pub fn forget_connections(&mut self, addrs: Option<&[u32]>) -> Result<usize> {
        let mut removed = 0;
        for (key, entry) in self.conntrack()? {
            let involved =
                addrs.is_none_or(|a| [key.saddr, key.daddr, entry.saddr, entry.daddr].iter().any(|x| a.contains(x)));
            if involved {
                self.remove_conntrack(&key)?;
                removed += usize::from(entry.dir == ct_dir::ORIGINAL);
            }
        }
        Ok(removed)
    }

    /// Serializes changes to what several processes share (uplink, XDP and cgroup
    /// attachments) with loading and attaching.
    pub fn lock(&self) -> Result<Flock<File>> {
        lock(&self.lock_dir)
    }

    /// Removes a conntrack entry from whichever table holds it.
    pub fn remove_conntrack(&mut self, key: &CtKey) -> Result<()> {
        ignore_missing(self.ct.remove(key)).context(|| "cannot remove a CT entry")?;
        ignore_missing(self.ct_new.remove(key)).context(|| "cannot remove a CT_NEW entry")
    }

    /// The counters of the endpoint in `slot`, summed over the CPUs.
    pub fn endpoint_counters(&self, slot: u16) -> Result<EndpointCounters> {
        let per_cpu = self
            .endpoint_counters
            .get(&u32::from(slot), 0)
            .context(|| format!("cannot read counter slot {slot} of ENDPOINT_COUNTERS"))?;
        Ok(per_cpu.iter().fold(EndpointCounters::default(), |acc, c| EndpointCounters {
            tx: add(acc.tx, c.tx),
            rx: add(acc.rx, c.rx),
        }))
    }

    /// Every datapath-wide counter (drop reasons, XDP), summed over the CPUs.
    pub fn counters(&self) -> Result<Vec<(StatKey, Counter)>> {
        let mut out = Vec::new();
        for entry in self.stats.iter() {
            let (key, per_cpu) = entry.context(|| "cannot read the STATS map")?;
            let sum = per_cpu.iter().fold(Counter::default(), |acc, c| add(acc, *c));
            out.push((key, sum));
        }
        Ok(out)
    }

    /// The names of the pinned links (`links/<name>`), for `gc` to match with their owners.
    pub fn link_pins(&self) -> Result<Vec<String>> {
        Ok(read_dir(&self.dir.join("links"))?
            .into_iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect())
    }

    /// Unpins (and so detaches) the link pinned as `links/<name>`.
    pub fn unpin_link(&mut self, name: &str) -> Result<()> {
        self.detach(name)
    }

    pub fn network_ids(&self) -> Result<Vec<u32>> {
        self.networks.keys().map(|k| k.context(|| "cannot read the NETWORKS map")).collect()
    }

    /// Each pinned program's run count and total run time in nanoseconds, as the kernel
    /// counts them while run-time statistics are on.
    pub fn program_runs(&self) -> Result<Vec<(&'static str, u64, u64)>> {
        names::PROGRAMS
            .iter()
            .map(|&name| {
                let path = self.dir.join(name);
                let info = ProgramInfo::from_pin(&path).context(|| format!("cannot read {}", path.display()))?;
                Ok((name, info.run_count(), u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX)))
            })
            .collect()
    }

    /// The host veths (by ifindex) the datapath checks frames for.
    pub fn veth_ifindexes(&self) -> Result<Vec<u32>> {
        self.veths.keys().map(|k| k.context(|| "cannot read the VETHS map")).collect()
    }

    /// Removes a VETHS entry nobody owns.
    pub fn remove_veth(&mut self, ifindex: u32) -> Result<()> {
        ignore_missing(self.veths.remove(&ifindex)).context(|| format!("cannot remove interface {ifindex} from VETHS"))
    }

    /// Removes an ENDPOINTS entry nobody owns.
    pub fn remove_endpoint_entry(&mut self, ip: Ipv4Addr) -> Result<()> {
        ignore_missing(self.endpoints.remove(&map_key(ip))).context(|| format!("cannot remove {ip} from ENDPOINTS"))
    }

    pub fn remove_published(&mut self, key: &PortKey) -> Result<()> {
        ignore_missing(self.portmap.remove(key)).context(|| "cannot remove a PORTMAP entry")
    }

    /// The endpoints the datapath knows, by address.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointInfo)>> {
        self.endpoints
            .iter()
            .map(|e| e.map(|(k, v)| (Ipv4Addr::from(k.to_ne_bytes()), v)).context(|| "cannot read the ENDPOINTS map"))
            .collect()
    }
}

pub(crate) fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect::<std::io::Result<_>>().context(|| format!("cannot list {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::system(format!("cannot list {}", dir.display()), e)),
    }
}

/// Another build's datapath directory. Only directories count: the root of a bpffs mount
/// has files of its own (`maps.debug`, `progs.debug`).
fn other_version(pin_root: &Path) -> Result<Option<String>> {
    let mine = version();
    Ok(read_dir(pin_root)?
        .into_iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            *n != mine
                && ![PROBE_PREFIX, reload::STAGING_PREFIX, reload::RETIRED_PREFIX].iter().any(|p| n.starts_with(p))
        }))
}

/// The index of an interface of the current namespace.
fn ifindex_of(ifname: &str) -> Result<u32> {
    nix::net::if_::if_nametoindex(ifname).context(|| format!("interface '{ifname}' does not exist"))
}

pub(crate) fn load(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(dir)
        .load(OBJECT)
        .context(|| "cannot load netpath's eBPF object")?;
    for name in names::PROGRAMS {
        // A load interrupted half-way left some pins: keep them.
        if dir.join(name).exists() {
            continue;
        }
        let prog =
            ebpf.program_mut(name).ok_or_else(|| Error::system("eBPF object", format!("it has no {name} program")))?;
        load_program(prog).context(|| format!("the kernel rejected {name}"))?;
        prog.pin(dir.join(name)).context(|| format!("cannot pin {name}"))?;
    }
    link_tail_calls(&mut ebpf, dir)
}

/// Puts the tail-called programs where `from_container` finds them. Taken from their pins,
/// which an earlier, interrupted load may have made.
fn link_tail_calls(ebpf: &mut aya::Ebpf, dir: &Path) -> Result<()> {
    let map =
        ebpf.map_mut(names::TAIL_CALLS).ok_or_else(|| Error::system("eBPF object", "it has no TAIL_CALLS map"))?;
    let mut slots = ProgramArray::try_from(map).context(|| "TAIL_CALLS is not a program array")?;
    for (slot, name) in (0u32..).zip(names::TAIL_CALLED) {
        let path = dir.join(name);
        let prog = SchedClassifier::from_pin(&path).context(|| format!("cannot open {}", path.display()))?;
        let fd = prog.fd().context(|| format!("{} has no file descriptor", path.display()))?;
        slots.set(slot, fd, 0).context(|| format!("cannot put {name} in TAIL_CALLS"))?;
    }
    Ok(())
}

pub fn load_program(prog: &mut Program) -> Result<(), ProgramError> {
    match prog {
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSockAddr(p) => p.load(),
        Program::Xdp(p) => p.load(),
        _ => Err(ProgramError::UnexpectedProgramType),
    }
}

pub(crate) fn lock(dir: &Path) -> Result<Flock<File>> {
    std::fs::create_dir_all(dir).context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("datapath.lock");
    let file = File::create(&path).context(|| format!("cannot create {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::system(format!("cannot lock {}", path.display()), e))
}

fn add(a: Counter, b: Counter) -> Counter {
    Counter { packets: a.packets + b.packets, bytes: a.bytes + b.bytes }
}

fn possible_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(what, e)| Error::system(format!("cannot count CPUs ({what})"), e))
}

pub fn port_key(port: &Port) -> PortKey {
    PortKey { addr: port.host_ip.map_or(0, map_key), port: port.host_port.to_be(), proto: port.proto.number(), _pad: 0 }
}

/// Map keys hold addresses as they sit in the packet (network byte order).
pub fn map_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}
