//! Connection tracking for NAT: two entries per connection in the `CT` LRU map, one per
//! direction, each mapping the tuple a packet arrives with to the tuple it leaves with.
//!
//! The original-direction entry holds the connection's state and last-seen time. Both are
//! looked up for every packet, so the LRU keeps or evicts them together; a reply entry whose
//! original is gone, expired or translated elsewhere is stale and may be reused.
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use netpath_common::{Config, CtEntry, CtKey, IPPROTO_TCP, ct_dir, ct_state, drop_reason};

use crate::{
    maps::{CONFIG, CT},
    packet::{Ipv4, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    portmap::published,
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
pub fn key(ip: &Ipv4, l4: &L4) -> CtKey {
    CtKey { saddr: ip.saddr, daddr: ip.daddr, sport: l4.sport, dport: l4.dport, proto: ip.proto, _pad: [0; 3] }
}

#[inline(always)]
fn expired(cfg: &Config, proto: u8, e: &CtEntry, now: u64) -> bool {
    now.saturating_sub(e.last_seen) > u64::from(cfg.timeout(proto, e.state)) * NS_PER_SEC
}

#[inline(always)]
fn next_state(state: u8, proto: u8, tcp_flags: u8, dir: u8) -> u8 {
    if proto == IPPROTO_TCP {
        if tcp_flags & TCP_RST != 0 || state == ct_state::CLOSED {
            return ct_state::CLOSED;
        }
        if tcp_flags & TCP_FIN != 0 || state == ct_state::CLOSING {
            return ct_state::CLOSING;
        }
    }
    if dir == ct_dir::REPLY && state == ct_state::NEW { ct_state::ESTABLISHED } else { state }
}

/// The state a flow starts in: a TCP flow picked up mid-stream counts as established, unless
/// its first packet already closes it.
#[inline(always)]
fn initial_state(proto: u8, tcp_flags: u8) -> u8 {
    if proto != IPPROTO_TCP || tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return ct_state::NEW;
    }
    next_state(ct_state::ESTABLISHED, proto, tcp_flags, ct_dir::ORIGINAL)
}

/// Whether a packet may open a connection to a published port: for TCP only a SYN, so stray
/// segments (answers to the host's own connections, spoofed resets) create nothing.
#[inline(always)]
pub fn opens(proto: u8, tcp_flags: u8) -> bool {
    proto != IPPROTO_TCP || tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The live original entry behind a reply entry, if the pair is still valid.
#[inline(always)]
fn live_original(cfg: &Config, rkey: &CtKey, reply: &CtEntry, now: u64) -> Option<*mut CtEntry> {
    let ptr = CT.get_ptr_mut(&CtKey::partner(reply, rkey.proto))?;
    // SAFETY: map value pointer from a successful lookup.
    let orig = unsafe { &*ptr };
    (orig.dir == ct_dir::ORIGINAL && orig.reverses(rkey) && !expired(cfg, rkey.proto, orig, now)).then_some(ptr)
}

/// The translation for a packet of a tracked connection, either direction; `None` when the
/// connection is unknown, expired, or being reopened (a new SYN after it closed).
#[inline(always)]
pub fn lookup(cfg: &Config, key: &CtKey, tcp_flags: u8) -> Option<CtEntry> {
    let ptr = CT.get_ptr_mut(key)?;
    // SAFETY: map value pointer from a successful lookup.
    let entry = unsafe { *ptr };
    let now = now();
    let holder = if entry.dir == ct_dir::ORIGINAL {
        let reopened = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && entry.state >= ct_state::CLOSING;
        if reopened || expired(cfg, key.proto, &entry, now) {
            return None;
        }
        let rkey = CtKey::partner(&entry, key.proto);
        if CT.get_ptr(&rkey).is_none() {
            // The LRU evicted the reply half alone: restore it.
            let _ = CT.insert(&rkey, &CtEntry::reverse_of(key, ct_dir::REPLY, now), 0);
        }
        ptr
    } else {
        live_original(cfg, key, &entry, now)?
    };
    // SAFETY: map value pointer from a successful lookup; racing CPUs only move it forward.
    let h = unsafe { &mut *holder };
    h.state = next_state(h.state, key.proto, tcp_flags, entry.dir);
    h.last_seen = now;
    Some(entry)
}

/// Starts tracking a connection whose first packet has `key` and leaves as `out`. With
/// `pick_sport`, the source port of `out` is chosen from the SNAT range so that the reply
/// tuple is unique. Returns the translation to apply, or a drop reason.
#[inline(always)]
pub fn create(cfg: &Config, key: &CtKey, mut out: CtEntry, tcp_flags: u8, pick_sport: bool) -> Result<CtEntry, u32> {
    let now = now();
    out.dir = ct_dir::ORIGINAL;
    out.state = initial_state(key.proto, tcp_flags);
    out.last_seen = now;
    let back = CtEntry::reverse_of(key, ct_dir::REPLY, now);
    let (start, span, tries) = if pick_sport {
        let min = u32::from(cfg.snat_port_min);
        let span = u32::from(cfg.snat_port_max).wrapping_sub(min).wrapping_add(1);
        // Also proves to the compiler that `%` below cannot divide by zero (no panic path).
        if min == 0 || span == 0 || span > 65536 {
            return Err(drop_reason::NAT_EXHAUSTED);
        }
        (unsafe { bpf_get_prandom_u32() } % span, span, PORT_TRIES)
    } else {
        (0, 1, 1)
    };
    let mut i = 0;
    while i < tries {
        if pick_sport {
            out.sport = ((u32::from(cfg.snat_port_min) + (start + i) % span) as u16).to_be();
        }
        let rkey = CtKey::partner(&out, key.proto);
        let claimed = match unsafe { CT.get(&rkey) } {
            None => CT.insert(&rkey, &back, BPF_NOEXIST).is_ok(),
            // Free when its connection is gone, or is this very one being reopened.
            Some(held) => {
                held.dir == ct_dir::REPLY
                    && (CtKey::partner(held, key.proto) == *key || live_original(cfg, &rkey, held, now).is_none())
                    && CT.insert(&rkey, &back, 0).is_ok()
            }
        };
        if claimed {
            return commit_original(cfg, key, &out, &rkey, tcp_flags, now);
        }
        i += 1;
    }
    Err(drop_reason::NAT_EXHAUSTED)
}

/// Records the original entry once its reply entry is claimed. Another CPU may have created
/// the same connection meanwhile: then its translation stands and our claim is given back.
#[inline(always)]
fn commit_original(
    cfg: &Config,
    key: &CtKey,
    out: &CtEntry,
    rkey: &CtKey,
    tcp_flags: u8,
    now: u64,
) -> Result<CtEntry, u32> {
    if CT.insert(key, out, BPF_NOEXIST).is_ok() {
        return Ok(*out);
    }
    if let Some(winner) = unsafe { CT.get(key) } {
        let reopened = tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && winner.state >= ct_state::CLOSING;
        if !reopened && !expired(cfg, key.proto, winner, now) {
            let winner = *winner;
            if CtKey::partner(&winner, key.proto) != *rkey {
                let _ = CT.remove(rkey);
            }
            return Ok(winner);
        }
    }
    // What was there is expired or being reopened: replace it.
    if CT.insert(key, out, 0).is_err() {
        let _ = CT.remove(rkey);
        return Err(drop_reason::NAT_EXHAUSTED);
    }
    Ok(*out)
}

/// For an ICMP error about a packet we sent (`inner`, as it left): the translation its
/// connection's answers get, found through the embedded header.
#[inline(always)]
pub fn lookup_embedded(cfg: &Config, inner: &Ipv4, sport: u16, dport: u16) -> Option<CtEntry> {
    let rkey =
        CtKey { saddr: inner.daddr, daddr: inner.saddr, sport: dport, dport: sport, proto: inner.proto, _pad: [0; 3] };
    let entry = unsafe { *CT.get(&rkey)? };
    let now = now();
    let valid = if entry.dir == ct_dir::ORIGINAL {
        !expired(cfg, rkey.proto, &entry, now)
    } else {
        live_original(cfg, &rkey, &entry, now).is_some()
    };
    valid.then_some(entry)
}

/// The translation for a packet arriving from outside: its tracked connection's, or a new
/// connection's when it opens one to a published port.
#[inline(always)]
pub fn inbound(cfg: &Config, ip: &Ipv4, l4: &L4) -> Option<CtEntry> {
    let key = key(ip, l4);
    if let Some(to) = lookup(cfg, &key, l4.tcp_flags) {
        return Some(to);
    }
    let target = published(ip, l4)?;
    let out =
        CtEntry { saddr: ip.saddr, daddr: target.addr, sport: l4.sport, dport: target.port, ..Default::default() };
    create(cfg, &key, out, l4.tcp_flags, false).ok()
}
