//! Published ports: which endpoint a host address and port lead to.
use netpath_common::{PortKey, PortTarget};

use crate::{
    maps::{HOST_ADDRS, PORTMAP},
    packet::{Ipv4, L4, is_loopback},
};

/// The endpoint behind `daddr:dport` for a packet, when that is a published port: `daddr` is
/// one of the host's addresses (never a loopback one: those are served to host processes by
/// the socket programs only) and the port is published on it or on every address.
#[inline(always)]
pub fn published(ip: &Ipv4, l4: &L4) -> Option<&'static PortTarget> {
    published_on(ip.daddr, l4.dport, ip.proto)
}

/// The same for a destination given as values (`port` in network byte order).
#[inline(always)]
pub fn published_on(daddr: u32, port: u16, proto: u8) -> Option<&'static PortTarget> {
    if is_loopback(daddr) {
        return None;
    }
    unsafe { HOST_ADDRS.get(&daddr) }?;
    lookup(daddr, port, proto)
}

/// The endpoint a port published on exactly `addr`, or on every address, leads to.
#[inline(always)]
pub fn lookup(addr: u32, port: u16, proto: u8) -> Option<&'static PortTarget> {
    let exact = PortKey { addr, port, proto, _pad: 0 };
    if let Some(target) = unsafe { PORTMAP.get(&exact) } {
        return Some(target);
    }
    unsafe { PORTMAP.get(&PortKey { addr: 0, ..exact }) }
}
