//! XDP on the uplink: the accelerated variant of `from_uplink` for the inbound hot path.
//! Packets of tracked connections and first packets to published ports are translated and
//! redirected to their endpoint's veth before an skb exists; everything else (ICMP errors,
//! routed endpoints, refusals, the host's own traffic) passes on to `from_uplink`, which
//! judges it again, counts its drops and hands the rest to the stack.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_redirect,
    macros::xdp,
    programs::XdpContext,
};
use netpath_common::stat_kind;

use crate::{
    conntrack::{self, Tracked},
    counters::{bump, count_rx},
    frame::Frame,
    maps::{ENDPOINTS, NETWORKS},
    nat::{apply, decrement_ttl},
    packet::{L3, parse, parse_l4},
};

#[xdp]
pub fn xdp_uplink(ctx: XdpContext) -> u32 {
    let L3::Ipv4(ip) = parse(&ctx) else {
        return XDP_PASS;
    };
    let Some(l4) = parse_l4(&ctx, &ip) else {
        return XDP_PASS;
    };
    // Spoofed endpoint sources go on to `from_uplink`, which drops and counts them.
    if ip.ttl <= 1 || unsafe { ENDPOINTS.get(&ip.saddr) }.is_some() {
        return XDP_PASS;
    }
    let Tracked::Translate(to) = conntrack::inbound(&ip, &l4) else {
        return XDP_PASS;
    };
    // SAFETY (map reads): plain data the control plane replaces whole.
    let Some(ep) = (unsafe { ENDPOINTS.get(&to.daddr) }) else {
        return XDP_PASS;
    };
    let Some(net) = (unsafe { NETWORKS.get(&ep.network_id) }) else {
        return XDP_PASS;
    };
    let rewritten = apply(&ctx, &ip, &l4, &to).is_some()
        && decrement_ttl(&ctx, &ip)
        && ctx.store(0, &ep.mac).is_some()
        && ctx.store(6, &net.gateway_mac).is_some();
    if !rewritten {
        return XDP_DROP;
    }
    let len = Frame::len(&ctx) as u32;
    count_rx(ep.slot, len);
    bump(stat_kind::XDP_REDIRECT, 0, len);
    unsafe { bpf_redirect(ep.host_ifindex, 0) as u32 }
}
