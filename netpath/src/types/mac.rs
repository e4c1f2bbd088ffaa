//! MAC addresses: parsed from what users type, formatted as `ip link` shows them, and derived
//! from an endpoint's IPv4 address.
use std::net::Ipv4Addr;

use crate::error::{Error, Result};

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

    #[test]
    fn macs() {
        assert_eq!(format_mac(&mac_for("10.88.0.5".parse().unwrap())), "02:4e:0a:58:00:05");
        assert_eq!(parse_mac("02:42:0A:00:00:05").unwrap(), [2, 0x42, 10, 0, 0, 5]);
        for bad in ["02:42:0a:00:00", "02:42:0a:00:00:05:06", "zz:42:0a:00:00:05", "03:42:0a:00:00:05"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
