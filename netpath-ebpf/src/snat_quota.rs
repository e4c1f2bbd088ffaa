//! Each endpoint may hold at most `Config::snat_quota` SNAT ports at once, so one container
//! cannot take a destination's ports from the others.
//!
//! An endpoint's claims are indexed `0..quota` under its counter slot in `SNAT_CLAIMS`, each
//! holding the reply tuple it claimed. An index is free when it holds nothing or its tuple no
//! longer answers a live connection of the endpoint's address: expiries, evictions, flushes
//! and re-claims by other flows free indices by themselves, so no count can drift.
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_prandom_u32, bpf_loop},
};
use netpath_common::{Config, CtKey};

use crate::{
    conntrack::{answers, config, now},
    maps::SNAT_CLAIMS,
};

/// `free_claim` found none: the endpoint holds its quota. Never a claim: an index is below
/// the quota, which is below 65535.
pub const NONE: u32 = u32::MAX;
/// Indices looked at for a new connection: all of them up to this quota; above it a window of
/// them from a random start, so an endpoint near a larger quota may be refused a little early.
const SCAN: u32 = 64;

/// A free claim of `slot` (its `SNAT_CLAIMS` key) for a connection of `addr`, or `NONE`. Any
/// without a quota (0: not configured yet), which is then not recorded.
#[inline(never)]
pub fn free_claim(slot: u16, addr: u32) -> u32 {
    let base = u32::from(slot) << 16;
    let Some(cfg) = config() else {
        return base;
    };
    let quota = cfg.snat_quota;
    if quota == 0 {
        return base;
    }
    let start = if quota > SCAN { unsafe { bpf_get_prandom_u32() }.checked_rem(quota).unwrap_or(0) } else { 0 };
    let mut scan = Scan { cfg, base, addr, now: now(), start, quota, found: NONE };
    unsafe {
        bpf_loop(quota.min(SCAN), try_index as *mut c_void, (&mut scan as *mut Scan).cast(), 0);
    }
    scan.found
}

/// Records that `claim` holds the reply tuple `rkey` (with a quota).
#[inline(always)]
pub fn record(cfg: &Config, claim: u32, rkey: &CtKey) {
    if cfg.snat_quota != 0 {
        let _ = SNAT_CLAIMS.insert(&claim, rkey, 0);
    }
}

/// What one step of the scan needs, and the free index it found.
struct Scan<'a> {
    cfg: &'a Config,
    base: u32,
    addr: u32,
    now: u64,
    start: u32,
    quota: u32,
    found: u32,
}

/// One index: free unless its tuple still answers a live connection of the endpoint. Returns 1
/// to stop the loop.
#[inline(never)]
extern "C" fn try_index(step: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `free_claim` passes its `Scan`, alive for the whole loop.
    let scan = unsafe { &mut *ctx.cast::<Scan>() };
    let index = scan.start.wrapping_add(step as u32).checked_rem(scan.quota).unwrap_or(0);
    // SAFETY: map value reference from a successful lookup; plain data.
    let held = unsafe { SNAT_CLAIMS.get(&(scan.base | index)) }
        .is_some_and(|rkey| answers(scan.cfg, rkey, scan.addr, scan.now));
    if held {
        return 0;
    }
    scan.found = scan.base | index;
    1
}
