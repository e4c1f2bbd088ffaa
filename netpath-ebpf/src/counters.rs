//! Per-endpoint and per-drop-reason counters, and drop events for `netpath monitor`.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use netpath_common::{Counter, DropEvent, StatKey, stat_kind};

use crate::{
    maps::{EVENTS, STATS},
    packet::Ipv4,
};

/// Adds one packet to a counter the control plane created when it attached the endpoint;
/// `false` when there is no such counter.
#[inline(always)]
pub fn count(kind: u32, id: u32, bytes: u32) -> bool {
    let Some(counter) = STATS.get_ptr_mut(&StatKey { kind, id }) else {
        return false;
    };
    // SAFETY: per-CPU value, so no other CPU writes it concurrently.
    unsafe {
        (*counter).packets += 1;
        (*counter).bytes += u64::from(bytes);
    }
    true
}

/// Adds one packet to a counter that is created on first use (drop reasons, XDP).
#[inline(always)]
pub fn bump(kind: u32, id: u32, bytes: u32) {
    if !count(kind, id, bytes) {
        // First use on any CPU; a racing insert from another CPU wins and this packet goes
        // uncounted, which a counter can afford.
        let _ = STATS.insert(&StatKey { kind, id }, &Counter { packets: 1, bytes: u64::from(bytes) }, 0);
    }
}

/// Counts a dropped packet under its reason and reports it; the caller returns TC_ACT_SHOT.
#[inline(always)]
pub fn drop_packet(ctx: &TcContext, reason: u32, saddr: u32, daddr: u32, protocol: u8) {
    report_drop(reason, unsafe { (*ctx.skb.skb).ifindex }, ctx.len(), saddr, daddr, protocol);
}

/// Counts a packet of `len` bytes dropped on `ifindex` under its reason and reports it to
/// `netpath monitor`; TC and XDP programs alike.
#[inline(always)]
pub fn report_drop(reason: u32, ifindex: u32, len: u32, saddr: u32, daddr: u32, protocol: u8) {
    bump(stat_kind::DROP, reason, len);
    let event = DropEvent { reason, ifindex, saddr, daddr, protocol, _pad: 0, _pad2: 0, len };
    let _ = EVENTS.output::<DropEvent>(&event, 0);
}

/// Drops an IPv4 packet for `reason`: counts and reports it, and returns the TC verdict.
#[inline(always)]
pub fn drop_ip(ctx: &TcContext, ip: &Ipv4, reason: u32) -> i32 {
    drop_packet(ctx, reason, ip.saddr, ip.daddr, ip.proto);
    TC_ACT_SHOT as i32
}

/// The same for a frame dropped before there is an IPv4 header to report.
#[inline(always)]
pub fn drop_frame(ctx: &TcContext, reason: u32) -> i32 {
    drop_packet(ctx, reason, 0, 0, 0);
    TC_ACT_SHOT as i32
}
