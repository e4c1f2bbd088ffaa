//! TCX ingress on every endpoint's host-side veth: what the container sends.
//!
//! In order: packets of a tracked connection are translated and sent on (masqueraded egress,
//! answers to a published port); to another endpoint of the same network, straight to its veth
//! peer with `bpf_redirect_peer`, never crossing the bridge or netfilter; to an endpoint of
//! another network, dropped; to a published port on a host address, translated to its
//! endpoint (hairpin); to the outside through the uplink, masqueraded and sent with
//! `bpf_redirect_neigh`. Everything else (ARP, broadcast, the gateway, the host's own
//! addresses) falls through to the bridge.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{Config, CtEntry, EndpointInfo, NetworkInfo, PortTarget, drop_reason, network_flags, stat_kind};

use crate::{
    conntrack,
    counters::{count, drop_packet},
    forward::{Route, route, to_endpoint, to_next_hop},
    maps::{ENDPOINTS, NETWORKS},
    nat::{apply, decrement_ttl},
    packet::{Ipv4, L3, L4, parse, parse_l4},
    portmap::published,
};

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    let ip = match parse(&ctx) {
        L3::Other => return TC_ACT_OK,
        L3::Malformed => {
            drop_packet(&ctx, drop_reason::MALFORMED, 0, 0, 0);
            return TC_ACT_SHOT;
        }
        L3::Ipv4(ip) => ip,
    };
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY (map reads below): values are plain data the control plane replaces whole.
    let src = match unsafe { ENDPOINTS.get(&ip.saddr) } {
        Some(src) if src.host_ifindex == ingress_ifindex => src,
        _ => return drop(&ctx, &ip, drop_reason::SOURCE_MISMATCH),
    };
    count(stat_kind::ENDPOINT_TX, ingress_ifindex, ctx.len());
    let Some(net) = (unsafe { NETWORKS.get(&src.network_id) }) else {
        return TC_ACT_OK;
    };
    let l4 = parse_l4(&ctx, &ip);
    let cfg = conntrack::config();
    if let (Some(l4), Some(cfg)) = (&l4, cfg) {
        if let Some(to) = conntrack::lookup(cfg, &conntrack::key(&ip, l4), l4.tcp_flags) {
            return send_translated(&ctx, &ip, l4, &to, net);
        }
    }

    if let Some(dst) = unsafe { ENDPOINTS.get(&ip.daddr) } {
        if dst.network_id != src.network_id {
            return drop(&ctx, &ip, drop_reason::POLICY);
        }
        // The sender resolved the peer over the bridge; set the MAC anyway so a stale
        // neighbour entry in the sender cannot misaddress the frame we deliver.
        return to_endpoint(&ctx, dst, None, ip.saddr, ip.daddr);
    }
    if let (Some(l4), Some(cfg)) = (&l4, cfg) {
        if let Some(target) = published(&ip, l4).filter(|_| conntrack::opens(ip.proto, l4.tcp_flags)) {
            return hairpin(&ctx, cfg, &ip, l4, target, net);
        }
    }
    if ip.daddr & net.mask == net.subnet {
        return TC_ACT_OK;
    }
    if net.flags & network_flags::INTERNAL != 0 {
        return drop(&ctx, &ip, drop_reason::EGRESS_DENIED);
    }
    egress(&ctx, &ip, l4.as_ref(), net)
}

/// A container dialling a published port on a host address reaches the endpoint behind it.
/// When that is the caller itself, the source becomes the gateway too: a packet from its own
/// address would be dropped as a martian, and the answer must come back through here.
#[inline(always)]
fn hairpin(ctx: &TcContext, cfg: &Config, ip: &Ipv4, l4: &L4, target: &PortTarget, net: &NetworkInfo) -> i32 {
    let to_self = target.addr == ip.saddr;
    let out = CtEntry {
        saddr: if to_self { net.gateway } else { ip.saddr },
        daddr: target.addr,
        sport: l4.sport,
        dport: target.port,
        ..Default::default()
    };
    match conntrack::create(cfg, &conntrack::key(ip, l4), out, l4.tcp_flags, to_self) {
        Ok(to) => send_translated(ctx, ip, l4, &to, net),
        Err(reason) => drop(ctx, ip, reason),
    }
}

