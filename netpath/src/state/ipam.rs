//! Address management: which subnet a new network gets, which address a new endpoint gets.
//! Pure functions; the store calls them inside one `BEGIN IMMEDIATE` transaction so that
//! concurrent processes see each other's choices.
use std::{collections::BTreeSet, net::Ipv4Addr};

use crate::{error::Error, error::Result, types::net::Ipv4Net};

/// Where networks created without `--subnet` get their subnet from.
pub const DEFAULT_POOL: Ipv4Net = match Ipv4Net::from_octets([10, 200, 0, 0], 13) {
    Some(net) => net,
    None => panic!("bad default pool"),
};
/// Size of an automatic subnet: 1021 endpoints.
pub const DEFAULT_PREFIX: u8 = 22;

/// The first subnet of the pool that overlaps nothing in `taken`.
pub fn free_subnet(pool: Ipv4Net, prefix: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    (0..pool.subnet_count(prefix))
        .filter_map(|i| pool.subnet(prefix, i))
        .find(|candidate| !taken.iter().any(|t| t.overlaps(candidate)))
}

/// The gateway defaults to the first host address; a given one must be a host of the subnet.
pub fn gateway_for(subnet: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
    if subnet.prefix() > 30 {
        return Err(Error::invalid(format!("subnet {subnet} is too small; use a prefix of /30 or shorter")));
    }
    match gateway {
        None => Ok(Ipv4Addr::from(*subnet.hosts().start())),
        Some(gw) if subnet.hosts().contains(&u32::from(gw)) => Ok(gw),
        Some(gw) => Err(Error::invalid(format!("gateway {gw} is not a host address of subnet {subnet}"))),
    }
}

/// Checks an address the user asked for.
pub fn check_requested(subnet: Ipv4Net, gateway: Ipv4Addr, ip: Ipv4Addr, used: &BTreeSet<u32>) -> Result<()> {
    if !subnet.hosts().contains(&u32::from(ip)) {
        return Err(Error::invalid(format!("address {ip} is not a host address of subnet {subnet}")));
    }
    if ip == gateway {
        return Err(Error::conflict(format!("address {ip} is the network's gateway; pick another --ip")));
    }
    if used.contains(&u32::from(ip)) {
        return Err(Error::conflict(format!("address {ip} is already in use; pick another --ip or leave it out")));
    }
    Ok(())
}

/// The lowest host address that is neither the gateway nor in use.
pub fn lowest_free(subnet: Ipv4Net, gateway: Ipv4Addr, used: &BTreeSet<u32>) -> Option<Ipv4Addr> {
    subnet.hosts().find(|a| *a != u32::from(gateway) && !used.contains(a)).map(Ipv4Addr::from)
}

/// A locally administered MAC derived from the IP, so an address always has the same MAC and
/// neighbours' caches stay valid across re-attachments.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x4e, a, b, c, d]
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || Error::invalid(format!("invalid MAC address '{s}': expected six hex bytes such as 02:42:0a:00:00:05"));
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(Error::invalid(format!("MAC address '{s}' is a multicast address; the first byte must be even")));
    }
    if mac == [0; 6] {
        return Err(Error::invalid(format!("MAC address '{s}' is all zeros; pick a unicast address")));
    }
    Ok(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn free_subnet_skips_everything_taken() {
        let pool = net("10.200.0.0/13");
        assert_eq!(free_subnet(pool, 22, &[]), Some(net("10.200.0.0/22")));
        let taken = [net("10.200.0.0/22"), net("10.200.4.0/24"), net("10.200.9.0/24")];
        assert_eq!(free_subnet(pool, 22, &taken), Some(net("10.200.12.0/22")));
        // A route covering the whole pool leaves nothing.
        assert_eq!(free_subnet(pool, 22, &[net("10.0.0.0/8")]), None);
    }

    #[test]
    fn addresses_come_lowest_first_and_skip_the_gateway() {
        let subnet = net("10.9.0.0/29");
        let gw = gateway_for(subnet, None).unwrap();
        assert_eq!(gw.to_string(), "10.9.0.1");
        let mut used = BTreeSet::new();
        let mut got = vec![];
        while let Some(ip) = lowest_free(subnet, gw, &used) {
            used.insert(u32::from(ip));
            got.push(ip.to_string());
        }
        assert_eq!(got, ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
        used.remove(&u32::from("10.9.0.4".parse::<Ipv4Addr>().unwrap()));
        assert_eq!(lowest_free(subnet, gw, &used).unwrap().to_string(), "10.9.0.4");
    }

    #[test]
    fn requested_addresses_are_checked() {
        let subnet = net("10.9.0.0/24");
        let gw: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let used = BTreeSet::from([u32::from(Ipv4Addr::new(10, 9, 0, 7))]);
        let check = |ip: &str| check_requested(subnet, gw, ip.parse().unwrap(), &used);
        assert!(check("10.9.0.8").is_ok());
        assert!(check("10.9.0.7").unwrap_err().to_string().contains("already in use"));
        assert!(check("10.9.0.1").unwrap_err().to_string().contains("gateway"));
        assert!(check("10.9.0.255").unwrap_err().to_string().contains("not a host address"));
        assert!(check("10.9.1.5").unwrap_err().to_string().contains("not a host address"));
        assert!(gateway_for(subnet, Some("10.9.0.0".parse().unwrap())).is_err());
        assert!(gateway_for(net("10.9.0.0/31"), None).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(format_mac(&mac_for("10.88.0.5".parse().unwrap())), "02:4e:0a:58:00:05");
        assert_eq!(parse_mac("02:42:0A:00:00:05").unwrap(), [2, 0x42, 10, 0, 0, 5]);
        for bad in ["02:42:0a:00:00", "02:42:0a:00:00:05:06", "zz:42:0a:00:00:05", "03:42:0a:00:00:05"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
