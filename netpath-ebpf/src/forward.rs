//! Sending packets on: to an endpoint with `bpf_redirect_peer`, to the outside through the
//! uplink with `bpf_fib_lookup` + `bpf_redirect_neigh`. Neither path runs netfilter.
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_SHOT, bpf_fib_lookup as FibParams, bpf_redir_neigh,
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use netpath_common::{EndpointInfo, NetworkInfo, drop_reason};

use crate::{
    counters::{count_rx, drop_packet},
    maps::HOST_ADDRS,
};

const AF_INET: u8 = 2;
/// `bpf_check_mtu`: check each segment of a GSO packet, not only its total length.
const BPF_MTU_CHK_SEGS: u64 = 1;
const PACKET_HOST: u32 = 0;

/// Where the kernel's routing table sends a packet, asked as if it had arrived on the
/// network's bridge.
pub enum Route {
    /// Out of the network's uplink, to this next hop; 0 when the kernel is to resolve it
    /// while sending (see `route_into`).
    Uplink(u32),
    /// Out of the uplink, but larger than its MTU (or, for a GSO packet, its segments are).
    TooBig,
    /// Out of another interface.
    Elsewhere,
    /// Local delivery, or no route: the stack answers (or sends the ICMP error).
    Stack,
}

#[inline(always)]
pub fn route(ctx: &TcContext, saddr: u32, daddr: u32, proto: u8, net: &NetworkInfo) -> Route {
    let mut query = RouteQuery { saddr, daddr, proto, next_hop: 0 };
    match route_into(ctx, net, &mut query) {
        UPLINK => Route::Uplink(query.next_hop),
        TOO_BIG => Route::TooBig,
        ELSEWHERE => Route::Elsewhere,
        _ => Route::Stack,
    }
}

/// A route lookup's question, and the next hop it answers.
struct RouteQuery {
    saddr: u32,
    daddr: u32,
    proto: u8,
    next_hop: u32,
}

// `Route` as a scalar: `route_into` is a subprogram of its own, so its 64-byte FIB question
// stays out of the callers' stack frames.
const UPLINK: u32 = 0;
const TOO_BIG: u32 = 1;
const ELSEWHERE: u32 = 2;
const STACK: u32 = 3;

#[inline(never)]
fn route_into(ctx: &TcContext, net: &NetworkInfo, query: &mut RouteQuery) -> u32 {
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = query.proto;
    // tot_len stays 0: the helper then checks the skb itself against the MTU, which lets GSO
    // packets through; a tot_len would be compared as is and refuse every GSO packet.
    params.ifindex = net.bridge_ifindex;
    params.__bindgen_anon_3.ipv4_src = query.saddr;
    params.__bindgen_anon_4.ipv4_dst = query.daddr;
    let rc =
        unsafe { bpf_fib_lookup(ctx.skb.skb.cast(), &mut params, core::mem::size_of::<FibParams>() as i32, 0) } as u32;
    let uplink = params.ifindex == net.uplink_ifindex;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH if uplink => {
            if !fits_mtu(ctx, net.uplink_ifindex) {
                return TOO_BIG;
            }
            query.next_hop = unsafe { params.__bindgen_anon_4.ipv4_dst };
            UPLINK
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED if uplink => TOO_BIG,
        // Writing `net.ipv4.ip_forward` resets every interface's `forwarding`, the bridge's
        // too, and the helper then refuses to look anything up. The datapath must not depend
        // on a global sysctl: what is not one of the host's addresses leaves by the uplink,
        // and `bpf_redirect_neigh` routes it there as the host's own output would.
        BPF_FIB_LKUP_RET_FWD_DISABLED if net.uplink_ifindex != 0 => {
            if unsafe { HOST_ADDRS.get(&query.daddr) }.is_some() {
                return STACK;
            }
            if !fits_mtu(ctx, net.uplink_ifindex) {
                return TOO_BIG;
            }
            query.next_hop = 0;
            UPLINK
        }
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH | BPF_FIB_LKUP_RET_FRAG_NEEDED => ELSEWHERE,
        _ => STACK,
    }
}

/// The FIB lookup lets every GSO packet through; its segments must fit the uplink too, or
/// the uplink would send frames larger than its MTU.
#[inline(always)]
fn fits_mtu(ctx: &TcContext, ifindex: u32) -> bool {
    let mut mtu_len = 0u32;
    unsafe { bpf_check_mtu(ctx.skb.skb.cast(), ifindex, &mut mtu_len, 0, BPF_MTU_CHK_SEGS) == 0 }
}

/// Sends the packet out of `ifindex` to `next_hop`, resolving its MAC like the stack would.
#[inline(always)]
pub fn to_next_hop(ctx: &TcContext, ifindex: u32, next_hop: u32, saddr: u32, daddr: u32) -> i32 {
    let mut nh = bpf_redir_neigh { nh_family: u32::from(AF_INET), __bindgen_anon_1: unsafe { core::mem::zeroed() } };
    nh.__bindgen_anon_1.ipv4_nh = next_hop;
    // Without a next hop the helper looks the route up itself, as for the host's own output.
    let (params, len) = match next_hop {
        0 => (core::ptr::null_mut(), 0),
        _ => (&mut nh as *mut bpf_redir_neigh, core::mem::size_of::<bpf_redir_neigh>() as i32),
    };
    let action = unsafe { bpf_redirect_neigh(ifindex, params, len, 0) } as i32;
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
    redirect_to_endpoint(ctx, ep, saddr, daddr)
}

/// Hands a frame already addressed to the endpoint to its `eth0`.
#[inline(always)]
pub fn redirect_to_endpoint(ctx: &TcContext, ep: &EndpointInfo, saddr: u32, daddr: u32) -> i32 {
    // The frame arrived addressed to another MAC than the receiving veth's; kernels before
    // 6.15 keep that packet type across `bpf_redirect_peer` and the endpoint drops it.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        let _ = ctx.change_type(PACKET_HOST);
    }
    let len = ctx.len();
    let action = unsafe { bpf_redirect_peer(ep.host_ifindex, 0) } as i32;
    if action == TC_ACT_SHOT as i32 {
        drop_packet(ctx, drop_reason::REDIRECT_FAILED, saddr, daddr, 0);
        return action;
    }
    count_rx(ep.slot, len);
    action
}
