//! Header parsing. Headers are read into plain values and rewritten by offset, because the
//! checksum and store helpers invalidate every packet pointer the verifier knew about.
use netpath_common::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::frame::{CSUM_MANGLED_0, CSUM_PSEUDO_HDR, Frame};

pub const ETH_LEN: usize = 14;
pub const IP_TTL_OFF: usize = ETH_LEN + 8;
pub const IP_CSUM_OFF: usize = ETH_LEN + 10;
pub const IP_SADDR_OFF: usize = ETH_LEN + 12;
pub const IP_DADDR_OFF: usize = ETH_LEN + 16;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
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
    /// The IP header's total length.
    pub tot_len: u16,
    /// Offset of the transport header.
    pub l4_off: usize,
    /// A fragment other than a whole datagram: only the first carries ports.
    pub fragment: bool,
    /// The fragment offset, in 8-byte units.
    pub fragment_offset: u16,
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
    /// TCP: the segment's sequence number (host byte order) and how much sequence space it
    /// takes (payload, SYN, FIN); 0 otherwise.
    pub seq: u32,
    pub seq_len: u32,
    /// TCP: the acknowledgement number (host byte order, meaningful with `TCP_ACK`) and the
    /// window field as sent (unscaled); 0 otherwise.
    pub ack: u32,
    pub window: u16,
    /// Where the translated source/destination port lives; 0 when there is none.
    pub sport_off: usize,
    pub dport_off: usize,
    /// Where the transport checksum lives, and how to update it.
    pub csum_off: usize,
    pub csum_flags: u64,
}

// Headers are read as arrays of 16-bit words, as they sit in the packet (every field netpath
// reads is 16-bit aligned from the frame's start), and split with shifts. Byte arrays would be
// read byte by byte, and the compiler spills each byte to a stack slot of its own: the stack
// of a BPF program is 512 bytes for all its frames together. The target is little-endian
// (`bpfel`): a word's first byte is its low byte.

/// A MAC address as three words, for comparing with two instructions.
pub type MacWords = [u16; 3];

#[inline(always)]
pub fn mac_words(mac: &[u8; 6]) -> MacWords {
    [u16::from_ne_bytes([mac[0], mac[1]]), u16::from_ne_bytes([mac[2], mac[3]]), u16::from_ne_bytes([mac[4], mac[5]])]
}

/// The 32-bit value of two consecutive words, as in the packet.
#[inline(always)]
fn dword(lo: u16, hi: u16) -> u32 {
    u32::from(lo) | u32::from(hi) << 16
}

/// An Ethernet header, as values.
pub struct Eth {
    /// Broadcast or multicast destination.
    pub to_group: bool,
    pub dst: MacWords,
    pub src: MacWords,
    /// The ethertype, host byte order.
    pub proto: u16,
}

#[inline(always)]
pub fn parse_eth<F: Frame>(ctx: &F) -> Option<Eth> {
    let h = ctx.load_head::<[u16; ETH_LEN / 2]>(0)?;
    Some(Eth { to_group: h[0] & 1 != 0, dst: [h[0], h[1], h[2]], src: [h[3], h[4], h[5]], proto: u16::from_be(h[6]) })
}

/// IPv4 unicast frames; everything else is `Other`.
#[inline(always)]
pub fn parse<F: Frame>(ctx: &F) -> L3 {
    match parse_eth(ctx) {
        Some(eth) if eth.proto == ETH_P_IP && !eth.to_group => parse_ipv4(ctx, ETH_LEN).map_or(L3::Malformed, L3::Ipv4),
        _ => L3::Other,
    }
}

/// An ARP request or reply for IPv4 over Ethernet: who sends it.
pub struct Arp {
    pub sender_mac: MacWords,
    /// Network byte order.
    pub sender_ip: u32,
}

/// `None` for anything but IPv4-over-Ethernet ARP.
#[inline(always)]
pub fn parse_arp<F: Frame>(ctx: &F) -> Option<Arp> {
    let h = load::<[u16; 9]>(ctx, ETH_LEN)?;
    // htype 1 (Ethernet), ptype 0x0800, hlen 6, plen 4.
    if u16::from_be(h[0]) != 1 || u16::from_be(h[1]) != ETH_P_IP || h[2] != u16::from_ne_bytes([6, 4]) {
        return None;
    }
    Some(Arp { sender_mac: [h[4], h[5], h[6]], sender_ip: dword(h[7], h[8]) })
}

