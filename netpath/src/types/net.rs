//! Subnets of either address family: parsing with errors a user can act on, membership,
//! overlap and the subnets of a pool. One implementation serves both families: an address is
//! its bits (a `u128`, the top of which IPv4 leaves zero) and its family's width.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Serialize, Serializer};

use crate::error::{Error, Field, Message, Result};

/// An address family: IPv4 or IPv6.
pub trait Family: Copy + Ord + fmt::Display + FromStr {
    const BITS: u8;
    /// How a CIDR of the family looks, for error messages.
    const EXAMPLE: &'static str;
    fn to_bits(self) -> u128;
    fn from_bits(bits: u128) -> Self;
}

impl Family for Ipv4Addr {
    const BITS: u8 = 32;
    const EXAMPLE: &'static str = "an IPv4 CIDR such as 10.88.0.0/16";
    fn to_bits(self) -> u128 {
        u32::from(self).into()
    }
    fn from_bits(bits: u128) -> Self {
        Ipv4Addr::from(bits as u32)
    }
}

impl Family for Ipv6Addr {
    const BITS: u8 = 128;
    const EXAMPLE: &'static str = "an IPv6 CIDR such as fd00:1::/64";
    fn to_bits(self) -> u128 {
        self.into()
    }
    fn from_bits(bits: u128) -> Self {
        bits.into()
    }
}

/// A subnet whose host bits are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Net<A> {
    addr: A,
    prefix: u8,
}

pub type Ipv4Net = Net<Ipv4Addr>;
pub type Ipv6Net = Net<Ipv6Addr>;

/// The bits a prefix of `prefix` covers in a family `bits` wide.
fn mask_bits(bits: u8, prefix: u8) -> u128 {
    let all = u128::MAX >> (128 - u32::from(bits));
    all & !all.checked_shr(u32::from(prefix)).unwrap_or(0)
}

impl<A: Family> Net<A> {
    pub fn new(addr: A, prefix: u8) -> Result<Self> {
        if prefix > A::BITS {
            return Err(Error::invalid(format!("invalid prefix length /{prefix} (0-{})", A::BITS)));
        }
        let net = Self { addr: A::from_bits(addr.to_bits() & mask_bits(A::BITS, prefix)), prefix };
        if net.addr != addr {
            return Err(Error::invalid(format!("subnet {addr}/{prefix} has host bits set; did you mean {net}?")));
        }
        Ok(net)
    }

    pub fn addr(&self) -> A {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask, as an address (`255.255.255.0` for a /24).
    pub fn mask(&self) -> A {
        A::from_bits(mask_bits(A::BITS, self.prefix))
    }

    /// The last address: IPv4's broadcast address.
    pub fn last(&self) -> A {
        A::from_bits(self.addr.to_bits() | (mask_bits(A::BITS, A::BITS) & !mask_bits(A::BITS, self.prefix)))
    }

    pub fn contains(&self, ip: A) -> bool {
        ip.to_bits() & mask_bits(A::BITS, self.prefix) == self.addr.to_bits()
    }

    pub fn overlaps(&self, other: &Net<A>) -> bool {
        let shorter = self.prefix.min(other.prefix);
        (self.addr.to_bits() ^ other.addr.to_bits()) & mask_bits(A::BITS, shorter) == 0
    }

    /// Whether `ip` is a usable host address: in the subnet, neither its first (network)
    /// address nor its last.
    pub fn is_host(&self, ip: A) -> bool {
        self.contains(ip) && ip != self.addr && ip != self.last()
    }

    /// How many usable host addresses there are.
    pub fn host_count(&self) -> u128 {
        (self.last().to_bits() - self.addr.to_bits()).saturating_sub(1)
    }

    /// The usable host addresses, lowest first.
    pub fn hosts(&self) -> impl Iterator<Item = A> + use<A> {
        let (first, last) = (self.addr.to_bits() + 1, self.last().to_bits());
        (0..last.saturating_sub(first)).map(move |i| A::from_bits(first + i))
    }

    /// The `index`-th subnet of length `prefix` inside this one, if it fits.
    pub fn subnet(&self, prefix: u8, index: u32) -> Option<Net<A>> {
        if prefix < self.prefix || prefix > A::BITS || u128::from(index) >= self.count(prefix) {
            return None;
        }
        let step = if prefix == 0 { 0 } else { 1u128 << (A::BITS - prefix) };
        Some(Net { addr: A::from_bits(self.addr.to_bits() + u128::from(index) * step), prefix })
    }

    /// How many subnets of length `prefix` this one holds, at most `u32::MAX`.
    pub fn subnet_count(&self, prefix: u8) -> u32 {
        self.count(prefix).min(u128::from(u32::MAX)) as u32
    }

    fn count(&self, prefix: u8) -> u128 {
        1u128.checked_shl(u32::from(prefix.saturating_sub(self.prefix))).unwrap_or(u128::MAX)
    }
}

impl Ipv4Net {
    /// For constants: `None` when the host bits are not zero.
    pub const fn from_octets(octets: [u8; 4], prefix: u8) -> Option<Self> {
        let addr = u32::from_be_bytes(octets);
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        if prefix > 32 || addr & !mask != 0 {
            return None;
        }
        Some(Self { addr: Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]), prefix })
    }
}

