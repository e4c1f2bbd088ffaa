//! TCX ingress on every endpoint's host-side veth: what the container sends.
//!
//! The frame must be one the endpoint may send: its own MAC as source, ARP about its own
//! address, IPv4 from its own address (to a group MAC only for a group address); IPv6, VLAN
//! tags and other ethertypes are dropped. IPv4 to another endpoint of the same network goes
//! straight to its veth peer with `bpf_redirect_peer`, never crossing the bridge, netfilter or
//! conntrack (another network's: dropped); to the host's loopback, nowhere. Everything else
//! goes on, by tail call, to the translating programs (`container_nat`), each verified on its
//! own.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use netpath_common::{VethInfo, drop_reason, stage};

use crate::{
    counters::{count_tx, drop_frame, drop_ip},
    forward::redirect_to_endpoint,
    maps::{ENDPOINTS, NETWORKS, TAIL_CALLS, VETHS},
    packet::{
        ETH_LEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, is_loopback, is_multicast_or_broadcast,
        mac_words, parse_arp, parse_eth, parse_ipv4,
    },
};

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY (map reads below): values are plain data the control plane replaces whole.
    let Some(veth) = (unsafe { VETHS.get(&ifindex) }) else {
        return drop_frame(&ctx, drop_reason::SOURCE_MISMATCH);
    };
    let Some(eth) = parse_eth(&ctx) else {
        return drop_frame(&ctx, drop_reason::MALFORMED);
    };
    if eth.src != mac_words(&veth.mac) {
        return drop_frame(&ctx, drop_reason::MAC_SPOOF);
    }
    // The stack moves a VLAN tag out of the frame before TC sees it.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return drop_frame(&ctx, drop_reason::VLAN);
    }
    match eth.proto {
        ETH_P_IP => {}
        ETH_P_ARP => return arp(&ctx, veth),
        ETH_P_IPV6 => return drop_frame(&ctx, drop_reason::IPV6),
        ETH_P_8021Q | ETH_P_8021AD => return drop_frame(&ctx, drop_reason::VLAN),
        _ => return drop_frame(&ctx, drop_reason::ETHERTYPE),
    }
    let Some(ip) = parse_ipv4(&ctx, ETH_LEN) else {
        return drop_frame(&ctx, drop_reason::MALFORMED);
    };
    if ip.saddr != veth.addr {
        return drop_ip(&ctx, &ip, drop_reason::SOURCE_MISMATCH);
    }
    count_tx(veth.slot, ctx.len());
    if eth.to_group {
        // The network is looked up only here: the unicast fast path below needs none of it.
        let Some(net) = (unsafe { NETWORKS.get(&veth.network_id) }) else {
            // Without the network, a group frame's destination cannot be judged: fail closed.
            return drop_ip(&ctx, &ip, drop_reason::DATAPATH_INCOMPLETE);
        };
        // A unicast address in a group frame would reach every port of the bridge.
        let group = is_multicast_or_broadcast(ip.daddr) || ip.daddr == net.subnet | !net.mask;
        return if group { TC_ACT_OK } else { drop_ip(&ctx, &ip, drop_reason::GROUP_MAC) };
    }
    if let Some(dst) = unsafe { ENDPOINTS.get(&ip.daddr) } {
        if dst.network_id != veth.network_id {
            return drop_ip(&ctx, &ip, drop_reason::POLICY);
        }
        // Nothing between endpoints is ever translated (hairpin callers are translated to the
        // gateway), so this needs no conntrack. The sender resolved the peer over the bridge,
        // so the frame normally carries the peer's MAC already: the write (a helper call per
        // packet) is left for a stale neighbour entry.
        if eth.dst != mac_words(&dst.mac) {
            let _ = ctx.store(0, &dst.mac, 0);
        }
        return redirect_to_endpoint(&ctx, dst, ip.saddr, ip.daddr);
    }
    // The host's loopback services trust their callers to be local; the kernel refuses 127/8
    // from a device only until `route_localnet` is set (kube-proxy sets it), so netpath does.
    if is_loopback(ip.daddr) {
        return drop_ip(&ctx, &ip, drop_reason::MARTIAN);
    }
    unsafe { TAIL_CALLS.tail_call(&ctx, stage::FROM_CONTAINER_NAT) };
    // Only a datapath loaded half-way has no program there: fail closed.
    drop_ip(&ctx, &ip, drop_reason::DATAPATH_INCOMPLETE)
}

/// ARP only about the endpoint itself: no answering for a neighbour's or the gateway's address.
#[inline(always)]
fn arp(ctx: &TcContext, veth: &VethInfo) -> i32 {
    match parse_arp(ctx) {
        Some(arp) if arp.sender_mac == mac_words(&veth.mac) && arp.sender_ip == veth.addr => TC_ACT_OK,
        _ => drop_frame(ctx, drop_reason::ARP_SPOOF),
    }
}
