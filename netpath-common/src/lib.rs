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
    pub const EVENTS: &str = "EVENTS";
    pub const FROM_CONTAINER: &str = "from_container";
    /// Every map, in the order `netpath status` lists them.
    pub const MAPS: [&str; 5] = [NETWORKS, ENDPOINTS, CONFIG, STATS, EVENTS];
}

/// Capacity of the maps; the control plane refuses to create more objects than fit.
pub mod limits {
    pub const MAX_NETWORKS: u32 = 1024;
    pub const MAX_ENDPOINTS: u32 = 65536;
    /// Per endpoint two counters (tx, rx) plus the drop reasons.
    pub const MAX_STATS: u32 = 2 * MAX_ENDPOINTS + 64;
    pub const EVENTS_BYTES: u32 = 256 * 1024;
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
    pub flags: u32,
    pub _pad: u32,
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
    pub _pad: [u8; 2],
}

/// `CONFIG[0]`: datapath-wide settings written by the control plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub uplink_ifindex: u32,
    pub _pad: u32,
}

/// What a `STATS` entry counts.
pub mod stat_kind {
    /// Packets the endpoint sent, seen on its host veth.
    pub const ENDPOINT_TX: u32 = 1;
    /// Packets the datapath delivered to the endpoint.
    pub const ENDPOINT_RX: u32 = 2;
    /// Packets dropped, `id` is the reason.
    pub const DROP: u32 = 3;
}

/// `STATS` key: per-endpoint counters use the host veth ifindex as `id`, drops the reason.
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

/// Why the datapath dropped a packet. Counted in `STATS` and reported in `EVENTS`.
pub mod drop_reason {
    /// An IPv4 header that is truncated or has an impossible length.
    pub const MALFORMED: u32 = 1;
    /// The destination is an endpoint of another network (networks are isolated).
    pub const POLICY: u32 = 2;
    /// The source address is not the one assigned to the veth it came from.
    pub const SOURCE_MISMATCH: u32 = 3;
    /// The redirect helper refused the packet (the target device is gone).
    pub const REDIRECT_FAILED: u32 = 4;

    pub const ALL: [u32; 4] = [MALFORMED, POLICY, SOURCE_MISMATCH, REDIRECT_FAILED];

    pub fn name(reason: u32) -> &'static str {
        match reason {
            MALFORMED => "malformed",
            POLICY => "policy",
            SOURCE_MISMATCH => "source-mismatch",
            REDIRECT_FAILED => "redirect-failed",
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
    pub _pad: [u8; 3],
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
    pod!(NetworkInfo, EndpointInfo, Config, StatKey, Counter, DropEvent);
}
