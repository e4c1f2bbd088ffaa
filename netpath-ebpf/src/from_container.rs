//! TCX ingress on every endpoint's host-side veth: what the container sends.
//!
//! To another endpoint of the same network: straight to its veth peer (`bpf_redirect_peer`),
//! never crossing the bridge or netfilter. To an endpoint of another network: dropped. To the
//! outside through the uplink: masqueraded and sent with `bpf_redirect_neigh`. Everything else
//! (ARP, broadcast, the gateway, the host's own addresses) falls through to the bridge.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{NetworkInfo, drop_reason, network_flags, stat_kind};

use crate::{
    conntrack,
    counters::{count, drop_packet},
    forward::{Route, route, to_endpoint, to_next_hop},
    maps::{ENDPOINTS, NETWORKS},
    nat::{Side, decrement_ttl, rewrite},
    packet::{Ipv4, L3, parse, parse_l4},
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

    if let Some(dst) = unsafe { ENDPOINTS.get(&ip.daddr) } {
        if dst.network_id != src.network_id {
            return drop(&ctx, &ip, drop_reason::POLICY);
        }
        // The sender resolved the peer over the bridge; set the MAC anyway so a stale
        // neighbour entry in the sender cannot misaddress the frame we deliver.
        return to_endpoint(&ctx, dst, None, ip.saddr, ip.daddr);
    }
    let Some(net) = (unsafe { NETWORKS.get(&src.network_id) }) else {
        return TC_ACT_OK;
    };
    if ip.daddr & net.mask == net.subnet {
        return TC_ACT_OK;
    }
    if net.flags & network_flags::INTERNAL != 0 {
        return drop(&ctx, &ip, drop_reason::EGRESS_DENIED);
    }
    egress(&ctx, &ip, net)
}

/// Leaves through the uplink when the routing table says so, masqueraded if the network is.
#[inline(always)]
fn egress(ctx: &TcContext, ip: &Ipv4, net: &NetworkInfo) -> i32 {
    if net.uplink_ifindex == 0 || ip.ttl <= 1 {
        return TC_ACT_OK;
    }
    let next_hop = match route(ctx, ip, net) {
        Route::Uplink(next_hop) => next_hop,
        // The stack answers with "fragmentation needed"; it would fragment the rest and send
        // it untranslated, so that is dropped.
        Route::TooBig if ip.dont_fragment || net.flags & network_flags::MASQUERADE == 0 => return TC_ACT_OK,
        Route::TooBig => return drop(ctx, ip, drop_reason::NAT_UNSUPPORTED),
        Route::Elsewhere => return TC_ACT_OK,
    };
    let mut saddr = ip.saddr;
    if net.flags & network_flags::MASQUERADE != 0 {
        let (Some(l4), Some(cfg)) = (parse_l4(ctx, ip), conntrack::config()) else {
            return drop(ctx, ip, drop_reason::NAT_UNSUPPORTED);
        };
        let (addr, port) = match conntrack::snat(cfg, ip, &l4, net.snat_addr) {
            Ok(t) => t,
            Err(reason) => return drop(ctx, ip, reason),
        };
        if rewrite(ctx, ip, &l4, Side::Source, addr, port).is_err() {
            return drop(ctx, ip, drop_reason::MALFORMED);
        }
        saddr = addr;
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
