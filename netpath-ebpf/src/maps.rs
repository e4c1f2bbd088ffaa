//! The shared maps. Declared `pinned` so the loader pins them by name under the pin root and
//! every later load (and every other netpath process) reuses the same maps.
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf, SockMap},
};
use netpath_common::{
    Config, Counter, CtEntry, CtKey, EndpointCounters, EndpointInfo, NetworkInfo, PortKey, PortTarget, SockRevNatKey,
    StatKey, VethInfo, dns_socket, limits, names, stage,
};

#[map]
pub static NETWORKS: HashMap<u32, NetworkInfo> = HashMap::pinned(limits::MAX_NETWORKS, 0);

#[map]
pub static ENDPOINTS: HashMap<u32, EndpointInfo> = HashMap::pinned(limits::MAX_ENDPOINTS, 0);

/// By host veth ifindex: what every frame from that endpoint must carry.
#[map]
pub static VETHS: HashMap<u32, VethInfo> = HashMap::pinned(limits::MAX_ENDPOINTS, 0);

#[map]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map]
pub static STATS: PerCpuHashMap<StatKey, Counter> = PerCpuHashMap::pinned(limits::MAX_STATS, 0);

/// By the slot in the endpoint's `ENDPOINTS` and `VETHS` entries.
#[map]
pub static ENDPOINT_COUNTERS: PerCpuArray<EndpointCounters> = PerCpuArray::pinned(limits::MAX_ENDPOINTS, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::pinned(limits::EVENTS_BYTES, 0);

/// LRU, so a full table evicts the least recently used connection instead of failing.
#[map]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(limits::MAX_CT, 0);

/// Connections not answered yet. A separate, smaller LRU: a flood of opens that nobody
/// answers evicts only its own kind, never an established connection in `CT`.
#[map]
pub static CT_NEW: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(limits::MAX_CT_NEW, 0);

#[map]
pub static PORTMAP: HashMap<PortKey, PortTarget> = HashMap::pinned(limits::MAX_PORTS, 0);

/// The host namespace's IPv4 addresses: where ports published on "every address" listen.
#[map]
pub static HOST_ADDRS: HashMap<u32, u32> = HashMap::pinned(limits::MAX_HOST_ADDRS, 0);

/// LRU: entries of closed sockets age out on their own.
#[map]
pub static SOCK_REVNAT: LruHashMap<SockRevNatKey, PortTarget> = LruHashMap::pinned(limits::MAX_SOCK_REVNAT, 0);

/// Programs reached by tail call, in the order of `names::TAIL_CALLED`: the translating
/// stages of `from_container` and of `from_uplink`.
#[map]
pub static TAIL_CALLS: ProgramArray = ProgramArray::pinned(names::TAIL_CALLED.len() as u32, 0);

/// By `stage` slot: how many times each tail-called stage ran (the kernel counts only the
/// program a hook runs, not what it tail-calls).
#[map]
pub static STAGE_RUNS: PerCpuArray<u64> = PerCpuArray::pinned(stage::COUNT, 0);

/// By host veth ifindex: the endpoints `xdp_uplink` may redirect to, each keyed and targeted by
/// its host veth. The control plane adds an endpoint once its container side has NAPI (GRO on),
/// without which a veth drops what `ndo_xdp_xmit` hands it; the kernel removes an entry when
/// its device goes away.
#[map]
pub static XDP_TARGETS: DevMapHash = DevMapHash::pinned(limits::MAX_ENDPOINTS, 0);

/// By `slot << 16 | index`, `index` below `Config::snat_quota`: the reply tuple of each SNAT
/// port the endpoint at `slot` claimed. An index is free again once its tuple no longer
/// answers a live connection of that endpoint, so expiries and evictions give claims back
/// without bookkeeping. LRU: records of gone endpoints age out.
#[map]
pub static SNAT_CLAIMS: LruHashMap<u32, CtKey> = LruHashMap::pinned(limits::MAX_SNAT_CLAIMS, 0);

/// The daemon's resolver sockets, by `dns_socket` slot, where `dns_steer` sends containers'
/// queries to their gateway. The kernel removes a socket when it closes: a daemon that dies
/// leaves no steering behind.
#[map]
pub static DNS_SOCKETS: SockMap = SockMap::pinned(dns_socket::COUNT, 0);
