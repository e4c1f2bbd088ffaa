//! Sending packets on: to an endpoint with `bpf_redirect_peer`, to the outside through the
//! uplink with `bpf_fib_lookup` + `bpf_redirect_neigh`. Neither path runs netfilter.
use aya_ebpf::{
    bindings::{BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_SHOT, bpf_fib_lookup as FibParams, bpf_redir_neigh},
    helpers::{bpf_fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netpath_common::{EndpointInfo, NetworkInfo, drop_reason, stat_kind};

use crate::{
    counters::{count, drop_packet},
    packet::Ipv4,
};

const AF_INET: u8 = 2;

/// The next hop when the kernel's routing table sends `ip` out of the network's uplink, as if
/// it had arrived on the network's bridge. Local destinations and other routes give `None`:
/// those packets are the host's business.
#[inline(always)]
pub fn uplink_next_hop(ctx: &TcContext, ip: &Ipv4, net: &NetworkInfo) -> Option<u32> {
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = ip.proto;
    params.__bindgen_anon_1.tot_len = ip.tot_len;
    params.ifindex = net.bridge_ifindex;
    params.__bindgen_anon_3.ipv4_src = ip.saddr;
    params.__bindgen_anon_4.ipv4_dst = ip.daddr;
    let rc = unsafe {
        bpf_fib_lookup(ctx.skb.skb.cast(), &mut params, core::mem::size_of::<FibParams>() as i32, 0)
    } as u32;
    let routed = rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH;
    if routed && params.ifindex == net.uplink_ifindex {
        Some(unsafe { params.__bindgen_anon_4.ipv4_dst })
    } else {
        None
    }
}

/// Sends the packet out of `ifindex` to `next_hop`, resolving its MAC like the stack would.
#[inline(always)]
pub fn to_next_hop(ctx: &TcContext, ifindex: u32, next_hop: u32, saddr: u32, daddr: u32) -> i32 {
    let mut nh = bpf_redir_neigh { nh_family: u32::from(AF_INET), __bindgen_anon_1: unsafe { core::mem::zeroed() } };
    nh.__bindgen_anon_1.ipv4_nh = next_hop;
    let action =
        unsafe { bpf_redirect_neigh(ifindex, &mut nh, core::mem::size_of::<bpf_redir_neigh>() as i32, 0) } as i32;
    if action == TC_ACT_SHOT as i32 {
        drop_packet(ctx, drop_reason::REDIRECT_FAILED, saddr, daddr, 0);
    }
    action
}

/// Hands the frame to the endpoint's `eth0`: addressed from `src_mac` to the endpoint.
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, ep: &EndpointInfo, src_mac: Option<&[u8; 6]>, saddr: u32, daddr: u32) -> i32 {
    let _ = ctx.store(0, &ep.mac, 0);
    if let Some(mac) = src_mac {
        let _ = ctx.store(6, mac, 0);
    }
    let target = ep.host_ifindex;
    let len = ctx.len();
    let action = unsafe { bpf_redirect_peer(target, 0) } as i32;
    if action == TC_ACT_SHOT as i32 {
        drop_packet(ctx, drop_reason::REDIRECT_FAILED, saddr, daddr, 0);
        return action;
    }
    count(stat_kind::ENDPOINT_RX, target, len);
    action
}
