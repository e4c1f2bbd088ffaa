//! What netfilter holds in a network namespace, asked of the kernel itself: nftables tables
//! (over `NETLINK_NETFILTER`), legacy x_tables tables (`/proc/<thread>/net/*_tables_names`) and
//! conntrack entries (ctnetlink, `/proc/<thread>/net/nf_conntrack`, `nf_conntrack_count`). No
//! `nft`, `iptables` or `conntrack` binary is needed, so the check works on a machine without
//! them — which is the machine netpath is meant for.
//!
//! Everything here acts on the calling thread's network namespace: call it through
//! [`crate::in_netns`].
use std::{io, net::Ipv4Addr, path::Path};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TIMEOUT: u16 = 7;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;

/// Everything of netfilter's found in the calling thread's namespace, one line each; empty
/// when it holds no nftables table, no x_tables table and no conntrack entry.
pub fn findings() -> Vec<String> {
    let mut found = Vec::new();
    match nft_tables() {
        Ok(Some(tables)) => found.extend(tables.into_iter().map(|t| format!("nftables table {t}"))),
        Ok(None) => {}
        Err(e) => found.push(format!("cannot list nftables tables: {e}")),
    }
    for family in ["ip", "ip6", "arp"] {
        let path = format!("/proc/thread-self/net/{family}_tables_names");
        if let Ok(names) = std::fs::read_to_string(&path) {
            found.extend(names.split_whitespace().map(|n| format!("{family}tables table {n} ({path})")));
        }
    }
    if let Ok(entries) = std::fs::read_to_string("/proc/thread-self/net/nf_conntrack") {
        found.extend(entries.lines().map(|e| format!("nf_conntrack entry: {e}")));
    }
    if let Ok(count) = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count") {
        if count.trim() != "0" {
            found.push(format!("nf_conntrack_count is {}", count.trim()));
        }
    }
    match conntrack_entries() {
        Ok(Some(entries)) => found.extend(entries.into_iter().map(|e| format!("conntrack entry (ctnetlink): {e}"))),
        Ok(None) => {}
        Err(e) => found.push(format!("cannot list conntrack entries: {e}")),
    }
    found
}

/// Whether the kernel has connection tracking at all (built in or loaded). Only then is it
/// asked over ctnetlink: asking would load the module on a kernel that has it as one.
pub fn conntrack_present() -> bool {
    Path::new("/sys/module/nf_conntrack").exists()
}

