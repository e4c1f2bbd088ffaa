//! Types shared by netpath's eBPF programs and its control plane.
//!
//! Every map key and value is defined here once, `#[repr(C)]` with explicit padding, so both
//! sides agree on the layout byte for byte. Addresses are kept in network byte order, exactly as
//! they appear in packets, so the datapath never swaps them.
#![no_std]

/// Names of the maps and programs as they appear in the object and under the pin root.
pub mod names {
    pub const NETWORKS: &str = "NETWORKS";
    pub const ENDPOINTS: &str = "ENDPOINTS";
    pub const CONFIG: &str = "CONFIG";
    pub const STATS: &str = "STATS";
    pub const ENDPOINT_COUNTERS: &str = "ENDPOINT_COUNTERS";
    pub const EVENTS: &str = "EVENTS";
    pub const CT: &str = "CT";
    pub const CT_NEW: &str = "CT_NEW";
    pub const VETHS: &str = "VETHS";
    pub const TAIL_CALLS: &str = "TAIL_CALLS";
    pub const PORTMAP: &str = "PORTMAP";
    pub const HOST_ADDRS: &str = "HOST_ADDRS";
    pub const SOCK_REVNAT: &str = "SOCK_REVNAT";
    pub const XDP_TARGETS: &str = "XDP_TARGETS";
    pub const STAGE_RUNS: &str = "STAGE_RUNS";
    pub const DNS_SOCKETS: &str = "DNS_SOCKETS";
    pub const FROM_CONTAINER: &str = "from_container";
    /// Stages reached by tail call (`TAIL_CALLS`), never attached themselves.
    pub const FROM_CONTAINER_NAT: &str = "from_container_nat";
    pub const FROM_CONTAINER_OPEN: &str = "from_container_open";
    pub const FROM_CONTAINER_EGRESS: &str = "from_container_egress";
    pub const FROM_UPLINK_OPEN: &str = "from_uplink_open";
    /// `TAIL_CALLS` (and `STAGE_RUNS`), in slot order: `TAIL_CALLED[stage::X]` is stage X.
    pub const TAIL_CALLED: [&str; super::stage::COUNT as usize] =
        [FROM_CONTAINER_NAT, FROM_CONTAINER_OPEN, FROM_CONTAINER_EGRESS, FROM_UPLINK_OPEN];
    pub const FROM_UPLINK: &str = "from_uplink";
    pub const XDP_UPLINK: &str = "xdp_uplink";
    pub const CONNECT4: &str = "connect4";
    pub const SENDMSG4: &str = "sendmsg4";
    pub const RECVMSG4: &str = "recvmsg4";
    pub const GETPEERNAME4: &str = "getpeername4";
    /// The `sk_lookup` program the daemon attaches to the host namespace while it resolves.
    pub const DNS_STEER: &str = "dns_steer";
    /// The cgroup socket programs for host-local access to published ports.
    pub const SOCK_PROGRAMS: [&str; 4] = [CONNECT4, SENDMSG4, RECVMSG4, GETPEERNAME4];
    /// Every program of the object, each pinned under its name.
    pub const PROGRAMS: [&str; 12] = [
        FROM_CONTAINER,
        FROM_CONTAINER_NAT,
        FROM_CONTAINER_OPEN,
        FROM_CONTAINER_EGRESS,
        FROM_UPLINK,
        FROM_UPLINK_OPEN,
        XDP_UPLINK,
        CONNECT4,
        SENDMSG4,
        RECVMSG4,
        GETPEERNAME4,
        DNS_STEER,
    ];
}

