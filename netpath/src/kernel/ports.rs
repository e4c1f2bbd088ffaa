//! Whether the host already uses a port that a publication would shadow.
use std::net::{IpAddr, Ipv4Addr};

use crate::types::port::{Port, Proto};

/// Whether a process of the current namespace holds the host port: a TCP listener or a bound
/// UDP socket. Tried by binding it (with `SO_REUSEADDR`, so connections in TIME_WAIT do not
/// count) and closing at once; a port published to a container must not shadow a host service.
pub fn host_port_in_use(port: &Port) -> bool {
    // Only IPv4 publications reach this check (see `core::request`).
    let host_v4 = match port.host_ip {
        None => Ipv4Addr::UNSPECIFIED,
        Some(IpAddr::V4(ip)) => ip,
        Some(IpAddr::V6(_)) => return false,
    };
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
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(host_v4.octets()) },
            sin_zero: [0; 8],
        };
        let rc = libc::bind(fd, (&addr as *const libc::sockaddr_in).cast(), size_of::<libc::sockaddr_in>() as u32);
        let in_use = rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EADDRINUSE);
        libc::close(fd);
        in_use
    }
}
