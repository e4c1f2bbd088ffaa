//! The shared maps. Declared `pinned` so the loader pins them by name under the pin root and
//! every later load (and every other netpath process) reuses the same maps.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap, RingBuf},
};
use netpath_common::{
    Config, Counter, CtEntry, CtKey, EndpointInfo, NetworkInfo, PortKey, PortTarget, SockRevNatKey, StatKey, limits,
};

#[map]
pub static NETWORKS: HashMap<u32, NetworkInfo> = HashMap::pinned(limits::MAX_NETWORKS, 0);

#[map]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::pinned(limits::MAX_ENDPOINTS, 0);

#[map]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map]
pub static STATS: PerCpuHashMap<StatKey, Counter> = PerCpuHashMap::pinned(limits::MAX_STATS, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(limits::EVENTS_BYTES, 0);

/// LRU, so a full table evicts the least recently used connection instead of failing.
#[map]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(limits::MAX_CT, 0);

#[map]
pub static PORTMAP: HashMap<PortKey, PortTarget> = HashMap::pinned(limits::MAX_PORTS, 0);

/// The host namespace's IPv4 addresses: where ports published on "every address" listen.
#[map]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::pinned(limits::MAX_HOST_ADDRS, 0);

/// LRU: entries of closed sockets age out on their own.
#[map]
pub static SOCK_REVNAT: LruHashMap<SockRevNatKey, PortTarget> = LruHashMap::pinned(limits::MAX_SOCK_REVNAT, 0);
