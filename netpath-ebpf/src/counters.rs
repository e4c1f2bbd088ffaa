//! Per-endpoint (by slot), per-drop-reason and per-stage counters, and drop events for
//! `netpath monitor`.
use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use netpath_common::{Counter, DropEvent, StatKey, stat_kind};

use crate::{
    maps::{ENDPOINT_COUNTERS, EVENTS, STAGE_RUNS, STATS},
    packet::Ipv4,
};

/// Adds one packet the endpoint in `slot` sent.
#[inline(always)]
pub fn count_tx(slot: u16, bytes: u32) {
    if let Some(c) = ENDPOINT_COUNTERS.get_ptr_mut(u32::from(slot)) {
        // SAFETY: per-CPU value, so no other CPU writes it concurrently.
        unsafe { add(&mut (*c).tx, bytes) }
    }
}

/// Adds one packet delivered to the endpoint in `slot`.
#[inline(always)]
pub fn count_rx(slot: u16, bytes: u32) {
    if let Some(c) = ENDPOINT_COUNTERS.get_ptr_mut(u32::from(slot)) {
        // SAFETY: as in `count_tx`.
        unsafe { add(&mut (*c).rx, bytes) }
    }
}

/// Counts one run of the tail-called stage in `slot` (`netpath_common::stage`): one per-CPU
/// array slot, at the stage's start.
#[inline(always)]
pub fn count_stage(slot: u32) {
    if let Some(runs) = STAGE_RUNS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, so no other CPU writes it concurrently.
        unsafe { *runs += 1 }
    }
}

#[inline(always)]
fn add(counter: &mut Counter, bytes: u32) {
    counter.packets += 1;
    counter.bytes += u64::from(bytes);
}

/// Adds one packet to a datapath-wide counter (drop reasons, XDP), created on first use.
#[inline(always)]
pub fn bump(kind: u32, id: u32, bytes: u32) {
    let key = StatKey { kind, id };
    match STATS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, so no other CPU writes it concurrently.
        Some(counter) => unsafe { add(&mut *counter, bytes) },
        // First use on any CPU; a racing insert from another CPU wins and this packet goes
        // uncounted, which a counter can afford.
        None => {
            let _ = STATS.insert(&key, &Counter { packets: 1, bytes: u64::from(bytes) }, 0);
        }
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
