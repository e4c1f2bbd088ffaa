//! Property tests for every parser of user input: `--subnet` (CIDR), `--mac`, `-p`. Each
//! round-trips what it should accept, refuses what it must, and never panics on anything.
use std::net::Ipv4Addr;

use netpath::types::{
    mac as ipam,
    net::Ipv4Net,
    port::{self as ports, Proto},
};

/// The netmask of an IPv4 prefix, computed here as the oracle the parser is checked against.
fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
}
use proptest::prelude::*;

proptest! {
    #[test]
    fn a_cidr_round_trips(addr: u32, prefix in 0u8..=32) {
        let base = Ipv4Addr::from(addr & mask(prefix));
        let net: Ipv4Net = format!("{base}/{prefix}").parse().unwrap();
        prop_assert_eq!(net.addr(), base);
        prop_assert_eq!(net.to_string().parse::<Ipv4Net>().unwrap(), net);
        prop_assert!(net.contains(base) && net.contains(net.last()));
        prop_assert!(net.overlaps(&net));
    }

    #[test]
    fn a_cidr_with_host_bits_is_refused_with_the_right_subnet(addr: u32, prefix in 0u8..32) {
        prop_assume!(addr & !mask(prefix) != 0);
        let err = format!("{}/{prefix}", Ipv4Addr::from(addr)).parse::<Ipv4Net>().unwrap_err().to_string();
        let expected = format!("did you mean {}/{prefix}?", Ipv4Addr::from(addr & mask(prefix)));
        prop_assert!(err.ends_with(&expected), "{}", err);
    }

    #[test]
    fn overlap_is_symmetric_and_means_a_shared_address(a: u32, pa in 0u8..=32, b: u32, pb in 0u8..=32) {
        let x = Ipv4Net::new(Ipv4Addr::from(a & mask(pa)), pa).unwrap();
        let y = Ipv4Net::new(Ipv4Addr::from(b & mask(pb)), pb).unwrap();
        prop_assert_eq!(x.overlaps(&y), y.overlaps(&x));
        let shared = x.contains(y.addr()) || y.contains(x.addr());
        prop_assert_eq!(x.overlaps(&y), shared);
    }

    #[test]
    fn the_cidr_parser_never_panics(s in "\\PC{0,40}") {
        if let Ok(net) = s.parse::<Ipv4Net>() {
            prop_assert!(net.prefix() <= 32);
            prop_assert_eq!(u32::from(net.addr()) & !mask(net.prefix()), 0);
        }
    }

    #[test]
    fn a_mac_is_accepted_exactly_when_unicast_and_not_zero(mac: [u8; 6]) {
        let text = ipam::format_mac(&mac);
        match ipam::parse_mac(&text) {
            Ok(parsed) => {
                prop_assert_eq!(parsed, mac);
                prop_assert!(mac[0] & 1 == 0 && mac != [0; 6]);
            }
            Err(_) => prop_assert!(mac[0] & 1 == 1 || mac == [0; 6]),
        }
        // Upper case is the same address.
        if let Ok(parsed) = ipam::parse_mac(&text.to_uppercase()) {
            prop_assert_eq!(parsed, mac);
        }
    }

    #[test]
    fn the_mac_parser_never_panics(s in "\\PC{0,30}") {
        if let Ok(mac) = ipam::parse_mac(&s) {
            prop_assert!(mac[0] & 1 == 0 && mac != [0; 6]);
        }
    }

    #[test]
    fn a_publish_spec_round_trips(
        ip in proptest::option::of(any::<[u8; 4]>()),
        host in 1u16..=65535,
        container in 1u16..=65535,
        len in 0u16..64,
        udp: bool,
    ) {
        let len = len.min(65535 - host).min(65535 - container);
        let mut spec = String::new();
        if let Some(ip) = ip {
            spec += &format!("{}:", Ipv4Addr::from(ip));
        }
        spec += &match len {
            0 => format!("{host}:{container}"),
            _ => format!("{host}-{}:{container}-{}", host + len, container + len),
        };
        if udp {
            spec += "/udp";
        }
        let ports = ports::parse_publish(&spec).unwrap();
        prop_assert_eq!(ports.len(), usize::from(len) + 1);
        for (i, p) in ports.iter().enumerate() {
            prop_assert_eq!(p.host_port, host + i as u16);
            prop_assert_eq!(p.container_port, container + i as u16);
            prop_assert_eq!(p.proto, if udp { Proto::Udp } else { Proto::Tcp });
            let expected = ip.map(Ipv4Addr::from).filter(|ip| !ip.is_unspecified());
            prop_assert_eq!(p.host_ip, expected.map(std::net::IpAddr::V4));
        }
    }

    #[test]
    fn the_publish_parser_never_panics_and_keeps_ranges_aligned(s in "[0-9.:/a-z-]{0,32}") {
        if let Ok(ports) = ports::parse_publish(&s) {
            prop_assert!(!ports.is_empty());
            let offset = i32::from(ports[0].container_port) - i32::from(ports[0].host_port);
            for p in &ports {
                prop_assert!(p.host_port > 0 && p.container_port > 0);
                prop_assert_eq!(i32::from(p.container_port) - i32::from(p.host_port), offset);
            }
        }
    }
}
