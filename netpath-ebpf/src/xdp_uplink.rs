//! XDP on the uplink: the accelerated variant of `from_uplink` for inbound traffic, attached in
//! native (driver) mode where the device has it. It refuses what `from_uplink` refuses, under the
//! same drop reasons (`uplink`, `conntrack`), before the stack allocates anything for it; packets
//! of tracked connections and first packets to published ports are translated and redirected
//! through `XDP_TARGETS` to their endpoint's host veth, whose peer (the container's side) takes
//! them. Everything it does not finish (ARP, ICMP errors, routed endpoints, the host's own
//! traffic, endpoints not in `XDP_TARGETS`) passes on to `from_uplink`, which judges it again.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    macros::xdp,
    programs::XdpContext,
};
use netpath_common::{CtEntry, drop_reason, stat_kind};

use crate::{
    conntrack::{self, Tracked},
    counters::{bump, count_rx, report_drop},
    frame::Frame,
    icmp_error,
    maps::{ENDPOINTS, NETWORKS, XDP_TARGETS},
    nat::{apply, decrement_ttl},
    packet::{Ipv4, L3, L4, parse, parse_l4},
    uplink::{self, Untracked},
};

#[xdp]
pub fn xdp_uplink(ctx: XdpContext) -> u32 {
    let ip = match parse(&ctx) {
        L3::Ipv4(ip) => ip,
        L3::Malformed => return dropped(&ctx, 0, 0, 0, drop_reason::MALFORMED),
        L3::Other => return XDP_PASS,
    };
    if let Some(reason) = uplink::refused(&ip) {
        return dropped_ip(&ctx, &ip, reason);
    }
    let Some(cfg) = conntrack::config() else {
        return XDP_PASS;
    };
    // ICMP errors are translated through their embedded header by `from_uplink`; they are rare.
    if icmp_error::is_error(&ctx, &ip) {
        return XDP_PASS;
    }
    if uplink::guards_first_fragment(&ctx, cfg, &ip) {
        return dropped_ip(&ctx, &ip, drop_reason::FRAGMENT);
    }
    let Some(l4) = parse_l4(&ctx, &ip) else {
        return untracked(&ctx, &ip);
    };
    // Expiring TTLs are for `from_uplink`: it drops a translated connection's before rewriting.
    if ip.ttl <= 1 {
        return XDP_PASS;
    }
    match conntrack::inbound(&ip, &l4) {
        Tracked::Translate(to) => redirect(&ctx, &ip, &l4, &to),
        Tracked::Refuse(reason) => dropped_ip(&ctx, &ip, reason),
        Tracked::No => untracked(&ctx, &ip),
    }
}

/// A packet outside any connection: only what `from_uplink` would drop is dropped here.
#[inline(always)]
fn untracked(ctx: &XdpContext, ip: &Ipv4) -> u32 {
    match uplink::untracked(ip) {
        Untracked::Host | Untracked::Routed(_) => XDP_PASS,
        Untracked::Unsolicited => dropped_ip(ctx, ip, drop_reason::UNSOLICITED),
        Untracked::Unknown => dropped_ip(ctx, ip, drop_reason::DATAPATH_INCOMPLETE),
    }
}

/// A packet of a tracked connection: translated, addressed from the gateway to the endpoint and
/// sent through its host veth.
#[inline(never)]
fn redirect(ctx: &XdpContext, ip: &Ipv4, l4: &L4, to: &CtEntry) -> u32 {
    // SAFETY (map reads): plain data the control plane replaces whole.
    let Some(ep) = (unsafe { ENDPOINTS.get(&to.daddr) }) else {
        return XDP_PASS;
    };
    // Not a target (yet): `from_uplink` finds the same connection and delivers it.
    if XDP_TARGETS.get(ep.host_ifindex).is_none() {
        return XDP_PASS;
    }
    let Some(net) = (unsafe { NETWORKS.get(&ep.network_id) }) else {
        return XDP_PASS;
    };
    let rewritten = apply(ctx, ip, l4, to).is_some()
        && decrement_ttl(ctx, ip)
        && ctx.store(0, &ep.mac).is_some()
        && ctx.store(6, &net.gateway_mac).is_some();
    if !rewritten {
        return dropped_ip(ctx, ip, drop_reason::MALFORMED);
    }
    let len = Frame::len(ctx) as u32;
    match XDP_TARGETS.redirect(ep.host_ifindex, 0) {
        Ok(action) => {
            count_rx(ep.slot, len);
            bump(stat_kind::XDP_REDIRECT, 0, len);
            action
        }
        Err(_) => dropped(ctx, ip.saddr, to.daddr, ip.proto, drop_reason::REDIRECT_FAILED),
    }
}

#[inline(always)]
fn dropped_ip(ctx: &XdpContext, ip: &Ipv4, reason: u32) -> u32 {
    dropped(ctx, ip.saddr, ip.daddr, ip.proto, reason)
}

/// Counts and reports a dropped frame, as the TC programs do.
#[inline(always)]
fn dropped(ctx: &XdpContext, saddr: u32, daddr: u32, protocol: u8, reason: u32) -> u32 {
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    report_drop(reason, ifindex, Frame::len(ctx) as u32, saddr, daddr, protocol);
    XDP_DROP
}
