//! Published ports: Docker's `-p [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]`.
use std::{fmt, net::Ipv4Addr};

use netpath_common::{IPPROTO_TCP, IPPROTO_UDP};
use serde::Serialize;

use crate::{error::Error, error::Result};

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
    pub host_ip: Option<Ipv4Addr>,
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
        let ip = self.host_ip.map_or_else(|| "0.0.0.0".to_string(), |ip| ip.to_string());
        write!(f, "{ip}:{}->{}/{}", self.host_port, self.container_port, self.proto)
    }
}

fn port_range(s: &str, spec: &str) -> Result<(u16, u16)> {
    let bad = || Error::invalid(format!("invalid port '{s}' in --publish '{spec}': expected 1-65535 or FIRST-LAST"));
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if a == 0 || b < a {
        return Err(bad());
    }
    Ok((a, b))
}

/// Parses one `--publish` value into the ports it publishes.
pub fn parse_publish(spec: &str) -> Result<Vec<Port>> {
    let (mapping, proto) = match spec.rsplit_once('/') {
        Some((m, p)) => (
            m,
            Proto::parse(p).ok_or_else(|| {
                Error::invalid(format!("invalid protocol '{p}' in --publish '{spec}': use tcp or udp"))
            })?,
        ),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = mapping.split(':').collect();
    let (host_ip, host, container) = match parts.as_slice() {
        [host, container] => (None, *host, *container),
        [ip, host, container] => {
            let ip: Ipv4Addr =
                ip.parse().map_err(|_| Error::invalid(format!("invalid host address '{ip}' in --publish '{spec}'")))?;
            (if ip.is_unspecified() { None } else { Some(ip) }, *host, *container)
        }
        _ => {
            return Err(Error::invalid(format!(
                "invalid --publish '{spec}': expected [HOST_IP:]HOST_PORT[-END]:CONTAINER_PORT[-END][/tcp|/udp]"
            )));
        }
    };
    let (h0, h1) = port_range(host, spec)?;
    let (c0, c1) = port_range(container, spec)?;
    if h1 - h0 != c1 - c0 {
        return Err(Error::invalid(format!(
            "--publish '{spec}': the host range {h0}-{h1} and the container range {c0}-{c1} differ in length"
        )));
    }
    Ok((0..=h1 - h0).map(|i| Port { proto, host_ip, host_port: h0 + i, container_port: c0 + i }).collect())
}

/// Whether a process of the current namespace holds the host port: a TCP listener or a bound
/// UDP socket. Tried by binding it (with `SO_REUSEADDR`, so connections in TIME_WAIT do not
/// count) and closing at once; a port published to a container must not shadow a host service.
pub fn host_port_in_use(port: &Port) -> bool {
    let ty = match port.proto {
        Proto::Tcp => libc::SOCK_STREAM,
        Proto::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: plain socket syscalls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.host_port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(port.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as u32);
        let in_use = rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EADDRINUSE);
        libc::close(fd);
        in_use
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_syntax() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(p, [Port { proto: Proto::Tcp, host_ip: None, host_port: 8080, container_port: 80 }]);
        let p = parse_publish("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p[0].host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p[0].proto, Proto::Udp);
        let p = parse_publish("9000-9009:80-89").unwrap();
        assert_eq!(p.len(), 10);
        assert_eq!((p[9].host_port, p[9].container_port), (9009, 89));
        assert_eq!(parse_publish("0.0.0.0:1:2").unwrap()[0].host_ip, None);
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
