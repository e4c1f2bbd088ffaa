//! Raw Ethernet frames: an AF_PACKET socket inside a test namespace to send crafted frames and
//! capture what comes back, and small builders for the headers an attacker writes by hand
//! (Ethernet with an optional 802.1Q tag, ARP, IPv4 with flags and fragment offset, TCP, UDP).
//! Every builder computes its checksums, so frames are what a NIC would deliver.
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use crate::{Topology, in_netns};

pub type Mac = [u8; 6];

pub const BROADCAST: Mac = [0xff; 6];
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ALL: u16 = 0x0003;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// IPv4 flags and fragment offset, as the header's 16-bit field holds them.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

pub fn parse_mac(s: &str) -> Mac {
    let bytes: Vec<u8> = s.split(':').map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect();
    bytes.try_into().unwrap_or_else(|_| panic!("not a MAC address: {s}"))
}

/// `02:4e:0a:51:09:03`, as people write MAC addresses.
pub fn mac_str(mac: &Mac) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The MAC address of `ifname` in namespace `ns`, from `ip -j link show`.
pub fn mac_of(t: &Topology, ns: &str, ifname: &str) -> Mac {
    let link = t.link(ns, ifname).unwrap_or_else(|| panic!("no {ifname} in {ns}"));
    parse_mac(link["address"].as_str().expect("link address"))
}

/// A frame read from a packet socket; `outgoing` when the namespace itself sent it.
#[derive(Clone, Debug)]
pub struct Captured {
    pub outgoing: bool,
    pub data: Vec<u8>,
}

/// An AF_PACKET raw socket bound to one interface of one namespace; it sees every frame that
/// interface sends or receives, and sends frames exactly as given.
pub struct RawSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSocket {
    pub fn open(ns_path: &str, ifname: &str) -> Self {
        let name = std::ffi::CString::new(ifname).unwrap();
        in_netns(ns_path, || unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ALL.to_be()));
            assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            assert!(ifindex > 0, "no interface {ifname} in {ns_path}");
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_ALL.to_be();
            addr.sll_ifindex = ifindex;
            let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let rc = libc::bind(fd.as_raw_fd(), (&addr as *const libc::sockaddr_ll).cast(), len);
            assert_eq!(rc, 0, "bind AF_PACKET to {ifname}: {}", std::io::Error::last_os_error());
            // A capture may run behind a burst of frames: give it room.
            let size: libc::c_int = 8 << 20;
            libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, (&size as *const i32).cast(), 4);
            Self { fd, ifindex }
        })
    }

    /// Sends one frame; returns false when the kernel refused it (e.g. its queue is full).
    pub fn try_send(&self, frame: &[u8]) -> bool {
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        sent == frame.len() as isize
    }

    pub fn send(&self, frame: &[u8]) {
        assert!(self.try_send(frame), "sending a raw frame: {}", std::io::Error::last_os_error());
    }

    /// Frames seen until `timeout` has passed that match `keep`.
    pub fn capture(&self, timeout: Duration, keep: impl Fn(&Captured) -> bool) -> Vec<Captured> {
        self.capture_until(timeout, keep, |_| false)
    }

    /// Frames that match `keep`, until `timeout` has passed or `done` says the frames kept so
    /// far are enough.
    pub fn capture_until(
        &self,
        timeout: Duration,
        keep: impl Fn(&Captured) -> bool,
        done: impl Fn(&[Captured]) -> bool,
    ) -> Vec<Captured> {
        let deadline = Instant::now() + timeout;
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || done(&kept) {
                return kept;
            }
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                continue;
            }
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut len,
                )
            };
            if n <= 0 {
                continue;
            }
            let frame =
                Captured { outgoing: from.sll_pkttype == libc::PACKET_OUTGOING, data: buf[..n as usize].to_vec() };
            if keep(&frame) {
                kept.push(frame);
            }
        }
    }
}

/// The Internet checksum (RFC 1071) of `parts`, as if concatenated (each part but the last of
/// even length).
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame, with an 802.1Q tag when `vlan` is set.
pub fn ethernet(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(18 + payload.len().max(46));
    f.extend(dst);
    f.extend(src);
    if let Some(vid) = vlan {
        f.extend(ETH_P_8021Q.to_be_bytes());
        f.extend((vid & 0x0fff).to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f.extend(payload);
    // Padded to the Ethernet minimum, as a NIC would.
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP message: sender and target hardware and protocol addresses.
pub fn arp(op: u16, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0, 1, 0x08, 0x00, 6, 4];
    p.extend(op.to_be_bytes());
    p.extend(sha);
    p.extend(spa.octets());
    p.extend(tha);
    p.extend(tpa.octets());
    p
}

/// An IPv4 header's fields a test chooses.
#[derive(Clone, Copy, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units): `IP_DF`, `IP_MF | offset`.
    pub frag: u16,
}

impl Ipv4 {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self { src, dst, proto, ttl: 64, id: 1, frag: 0 }
    }

    /// The packet: a 20-byte header, with its checksum, followed by `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0];
        h.extend(((20 + payload.len()) as u16).to_be_bytes());
        h.extend(self.id.to_be_bytes());
        h.extend(self.frag.to_be_bytes());
        h.extend([self.ttl, self.proto, 0, 0]);
        h.extend(self.src.octets());
        h.extend(self.dst.octets());
        let sum = checksum(&[&h]);
        h[10..12].copy_from_slice(&sum.to_be_bytes());
        h.extend(payload);
        h
    }
}

