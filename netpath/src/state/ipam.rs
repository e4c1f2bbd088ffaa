//! Address management: which subnet a new network gets, which address a new endpoint gets.
//! Pure functions; the store calls them inside one `BEGIN IMMEDIATE` transaction so that
//! concurrent processes see each other's choices.
use std::collections::BTreeSet;

use crate::{
    error::{Error, Field, Message, Result},
    types::net::{Family, Ipv4Net, Net},
};

/// Where networks created without `--subnet` get their subnet from.
pub const DEFAULT_POOL: Ipv4Net = match Ipv4Net::from_octets([10, 200, 0, 0], 13) {
    Some(net) => net,
    None => panic!("bad default pool"),
};
/// Size of an automatic subnet: 1021 endpoints.
pub const DEFAULT_PREFIX: u8 = 22;

/// The first subnet of the pool that overlaps nothing in `taken`.
pub fn free_subnet<A: Family>(pool: Net<A>, prefix: u8, taken: &[Net<A>]) -> Option<Net<A>> {
    (0..pool.subnet_count(prefix))
        .filter_map(|i| pool.subnet(prefix, i))
        .find(|candidate| !taken.iter().any(|t| t.overlaps(candidate)))
}

/// The gateway defaults to the first host address; a given one must be a host of the subnet.
pub fn gateway_for<A: Family>(subnet: Net<A>, gateway: Option<A>) -> Result<A> {
    if subnet.prefix() > A::BITS - 2 {
        return Err(Error::invalid(format!(
            "subnet {subnet} is too small; use a prefix of /{} or shorter",
            A::BITS - 2
        )));
    }
    match gateway {
        None => subnet.hosts().next().ok_or_else(|| Error::invalid(format!("subnet {subnet} has no host address"))),
        Some(gw) if subnet.is_host(gw) => Ok(gw),
        Some(gw) => Err(Error::invalid(format!("gateway {gw} is not a host address of subnet {subnet}"))),
    }
}

/// Checks an address the user asked for.
pub fn check_requested<A: Family>(subnet: Net<A>, gateway: A, ip: A, used: &BTreeSet<A>) -> Result<()> {
    if !subnet.is_host(ip) {
        return Err(Error::invalid(format!("address {ip} is not a host address of subnet {subnet}")));
    }
    if ip == gateway {
        return Err(Error::conflict(
            Message::from(format!("address {ip} is the network's gateway; pick another ")).and_field(Field::Ip),
        ));
    }
    if used.contains(&ip) {
        return Err(Error::conflict(
            Message::from(format!("address {ip} is already in use; pick another "))
                .and_field(Field::Ip)
                .and(" or leave it out"),
        ));
    }
    Ok(())
}

/// The lowest host address that is neither the gateway nor in use.
pub fn lowest_free<A: Family>(subnet: Net<A>, gateway: A, used: &BTreeSet<A>) -> Option<A> {
    subnet.hosts().find(|a| *a != gateway && !used.contains(a))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::types::net::Ipv6Net;

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
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(got, ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]);
        used.remove(&"10.9.0.4".parse::<Ipv4Addr>().unwrap());
        assert_eq!(lowest_free(subnet, gw, &used).unwrap().to_string(), "10.9.0.4");
    }

    #[test]
    fn requested_addresses_are_checked() {
        let subnet = net("10.9.0.0/24");
        let gw: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let used = BTreeSet::from([Ipv4Addr::new(10, 9, 0, 7)]);
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
    fn ipv6_subnets_and_addresses_come_from_the_same_rules() {
        let pool: Ipv6Net = "fd00:4e::/48".parse().unwrap();
        let taken: [Ipv6Net; 1] = ["fd00:4e::/64".parse().unwrap()];
        let subnet = free_subnet(pool, 64, &taken).unwrap();
        assert_eq!(subnet.to_string(), "fd00:4e:0:1::/64");
        let gw = gateway_for(subnet, None).unwrap();
        assert_eq!(gw.to_string(), "fd00:4e:0:1::1");
        let used = BTreeSet::from(["fd00:4e:0:1::2".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(lowest_free(subnet, gw, &used).unwrap().to_string(), "fd00:4e:0:1::3");
        let err = check_requested(subnet, gw, "fd00:4e:0:1::2".parse().unwrap(), &used).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
    }
}
