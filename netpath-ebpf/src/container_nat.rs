//! The translating half of `from_container`, reached by tail calls for what is not plain
//! traffic between endpoints (the frame's source was checked there). Two programs, so that
//! each is verified (and holds its stack) on its own:
//!
//! - `from_container_nat`: packets of tracked connections (masqueraded egress, answers of a
//!   published port, hairpin) and ICMP errors about them, translated and sent on;
//! - `from_container_open`: what opens a connection: to a published port on a host address,
//!   translated to its endpoint (hairpin, same network only); to the outside through the
//!   uplink, masqueraded and sent with `bpf_redirect_neigh`. Everything else (the gateway, the
//!   host's own addresses) falls through to the bridge.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{CtEntry, EndpointInfo, NetworkInfo, PortTarget, drop_reason, network_flags, stage};

use crate::{
    conntrack::{self, Tracked},
    counters::{count_stage, drop_frame, drop_ip},
    dns,
    forward::{Route, route, to_endpoint, to_next_hop},
    icmp_error::{self, Origin, Translated},
    maps::{ENDPOINTS, NETWORKS, TAIL_CALLS, VETHS},
    nat::{apply, decrement_ttl},
    packet::{ETH_LEN, Ipv4, L4, parse_ipv4, parse_l4},
    portmap::published,
};

#[classifier]
pub fn from_container_nat(ctx: TcContext) -> i32 {
    count_stage(stage::FROM_CONTAINER_NAT);
    let Some((ip, from)) = sender(&ctx) else {
        return incomplete(&ctx);
    };
    match parse_l4(&ctx, &ip) {
        Some(l4) => match conntrack::lookup(&conntrack::key(&ip, &l4), &l4) {
            Tracked::Translate(to) => return send_translated(&ctx, &ip, Some(&l4), &to, &from),
            Tracked::Refuse(reason) => return drop_ip(&ctx, &ip, reason),
            Tracked::No => {}
        },
        None if icmp_error::is_error(&ctx, &ip) => {
            if let Some(cfg) = conntrack::config() {
                match icmp_error::translate(&ctx, cfg, &ip, Origin::Container) {
                    Translated::To(saddr, daddr) => {
                        let to = CtEntry { saddr, daddr, ..Default::default() };
                        return send_translated(&ctx, &ip, None, &to, &from);
                    }
                    Translated::Foreign => return drop_ip(&ctx, &ip, drop_reason::FOREIGN_ERROR),
                    Translated::Expired => return drop_ip(&ctx, &ip, drop_reason::TTL_EXPIRED),
                    Translated::Broken => return drop_ip(&ctx, &ip, drop_reason::MALFORMED),
                    Translated::No => {}
                }
            }
        }
        None => {}
    }
    unsafe { TAIL_CALLS.tail_call(&ctx, stage::FROM_CONTAINER_OPEN) };
    drop_ip(&ctx, &ip, drop_reason::DATAPATH_INCOMPLETE)
}

#[classifier]
pub fn from_container_open(ctx: TcContext) -> i32 {
    count_stage(stage::FROM_CONTAINER_OPEN);
    let Some((ip, from)) = sender(&ctx) else {
        return incomplete(&ctx);
    };
    let net = from.net;
    let l4 = parse_l4(&ctx, &ip);
    if let Some(l4) = &l4 {
        // The gateway's port 53 is the resolver's, whatever a container publishes there.
        if !dns::asks_gateway(ip.daddr, l4.dport, net) {
            if let Some(target) = published(&ip, l4) {
                return hairpin(&ctx, &ip, l4, target, &from);
            }
        }
    }
    if ip.daddr & net.mask == net.subnet {
        return TC_ACT_OK;
    }
    if net.flags & network_flags::INTERNAL != 0 {
        return drop_ip(&ctx, &ip, drop_reason::EGRESS_DENIED);
    }
    unsafe { TAIL_CALLS.tail_call(&ctx, stage::FROM_CONTAINER_EGRESS) };
    drop_ip(&ctx, &ip, drop_reason::DATAPATH_INCOMPLETE)
}

