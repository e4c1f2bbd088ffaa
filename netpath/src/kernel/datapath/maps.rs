//! The maps userspace writes and reads: networks, endpoints, published ports, host addresses,
//! settings, connections, counters and events.
use std::net::Ipv4Addr;

use aya::{
    maps::{Map, MapData, RingBuf},
    programs::ProgramInfo,
};
use netpath_common::{
    Config, Counter, CtEntry, CtKey, EndpointCounters, EndpointInfo, NetworkInfo, PortKey, PortTarget, StatKey, ct_dir,
    names,
};

use crate::{error::Context, error::Error, error::Result, types::port::Port};

/// The eBPF object built by `cargo xtask build-ebpf`, embedded at compile time.
use super::{
    Datapath, ProgramRuns,
    keys::{map_key, port_key},
};

impl Datapath {
    pub fn set_network(&mut self, id: u32, info: &NetworkInfo) -> Result<()> {
        self.networks.insert(id, info, 0).context(|| format!("cannot write network {id} to the NETWORKS map"))
    }

    pub fn remove_network(&mut self, id: u32) -> Result<()> {
        ignore_missing(self.networks.remove(&id))
            .context(|| format!("cannot remove network {id} from the NETWORKS map"))
    }

    /// Points the endpoint's published ports at it.
    pub fn publish(&mut self, ip: Ipv4Addr, ports: &[Port]) -> Result<()> {
        for port in ports {
            let target = PortTarget { addr: map_key(ip), port: port.container_port.to_be(), _pad: 0 };
            let key =
                port_key(port).ok_or_else(|| Error::invalid(format!("{port} is IPv6; PORTMAP holds IPv4 only")))?;
            self.portmap.insert(key, target, 0).context(|| format!("cannot publish {port}"))?;
        }
        Ok(())
    }

    pub fn unpublish(&mut self, ports: &[Port]) -> Result<()> {
        for (port, key) in ports.iter().filter_map(|p| Some((p, port_key(p)?))) {
            ignore_missing(self.portmap.remove(&key)).context(|| format!("cannot unpublish {port}"))?;
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

    pub fn network_ids(&self) -> Result<Vec<u32>> {
        self.networks.keys().map(|k| k.context(|| "cannot read the NETWORKS map")).collect()
    }

    /// Each pinned program's run count and total run time in nanoseconds, as the kernel
    /// counts them while run-time statistics are on. The kernel counts only the program a hook
    /// runs: a tail-called stage's runs come from its own counter (`STAGE_RUNS`, always on),
    /// and its time is not measured apart from its caller's.
    pub fn program_runs(&self) -> Result<Vec<ProgramRuns>> {
        names::PROGRAMS
            .iter()
            .map(|&name| {
                if let Some(slot) = names::TAIL_CALLED.iter().position(|&s| s == name) {
                    let runs = self.stage_runs(slot as u32)?;
                    return Ok(ProgramRuns { program: name, runs, run_ns: None });
                }
                let path = self.dir.join(name);
                let info = ProgramInfo::from_pin(&path).context(|| format!("cannot read {}", path.display()))?;
                let run_ns = u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX);
                Ok(ProgramRuns { program: name, runs: info.run_count(), run_ns: Some(run_ns) })
            })
            .collect()
    }

    /// How many times the tail-called stage in `slot` ran, summed over the CPUs.
    fn stage_runs(&self, slot: u32) -> Result<u64> {
        let per_cpu =
            self.stage_runs.get(&slot, 0).context(|| format!("cannot read slot {slot} of {}", names::STAGE_RUNS))?;
        Ok(per_cpu.iter().sum())
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

pub(super) fn add(a: Counter, b: Counter) -> Counter {
    Counter { packets: a.packets + b.packets, bytes: a.bytes + b.bytes }
}

pub(super) fn possible_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(what, e)| Error::system(format!("cannot count CPUs ({what})"), e))
}

pub(super) fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}
