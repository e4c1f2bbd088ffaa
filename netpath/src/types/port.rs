//! Published ports: Docker's `-p [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]`.
use std::{fmt, net::IpAddr};

use netpath_common::{IPPROTO_TCP, IPPROTO_UDP};
use serde::Serialize;

use crate::error::{Error, Field, Message, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => IPPROTO_TCP,
            Proto::Udp => IPPROTO_UDP,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port: a host address (`None`: every address) and port, and the endpoint
/// port it leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Port {
    pub proto: Proto,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl Port {
    /// Whether two publications would claim the same packets.
    pub fn collides(&self, other: &Port) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            None => write!(f, "0.0.0.0:")?,
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
        }
        write!(f, "{}->{}/{}", self.host_port, self.container_port, self.proto)
    }
}

/// A message about one `-p` value: "`<what>` in -p '<spec>'`<after>`", the flag named by the frontend.
fn bad(what: impl fmt::Display, spec: &str, after: &str) -> Error {
    Error::invalid(Message::from(format!("{what} in ")).and_field(Field::Publish).and(format!(" '{spec}'{after}")))
}

fn port_range(s: &str, spec: &str) -> Result<(u16, u16)> {
    let bad = || bad(format!("invalid port '{s}'"), spec, ": expected 1-65535 or FIRST-LAST");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Splits `[HOST_IP:]HOST:CONTAINER`, where an IPv6 host address is bracketed as Docker
/// spells it (`[::1]:8080:80`).
fn split_mapping(mapping: &str) -> Option<(Option<&str>, &str, &str)> {
    if let Some(rest) = mapping.strip_prefix('[') {
        let (ip, ports) = rest.split_once("]:")?;
        let (host, container) = ports.split_once(':')?;
        return (!container.contains(':')).then_some((Some(ip), host, container));
    }
    match mapping.split(':').collect::<Vec<_>>().as_slice() {
        [host, container] => Some((None, host, container)),
        [ip, host, container] => Some((Some(ip), host, container)),
        _ => None,
    }
}

/// Parses one `-p` value into the ports it publishes. `0.0.0.0` and `::` mean every address
/// of their family; both are kept as "every address" until networks carry IPv6.
pub fn parse_publish(spec: &str) -> Result<Vec<Port>> {
    let (mapping, proto) = match spec.rsplit_once('/') {
        Some((m, p)) => {
            (m, Proto::parse(p).ok_or_else(|| bad(format!("invalid protocol '{p}'"), spec, ": use tcp or udp"))?)
        }
        None => (spec, Proto::Tcp),
    };
    let (host_ip, host, container) = split_mapping(mapping).ok_or_else(|| {
        Error::invalid(
            Message::from("invalid ")
                .and_field(Field::Publish)
                .and(format!(" '{spec}': expected [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]")),
        )
    })?;
    let host_ip = match host_ip {
        None => None,
        Some(ip) => {
            let ip: IpAddr = ip.parse().map_err(|_| bad(format!("invalid host address '{ip}'"), spec, ""))?;
            (!ip.is_unspecified()).then_some(ip)
        }
    };
    let (h0, h1) = port_range(host, spec)?;
    let (c0, c1) = port_range(container, spec)?;
    if h1 - h0 != c1 - c0 {
        return Err(Error::invalid(
            Message::field(Field::Publish)
                .and(format!(" '{spec}': the host range {h0}-{h1} and the container range {c0}-{c1} differ in length")),
        ));
    }
    Ok((0..=h1 - h0).map(|i| Port { proto, host_ip, host_port: h0 + i, container_port: c0 + i }).collect())
}

/// Every port of several `-p` values.
pub fn parse_publish_all(specs: &[String]) -> Result<Vec<Port>> {
    Ok(specs.iter().map(|s| parse_publish(s)).collect::<Result<Vec<_>>>()?.concat())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn docker_syntax() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(p, [Port { proto: Proto::Tcp, host_ip: None, host_port: 8080, container_port: 80 }]);
        let p = parse_publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p[0].host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        assert_eq!(p[0].proto, Proto::Udp);
        let p = parse_publish("9000-9009:80-89").unwrap();
        assert_eq!(p.len(), 10);
        assert_eq!((p[9].host_port, p[9].container_port), (9009, 89));
        assert_eq!(parse_publish("0.0.0.0:1:2").unwrap()[0].host_ip, None);
        let v6 = parse_publish("[::1]:8080:80").unwrap()[0];
        assert_eq!(v6.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(v6.to_string(), "[::1]:8080->80/tcp");
        assert_eq!(parse_publish("[::]:8080:80/udp").unwrap()[0].host_ip, None);
    }

    #[test]
    fn bad_specs() {
        for (spec, msg) in [
            ("80", "expected [HOST_IP:]"),
            ("8080:80/sctp", "invalid protocol 'sctp'"),
            ("9000-9009:80-85", "differ in length"),
            ("0:80", "invalid port '0'"),
            ("70000:80", "invalid port '70000'"),
            ("x.y:1:2", "invalid host address"),
            ("10-5:10-5", "invalid port '10-5'"),
            ("[::1:8080:80", "expected [HOST_IP:]"),
            ("[::1]:8080", "expected [HOST_IP:]"),
            ("[zz]:1:2", "invalid host address 'zz'"),
        ] {
            let err = parse_publish(spec).unwrap_err().to_string();
            assert!(err.contains(msg), "{spec}: {err}");
        }
    }

    #[test]
    fn collisions_follow_any_address_semantics() {
        let any = parse_publish("8080:80").unwrap()[0];
        let lo = parse_publish("127.0.0.1:8080:80").unwrap()[0];
        let other = parse_publish("10.0.0.1:8080:80").unwrap()[0];
        let udp = parse_publish("8080:80/udp").unwrap()[0];
        assert!(any.collides(&lo) && lo.collides(&any));
        assert!(!lo.collides(&other));
        assert!(!any.collides(&udp));
    }
}