/// `DNS_SOCKETS` slots: the daemon's resolver socket for each transport.
pub mod dns_socket {
    pub const UDP: u32 = 0;
    pub const TCP: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// The stages reached by tail call: each one's slot in `TAIL_CALLS` (where the calling program
/// finds it) and in `STAGE_RUNS` (where it counts its runs), in the order of
/// `names::TAIL_CALLED`.
///
/// `STAGE_RUNS[slot]` is a per-CPU `u64`: how many times the stage ran. The kernel's run-time
/// statistics count only the program a hook runs, never the programs it tail-calls (their time
/// is part of the caller's), so the stages count their runs themselves, one per-CPU array slot
/// each, incremented as the stage starts.
pub mod stage {
    pub const FROM_CONTAINER_NAT: u32 = 0;
    pub const FROM_CONTAINER_OPEN: u32 = 1;
    pub const FROM_CONTAINER_EGRESS: u32 = 2;
    pub const FROM_UPLINK_OPEN: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Capacity of the maps; the control plane refuses to create more objects than fit.
pub mod limits {
    pub const MAX_NETWORKS: u32 = 1024;
    /// Also the number of counter slots, so a slot always fits the `u16` it is stored in.
    pub const MAX_ENDPOINTS: u32 = 65536;
    /// Drop reasons and the XDP redirect counter (endpoints count in `ENDPOINT_COUNTERS`).
    pub const MAX_STATS: u32 = 64;
    pub const EVENTS_BYTES: u32 = 256 * 1024;
    /// Two entries per connection (original and reply direction).
    pub const MAX_CT: u32 = 262_144;
    /// Connections nobody has answered yet, apart from `MAX_CT` so that a flood of unanswered
    /// opens evicts only its own kind, never an established connection.
    pub const MAX_CT_NEW: u32 = 32_768;
    pub const MAX_PORTS: u32 = 65536;
    pub const MAX_HOST_ADDRS: u32 = 256;
    pub const MAX_SOCK_REVNAT: u32 = 65536;
    /// As many as both conntrack tables hold connections: one per SNAT port an endpoint holds.
    pub const MAX_SNAT_CLAIMS: u32 = (MAX_CT + MAX_CT_NEW) / 2;
    /// The most SNAT ports one endpoint may hold (`Config::snat_quota`): its claims are indexed
    /// by a `u16`.
    pub const MAX_SNAT_QUOTA: u32 = 65535;
}

/// A network as the datapath sees it: `NETWORKS[network id]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Subnet address, network byte order.
    pub subnet: u32,
    /// Netmask, network byte order, so `addr & mask == subnet` tests membership.
    pub mask: u32,
    /// Gateway (the bridge's address), network byte order.
    pub gateway: u32,
    pub bridge_ifindex: u32,
    /// Where egress leaves the host; 0 when the network has none.
    pub uplink_ifindex: u32,
    /// The uplink's address, the source of masqueraded traffic. Network byte order.
    pub snat_addr: u32,
    pub flags: u32,
    /// The bridge's MAC: the source of frames the datapath routes to an endpoint.
    pub gateway_mac: [u8; 6],
    pub _pad: u16,
}

/// `NetworkInfo::flags`.
pub mod network_flags {
    /// No traffic leaves the network (Docker's `--internal`).
    pub const INTERNAL: u32 = 1 << 0;
    /// Egress is source-translated to the uplink address.
    pub const MASQUERADE: u32 = 1 << 1;
}

/// An endpoint as the datapath sees it: `ENDPOINTS[IPv4 address]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    /// ifindex of the host-side veth; `bpf_redirect_peer` to it lands in the container.
    pub host_ifindex: u32,
    pub network_id: u32,
    pub mac: [u8; 6],
    /// The endpoint's index in `ENDPOINT_COUNTERS`.
    pub slot: u16,
}

/// An endpoint's host-side veth as the datapath sees it: `VETHS[host ifindex]`. Every frame
/// that arrives there must carry this MAC, and every IPv4 packet (and ARP) this address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VethInfo {
    /// Network byte order.
    pub addr: u32,
    pub network_id: u32,
    pub mac: [u8; 6],
    /// The endpoint's index in `ENDPOINT_COUNTERS`.
    pub slot: u16,
}

/// `CONFIG[0]`: datapath-wide settings written by the control plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Source ports for masqueraded flows (host byte order); 0 until configured.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// Conntrack timeouts in seconds.
    pub timeout_tcp_established: u32,
    /// SYN sent, FIN or RST seen.
    pub timeout_tcp_transient: u32,
    pub timeout_udp: u32,
    pub timeout_icmp: u32,
    /// How many SNAT ports (masqueraded or hairpinned connections) one endpoint may hold at
    /// once; 0 until configured, and then no limit.
    pub snat_quota: u32,
    /// The host namespace's cookie: socket programs attached to the cgroup root act only on
    /// sockets of this namespace.
    pub host_netns_cookie: u64,
}