#[classifier]
pub fn from_container_egress(ctx: TcContext) -> i32 {
    count_stage(stage::FROM_CONTAINER_EGRESS);
    let Some((ip, from)) = sender(&ctx) else {
        return incomplete(&ctx);
    };
    egress(&ctx, &ip, &from)
}

/// Fails closed: `from_container` found the sender's `VETHS` entry, so a missing one here, or
/// a missing `NETWORKS` entry, means maps made anew and not refilled yet; without them nothing
/// can be isolated or translated, and the stack would route it out untranslated.
#[inline(always)]
fn incomplete(ctx: &TcContext) -> i32 {
    drop_frame(ctx, drop_reason::DATAPATH_INCOMPLETE)
}

/// The packet and the endpoint it came from (its frame was checked by `from_container`).
#[inline(always)]
fn sender(ctx: &TcContext) -> Option<(Ipv4, Sender<'static>)> {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY (map reads): values are plain data the control plane replaces whole.
    let veth = unsafe { VETHS.get(&ifindex) }?;
    let ip = parse_ipv4(ctx, ETH_LEN)?;
    let net = unsafe { NETWORKS.get(&veth.network_id) }?;
    Some((ip, Sender { net, network_id: veth.network_id, slot: veth.slot, veth: ifindex }))
}

/// The endpoint a packet came from: its network, for isolation and routing; its counter
/// slot, under which its SNAT ports are counted; its host veth, whose detach ends the
/// connections it opens.
struct Sender<'a> {
    net: &'a NetworkInfo,
    network_id: u32,
    slot: u16,
    veth: u32,
}

/// A container dialling a published port on a host address reaches the endpoint behind it,
/// on its own network only. The caller is translated to the gateway, as a proxy would show it:
/// the answer must come back through here, and a later direct connection between the two
/// endpoints can never be mistaken for this one.
#[inline(always)]
fn hairpin(ctx: &TcContext, ip: &Ipv4, l4: &L4, target: &PortTarget, from: &Sender) -> i32 {
    let Some(ep) = (unsafe { ENDPOINTS.get(&target.addr) }).filter(|ep| ep.network_id == from.network_id) else {
        return drop_ip(ctx, ip, drop_reason::POLICY);
    };
    if !conntrack::opens(ip.proto, l4.tcp_flags) {
        return drop_ip(ctx, ip, drop_reason::NOT_SYN);
    }
    let mut to = CtEntry {
        saddr: from.net.gateway,
        daddr: target.addr,
        dport: target.port,
        src_veth: from.veth,
        dst_veth: ep.host_ifindex,
        ..Default::default()
    };
    match conntrack::create(&conntrack::key(ip, l4), &mut to, l4, Some(from.slot)) {
        Ok(()) => send_translated(ctx, ip, Some(l4), &to, from),
        Err(reason) => drop_ip(ctx, ip, reason),
    }
}

