//! IPv4 subnets: parsing with errors a user can act on, membership and overlap.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Serialize, Serializer};

use crate::{error::Error, error::Result};

/// An IPv4 subnet whose host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(Error::invalid(format!("invalid prefix length /{prefix} (0-32)")));
        }
        let net = Self { addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)), prefix };
        if net.addr != addr {
            return Err(Error::invalid(format!("subnet {addr}/{prefix} has host bits set; did you mean {net}?")));
        }
        Ok(net)
    }

    /// For constants: `None` when the host bits are not zero.
    pub const fn from_octets(octets: [u8; 4], prefix: u8) -> Option<Self> {
        let addr = u32::from_be_bytes(octets);
        if prefix > 32 || addr & !mask(prefix) != 0 {
            return None;
        }
        Some(Self { addr: Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]), prefix })
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn mask(&self) -> u32 {
        mask(self.prefix)
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let shorter = self.prefix.min(other.prefix);
        (u32::from(self.addr) ^ u32::from(other.addr)) & mask(shorter) == 0
    }
    /// The usable host addresses: all but the network and broadcast addresses.
    pub fn hosts(&self) -> std::ops::RangeInclusive<u32> {
        u32::from(self.addr) + 1..=u32::from(self.broadcast()) - 1
    }
    /// The `index`-th subnet of length `prefix` inside this one, if it fits.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<Ipv4Net> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << (prefix - self.prefix);
        if u64::from(index) >= count {
            return None;
        }
        let step = if prefix == 0 { 0 } else { 1u32 << (32 - prefix) };
        let addr = u32::from(self.addr) + index * step;
        Some(Ipv4Net { addr: addr.into(), prefix })
    }
    pub fn subnet_count(&self, prefix: u8) -> u32 {
        (1u64 << (prefix.saturating_sub(self.prefix))).min(u64::from(u32::MAX)) as u32
    }
}

pub const fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
}

impl FromStr for Ipv4Net {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("invalid subnet '{s}': expected an IPv4 CIDR such as 10.88.0.0/16"));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Self::new(addr, prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses an IPv4 address given for `what` (a flag name), with a message that says which.
pub fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| Error::invalid(format!("invalid {what} '{s}': expected an IPv4 address such as 10.88.0.5")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(net("10.88.0.0/16").to_string(), "10.88.0.0/16");
        let err = "10.88.0.1/16".parse::<Ipv4Net>().unwrap_err().to_string();
        assert!(err.contains("did you mean 10.88.0.0/16"), "{err}");
        for bad in ["10.88.0.0", "10.88.0.0/33", "10.88.0/16", "x/8", "10.88.0.0/-1"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn membership_and_overlap() {
        let a = net("10.1.0.0/16");
        assert!(a.contains("10.1.255.255".parse().unwrap()));
        assert!(!a.contains("10.2.0.0".parse().unwrap()));
        assert!(a.overlaps(&net("10.1.4.0/24")));
        assert!(net("10.1.4.0/24").overlaps(&a));
        assert!(!a.overlaps(&net("10.2.0.0/16")));
        assert!(net("0.0.0.0/0").overlaps(&a));
        assert_eq!(a.broadcast().to_string(), "10.1.255.255");
        assert_eq!(net("10.1.2.0/30").hosts().count(), 2);
    }

    #[test]
    fn subnets_of_a_pool() {
        let pool = net("10.200.0.0/13");
        assert_eq!(pool.subnet_count(22), 512);
        assert_eq!(pool.subnet(22, 0).unwrap().to_string(), "10.200.0.0/22");
        assert_eq!(pool.subnet(22, 1).unwrap().to_string(), "10.200.4.0/22");
        assert_eq!(pool.subnet(22, 511).unwrap().to_string(), "10.207.252.0/22");
        assert!(pool.subnet(22, 512).is_none());
    }
}
