//! Bounds-checked access to packet headers: every pointer is checked against `data_end`
//! before use, which is what the verifier demands and what keeps truncated packets out.
use aya_ebpf::programs::TcContext;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

/// ETH_P_IP in network byte order, as it sits in `EthHdr::ether_type`.
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();

#[inline(always)]
pub fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// What the parser found in a frame.
pub enum L3<'a> {
    /// Not IPv4 unicast (ARP, IPv6, broadcast, multicast): the bridge handles it.
    Other,
    /// An IPv4 header whose length fields are impossible for this frame.
    Malformed,
    Ipv4 { eth: &'a mut EthHdr, ip: &'a mut Ipv4Hdr },
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> L3<'_> {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return L3::Other;
    };
    // SAFETY: `ptr_at` checked the header lies inside the packet.
    let eth = unsafe { &mut *eth };
    if eth.ether_type != ETH_P_IP_BE || eth.dst_addr[0] & 1 != 0 {
        return L3::Other;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return L3::Malformed;
    };
    // SAFETY: as above.
    let ip = unsafe { &mut *ip };
    let header_len = usize::from(ip.ihl());
    let total_len = usize::from(ip.tot_len());
    if ip.version() != 4 || header_len < Ipv4Hdr::LEN || total_len < header_len {
        return L3::Malformed;
    }
    // The skb may be non-linear, so compare with its full length, not with `data_end`.
    if EthHdr::LEN + total_len > ctx.len() as usize {
        return L3::Malformed;
    }
    L3::Ipv4 { eth, ip }
}

/// An IPv4 address field as the `u32` the maps are keyed by (network byte order).
#[inline(always)]
pub fn addr(field: [u8; 4]) -> u32 {
    u32::from_ne_bytes(field)
}