/// Sends a packet of a tracked connection where its new destination is: an endpoint of the
/// sender's network, or the outside through the uplink. `l4` is the header to rewrite to
/// `to`; `None` when the packet is already rewritten (an ICMP error).
#[inline(never)]
fn send_translated(ctx: &TcContext, ip: &Ipv4, l4: Option<&L4>, to: &CtEntry, from: &Sender) -> i32 {
    let rewrite = || l4.is_none_or(|l4| apply(ctx, ip, l4, to).is_some());
    if let Some(ep) = unsafe { ENDPOINTS.get(&to.daddr) } {
        if ep.network_id != from.network_id {
            return drop_ip(ctx, ip, drop_reason::POLICY);
        }
        if !rewrite() {
            return drop_ip(ctx, ip, drop_reason::MALFORMED);
        }
        return deliver(ctx, ep, to.saddr, to.daddr);
    }
    let net = from.net;
    if net.flags & network_flags::INTERNAL != 0 {
        return drop_ip(ctx, ip, drop_reason::EGRESS_DENIED);
    }
    let next_hop = match route(ctx, to.saddr, to.daddr, ip.proto, net) {
        Route::Uplink(next_hop) if ip.ttl > 1 => next_hop,
        // Untranslated, so the stack's "fragmentation needed" (or time exceeded) reaches the
        // endpoint's socket.
        Route::TooBig if ip.dont_fragment => return TC_ACT_OK,
        Route::Uplink(_) => return TC_ACT_OK,
        _ => return drop_ip(ctx, ip, drop_reason::NOT_UPLINK),
    };
    if !rewrite() || !decrement_ttl(ctx, ip) {
        return drop_ip(ctx, ip, drop_reason::MALFORMED);
    }
    to_next_hop(ctx, net.uplink_ifindex, next_hop, to.saddr, to.daddr)
}

/// To an endpoint, from its network's gateway: the routed hop the translation stands for.
#[inline(always)]
fn deliver(ctx: &TcContext, ep: &EndpointInfo, saddr: u32, daddr: u32) -> i32 {
    let gateway_mac = unsafe { NETWORKS.get(&ep.network_id) }.map(|n| &n.gateway_mac);
    to_endpoint(ctx, ep, gateway_mac, saddr, daddr)
}

/// Leaves through the uplink when the routing table says so, masqueraded if the network is
/// (within the sender's quota).
#[inline(always)]
fn egress(ctx: &TcContext, ip: &Ipv4, from: &Sender) -> i32 {
    let net = from.net;
    if net.uplink_ifindex == 0 || ip.ttl <= 1 {
        return TC_ACT_OK;
    }
    let masquerade = net.flags & network_flags::MASQUERADE != 0;
    let next_hop = match route(ctx, ip.saddr, ip.daddr, ip.proto, net) {
        Route::Uplink(next_hop) => next_hop,
        // The stack answers with "fragmentation needed"; it would fragment the rest and send
        // it untranslated, so that is dropped.
        Route::TooBig if ip.dont_fragment || !masquerade => return TC_ACT_OK,
        Route::TooBig => return drop_ip(ctx, ip, drop_reason::NAT_UNSUPPORTED),
        // The bridge forwards (the FIB lookup needs it), so what the stack would send out of
        // another interface would leave untranslated: masqueraded networks fail closed.
        Route::Elsewhere if masquerade => return drop_ip(ctx, ip, drop_reason::NOT_UPLINK),
        Route::Elsewhere | Route::Stack => return TC_ACT_OK,
    };
    let mut saddr = ip.saddr;
    if masquerade {
        let Some(l4) = parse_l4(ctx, ip) else {
            return drop_ip(ctx, ip, drop_reason::NAT_UNSUPPORTED);
        };
        // A segment of no tracked connection (a bare ACK or RST) claims no port: only an opening
        // packet does, or a container could hold ports without opening anything.
        if !conntrack::opens(ip.proto, l4.tcp_flags) {
            return drop_ip(ctx, ip, drop_reason::NOT_SYN);
        }
        let mut to = CtEntry {
            saddr: net.snat_addr,
            daddr: ip.daddr,
            dport: l4.dport,
            src_veth: from.veth,
            ..Default::default()
        };
        if let Err(reason) = conntrack::create(&conntrack::key(ip, &l4), &mut to, &l4, Some(from.slot)) {
            return drop_ip(ctx, ip, reason);
        }
        if apply(ctx, ip, &l4, &to).is_none() {
            return drop_ip(ctx, ip, drop_reason::MALFORMED);
        }
        saddr = to.saddr;
    }
    if !decrement_ttl(ctx, ip) {
        return drop_ip(ctx, ip, drop_reason::MALFORMED);
    }
    to_next_hop(ctx, net.uplink_ifindex, next_hop, saddr, ip.daddr)
}
