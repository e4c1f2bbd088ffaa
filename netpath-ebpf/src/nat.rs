//! Address and port rewriting with incremental checksum updates (RFC 1624 through the
//! kernel's csum helpers, which also handle CHECKSUM_PARTIAL skbs from veths).
use netpath_common::CtEntry;

use crate::{
    frame::{CSUM_PSEUDO_HDR, Frame},
    packet::{IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, IP_TTL_OFF, Ipv4, L4},
};

/// Which end of the packet to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// Rewrites the address and port of one side, fixing the IP and transport checksums.
#[inline(always)]
pub fn rewrite<F: Frame>(ctx: &F, ip: &Ipv4, l4: &L4, side: Side, addr: u32, port: u16) -> Option<()> {
    let (old_addr, addr_off, old_port, port_off) = match side {
        Side::Source => (ip.saddr, IP_SADDR_OFF, l4.sport, l4.sport_off),
        Side::Destination => (ip.daddr, IP_DADDR_OFF, l4.dport, l4.dport_off),
    };
    if old_addr != addr {
        ctx.l3_csum(IP_CSUM_OFF, old_addr, addr, 4)?;
        if l4.csum_flags != 0 {
            ctx.l4_csum(l4.csum_off, old_addr, addr, l4.csum_flags | 4)?;
        }
        ctx.store(addr_off, &addr)?;
    }
    if port_off != 0 && old_port != port {
        // Ports (and ICMP ids) are not in the pseudo-header.
        ctx.l4_csum(l4.csum_off, old_port.into(), port.into(), (l4.csum_flags & !CSUM_PSEUDO_HDR) | 2)?;
        ctx.store(port_off, &port)?;
    }
    Some(())
}

/// Rewrites the packet to the tuple a conntrack entry gives.
#[inline(always)]
pub fn apply<F: Frame>(ctx: &F, ip: &Ipv4, l4: &L4, to: &CtEntry) -> Option<()> {
    rewrite(ctx, ip, l4, Side::Source, to.saddr, to.sport)?;
    rewrite(ctx, ip, l4, Side::Destination, to.daddr, to.dport)
}

/// Decrements the TTL as a router must; `false` when it would reach zero (the kernel then
/// sends the ICMP time-exceeded).
#[inline(always)]
pub fn decrement_ttl<F: Frame>(ctx: &F, ip: &Ipv4) -> bool {
    if ip.ttl <= 1 {
        return false;
    }
    let old = u16::from_ne_bytes([ip.ttl, ip.proto]);
    let new = u16::from_ne_bytes([ip.ttl - 1, ip.proto]);
    ctx.l3_csum(IP_CSUM_OFF, old.into(), new.into(), 2).is_some() && ctx.store(IP_TTL_OFF, &(ip.ttl - 1)).is_some()
}

/// Rewrites a 16-bit or 32-bit field that an ICMP checksum covers (inside an ICMP error's
/// embedded packet), keeping that checksum right.
#[inline(always)]
pub fn rewrite_covered<T: Into<u32> + Copy, F: Frame>(
    ctx: &F,
    icmp_csum_off: usize,
    off: usize,
    old: T,
    new: T,
) -> Option<()> {
    ctx.l4_csum(icmp_csum_off, old.into(), new.into(), core::mem::size_of::<T>() as u64)?;
    ctx.store(off, &new)
}
