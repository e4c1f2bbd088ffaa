//! Header parsing. Headers are read into plain values and rewritten by offset, because the
//! checksum and store helpers invalidate every packet pointer the verifier knew about.
use netpath_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::frame::{CSUM_MANGLED_0, CSUM_PSEUDO_HDR, Frame};

pub const ETH_LEN: usize = 14;
pub const IP_TTL_OFF: usize = ETH_LEN + 8;
pub const IP_CSUM_OFF: usize = ETH_LEN + 10;
pub const IP_SADDR_OFF: usize = ETH_LEN + 12;
pub const IP_DADDR_OFF: usize = ETH_LEN + 16;

const ETH_P_IP: u16 = 0x0800;
const IPV4_MIN_LEN: usize = 20;
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

#[inline(always)]
fn load<T: Copy>(ctx: &impl Frame, offset: usize) -> Option<T> {
    ctx.load::<T>(offset)
}

/// An IPv4 header, as values.
#[derive(Clone, Copy)]
pub struct Ipv4 {
    pub saddr: u32,
    pub daddr: u32,
    pub proto: u8,
    pub ttl: u8,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// A fragment other than a whole datagram: only the first carries ports.
    pub fragment: bool,
    pub dont_fragment: bool,
}

pub enum L3 {
    /// Not IPv4 unicast (ARP, IPv6, broadcast, multicast): the bridge handles it.
    Other,
    /// An IPv4 header whose length fields are impossible for this frame.
    Malformed,
    Ipv4(Ipv4),
}

/// What the transport header says, as far as NAT needs it. Ports are in network byte order.
/// ICMP echo carries its identifier as `sport` (request) or `dport` (reply), see `CtKey`.
#[derive(Clone, Copy)]
pub struct L4 {
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    /// Where the translated source/destination port lives; 0 when there is none.
    pub sport_off: usize,
    pub dport_off: usize,
    /// Where the transport checksum lives, and how to update it.
    pub csum_off: usize,
    pub csum_flags: u64,
}

#[inline(always)]
pub fn parse<F: Frame>(ctx: &F) -> L3 {
    let Some(eth) = load::<[u8; ETH_LEN]>(ctx, 0) else {
        return L3::Other;
    };
    if u16::from_be_bytes([eth[12], eth[13]]) != ETH_P_IP || eth[0] & 1 != 0 {
        return L3::Other;
    }
    parse_ipv4(ctx, ETH_LEN).map_or(L3::Malformed, L3::Ipv4)
}

/// Parses the IPv4 header at `off` (the packet's own, or one embedded in an ICMP error).
/// Each header is read whole, in one bounds check, which keeps the compiler from reordering
/// reads ahead of their checks in XDP (the verifier rejects that).
#[inline(always)]
pub fn parse_ipv4<F: Frame>(ctx: &F, off: usize) -> Option<Ipv4> {
    let h = load::<[u8; IPV4_MIN_LEN]>(ctx, off)?;
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let tot_len = u16::from_be_bytes([h[2], h[3]]);
    let frags = u16::from_be_bytes([h[6], h[7]]);
    if h[0] >> 4 != 4 || header_len < IPV4_MIN_LEN || usize::from(tot_len) < header_len {
        return None;
    }
    // The skb may be non-linear, so compare with its full length, not with `data_end`.
    // An embedded header may be truncated, so only the packet's own is checked.
    if off == ETH_LEN && ETH_LEN + usize::from(tot_len) > ctx.len() {
        return None;
    }
    Some(Ipv4 {
        saddr: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
        daddr: u32::from_ne_bytes([h[16], h[17], h[18], h[19]]),
        proto: h[9],
        ttl: h[8],
        l4_off: off + header_len,
        // More-fragments flag or a non-zero offset.
        fragment: frags & 0x3fff != 0,
        dont_fragment: frags & 0x4000 != 0,
    })
}

/// Parses the transport header NAT can translate: TCP, UDP and ICMP echo. `None` for other
/// protocols, fragments and ICMP messages that are not echo.
#[inline(always)]
pub fn parse_l4<F: Frame>(ctx: &F, ip: &Ipv4) -> Option<L4> {
    if ip.fragment {
        return None;
    }
    let off = ip.l4_off;
    let port = |h: &[u8], i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
    match ip.proto {
        IPPROTO_TCP => {
            let h = load::<[u8; 14]>(ctx, off)?;
            Some(L4 {
                sport: port(&h, 0),
                dport: port(&h, 2),
                tcp_flags: h[13],
                sport_off: off,
                dport_off: off + 2,
                csum_off: off + 16,
                csum_flags: CSUM_PSEUDO_HDR,
            })
        }
        IPPROTO_UDP => {
            let h = load::<[u8; 8]>(ctx, off)?;
            Some(L4 {
                sport: port(&h, 0),
                dport: port(&h, 2),
                tcp_flags: 0,
                sport_off: off,
                dport_off: off + 2,
                csum_off: off + 6,
                csum_flags: CSUM_PSEUDO_HDR | CSUM_MANGLED_0,
            })
        }
        IPPROTO_ICMP => {
            let h = load::<[u8; 8]>(ctx, off)?;
            let id = port(&h, 4);
            let (sport, dport, sport_off, dport_off) = match h[0] {
                ICMP_ECHO => (id, 0, off + 4, 0),
                ICMP_ECHO_REPLY => (0, id, 0, off + 4),
                _ => return None,
            };
            Some(L4 { sport, dport, tcp_flags: 0, sport_off, dport_off, csum_off: off + 2, csum_flags: 0 })
        }
        _ => None,
    }
}

/// The ICMP type of a packet, for error handling; `None` unless ICMP.
#[inline(always)]
pub fn icmp_type<F: Frame>(ctx: &F, ip: &Ipv4) -> Option<u8> {
    if ip.proto != IPPROTO_ICMP || ip.fragment {
        return None;
    }
    load::<u8>(ctx, ip.l4_off)
}

#[inline(always)]
pub fn load_u16<F: Frame>(ctx: &F, off: usize) -> Option<u16> {
    load(ctx, off)
}
