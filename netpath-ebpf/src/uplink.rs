//! What the two programs on the uplink (`from_uplink` in TC, `xdp_uplink` in XDP) decide the
//! same way about a packet from the outside, written once against `Frame`: the refusals that
//! come before conntrack, and what becomes of a packet that belongs to no connection.
use netpath_common::{Config, EndpointInfo, IPPROTO_TCP, IPPROTO_UDP, drop_reason, network_flags};

use crate::{
    frame::Frame,
    maps::{ENDPOINTS, NETWORKS},
    packet::{Ipv4, is_loopback, load_u16},
    portmap,
};

/// The drop reason for a packet no outside sender may send, whatever its connection.
#[inline(always)]
pub fn refused(ip: &Ipv4) -> Option<u32> {
    // Loopback never arrives on a wire: such a packet targets what listens on 127.0.0.1
    // (CVE-2020-8558).
    if is_loopback(ip.saddr) || is_loopback(ip.daddr) {
        return Some(drop_reason::MARTIAN);
    }
    // Nothing from the outside legitimately carries an endpoint's address as its source; such
    // a packet could forge state in the endpoint's own connections.
    if unsafe { ENDPOINTS.get(&ip.saddr) }.is_some() {
        return Some(drop_reason::SOURCE_MISMATCH);
    }
    None
}

/// Fragments are not translated. A first fragment (the one with ports) for a published or an
/// SNAT port is dropped, so the datagram is never reassembled and delivered to a host socket
/// in the container's stead.
#[inline(always)]
pub fn guards_first_fragment<F: Frame>(ctx: &F, cfg: &Config, ip: &Ipv4) -> bool {
    if !ip.fragment || ip.fragment_offset != 0 || !matches!(ip.proto, IPPROTO_TCP | IPPROTO_UDP) {
        return false;
    }
    let Some(port) = load_u16(ctx, ip.l4_off + 2) else {
        // A first fragment too short to hold its ports cannot be judged: not let through.
        return true;
    };
    let host_port = u16::from_be(port);
    (cfg.snat_port_min..=cfg.snat_port_max).contains(&host_port)
        || portmap::published_on(ip.daddr, port, ip.proto).is_some()
}

/// A packet outside any connection.
pub enum Untracked {
    /// Not for an endpoint: the host's own traffic, for the stack.
    Host,
    /// For an endpoint of a network that routes without masquerading: delivered, that is the
    /// network's point.
    Routed(&'static EndpointInfo),
    /// For an endpoint of any other network: dropped, whether or not the host forwards.
    Unsolicited,
    /// For an endpoint whose network the datapath does not know (maps made anew, not refilled
    /// yet): dropped, it cannot be classified.
    Unknown,
}

#[inline(always)]
pub fn untracked(ip: &Ipv4) -> Untracked {
    // SAFETY (map reads): plain data the control plane replaces whole.
    let Some(ep) = (unsafe { ENDPOINTS.get(&ip.daddr) }) else {
        return Untracked::Host;
    };
    match unsafe { NETWORKS.get(&ep.network_id) } {
        Some(net) if net.flags & (network_flags::MASQUERADE | network_flags::INTERNAL) == 0 => Untracked::Routed(ep),
        Some(_) => Untracked::Unsolicited,
        None => Untracked::Unknown,
    }
}