/// Parses the IPv4 header at `off` (the packet's own, or one embedded in an ICMP error).
/// Each header is read whole, in one bounds check, which keeps the compiler from reordering
/// reads ahead of their checks in XDP (the verifier rejects that).
#[inline(always)]
pub fn parse_ipv4<F: Frame>(ctx: &F, off: usize) -> Option<Ipv4> {
    let h = if off == ETH_LEN {
        ctx.load_head::<[u16; IPV4_MIN_LEN / 2]>(off)?
    } else {
        load::<[u16; IPV4_MIN_LEN / 2]>(ctx, off)?
    };
    let version_ihl = h[0] & 0xff;
    let header_len = usize::from(version_ihl & 0x0f) * 4;
    let tot_len = u16::from_be(h[1]);
    let frags = u16::from_be(h[3]);
    if version_ihl >> 4 != 4 || header_len < IPV4_MIN_LEN || usize::from(tot_len) < header_len {
        return None;
    }
    // The skb may be non-linear, so compare with its full length, not with `data_end`.
    // An embedded header may be truncated, so only the packet's own is checked.
    if off == ETH_LEN && ETH_LEN + usize::from(tot_len) > ctx.len() {
        return None;
    }
    Some(Ipv4 {
        saddr: dword(h[6], h[7]),
        daddr: dword(h[8], h[9]),
        proto: (h[4] >> 8) as u8,
        ttl: h[4] as u8,
        tot_len,
        l4_off: off + header_len,
        // More-fragments flag or a non-zero offset.
        fragment: frags & 0x3fff != 0,
        fragment_offset: frags & 0x1fff,
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
    match ip.proto {
        IPPROTO_TCP => {
            let h = load::<[u16; 10]>(ctx, off)?;
            let flags = (h[6] >> 8) as u8;
            let header_len = (off - ETH_LEN) as u32 + u32::from((h[6] & 0xff) >> 4) * 4;
            let payload = u32::from(ip.tot_len).saturating_sub(header_len);
            Some(L4 {
                sport: h[0],
                dport: h[1],
                tcp_flags: flags,
                seq: u32::from_be(dword(h[2], h[3])),
                seq_len: payload + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0),
                ack: u32::from_be(dword(h[4], h[5])),
                window: u16::from_be(h[7]),
                sport_off: off,
                dport_off: off + 2,
                csum_off: off + 16,
                csum_flags: CSUM_PSEUDO_HDR,
            })
        }
        IPPROTO_UDP => {
            let h = load::<[u16; 4]>(ctx, off)?;
            Some(L4 {
                sport: h[0],
                dport: h[1],
                tcp_flags: 0,
                seq: 0,
                seq_len: 0,
                ack: 0,
                window: 0,
                sport_off: off,
                dport_off: off + 2,
                csum_off: off + 6,
                csum_flags: CSUM_PSEUDO_HDR | CSUM_MANGLED_0,
            })
        }
        IPPROTO_ICMP => {
            let h = load::<[u16; 4]>(ctx, off)?;
            let id = h[2];
            let (sport, dport, sport_off, dport_off) = match h[0] as u8 {
                ICMP_ECHO => (id, 0, off + 4, 0),
                ICMP_ECHO_REPLY => (0, id, 0, off + 4),
                _ => return None,
            };
            Some(L4 {
                sport,
                dport,
                tcp_flags: 0,
                seq: 0,
                seq_len: 0,
                ack: 0,
                window: 0,
                sport_off,
                dport_off,
                csum_off: off + 2,
                csum_flags: 0,
            })
        }
        _ => None,
    }
}

/// Whether `addr` (network byte order) is in 127.0.0.0/8.
#[inline(always)]
pub fn is_loopback(addr: u32) -> bool {
    // The first octet sits in the lowest byte of a network-order address.
    addr & 0xff == 127
}

/// 224.0.0.0/4 or the limited broadcast.
#[inline(always)]
pub fn is_multicast_or_broadcast(addr: u32) -> bool {
    addr & 0xf0 == 0xe0 || addr == u32::MAX
}

/// The ICMP type of a packet, for error handling; `None` unless ICMP.
#[inline(always)]
pub fn icmp_type<F: Frame>(ctx: &F, ip: &Ipv4) -> Option<u8> {
    if ip.proto != IPPROTO_ICMP || ip.fragment {
        return None;
    }
    // Type and code as one word: a 1-byte read's bounds check `end < p + 1` is compiled to
    // `p >= end`, which the verifier does not take as a check in XDP. The type is the low byte.
    load::<u16>(ctx, ip.l4_off).map(|w| w as u8)
}

#[inline(always)]
pub fn load_u16<F: Frame>(ctx: &F, off: usize) -> Option<u16> {
    load(ctx, off)
}