/// The nftables tables of every family, as `family name`; `None` when the kernel has no
/// nftables (the subsystem answers `EINVAL`, or netfilter's netlink is missing altogether).
pub fn nft_tables() -> io::Result<Option<Vec<String>>> {
    let sock = match Netlink::open() {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let msg = Msg::new(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE, libc::NLM_F_REQUEST | libc::NLM_F_DUMP, 1)
        .nfgen(NFPROTO_UNSPEC, 0);
    match sock.dump(&msg.finish()) {
        Ok(messages) => Ok(Some(
            messages
                .iter()
                .map(|(family, attrs)| {
                    let name = attr(attrs, NFTA_TABLE_NAME).map(c_string).unwrap_or_else(|| "?".into());
                    format!("{} {name}", family_name(*family))
                })
                .collect(),
        )),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every conntrack entry (all families) as `proto src:sport -> dst:dport`; `None` when the
/// kernel has no connection tracking (see [`conntrack_present`]).
pub fn conntrack_entries() -> io::Result<Option<Vec<String>>> {
    if !conntrack_present() {
        return Ok(None);
    }
    let sock = Netlink::open()?;
    let msg = Msg::new(NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET, libc::NLM_F_REQUEST | libc::NLM_F_DUMP, 1)
        .nfgen(NFPROTO_UNSPEC, 0);
    let messages = sock.dump(&msg.finish())?;
    Ok(Some(messages.iter().map(|(_, attrs)| describe_ct(attrs)).collect()))
}

/// Creates nftables table `name` (family inet) in the calling thread's namespace: for tests
/// that check the check.
pub fn create_nft_table(name: &str) -> io::Result<()> {
    let sock = Netlink::open()?;
    let subsys = NFNL_SUBSYS_NFTABLES.to_be();
    let begin = Msg::new(NFNL_MSG_BATCH_BEGIN, libc::NLM_F_REQUEST, 1).nfgen(NFPROTO_UNSPEC, subsys).finish();
    let table = Msg::new(
        NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE,
        libc::NLM_F_REQUEST | libc::NLM_F_CREATE | libc::NLM_F_ACK,
        2,
    )
    .nfgen(NFPROTO_INET, 0)
    .attr(NFTA_TABLE_NAME, &[name.as_bytes(), &[0]].concat())
    .finish();
    let end = Msg::new(NFNL_MSG_BATCH_END, libc::NLM_F_REQUEST, 3).nfgen(NFPROTO_UNSPEC, subsys).finish();
    sock.send(&[begin, table, end].concat())?;
    sock.ack(2)
}

/// Creates a UDP conntrack entry `src:sport -> dst:dport` (and its reply) through ctnetlink in
/// the calling thread's namespace: for tests that check the check.
pub fn create_conntrack_entry(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> io::Result<()> {
    let sock = Netlink::open()?;
    let tuple = |s: Ipv4Addr, sp: u16, d: Ipv4Addr, dp: u16| {
        let ip = Attrs::default().attr(CTA_IP_V4_SRC, &s.octets()).attr(CTA_IP_V4_DST, &d.octets());
        let proto = Attrs::default()
            .attr(CTA_PROTO_NUM, &[libc::IPPROTO_UDP as u8])
            .attr(CTA_PROTO_SRC_PORT, &sp.to_be_bytes())
            .attr(CTA_PROTO_DST_PORT, &dp.to_be_bytes());
        Attrs::default().nested(CTA_TUPLE_IP, ip).nested(CTA_TUPLE_PROTO, proto)
    };
    let msg = Msg::new(
        NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW,
        libc::NLM_F_REQUEST | libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK,
        1,
    )
    .nfgen(NFPROTO_IPV4, 0)
    .nested(CTA_TUPLE_ORIG, tuple(src, sport, dst, dport))
    .nested(CTA_TUPLE_REPLY, tuple(dst, dport, src, sport))
    .attr(CTA_TIMEOUT, &60u32.to_be_bytes())
    .finish();
    sock.send(&msg)?;
    sock.ack(1)
}

/// Instantiates the legacy iptables table `name` in the calling thread's namespace, as any
/// `iptables-legacy` command does (`IPT_SO_GET_INFO`): for tests that check the check.
pub fn touch_iptables_table(name: &str) -> io::Result<()> {
    const IPT_SO_GET_INFO: libc::c_int = 64;
    #[repr(C)]
    struct IptGetinfo {
        name: [u8; 32],
        valid_hooks: u32,
        hook_entry: [u32; 5],
        underflow: [u32; 5],
        num_entries: u32,
        size: u32,
    }
    // SAFETY: plain socket calls on a buffer of the size the kernel is told.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_RAW);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut info: IptGetinfo = std::mem::zeroed();
        info.name[..name.len()].copy_from_slice(name.as_bytes());
        let mut len = std::mem::size_of::<IptGetinfo>() as libc::socklen_t;
        let rc = libc::getsockopt(fd, libc::IPPROTO_IP, IPT_SO_GET_INFO, (&raw mut info).cast(), &mut len);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 { Err(err) } else { Ok(()) }
    }
}

fn family_name(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown-family",
    }
}

fn c_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// A conntrack entry's original tuple, as far as it is IPv4.
fn describe_ct(attrs: &[u8]) -> String {
    let Some(orig) = attr(attrs, CTA_TUPLE_ORIG) else {
        return "(no tuple)".into();
    };
    let ip = attr(orig, CTA_TUPLE_IP).unwrap_or_default();
    let proto = attr(orig, CTA_TUPLE_PROTO).unwrap_or_default();
    let addr = |a: Option<&[u8]>| a.and_then(|a| <[u8; 4]>::try_from(a).ok()).map(Ipv4Addr::from);
    let port = |p: Option<&[u8]>| p.and_then(|p| <[u8; 2]>::try_from(p).ok()).map_or(0, u16::from_be_bytes);
    format!(
        "proto {} {}:{} -> {}:{}",
        attr(proto, CTA_PROTO_NUM).and_then(|p| p.first().copied()).unwrap_or(0),
        addr(attr(ip, CTA_IP_V4_SRC)).map_or("?".into(), |a| a.to_string()),
        port(attr(proto, CTA_PROTO_SRC_PORT)),
        addr(attr(ip, CTA_IP_V4_DST)).map_or("?".into(), |a| a.to_string()),
        port(attr(proto, CTA_PROTO_DST_PORT)),
    )
}

/// The payload of the first attribute of `kind` in a run of netlink attributes.
fn attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    None
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Netlink attributes being built.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn attr(mut self, kind: u16, payload: &[u8]) -> Self {
        self.0.extend(((4 + payload.len()) as u16).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(payload);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    fn nested(self, kind: u16, inner: Attrs) -> Self {
        self.attr(kind | NLA_F_NESTED, &inner.0)
    }
}

/// A netfilter netlink message being built: header, `nfgenmsg`, attributes.
struct Msg {
    kind: u16,
    flags: libc::c_int,
    seq: u32,
    body: Attrs,
}

impl Msg {
    fn new(kind: u16, flags: libc::c_int, seq: u32) -> Self {
        Self { kind, flags, seq, body: Attrs::default() }
    }

    /// The `nfgenmsg` that opens every netfilter message: family, version 0, resource id
    /// (already in network byte order).
    fn nfgen(mut self, family: u8, res_id: u16) -> Self {
        self.body.0.extend([family, 0]);
        self.body.0.extend(res_id.to_ne_bytes());
        self
    }

    fn attr(mut self, kind: u16, payload: &[u8]) -> Self {
        self.body = self.body.attr(kind, payload);
        self
    }

    fn nested(mut self, kind: u16, inner: Attrs) -> Self {
        self.body = self.body.nested(kind, inner);
        self
    }

    fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.body.0.len());
        out.extend(((16 + self.body.0.len()) as u32).to_ne_bytes());
        out.extend(self.kind.to_ne_bytes());
        out.extend((self.flags as u16).to_ne_bytes());
        out.extend(self.seq.to_ne_bytes());
        out.extend(0u32.to_ne_bytes());
        out.extend(self.body.0);
        out
    }
}

/// A `NETLINK_NETFILTER` socket of the calling thread's namespace.
struct Netlink(libc::c_int);

impl Netlink {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket calls; the address is a zeroed, then filled, sockaddr_nl.
        unsafe {
            let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let sock = Self(fd);
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            if libc::bind(fd, (&raw const addr).cast(), len) < 0 {
                return Err(io::Error::last_os_error());
            }
            let timeout = libc::timeval { tv_sec: 5, tv_usec: 0 };
            let tlen = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const timeout).cast(), tlen);
            Ok(sock)
        }
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: sends `bytes` as they are, to the kernel (no address: the socket's peer).
        let sent = unsafe { libc::send(self.0, bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The messages of one datagram from the kernel, as (type, seq, payload).
    fn recv(&self) -> io::Result<Vec<(u16, u32, Vec<u8>)>> {
        let mut buf = vec![0u8; 1 << 16];
        // SAFETY: the kernel writes at most `buf.len()` bytes.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut data = &buf[..n as usize];
        let mut out = Vec::new();
        while data.len() >= 16 {
            let len = u32::from_ne_bytes(data[0..4].try_into().unwrap()) as usize;
            if len < 16 || len > data.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message"));
            }
            let kind = u16::from_ne_bytes([data[4], data[5]]);
            let seq = u32::from_ne_bytes(data[8..12].try_into().unwrap());
            out.push((kind, seq, data[16..len].to_vec()));
            data = &data[align(len).min(data.len())..];
        }
        Ok(out)
    }

    /// Sends a dump request and collects the answers until `NLMSG_DONE`, as (family of the
    /// `nfgenmsg`, attributes).
    fn dump(&self, request: &[u8]) -> io::Result<Vec<(u8, Vec<u8>)>> {
        self.send(request)?;
        let mut out = Vec::new();
        loop {
            for (kind, _, payload) in self.recv()? {
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => error(&payload)?,
                    _ if payload.len() >= 4 => out.push((payload[0], payload[4..].to_vec())),
                    _ => {}
                }
            }
        }
    }

    /// Waits for the kernel's acknowledgement of message `seq` (an error carries its errno).
    fn ack(&self, seq: u32) -> io::Result<()> {
        loop {
            for (kind, got, payload) in self.recv()? {
                if kind == NLMSG_ERROR {
                    error(&payload)?;
                    if got == seq {
                        return Ok(());
                    }
                }
            }
        }
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// An `NLMSG_ERROR` payload: `Ok` for an acknowledgement (errno 0), the error otherwise.
fn error(payload: &[u8]) -> io::Result<()> {
    let errno = payload.get(..4).map_or(-libc::EBADMSG, |e| i32::from_ne_bytes(e.try_into().unwrap()));
    if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) }
}