/// Rewrites a packet of a tracked connection and sends it where its new destination is: an
/// endpoint, or the outside through the uplink.
#[inline(always)]
fn send_translated(ctx: &TcContext, ip: &Ipv4, l4: &L4, to: &CtEntry, net: &NetworkInfo) -> i32 {
    if let Some(ep) = unsafe { ENDPOINTS.get(&to.daddr) } {
        if apply(ctx, ip, l4, to).is_none() {
            return drop(ctx, ip, drop_reason::MALFORMED);
        }
        return deliver(ctx, ep, to.saddr, to.daddr);
    }
    let next_hop = match route(ctx, to.saddr, to.daddr, ip.proto, net) {
        Route::Uplink(next_hop) if ip.ttl > 1 => next_hop,
        // Untranslated, so the stack's "fragmentation needed" (or time exceeded) reaches the
        // endpoint's socket.
        Route::TooBig if ip.dont_fragment => return TC_ACT_OK,
        Route::Uplink(_) => return TC_ACT_OK,
        _ => return drop(ctx, ip, drop_reason::NOT_UPLINK),
    };
    if apply(ctx, ip, l4, to).is_none() || !decrement_ttl(ctx, ip) {
        return drop(ctx, ip, drop_reason::MALFORMED);
    }
    to_next_hop(ctx, net.uplink_ifindex, next_hop, to.saddr, to.daddr)
}

/// To an endpoint, from its network's gateway: the routed hop the translation stands for.
#[inline(always)]
fn deliver(ctx: &TcContext, ep: &EndpointInfo, saddr: u32, daddr: u32) -> i32 {
    let gateway_mac = unsafe { NETWORKS.get(&ep.network_id) }.map(|n| &n.gateway_mac);
    to_endpoint(ctx, ep, gateway_mac, saddr, daddr)
}

/// Leaves through the uplink when the routing table says so, masqueraded if the network is.
#[inline(always)]
fn egress(ctx: &TcContext, ip: &Ipv4, l4: Option<&L4>, net: &NetworkInfo) -> i32 {
    if net.uplink_ifindex == 0 || ip.ttl <= 1 {
        return TC_ACT_OK;
    }
    let masquerade = net.flags & network_flags::MASQUERADE != 0;
    let next_hop = match route(ctx, ip.saddr, ip.daddr, ip.proto, net) {
        Route::Uplink(next_hop) => next_hop,
        // The stack answers with "fragmentation needed"; it would fragment the rest and send
        // it untranslated, so that is dropped.
        Route::TooBig if ip.dont_fragment || !masquerade => return TC_ACT_OK,
        Route::TooBig => return drop(ctx, ip, drop_reason::NAT_UNSUPPORTED),
        // The bridge forwards (the FIB lookup needs it), so what the stack would send out of
        // another interface would leave untranslated: masqueraded networks fail closed.
        Route::Elsewhere if masquerade => return drop(ctx, ip, drop_reason::NOT_UPLINK),
        Route::Elsewhere | Route::Stack => return TC_ACT_OK,
    };
    let mut saddr = ip.saddr;
    if masquerade {
        let (Some(l4), Some(cfg)) = (l4, conntrack::config()) else {
            return drop(ctx, ip, drop_reason::NAT_UNSUPPORTED);
        };
        let out = CtEntry { saddr: net.snat_addr, daddr: ip.daddr, sport: 0, dport: l4.dport, ..Default::default() };
        let to = match conntrack::create(cfg, &conntrack::key(ip, l4), out, l4.tcp_flags, true) {
            Ok(to) => to,
            Err(reason) => return drop(ctx, ip, reason),
        };
        if apply(ctx, ip, l4, &to).is_none() {
            return drop(ctx, ip, drop_reason::MALFORMED);
        }
        saddr = to.saddr;
    }
    if !decrement_ttl(ctx, ip) {
        return drop(ctx, ip, drop_reason::MALFORMED);
    }
    to_next_hop(ctx, net.uplink_ifindex, next_hop, saddr, ip.daddr)
}

#[inline(always)]
fn drop(ctx: &TcContext, ip: &Ipv4, reason: u32) -> i32 {
    drop_packet(ctx, reason, ip.saddr, ip.daddr, ip.proto);
    TC_ACT_SHOT
}