/// `PORTMAP` key: a published port. `addr` is the host address it is published on, or 0 for
/// every host address. Network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub addr: u32,
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// `PORTMAP` value: the endpoint address and port a published port leads to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortTarget {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// `SOCK_REVNAT` key: a host socket (by cookie) and the endpoint address `connect4` or
/// `sendmsg4` pointed it at, so `getpeername4`/`recvmsg4` can show what was dialled instead.
/// The value is a `PortTarget` holding the dialled address and port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevNatKey {
    pub cookie: u64,
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// A connection-tracking key: the 5-tuple of a packet as it arrives, before translation
/// (network byte order). ICMP echo uses the identifier as `sport` in requests and as `dport`
/// in replies, so a reply finds its entry like a port would.
///
/// Keys are looked up where packets enter the datapath: on an endpoint's host veth (source is
/// an endpoint) or on the uplink (destination is a host address), so the two never collide.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: u8,
    pub _pad2: u16,
}

/// A connection-tracking entry: the tuple a packet with this key is rewritten to. Every
/// connection has two entries, one per direction; the second is keyed by the reverse of the
/// first's translated tuple and translates back to the reverse of the first's key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    /// `ct_state`, kept up to date on the original-direction entry only.
    pub state: u8,
    /// `ct_dir`: which of the pair this is.
    pub dir: u8,
    /// TCP: which of `seq_next` and `seq_max` have been learnt (`seq_known` bits).
    pub seq_known: u8,
    pub _pad: u8,
    /// TCP: the sequence number after the last segment seen in this direction (host byte
    /// order); resets and FINs far from it are not believed.
    pub seq_next: u32,
    /// TCP: how far this direction may send, as the other side allowed it (its highest
    /// acknowledgement plus window): `seq_next` never moves past it.
    pub seq_max: u32,
    /// The host veth (ifindex) of the endpoint the original direction comes from, and of the
    /// one it goes to; 0 for an end that is not an endpoint. Kept on the original-direction
    /// entry: the connection lives only while both are in `VETHS`. The kernel never gives a
    /// new link an index a link had before (it allocates them cyclically over 2^31), so a
    /// detach ends its endpoint's connections without touching them, and an endpoint that
    /// takes over the address never inherits them.
    pub src_veth: u32,
    pub dst_veth: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of the last packet, either direction; kept on
    /// the original-direction entry.
    pub last_seen: u64,
}

impl CtKey {
    /// The key of the other direction of the connection whose `dir` entry is `entry`.
    #[inline(always)]
    pub fn partner(entry: &CtEntry, proto: u8) -> CtKey {
        CtKey {
            saddr: entry.daddr,
            daddr: entry.saddr,
            sport: entry.dport,
            dport: entry.sport,
            proto,
            _pad: 0,
            _pad2: 0,
        }
    }
}

impl CtEntry {
    /// The entry that translates the other direction back to the reverse of `key`.
    #[inline(always)]
    pub fn reverse_of(key: &CtKey, dir: u8, last_seen: u64) -> CtEntry {
        CtEntry {
            saddr: key.daddr,
            daddr: key.saddr,
            sport: key.dport,
            dport: key.sport,
            state: 0,
            dir,
            seq_known: 0,
            _pad: 0,
            seq_next: 0,
            seq_max: 0,
            src_veth: 0,
            dst_veth: 0,
            last_seen,
        }
    }

    /// Whether this entry translates the other direction of `key`'s connection.
    #[inline(always)]
    pub fn reverses(&self, key: &CtKey) -> bool {
        self.saddr == key.daddr && self.daddr == key.saddr && self.sport == key.dport && self.dport == key.sport
    }
}

/// `CtEntry::dir`.
pub mod ct_dir {
    /// Made by the connection's first packet; holds its state.
    pub const ORIGINAL: u8 = 0;
    /// The answer's direction.
    pub const REPLY: u8 = 1;
}

/// `CtEntry::seq_known`.
pub mod seq_known {
    /// `seq_next` holds this direction's position.
    pub const NEXT: u8 = 1 << 0;
    /// `seq_max` holds the other side's bound (entries written before it existed have 0 here).
    pub const MAX: u8 = 1 << 1;
}

