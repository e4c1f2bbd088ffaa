//! ICMP errors (destination unreachable, fragmentation needed, time exceeded) about packets of
//! translated connections. The error embeds the packet it is about, as that packet was sent;
//! the translation of its connection's answers is found through it, and the embedded header
//! and the outer addresses are rewritten to match, so the sender's socket sees the error
//! (ECONNREFUSED, PMTU updates) whichever side sent it.
//!
//! An error is believed only when its outer addresses belong to the connection it quotes: from
//! a container, it answers a packet that container received (outer source = the quoted
//! destination) and goes back to that packet's sender; from the outside, it may come from the
//! peer or any router on the way, but only to the address the connection leaves the host with,
//! about a connection whose peer is outside. Otherwise a container could inject errors into
//! another endpoint's connections (and have them leave with its own private source), and a LAN
//! host could address an error about its own connection to any endpoint.
use netpath_common::{Config, CtEntry, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    conntrack,
    frame::Frame,
    maps::ENDPOINTS,
    nat::rewrite_covered,
    packet::{
        ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_TIME_EXCEEDED, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, Ipv4, icmp_type,
        load_u16, parse_ipv4,
    },
};

/// Whether the packet is an ICMP error.
#[inline(always)]
pub fn is_error<F: Frame>(ctx: &F, ip: &Ipv4) -> bool {
    matches!(icmp_type(ctx, ip), Some(ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED))
}

/// Where an error entered the datapath.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From an endpoint, whose own address is the outer source (checked before).
    Container,
    Uplink,
}

/// What `translate` did.
pub enum Translated {
    /// About no tracked connection: nothing changed.
    No,
    /// Rewritten; the new outer source and destination.
    To(u32, u32),
    /// About a tracked connection, but its outer addresses are not that connection's.
    Foreign,
    /// About a tracked connection, with no hop left: not rewritten, and not to be forwarded.
    Expired,
    /// Rewriting failed half-way: the packet must not go on.
    Broken,
}

/// Translates an ICMP error about a tracked connection.
#[inline(always)]
pub fn translate<F: Frame>(ctx: &F, cfg: &Config, ip: &Ipv4, origin: Origin) -> Translated {
    let mut addrs = (0, 0);
    match translate_into(ctx, cfg, ip, origin == Origin::Uplink, &mut addrs) {
        UNTOUCHED => Translated::No,
        DONE => Translated::To(addrs.0, addrs.1),
        FOREIGN => Translated::Foreign,
        EXPIRED => Translated::Expired,
        _ => Translated::Broken,
    }
}

// What `translate_into` answers. A subprogram with a scalar answer: each of its many ways out
// would otherwise make the verifier walk the caller's rest once more.
const UNTOUCHED: u32 = 0;
const DONE: u32 = 1;
const BROKEN: u32 = 2;
const FOREIGN: u32 = 3;
const EXPIRED: u32 = 4;

#[inline(never)]
fn translate_into<F: Frame>(ctx: &F, cfg: &Config, ip: &Ipv4, from_uplink: bool, addrs: &mut (u32, u32)) -> u32 {
    let Some((embedded, to)) = lookup(ctx, cfg, ip) else {
        return UNTOUCHED;
    };
    if !belongs(ip, &embedded.ip, from_uplink) {
        return FOREIGN;
    }
    if ip.ttl <= 1 {
        return EXPIRED;
    }
    if rewrite(ctx, ip, &embedded, &to, addrs).is_some() { DONE } else { BROKEN }
}

/// Whether the error's outer addresses are those of the connection it quotes (`inner`, the
/// packet as it was sent); see the module's documentation.
#[inline(always)]
fn belongs(ip: &Ipv4, inner: &Ipv4, from_uplink: bool) -> bool {
    if from_uplink {
        // A connection between two endpoints (hairpin) has no router on the uplink's side.
        ip.daddr == inner.saddr && unsafe { ENDPOINTS.get(&inner.daddr) }.is_none()
    } else {
        ip.saddr == inner.daddr && ip.daddr == inner.saddr
    }
}

