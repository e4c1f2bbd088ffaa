//! TCX ingress on the uplink, shared by every network that uses it. What comes from outside
//! reaches an endpoint only as part of a connection: packets of tracked connections (answers
//! to masqueraded ones, further packets to published ports) and ICMP errors about them are
//! translated and handed to their endpoint; a SYN (or a first UDP datagram) to a published port
//! opens a connection. Routed (`--no-masquerade`) endpoints are reached directly; anything else
//! addressed to an endpoint is dropped as unsolicited, whether or not the host forwards.
//! Everything else is the host's own traffic and passes untouched.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{Config, CtEntry, EndpointInfo, drop_reason, stage};

use crate::{
    conntrack::{self, Tracked},
    counters::{count_stage, drop_frame, drop_ip},
    forward::to_endpoint,
    icmp_error::{self, Origin, Translated},
    maps::{ENDPOINTS, NETWORKS, TAIL_CALLS},
    nat::{apply, decrement_ttl},
    packet::{Ipv4, L3, L4, parse, parse_l4},
    portmap::published,
    uplink::{self, Untracked},
};

#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    let ip = match parse(&ctx) {
        L3::Ipv4(ip) => ip,
        // The stack would drop it too; counted here, as `xdp_uplink` counts it.
        L3::Malformed => return drop_frame(&ctx, drop_reason::MALFORMED),
        L3::Other => return TC_ACT_OK,
    };
    if let Some(reason) = uplink::refused(&ip) {
        return drop_ip(&ctx, &ip, reason);
    }
    let Some(cfg) = conntrack::config() else {
        return TC_ACT_OK;
    };
    if icmp_error::is_error(&ctx, &ip) {
        return icmp(&ctx, cfg, &ip);
    }
    if uplink::guards_first_fragment(&ctx, cfg, &ip) {
        return drop_ip(&ctx, &ip, drop_reason::FRAGMENT);
    }
    let Some(l4) = parse_l4(&ctx, &ip) else {
        return routed_or_unsolicited(&ctx, &ip);
    };
    match conntrack::lookup(&conntrack::key(&ip, &l4), &l4) {
        Tracked::Translate(to) => translated(&ctx, &ip, &l4, &to),
        Tracked::Refuse(reason) => drop_ip(&ctx, &ip, reason),
        Tracked::No if published(&ip, &l4).is_some() => {
            if ip.ttl <= 1 {
                return drop_ip(&ctx, &ip, drop_reason::TTL_EXPIRED);
            }
            // Opening a connection is a program of its own: verified apart, with its own stack.
            unsafe { TAIL_CALLS.tail_call(&ctx, stage::FROM_UPLINK_OPEN) };
            drop_ip(&ctx, &ip, drop_reason::DATAPATH_INCOMPLETE)
        }
        Tracked::No => routed_or_unsolicited(&ctx, &ip),
    }
}

/// A first packet to a published port: a SYN (or a first datagram) opens a connection to its
/// endpoint, anything else is refused.
#[classifier]
pub fn from_uplink_open(ctx: TcContext) -> i32 {
    count_stage(stage::FROM_UPLINK_OPEN);
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

/// An ICMP error: translated when it is about a tracked connection. Inlined into the program,
/// whose frame it shares: as a subprogram of its own, its frame stacked between the program's
/// and `translate_into`'s passed the 512 bytes a chain may use.
#[inline(always)]
fn icmp(ctx: &TcContext, cfg: &Config, ip: &Ipv4) -> i32 {
    match icmp_error::translate(ctx, cfg, ip, Origin::Uplink) {
        Translated::To(_, daddr) => match unsafe { ENDPOINTS.get(&daddr) } {
            Some(ep) => deliver(ctx, ip, ep, daddr),
            None => drop_ip(ctx, ip, drop_reason::DATAPATH_INCOMPLETE),
        },
        Translated::Foreign => drop_ip(ctx, ip, drop_reason::FOREIGN_ERROR),
        Translated::Expired => drop_ip(ctx, ip, drop_reason::TTL_EXPIRED),
        Translated::Broken => drop_ip(ctx, ip, drop_reason::MALFORMED),
        Translated::No => routed_or_unsolicited(ctx, ip),
    }
}

/// A packet of a tracked connection, translated and handed to its endpoint. One with no hop
/// left is dropped untranslated: the stack's time-exceeded would quote the endpoint's address.
#[inline(never)]
fn translated(ctx: &TcContext, ip: &Ipv4, l4: &L4, to: &CtEntry) -> i32 {
    let Some(ep) = (unsafe { ENDPOINTS.get(&to.daddr) }) else {
        return drop_ip(ctx, ip, drop_reason::DATAPATH_INCOMPLETE);
    };
    if ip.ttl <= 1 {
        return drop_ip(ctx, ip, drop_reason::TTL_EXPIRED);
    }
    if apply(ctx, ip, l4, to).is_none() {
        return drop_ip(ctx, ip, drop_reason::MALFORMED);
    }
    deliver(ctx, ip, ep, to.daddr)
}

/// Traffic for an endpoint outside any connection: see `uplink::untracked`.
#[inline(always)]
fn routed_or_unsolicited(ctx: &TcContext, ip: &Ipv4) -> i32 {
    match uplink::untracked(ip) {
        Untracked::Host => TC_ACT_OK,
        Untracked::Routed(ep) => deliver(ctx, ip, ep, ip.daddr),
        Untracked::Unsolicited => drop_ip(ctx, ip, drop_reason::UNSOLICITED),
        Untracked::Unknown => drop_ip(ctx, ip, drop_reason::DATAPATH_INCOMPLETE),
    }
}

/// Hands a packet (translated with hops left, or a routed network's) to its endpoint.
#[inline(always)]
fn deliver(ctx: &TcContext, ip: &Ipv4, ep: &EndpointInfo, daddr: u32) -> i32 {
    let Some(net) = (unsafe { NETWORKS.get(&ep.network_id) }) else {
        return drop_ip(ctx, ip, drop_reason::DATAPATH_INCOMPLETE);
    };
    if !decrement_ttl(ctx, ip) {
        // Only a routed network's packet, untranslated, gets here with no hop left: the stack
        // answers it with time-exceeded.
        return TC_ACT_OK;
    }
    to_endpoint(ctx, ep, Some(&net.gateway_mac), ip.saddr, daddr)
}