/// `CtEntry::state`. Ordered: a state never goes back to a lower one except when a new SYN
/// reopens a closed connection.
pub mod ct_state {
    /// Only the original direction has been seen (TCP: SYN sent). Such entries live in
    /// `CT_NEW` until the connection is established, which promotes them to `CT`.
    pub const NEW: u8 = 1;
    /// TCP: the other side answered (SYN-ACK); the opener has not acknowledged it yet.
    pub const ANSWERED: u8 = 2;
    /// TCP: the handshake completed. Other protocols: both directions have been seen.
    pub const ESTABLISHED: u8 = 3;
    /// TCP FIN seen.
    pub const CLOSING: u8 = 4;
    /// TCP RST seen.
    pub const CLOSED: u8 = 5;

    pub fn name(state: u8) -> &'static str {
        match state {
            NEW => "new",
            ANSWERED => "answered",
            ESTABLISHED => "established",
            CLOSING => "closing",
            CLOSED => "closed",
            _ => "unknown",
        }
    }
}

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

impl Config {
    /// Seconds an entry in `state` for `proto` stays valid without traffic.
    pub fn timeout(&self, proto: u8, state: u8) -> u32 {
        match proto {
            IPPROTO_TCP if state == ct_state::ESTABLISHED => self.timeout_tcp_established,
            IPPROTO_TCP => self.timeout_tcp_transient,
            IPPROTO_UDP => self.timeout_udp,
            _ => self.timeout_icmp,
        }
    }
}

/// What a `STATS` entry counts (1 and 2 counted endpoints before `ENDPOINT_COUNTERS`).
pub mod stat_kind {
    /// Packets dropped, `id` is the reason.
    pub const DROP: u32 = 3;
    /// Packets `xdp_uplink` redirected to an endpoint (`id` 0).
    pub const XDP_REDIRECT: u32 = 4;
}

/// `STATS` key: drops use the reason as `id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatKey {
    pub kind: u32,
    pub id: u32,
}

/// `STATS` value (per CPU; userspace sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `ENDPOINT_COUNTERS[slot]` (per CPU; userspace sums the CPUs). An array indexed by a slot
/// the control plane stores in the endpoint's map entries: counting a packet is an index, not
/// a hash lookup. The control plane zeroes a slot when it gives it to an endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// What the endpoint sent, seen on its host veth.
    pub tx: Counter,
    /// What the datapath delivered to it.
    pub rx: Counter,
}

/// Why the datapath dropped a packet. Counted in `STATS` and reported in `EVENTS`.
pub mod drop_reason {
    /// An IPv4 header that is truncated or has an impossible length.
    pub const MALFORMED: u32 = 1;
    /// The destination is an endpoint of another network (networks are isolated).
    pub const POLICY: u32 = 2;
    /// The source address is not the one assigned to the veth it came from, or an endpoint's
    /// address arrived from the outside.
    pub const SOURCE_MISMATCH: u32 = 3;
    /// The redirect helper refused the packet (the target device is gone).
    pub const REDIRECT_FAILED: u32 = 4;
    /// Every source port of the SNAT range is taken for this destination.
    pub const NAT_EXHAUSTED: u32 = 5;
    /// Egress from an `--internal` network.
    pub const EGRESS_DENIED: u32 = 6;
    /// Egress that masquerading cannot translate (IP fragments, protocols without ports):
    /// dropped rather than leaked with the endpoint's private source address.
    pub const NAT_UNSUPPORTED: u32 = 7;
    /// Masqueraded egress that the routing table sends out of an interface other than the
    /// network's uplink: dropped rather than sent untranslated.
    pub const NOT_UPLINK: u32 = 8;
    /// A frame from a container whose Ethernet source is not the endpoint's MAC.
    pub const MAC_SPOOF: u32 = 9;
    /// An ARP from a container whose sender address or MAC is not the endpoint's.
    pub const ARP_SPOOF: u32 = 10;
    /// Unicast IPv4 in a broadcast or multicast frame: it would reach every port of the bridge.
    pub const GROUP_MAC: u32 = 11;
    /// IPv6 from a container (netpath networks are IPv4 only).
    pub const IPV6: u32 = 12;
    /// A VLAN-tagged frame from a container.
    pub const VLAN: u32 = 13;
    /// Any other ethertype from a container.
    pub const ETHERTYPE: u32 = 14;
    /// From the uplink to an endpoint with neither a published port nor a connection it opened.
    pub const UNSOLICITED: u32 = 15;
    /// A TCP segment other than a SYN, with no connection, to a published port or from an
    /// endpoint to the outside: opens nothing and claims no SNAT port.
    pub const NOT_SYN: u32 = 16;
    /// A loopback source or destination from the uplink (CVE-2020-8558), or a loopback
    /// destination from a container (the host's local services, even with `route_localnet`).
    pub const MARTIAN: u32 = 17;
    /// An inbound fragment for a published or SNAT port: fragments are not translated, and
    /// must not reach a host socket instead.
    pub const FRAGMENT: u32 = 18;
    /// A TCP segment of a tracked connection that its sequence numbers refute: a reset or FIN
    /// far outside its window, a reset before its direction's sequence is known that does not
    /// answer the SYN, or a handshake ACK that does not acknowledge the other side's SYN.
    pub const OUT_OF_WINDOW: u32 = 19;
    /// A program the datapath needs is missing (a load interrupted half-way): fail closed.
    pub const DATAPATH_INCOMPLETE: u32 = 20;
    /// A new connection from an endpoint that already holds its quota of SNAT ports
    /// (`Config::snat_quota`): one container cannot take a destination's ports from the others.
    pub const SNAT_QUOTA: u32 = 21;
    /// An ICMP error whose outer addresses do not belong to the connection it quotes: another
    /// endpoint's flow quoted by a container, or an error from the outside addressed to anything
    /// but the address the flow leaves the host with.
    pub const FOREIGN_ERROR: u32 = 22;
    /// A packet of a translated connection (or opening one) with no hop left: dropped before any
    /// rewrite, so no error the host builds can quote an endpoint's private address.
    pub const TTL_EXPIRED: u32 = 23;

