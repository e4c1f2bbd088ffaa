//! Connection tracking for NAT: one entry per direction in the `CT` LRU map.
//!
//! The original-direction entry holds the translated source and the connection's state and
//! last-seen time; the reply-direction entry maps the translated destination back to the
//! endpoint. Both are looked up for every packet, so the LRU keeps or evicts them together.
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use netpath_common::{Config, CtEntry, CtKey, IPPROTO_TCP, ct_dir, ct_state, drop_reason};

use crate::{
    maps::{CONFIG, CT},
    packet::{Ipv4, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

const BPF_NOEXIST: u64 = 1;
const NS_PER_SEC: u64 = 1_000_000_000;
/// Candidate source ports tried for a new flow before giving up.
const PORT_TRIES: u32 = 32;

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn expired(cfg: &Config, proto: u8, e: &CtEntry, now: u64) -> bool {
    now.saturating_sub(e.last_seen) > u64::from(cfg.timeout(proto, e.state)) * NS_PER_SEC
}

#[inline(always)]
fn next_state(state: u8, proto: u8, tcp_flags: u8, dir: u8) -> u8 {
    if proto == IPPROTO_TCP {
        if tcp_flags & TCP_RST != 0 {
            return ct_state::CLOSED;
        }
        if tcp_flags & TCP_FIN != 0 || state == ct_state::CLOSING || state == ct_state::CLOSED {
            return if state == ct_state::CLOSED { state } else { ct_state::CLOSING };
        }
    }
    if dir == ct_dir::REPLY && state == ct_state::NEW { ct_state::ESTABLISHED } else { state }
}

/// The state a flow starts in: a TCP flow picked up mid-stream counts as established.
#[inline(always)]
fn initial_state(proto: u8, tcp_flags: u8) -> u8 {
    if proto == IPPROTO_TCP && tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN { ct_state::ESTABLISHED } else { ct_state::NEW }
}

#[inline(always)]
fn original_key(ip: &Ipv4, l4: &L4) -> CtKey {
    CtKey { saddr: ip.saddr, daddr: ip.daddr, sport: l4.sport, dport: l4.dport, proto: ip.proto, dir: ct_dir::ORIGINAL, _pad: [0; 2] }
}

/// The live original entry a reply entry belongs to, if the pair is still valid.
#[inline(always)]
fn live_original(cfg: &Config, reply: &CtKey, entry: &CtEntry, now: u64) -> Option<*mut CtEntry> {
    let okey = reply.original(entry);
    let orig = CT.get_ptr_mut(&okey)?;
    // SAFETY: map value pointer from a successful lookup.
    let o = unsafe { &*orig };
    if expired(cfg, reply.proto, o, now) || o.addr != reply.daddr || o.port != reply.dport {
        return None;
    }
    Some(orig)
}

/// Source translation for a packet leaving through the uplink: the existing mapping of its
/// flow, or a new one with a free port of the SNAT range. `Err` is a drop reason.
#[inline(always)]
pub fn snat(cfg: &Config, ip: &Ipv4, l4: &L4, snat_addr: u32) -> Result<(u32, u16), u32> {
    let now = now();
    let okey = original_key(ip, l4);
    if let Some(ptr) = CT.get_ptr_mut(&okey) {
        // SAFETY: map value pointer from a successful lookup.
        let e = unsafe { &mut *ptr };
        let reopened = l4.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && e.state >= ct_state::CLOSING;
        if e.addr == snat_addr && !expired(cfg, ip.proto, e, now) && !reopened {
            let rkey = okey.reply(e.addr, e.port);
            if CT.get_ptr(&rkey).is_none() {
                // The LRU evicted the reply half alone: restore it.
                let back = CtEntry { addr: okey.saddr, port: okey.sport, state: 0, _pad: 0, last_seen: now };
                let _ = CT.insert(&rkey, &back, 0);
            }
            e.state = next_state(e.state, ip.proto, l4.tcp_flags, ct_dir::ORIGINAL);
            e.last_seen = now;
            return Ok((e.addr, e.port));
        }
    }
    let port = allocate_port(cfg, &okey, snat_addr, now)?;
    let entry = CtEntry { addr: snat_addr, port, state: initial_state(ip.proto, l4.tcp_flags), _pad: 0, last_seen: now };
    if CT.insert(&okey, &entry, 0).is_err() {
        let _ = CT.remove(&okey.reply(snat_addr, port));
        return Err(drop_reason::NAT_EXHAUSTED);
    }
    Ok((snat_addr, port))
}

/// Claims a source port for `okey` by creating its reply entry; a port is free when no live
/// connection's reply entry holds it.
#[inline(always)]
fn allocate_port(cfg: &Config, okey: &CtKey, snat_addr: u32, now: u64) -> Result<u16, u32> {
    let min = u32::from(cfg.snat_port_min);
    let span = u32::from(cfg.snat_port_max).wrapping_sub(min).wrapping_add(1);
    // Also proves to the compiler that `%` below cannot divide by zero (no panic path).
    if cfg.snat_port_min == 0 || span == 0 || span > 65536 {
        return Err(drop_reason::NAT_EXHAUSTED);
    }
    let start = unsafe { bpf_get_prandom_u32() } % span;
    let back = CtEntry { addr: okey.saddr, port: okey.sport, state: 0, _pad: 0, last_seen: now };
    let mut i = 0;
    while i < PORT_TRIES {
        let port = ((min + (start + i) % span) as u16).to_be();
        let rkey = okey.reply(snat_addr, port);
        let claimed = match unsafe { CT.get(&rkey) } {
            None => CT.insert(&rkey, &back, BPF_NOEXIST).is_ok(),
            Some(held) => live_original(cfg, &rkey, held, now).is_none() && CT.insert(&rkey, &back, 0).is_ok(),
        };
        if claimed {
            return Ok(port);
        }
        i += 1;
    }
    Err(drop_reason::NAT_EXHAUSTED)
}

/// For a packet arriving from outside: the endpoint address and port its destination
/// translates back to, if it belongs to a live translated connection.
#[inline(always)]
pub fn reverse(cfg: &Config, ip: &Ipv4, l4: &L4) -> Option<(u32, u16)> {
    let now = now();
    let rkey = CtKey { saddr: ip.saddr, daddr: ip.daddr, sport: l4.sport, dport: l4.dport, proto: ip.proto, dir: ct_dir::REPLY, _pad: [0; 2] };
    let back = unsafe { CT.get(&rkey) }?;
    let orig = live_original(cfg, &rkey, back, now)?;
    // SAFETY: map value pointer from a successful lookup.
    let o = unsafe { &mut *orig };
    o.state = next_state(o.state, ip.proto, l4.tcp_flags, ct_dir::REPLY);
    o.last_seen = now;
    Some((back.addr, back.port))
}

/// For an ICMP error about a packet we translated: the endpoint address and port of the
/// connection, found from the embedded header (`inner`, as it left: our address as source).
#[inline(always)]
pub fn reverse_embedded(cfg: &Config, inner: &Ipv4, sport: u16, dport: u16) -> Option<(u32, u16)> {
    let rkey = CtKey { saddr: inner.daddr, daddr: inner.saddr, sport: dport, dport: sport, proto: inner.proto, dir: ct_dir::REPLY, _pad: [0; 2] };
    let back = unsafe { CT.get(&rkey) }?;
    live_original(cfg, &rkey, back, now())?;
    Some((back.addr, back.port))
}
