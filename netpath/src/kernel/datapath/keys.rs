//! How the maps key addresses and published ports.
use std::net::{IpAddr, Ipv4Addr};

use netpath_common::PortKey;

use crate::types::port::Port;

/// A publication's `PORTMAP` key; `None` for an IPv6 host address, which the map cannot hold.
pub fn port_key(port: &Port) -> Option<PortKey> {
    let addr = match port.host_ip {
        None => 0,
        Some(IpAddr::V4(ip)) => map_key(ip),
        Some(IpAddr::V6(_)) => return None,
    };
    Some(PortKey { addr, port: port.host_port.to_be(), proto: port.proto.number(), _pad: 0 })
}

/// Map keys hold addresses as they sit in the packet (network byte order).
pub fn map_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}