/// The packet an ICMP error embeds: its header, and its ports with where they are (ICMP echo
/// has no destination port: offset 0).
struct Embedded {
    ip: Ipv4,
    sport: u16,
    dport: u16,
    sport_off: usize,
    dport_off: usize,
}

/// The embedded packet, and the translation of its connection's answers.
#[inline(always)]
fn lookup<F: Frame>(ctx: &F, cfg: &Config, ip: &Ipv4) -> Option<(Embedded, CtEntry)> {
    let inner = parse_ipv4(ctx, ip.l4_off + 8)?;
    let (sport_off, dport_off) = match inner.proto {
        IPPROTO_TCP | IPPROTO_UDP => (inner.l4_off, inner.l4_off + 2),
        // An echo request carries its identifier where a source port would be, and no
        // destination port (0, as in `CtKey`).
        IPPROTO_ICMP if load_u16(ctx, inner.l4_off).map(|w| w.to_ne_bytes()[0]) == Some(ICMP_ECHO) => {
            (inner.l4_off + 4, 0)
        }
        _ => return None,
    };
    let sport = load_u16(ctx, sport_off)?;
    let dport = if dport_off == 0 { 0 } else { load_u16(ctx, dport_off)? };
    // `to` translates the answers' direction, the reverse of the embedded packet.
    let to = conntrack::lookup_embedded(cfg, &inner, sport, dport)?;
    Some((Embedded { ip: inner, sport, dport, sport_off, dport_off }, to))
}

/// Rewrites the embedded packet and the outer addresses as the translation says.
#[inline(always)]
fn rewrite<F: Frame>(ctx: &F, ip: &Ipv4, embedded: &Embedded, to: &CtEntry, addrs: &mut (u32, u32)) -> Option<()> {
    let Embedded { ip: inner, sport, dport, sport_off, dport_off } = embedded;
    let inner_off = ip.l4_off + 8;
    let icmp_csum = ip.l4_off + 2;
    rewrite_embedded_addr(ctx, icmp_csum, inner_off, 12, inner.saddr, to.daddr)?;
    rewrite_embedded_addr(ctx, icmp_csum, inner_off, 16, inner.daddr, to.saddr)?;
    if *sport != to.dport {
        rewrite_covered(ctx, icmp_csum, *sport_off, *sport, to.dport)?;
    }
    if *dport_off != 0 && *dport != to.sport {
        rewrite_covered(ctx, icmp_csum, *dport_off, *dport, to.sport)?;
    }
    // The outer addresses follow where they name the embedded packet's ends; a router's own
    // address (an error from the middle of the path) stays.
    let saddr = if ip.saddr == inner.daddr { to.saddr } else { ip.saddr };
    let daddr = if ip.daddr == inner.saddr { to.daddr } else { ip.daddr };
    rewrite_outer(ctx, IP_SADDR_OFF, ip.saddr, saddr)?;
    rewrite_outer(ctx, IP_DADDR_OFF, ip.daddr, daddr)?;
    *addrs = (saddr, daddr);
    Some(())
}

/// Rewrites an address of the embedded IPv4 header (`field` bytes into it), keeping its
/// header checksum and the ICMP checksum, which covers both, right.
#[inline(always)]
fn rewrite_embedded_addr<F: Frame>(
    ctx: &F,
    icmp_csum: usize,
    inner_off: usize,
    field: usize,
    old: u32,
    new: u32,
) -> Option<()> {
    if old == new {
        return Some(());
    }
    let inner_csum = inner_off + 10;
    let old_sum = load_u16(ctx, inner_csum)?;
    ctx.l3_csum(inner_csum, old, new, 4)?;
    let new_sum = load_u16(ctx, inner_csum)?;
    ctx.l4_csum(icmp_csum, old_sum.into(), new_sum.into(), 2)?;
    rewrite_covered(ctx, icmp_csum, inner_off + field, old, new)
}

/// Rewrites an outer address; ICMP has no pseudo-header, so only the IP checksum changes.
#[inline(always)]
fn rewrite_outer<F: Frame>(ctx: &F, off: usize, old: u32, new: u32) -> Option<()> {
    if old == new {
        return Some(());
    }
    ctx.l3_csum(IP_CSUM_OFF, old, new, 4)?;
    ctx.store(off, &new)
}
