//! TCX ingress on the uplink, shared by every network that uses it: packets of tracked
//! connections (replies to masqueraded ones, further packets to published ports) are
//! translated and handed to their endpoint; so are ICMP errors about them, through their
//! embedded headers. A first packet to a published port starts a connection to its endpoint.
//! Routed (`--no-masquerade`) endpoints are reached directly. Everything else is the host's
//! own traffic and passes untouched.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Config, EndpointInfo, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, drop_reason, network_flags};

use crate::{
    conntrack,
    counters::drop_packet,
    forward::to_endpoint,
    frame::Frame,
    maps::{ENDPOINTS, NETWORKS},
    nat::{apply, decrement_ttl, rewrite_covered},
    packet::{
        ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED, IP_CSUM_OFF, IP_DADDR_OFF, Ipv4, L3, icmp_type, load_u16,
        parse, parse_ipv4, parse_l4,
    },
};

#[classifier]
pub fn from_uplink(ctx: TcContext) -> i32 {
    let L3::Ipv4(ip) = parse(&ctx) else {
        return TC_ACT_OK;
    };
    let Some(cfg) = conntrack::config() else {
        return TC_ACT_OK;
    };
    // Nothing from the outside legitimately carries an endpoint's address as its source; such
    // a packet could forge state in the endpoint's own connections.
    if unsafe { ENDPOINTS.get(&ip.saddr) }.is_some() {
        drop_packet(&ctx, drop_reason::SOURCE_MISMATCH, ip.saddr, ip.daddr, ip.proto);
        return TC_ACT_SHOT;
    }
    if let Some(ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED) = icmp_type(&ctx, &ip) {
        return icmp_error(&ctx, cfg, &ip);
    }
    if let Some(l4) = parse_l4(&ctx, &ip) {
        if let Some(to) = conntrack::inbound(cfg, &ip, &l4) {
            let Some(ep) = (unsafe { ENDPOINTS.get(&to.daddr) }) else {
                return TC_ACT_OK;
            };
            if apply(&ctx, &ip, &l4, &to).is_none() {
                return TC_ACT_OK;
            }
            return deliver(&ctx, &ip, ep, to.daddr);
        }
    }
    routed(&ctx, &ip)
}

/// Traffic for an endpoint of a network that routes without masquerading.
#[inline(always)]
fn routed(ctx: &TcContext, ip: &Ipv4) -> i32 {
    let Some(ep) = (unsafe { ENDPOINTS.get(&ip.daddr) }) else {
        return TC_ACT_OK;
    };
    match unsafe { NETWORKS.get(&ep.network_id) } {
        Some(net) if net.flags & (network_flags::MASQUERADE | network_flags::INTERNAL) == 0 => {
            deliver(ctx, ip, ep, ip.daddr)
        }
        _ => TC_ACT_OK,
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

/// Destination unreachable (including fragmentation needed) and time exceeded about a packet
/// we masqueraded: the outer destination, and the embedded source address and port, go back
/// to the endpoint's, so its socket sees the error (ECONNREFUSED, PMTU updates).
#[inline(always)]
fn icmp_error(ctx: &TcContext, cfg: &Config, ip: &Ipv4) -> i32 {
    let inner_off = ip.l4_off + 8;
    let Some(inner) = parse_ipv4(ctx, inner_off) else {
        return TC_ACT_OK;
    };
    let sport_off = match inner.proto {
        IPPROTO_TCP | IPPROTO_UDP => inner.l4_off,
        // An echo request we sent carries our identifier where a source port would be.
        IPPROTO_ICMP if load_u16(ctx, inner.l4_off).map(|w| w.to_ne_bytes()[0]) == Some(ICMP_ECHO) => inner.l4_off + 4,
        _ => return TC_ACT_OK,
    };
    let (Some(sport), Some(dport)) = (load_u16(ctx, sport_off), load_inner_dport(ctx, &inner)) else {
        return TC_ACT_OK;
    };
    let Some(to) = conntrack::lookup_embedded(cfg, &inner, sport, dport) else {
        return TC_ACT_OK;
    };
    let (addr, port) = (to.daddr, to.dport);
    let Some(ep) = (unsafe { ENDPOINTS.get(&addr) }) else {
        return TC_ACT_OK;
    };
    let icmp_csum = ip.l4_off + 2;
    let inner_csum = inner_off + 10;
    let (Some(old_inner_csum), Some(())) = (load_u16(ctx, inner_csum), ctx.l3_csum(inner_csum, inner.saddr, addr, 4))
    else {
        return TC_ACT_OK;
    };
    let Some(new_inner_csum) = load_u16(ctx, inner_csum) else {
        return TC_ACT_OK;
    };
    let rewritten = ctx.l4_csum(icmp_csum, old_inner_csum.into(), new_inner_csum.into(), 2).is_some()
        && rewrite_covered(ctx, icmp_csum, inner_off + 12, inner.saddr, addr).is_some()
        && rewrite_covered(ctx, icmp_csum, sport_off, sport, port).is_some()
        && ctx.l3_csum(IP_CSUM_OFF, ip.daddr, addr, 4).is_some()
        && Frame::store(ctx, IP_DADDR_OFF, &addr).is_some();
    if !rewritten {
        return TC_ACT_OK;
    }
    deliver(ctx, ip, ep, addr)
}

/// The embedded packet's destination port; ICMP echo has none (0, as in `CtKey`).
#[inline(always)]
fn load_inner_dport(ctx: &TcContext, inner: &Ipv4) -> Option<u16> {
    if inner.proto == IPPROTO_ICMP { Some(0) } else { load_u16(ctx, inner.l4_off + 2) }
}