/// The checksum of a transport segment over the IPv4 pseudo-header.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.extend([0, proto]);
    pseudo.extend((segment.len() as u16).to_be_bytes());
    checksum(&[&pseudo, segment])
}

/// A TCP segment (20-byte header, window 64240) between `src` and `dst`.
#[derive(Clone, Copy, Debug)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl Tcp {
    pub fn segment(&self, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let mut s = Vec::with_capacity(20 + payload.len());
        s.extend(self.sport.to_be_bytes());
        s.extend(self.dport.to_be_bytes());
        s.extend(self.seq.to_be_bytes());
        s.extend(self.ack.to_be_bytes());
        s.extend([5 << 4, self.flags]);
        s.extend(64240u16.to_be_bytes());
        s.extend([0, 0, 0, 0]);
        s.extend(payload);
        let sum = l4_checksum(src, dst, IPPROTO_TCP, &s);
        s[16..18].copy_from_slice(&sum.to_be_bytes());
        s
    }
}

/// A UDP datagram from `src:sport` to `dst:dport`, with its checksum.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend(sport.to_be_bytes());
    d.extend(dport.to_be_bytes());
    d.extend(((8 + payload.len()) as u16).to_be_bytes());
    d.extend([0, 0]);
    d.extend(payload);
    let sum = match l4_checksum(src, dst, IPPROTO_UDP, &d) {
        0 => 0xffff,
        sum => sum,
    };
    d[6..8].copy_from_slice(&sum.to_be_bytes());
    d
}

/// An IPv4/TCP frame.
pub fn tcp_frame(dst_mac: Mac, src_mac: Mac, ip: Ipv4, tcp: Tcp, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4 { proto: IPPROTO_TCP, ..ip };
    ethernet(dst_mac, src_mac, None, ETH_P_IP, &ip.packet(&tcp.segment(ip.src, ip.dst, payload)))
}

/// An IPv4/UDP frame.
pub fn udp_frame(dst_mac: Mac, src_mac: Mac, ip: Ipv4, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4 { proto: IPPROTO_UDP, ..ip };
    ethernet(dst_mac, src_mac, None, ETH_P_IP, &ip.packet(&udp(ip.src, sport, ip.dst, dport, payload)))
}

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

/// An ICMP error message (type, code, checksum, 4 unused bytes) quoting `quoted`: the packet it
/// is about, its IPv4 header and at least 8 bytes after it.
pub fn icmp_error(kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0, 0, 0, 0, 0];
    m.extend(quoted);
    let sum = checksum(&[&m]);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// An ICMP message in an untagged Ethernet/IPv4 frame: the outer addresses, its type and what
/// follows its 8-byte header (for an error, the packet it quotes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Icmp {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub kind: u8,
    pub quoted: Vec<u8>,
}

pub fn parse_icmp(frame: &[u8]) -> Option<Icmp> {
    if frame.len() < 42 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP || frame[23] != IPPROTO_ICMP {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let icmp = ip.get(ihl..tot_len).filter(|m| m.len() >= 8)?;
    Some(Icmp {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        kind: icmp[0],
        quoted: icmp[8..].to_vec(),
    })
}

/// What a captured IPv4 frame carries, as far as tests look at it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP only (0 otherwise).
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// Bytes after the transport header.
    pub payload_len: usize,
}

/// Parses an untagged Ethernet/IPv4 TCP or UDP frame (the first fragment included).
pub fn parse(frame: &[u8]) -> Option<Parsed> {
    if frame.len() < 34 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let l4 = ip.get(ihl..tot_len)?;
    let u16_at = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([l4[i], l4[i + 1], l4[i + 2], l4[i + 3]]);
    let mut p = Parsed {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        proto: ip[9],
        sport: 0,
        dport: 0,
        seq: 0,
        ack: 0,
        flags: 0,
        payload_len: 0,
    };
    match p.proto {
        IPPROTO_TCP if l4.len() >= 20 => {
            let off = usize::from(l4[12] >> 4) * 4;
            (p.sport, p.dport, p.seq, p.ack, p.flags) = (u16_at(0), u16_at(2), u32_at(4), u32_at(8), l4[13]);
            p.payload_len = l4.len().saturating_sub(off);
        }
        IPPROTO_UDP if l4.len() >= 8 => {
            (p.sport, p.dport, p.payload_len) = (u16_at(0), u16_at(2), l4.len() - 8);
        }
        _ => return None,
    }
    Some(p)
}

/// Whether `needle` occurs in `frame` (tests mark their payloads to find them again).
pub fn contains(frame: &[u8], needle: &[u8]) -> bool {
    frame.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let ip = Ipv4::new(a, b, IPPROTO_UDP).packet(&udp(a, 1000, b, 53, b"odd length"));
        assert_eq!(checksum(&[&ip[..20]]), 0);
        let seg = Tcp { sport: 1, dport: 2, seq: 3, ack: 4, flags: TCP_SYN }.segment(a, b, b"x");
        assert_eq!(l4_checksum(a, b, IPPROTO_TCP, &seg), 0);
        let frame = tcp_frame(
            BROADCAST,
            [2; 6],
            Ipv4::new(a, b, 0),
            Tcp { sport: 1, dport: 2, seq: 3, ack: 4, flags: TCP_SYN },
            b"x",
        );
        let p = parse(&frame).unwrap();
        assert_eq!((p.src, p.dst, p.sport, p.dport, p.seq, p.flags, p.payload_len), (a, b, 1, 2, 3, TCP_SYN, 1));
    }
}
