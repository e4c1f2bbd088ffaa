//! TCX ingress on the uplink, shared by every network that uses it. What comes from outside
//! reaches an endpoint only as part of a connection: packets of tracked connections (answers
//! to masqueraded ones, further packets to published ports) and ICMP errors about them are
//! translated and handed to their endpoint; a SYN (or a first UDP datagram) to a published port
//! opens a connection. Routed (`--no-masquerade`) endpoints are reached directly; anything else
//! addressed to an endpoint is dropped as unsolicited, whether or not the host forwards.
//! Everything else is the host's own traffic and passes untouched.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{Config, CtEntry, EndpointInfo, IPPROTO_TCP, IPPROTO_UDP, drop_reason, network_flags};

use crate::{
    conntrack::{self, Tracked},
    counters::drop_ip,
    forward::to_endpoint,
    icmp_error::{self, Translated},
    maps::{ENDPOINTS, NETWORKS, TAIL_CALLS},
    nat::{apply, decrement_ttl},
    packet::{Ipv4, L3, L4, is_loopback, load_u16, parse, parse_l4},
    portmap::{self, published},
};

#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    let L3::Ipv4(ip) = parse(&ctx) else {
        return TC_ACT_OK;
    };
    // Loopback never arrives on a wire: such a packet targets what listens on 127.0.0.1
    // (CVE-2020-8558).
    if is_loopback(ip.saddr) || is_loopback(ip.daddr) {
        return drop_ip(&ctx, &ip, drop_reason::MARTIAN);
    }
    // Nothing from the outside legitimately carries an endpoint's address as its source; such
    // a packet could forge state in the endpoint's own connections.
    if unsafe { ENDPOINTS.get(&ip.saddr) }.is_some() {
        return drop_ip(&ctx, &ip, drop_reason::SOURCE_MISMATCH);
    }
    let Some(cfg) = conntrack::config() else {
        return TC_ACT_OK;
    };
    if icmp_error::is_error(&ctx, &ip) {
        return icmp(&ctx, cfg, &ip);
    }
    if ip.fragment && ip.fragment_offset == 0 && guards_first_fragment(&ctx, cfg, &ip) {
        return drop_ip(&ctx, &ip, drop_reason::FRAGMENT);
    }
    let Some(l4) = parse_l4(&ctx, &ip) else {
        return routed_or_unsolicited(&ctx, &ip);
    };
    match conntrack::lookup(&conntrack::key(&ip, &l4), &l4) {
        Tracked::Translate(to) => translated(&ctx, &ip, &l4, &to),
        Tracked::Refuse(reason) => drop_ip(&ctx, &ip, reason),
        Tracked::No if published(&ip, &l4).is_some() => {
            // Opening a connection is a program of its own: verified apart, with its own stack.
            unsafe { TAIL_CALLS.tail_call(&ctx, OPEN_SLOT) };
            drop_ip(&ctx, &ip, drop_reason::DATAPATH_INCOMPLETE)
        }
        Tracked::No => routed_or_unsolicited(&ctx, &ip),
    }
}

/// `TAIL_CALLS` slot of `from_uplink_open`.
pub const OPEN_SLOT: u32 = 3;

/// A first packet to a published port: a SYN (or a first datagram) opens a connection to its
/// endpoint, anything else is refused.
#[classifier]
pub fn from_uplink_open(ctx: TcContext) -> i32 {
    let L3::Ipv4(ip) = parse(&ctx) else {
        return TC_ACT_OK;
    };
    let Some(l4) = parse_l4(&ctx, &ip) else {
        return TC_ACT_OK;
    };
    match conntrack::inbound(&ip, &l4) {
        Tracked::Translate(to) => translated(&ctx, &ip, &l4, &to),
        Tracked::Refuse(reason) => drop_ip(&ctx, &ip, reason),
        Tracked::No => routed_or_unsolicited(&ctx, &ip),
    }
}

// The ways on below are subprograms (`inline(never)`): each keeps its stack frame to itself,
// so no chain of calls under the program outgrows the verifier's 512 bytes.

/// An ICMP error: translated when it is about a tracked connection.
#[inline(never)]
fn icmp(ctx: &TcContext, cfg: &Config, ip: &Ipv4) -> i32 {
    match icmp_error::translate(ctx, cfg, ip) {
        Translated::To(_, daddr) => match unsafe { ENDPOINTS.get(&daddr) } {
            Some(ep) => deliver(ctx, ip, ep, daddr),
            None => TC_ACT_OK,
        },
        Translated::Broken => drop_ip(ctx, ip, drop_reason::MALFORMED),
        Translated::No => routed_or_unsolicited(ctx, ip),
    }
}

/// A packet of a tracked connection, translated and handed to its endpoint.
#[inline(never)]
fn translated(ctx: &TcContext, ip: &Ipv4, l4: &L4, to: &CtEntry) -> i32 {
    let Some(ep) = (unsafe { ENDPOINTS.get(&to.daddr) }) else {
        return TC_ACT_OK;
    };
    if apply(ctx, ip, l4, to).is_none() {
        return drop_ip(ctx, ip, drop_reason::MALFORMED);
    }
    deliver(ctx, ip, ep, to.daddr)
}

/// Fragments are not translated. A first fragment (the one with ports) for a published or an
/// SNAT port is dropped, so the datagram is never reassembled and delivered to a host socket
/// in the container's stead.
#[inline(always)]
fn guards_first_fragment(ctx: &TcContext, cfg: &Config, ip: &Ipv4) -> bool {
    if !matches!(ip.proto, IPPROTO_TCP | IPPROTO_UDP) {
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

/// Traffic for an endpoint outside any connection: delivered on networks that route without
/// masquerading (that is their point), dropped on every other.
#[inline(always)]
fn routed_or_unsolicited(ctx: &TcContext, ip: &Ipv4) -> i32 {
    let Some(ep) = (unsafe { ENDPOINTS.get(&ip.daddr) }) else {
        return TC_ACT_OK;
    };
    match unsafe { NETWORKS.get(&ep.network_id) } {
        Some(net) if net.flags & (network_flags::MASQUERADE | network_flags::INTERNAL) == 0 => {
            deliver(ctx, ip, ep, ip.daddr)
        }
        _ => drop_ip(ctx, ip, drop_reason::UNSOLICITED),
    }
}

#[inline(always)]
fn deliver(ctx: &TcContext, ip: &Ipv4, ep: &EndpointInfo, daddr: u32) -> i32 {
    let Some(net) = (unsafe { NETWORKS.get(&ep.network_id) }) else {
        return TC_ACT_OK;
    };
    if !decrement_ttl(ctx, ip) {
        return TC_ACT_OK;
    }
    to_endpoint(ctx, ep, Some(&net.gateway_mac), ip.saddr, daddr)
}
