//! TCX ingress on every endpoint's host-side veth: what the container sends.
//!
//! IPv4 unicast to another endpoint of the same network is handed straight to that endpoint's
//! veth peer with `bpf_redirect_peer`, so it never crosses the bridge or netfilter. Endpoints of
//! other networks are unreachable. Everything else (ARP, broadcast, traffic for the host) falls
//! through to the bridge.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use netpath_common::{drop_reason, stat_kind};

use crate::{
    counters::{count, drop_packet},
    maps::ENDPOINTS,
    packet::{L3, addr, parse},
};

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    let (eth, ip) = match parse(&ctx) {
        L3::Other => return TC_ACT_OK,
        L3::Malformed => {
            drop_packet(&ctx, drop_reason::MALFORMED, 0, 0, 0);
            return TC_ACT_SHOT;
        }
        L3::Ipv4 { eth, ip } => (eth, ip),
    };
    let saddr = addr(ip.src_addr);
    let daddr = addr(ip.dst_addr);
    let ingress_ifindex = unsafe { (*ctx.skb.skb).ifindex };

    // SAFETY: map values are only read here; the control plane replaces them whole.
    let Some(src) = (unsafe { ENDPOINTS.get(&saddr) }) else {
        drop_packet(&ctx, drop_reason::SOURCE_MISMATCH, saddr, daddr, ip.proto);
        return TC_ACT_SHOT;
    };
    if src.host_ifindex != ingress_ifindex {
        drop_packet(&ctx, drop_reason::SOURCE_MISMATCH, saddr, daddr, ip.proto);
        return TC_ACT_SHOT;
    }
    count(stat_kind::ENDPOINT_TX, ingress_ifindex, ctx.len());

    let Some(dst) = (unsafe { ENDPOINTS.get(&daddr) }) else {
        return TC_ACT_OK;
    };
    if dst.network_id != src.network_id {
        drop_packet(&ctx, drop_reason::POLICY, saddr, daddr, ip.proto);
        return TC_ACT_SHOT;
    }
    // The sender resolved the peer over the bridge; set the MAC anyway so a stale neighbour
    // entry in the sender cannot misaddress the frame we deliver.
    eth.dst_addr = dst.mac;
    let target = dst.host_ifindex;
    let len = ctx.len();
    let action = unsafe { bpf_redirect_peer(target, 0) } as i32;
    if action == TC_ACT_SHOT {
        drop_packet(&ctx, drop_reason::REDIRECT_FAILED, saddr, daddr, 0);
        return TC_ACT_SHOT;
    }
    count(stat_kind::ENDPOINT_RX, target, len);
    action
}
