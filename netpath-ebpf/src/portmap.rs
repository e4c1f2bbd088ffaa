//! Published ports: which endpoint a host address and port lead to.
use netpath_common::{PortKey, PortTarget};

use crate::{
    maps::{HOST_ADDRS, PORTMAP},
    packet::{Ipv4, L4},
};

/// The endpoint behind `daddr:dport`, when that is a published port: published on exactly
/// that address, or on every address and `daddr` is one of the host's.
#[inline(always)]
pub fn published(ip: &Ipv4, l4: &L4) -> Option<&'static PortTarget> {
    let exact = PortKey { addr: ip.daddr, port: l4.dport, proto: ip.proto, _pad: 0 };
    if let Some(target) = unsafe { PORTMAP.get(&exact) } {
        return Some(target);
    }
    unsafe { HOST_ADDRS.get(&ip.daddr) }?;
    unsafe { PORTMAP.get(&PortKey { addr: 0, ..exact }) }
}