    pub const ALL: [u32; 23] = [
        MALFORMED,
        POLICY,
        SOURCE_MISMATCH,
        REDIRECT_FAILED,
        NAT_EXHAUSTED,
        EGRESS_DENIED,
        NAT_UNSUPPORTED,
        NOT_UPLINK,
        MAC_SPOOF,
        ARP_SPOOF,
        GROUP_MAC,
        IPV6,
        VLAN,
        ETHERTYPE,
        UNSOLICITED,
        NOT_SYN,
        MARTIAN,
        FRAGMENT,
        OUT_OF_WINDOW,
        DATAPATH_INCOMPLETE,
        SNAT_QUOTA,
        FOREIGN_ERROR,
        TTL_EXPIRED,
    ];

    pub fn name(reason: u32) -> &'static str {
        match reason {
            MALFORMED => "malformed",
            POLICY => "policy",
            SOURCE_MISMATCH => "source-mismatch",
            REDIRECT_FAILED => "redirect-failed",
            NAT_EXHAUSTED => "nat-exhausted",
            EGRESS_DENIED => "egress-denied",
            NAT_UNSUPPORTED => "nat-unsupported",
            NOT_UPLINK => "not-uplink",
            MAC_SPOOF => "mac-spoof",
            ARP_SPOOF => "arp-spoof",
            GROUP_MAC => "group-mac",
            IPV6 => "ipv6",
            VLAN => "vlan",
            ETHERTYPE => "ethertype",
            UNSOLICITED => "unsolicited",
            NOT_SYN => "not-syn",
            MARTIAN => "martian",
            FRAGMENT => "fragment",
            OUT_OF_WINDOW => "out-of-window",
            DATAPATH_INCOMPLETE => "datapath-incomplete",
            SNAT_QUOTA => "snat-quota",
            FOREIGN_ERROR => "foreign-error",
            TTL_EXPIRED => "ttl-expired",
            _ => "unknown",
        }
    }
}

/// A record in the `EVENTS` ring buffer: one dropped packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub reason: u32,
    pub ifindex: u32,
    /// Network byte order.
    pub saddr: u32,
    /// Network byte order.
    pub daddr: u32,
    pub protocol: u8,
    pub _pad: u8,
    pub _pad2: u16,
    pub len: u32,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;

    macro_rules! pod {
        ($($t:ty),*) => {$(
            // SAFETY: repr(C), every field is an integer or integer array, padding is explicit.
            unsafe impl aya::Pod for $t {}
            unsafe impl bytemuck::Zeroable for $t {}
            unsafe impl bytemuck::Pod for $t {}
        )*};
    }
    pod!(
        NetworkInfo,
        EndpointInfo,
        VethInfo,
        Config,
        CtKey,
        CtEntry,
        PortKey,
        PortTarget,
        SockRevNatKey,
        StatKey,
        EndpointCounters,
        Counter,
        DropEvent
    );
}
