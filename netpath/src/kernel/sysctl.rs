//! Per-interface and host settings netpath reads or sets outside netlink: forwarding on its own
//! bridges, GRO and IPv6 on a container's interface, the host's ephemeral port range.
use crate::{
    error::{Context, Error, Result},
    types::name,
};

/// Lets the kernel route packets that arrive on `ifname` (a bridge netpath owns). The
/// datapath's `bpf_fib_lookup` asks as if the packet arrived there, and the kernel answers only
/// for interfaces that forward. This is the interface's own setting, not the host's ip_forward.
pub fn enable_forwarding(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
    std::fs::write(&path, "1").context(|| format!("cannot enable forwarding on {ifname}"))
}

/// Turns GRO on for `ifname` in the calling thread's namespace (a container's side of a veth).
/// A veth then runs NAPI (kernel 5.13 and later), which is what it needs to take the frames
/// `xdp_uplink` redirects into its peer; the alternative, an XDP program on it, would run for
/// every frame the container receives. Its peer offers itself as a redirect target
/// (`NDO_XMIT`) only when it comes up after this, or when this is done while both are up.
pub fn enable_gro(ifname: &str) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x0000_002c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd: ETHTOOL_SGRO, data: 1 };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes().take(name::IFNAMSIZ_MAX)) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    let fail = |e| Error::system(format!("cannot turn GRO on for {ifname}"), e);
    // SAFETY: a socket only for the ioctl, closed when `sock` drops; `req` and `value` outlive
    // the call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&sock), SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Turns IPv6 off on `ifname` in the calling thread's namespace (a container's interface):
/// netpath networks are IPv4 only and the datapath drops IPv6, so the container should not
/// send it at all. Nothing to do on a kernel without IPv6.
pub fn disable_ipv6(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        written => written.context(|| format!("cannot disable IPv6 on {ifname}")),
    }
}

/// Whether `ifname` forwards. Writing `net.ipv4.ip_forward` (any value) resets it on every
/// interface, so `ensure` checks it rather than trusting it stayed as netpath left it.
pub fn forwarding_enabled(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding")).is_ok_and(|v| v.trim() == "1")
}

/// The host's ephemeral port range, which masquerading must stay clear of.
pub fn local_port_range() -> Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(path).context(|| format!("cannot read {path}"))?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => Err(Error::system(format!("cannot parse {path}"), text)),
    }
}