impl<A: Family> FromStr for Net<A> {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid(format!("invalid subnet '{s}': expected {}", A::EXAMPLE));
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: A = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > A::BITS {
            return Err(bad());
        }
        Self::new(addr, prefix)
    }
}

impl<A: Family> fmt::Display for Net<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<A: Family> Serialize for Net<A> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A subnet of either family, as a request may carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpNet {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

impl FromStr for IpNet {
    type Err = Error;
    /// A text with a ':' is IPv6, any other IPv4, so each gets its own family's message.
    fn from_str(s: &str) -> Result<Self> {
        if s.contains(':') { s.parse().map(IpNet::V6) } else { s.parse().map(IpNet::V4) }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpNet::V4(net) => net.fmt(f),
            IpNet::V6(net) => net.fmt(f),
        }
    }
}

/// Parses an address of either family given for `field`, with a message that says which.
pub fn parse_ip(field: Field, s: &str) -> Result<IpAddr> {
    s.parse().map_err(|_| {
        Error::invalid(
            Message::from("invalid ").and_field(field).and(format!(" '{s}': expected an address such as 10.88.0.5")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn net6(s: &str) -> Ipv6Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!(net("10.88.0.0/16").to_string(), "10.88.0.0/16");
        let err = "10.88.0.1/16".parse::<Ipv4Net>().unwrap_err().to_string();
        assert!(err.contains("did you mean 10.88.0.0/16"), "{err}");
        for bad in ["10.88.0.0", "10.88.0.0/33", "10.88.0/16", "x/8", "10.88.0.0/-1", "fd00::/64"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} parsed");
        }
        assert_eq!(net6("fd00:1::/64").to_string(), "fd00:1::/64");
        let err = "fd00:1::1/64".parse::<Ipv6Net>().unwrap_err().to_string();
        assert!(err.contains("did you mean fd00:1::/64"), "{err}");
        assert!("fd00::/129".parse::<Ipv6Net>().is_err());
        assert_eq!("fd00:1::/64".parse::<IpNet>().unwrap(), IpNet::V6(net6("fd00:1::/64")));
        assert_eq!("10.1.0.0/16".parse::<IpNet>().unwrap(), IpNet::V4(net("10.1.0.0/16")));
        let err = "banana".parse::<IpNet>().unwrap_err().to_string();
        assert!(err.starts_with("invalid subnet 'banana'"), "{err}");
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
        assert_eq!(a.last().to_string(), "10.1.255.255");
        assert_eq!(a.mask().to_string(), "255.255.0.0");
        assert_eq!(net("10.1.2.0/30").hosts().count(), 2);
        assert!(net("10.1.2.0/30").is_host("10.1.2.2".parse().unwrap()));
        assert!(!net("10.1.2.0/30").is_host("10.1.2.3".parse().unwrap()));
        let v6 = net6("fd00:1::/64");
        assert!(v6.contains("fd00:1::ffff".parse().unwrap()) && !v6.contains("fd00:2::1".parse().unwrap()));
        assert!(v6.overlaps(&net6("fd00::/16")) && !v6.overlaps(&net6("fd00:2::/64")));
        assert_eq!(v6.hosts().next().unwrap().to_string(), "fd00:1::1");
        assert_eq!(v6.mask().to_string(), "ffff:ffff:ffff:ffff::");
    }

    #[test]
    fn subnets_of_a_pool() {
        let pool = net("10.200.0.0/13");
        assert_eq!(pool.subnet_count(22), 512);
        assert_eq!(pool.subnet(22, 0).unwrap().to_string(), "10.200.0.0/22");
        assert_eq!(pool.subnet(22, 1).unwrap().to_string(), "10.200.4.0/22");
        assert_eq!(pool.subnet(22, 511).unwrap().to_string(), "10.207.252.0/22");
        assert!(pool.subnet(22, 512).is_none());
        let ula = net6("fd00::/8");
        assert_eq!(ula.subnet_count(64), u32::MAX);
        assert_eq!(ula.subnet(64, 1).unwrap().to_string(), "fd00:0:0:1::/64");
    }
}
