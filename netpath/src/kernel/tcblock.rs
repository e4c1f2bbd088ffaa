//! A network's `from_container` as one `cls_bpf` filter on a shared tc block, and endpoints'
//! host veths bound to it, over raw rtnetlink (netlink-packet-route has no
//! `TCA_INGRESS_BLOCK`).
//!
//! Why not TCX: the first TCX program on a new device swaps the device's `bpf_mprog` entry
//! and waits a full RCU grace period under RTNL (10–20 ms here, most of an attach). Binding a
//! new device's `clsact` ingress to a block that already carries the filter waits at most
//! for a grace period that has long passed (`mini_qdisc_pair_swap`'s
//! `cond_synchronize_rcu`): a tenth of a millisecond. Blocks are per network namespace and
//! live while a qdisc is bound to them: the first endpoint of a network creates its block,
//! the last one's veth takes it away.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_ECHO: u16 = 0x8;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 1 << 15;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_INGRESS_BLOCK: u16 = 13;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;
const TC_H_CLSACT: u32 = 0xffff_fff1;
const CLSACT_HANDLE: u32 = 0xffff_0000;
const TCM_IFINDEX_MAGIC_BLOCK: u32 = 0xffff_ffff;
const ETH_P_ALL: u16 = 0x0003;
/// The one filter of a block, always at this priority and handle: a second add is refused
/// (EEXIST) and a replace swaps its program in place.
const PRIO: u32 = 1;
const HANDLE: u32 = 1;
const NLMSG_HDR: usize = 16;
const TCMSG: usize = 20;
/// Block indices are chosen by whoever binds first in a namespace; netpath's start at "np".
const BLOCK_BASE: u32 = 0x6e70_0000;

/// The block of network `network_id`.
pub fn block_of(network_id: u32) -> io::Result<u32> {
    BLOCK_BASE
        .checked_add(network_id)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("network id {network_id} has no tc block")))
}

/// Binds the `clsact` ingress of interface `ifindex` to `block`. A `clsact` already there is
/// kept when it is bound to `block`, and made again when not.
pub fn bind(ifindex: u32, block: u32) -> io::Result<()> {
    let socket = Socket::open()?;
    match socket.ack(clsact(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, ifindex, Some(block))) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            if ingress_block(&socket, ifindex)? == Some(block) {
                return Ok(());
            }
            socket.ack(clsact(RTM_DELQDISC, 0, ifindex, None))?;
            socket.ack(clsact(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, ifindex, Some(block)))
        }
        other => other,
    }
}

/// Removes the `clsact` qdisc of `ifindex`, and with it any block binding; none is fine.
pub fn unbind(ifindex: u32) -> io::Result<()> {
    match Socket::open()?.ack(clsact(RTM_DELQDISC, 0, ifindex, None)) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(()),
        other => other,
    }
}

/// The id of the program the filter of `block` runs; `None` when the block has no filter or
/// does not exist (no device is bound to it).
pub fn filter_program(block: u32) -> io::Result<Option<u32>> {
    let req = Request::new(RTM_GETTFILTER, NLM_F_DUMP, TCM_IFINDEX_MAGIC_BLOCK, 0, block, 0);
    let mut id = None;
    Socket::open()?.request(req, |tcm, attrs| {
        if tcm.handle == HANDLE {
            let options = attrs.iter().find(|(ty, _)| *ty & !NLA_F_NESTED == TCA_OPTIONS);
            if let Some((_, options)) = options {
                id = id.or(attributes(options)
                    .into_iter()
                    .find(|(ty, _)| *ty == TCA_BPF_ID)
                    .and_then(|(_, v)| u32_of(&v)));
            }
        }
    })?;
    Ok(id)
}

/// Puts `prog` on `block` as its filter (direct action, named `name`): added when
/// `replace` is false (EEXIST when another process added it first), swapped in place for the
/// one there when true, without a moment with none.
pub fn set_filter(block: u32, prog: &OwnedFd, name: &str, replace: bool) -> io::Result<()> {
    let flags = NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
    let info = (PRIO << 16) | u32::from(ETH_P_ALL.to_be());
    let mut req = Request::new(RTM_NEWTFILTER, flags, TCM_IFINDEX_MAGIC_BLOCK, HANDLE, block, info);
    req.attr(TCA_KIND, b"bpf\0");
    let start = req.open(TCA_OPTIONS);
    req.attr(TCA_BPF_FD, &(prog.as_raw_fd() as u32).to_ne_bytes());
    req.attr(TCA_BPF_NAME, format!("{name}\0").as_bytes());
    req.attr(TCA_BPF_FLAGS, &TCA_BPF_FLAG_ACT_DIRECT.to_ne_bytes());
    req.close(start);
    Socket::open()?.ack(req)
}

/// A `clsact` qdisc request for `ifindex`, bound to `block` when given.
fn clsact(kind: u16, flags: u16, ifindex: u32, block: Option<u32>) -> Request {
    let mut req = Request::new(kind, flags, ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0);
    req.attr(TCA_KIND, b"clsact\0");
    if let Some(block) = block {
        req.attr(TCA_INGRESS_BLOCK, &block.to_ne_bytes());
    }
    req
}

/// Asks for the one qdisc at the ingress of `ifindex` (not a dump of every device's: a
/// restore asks for each endpoint). The kernel sends a qdisc it was asked for to the asker
/// only with `NLM_F_ECHO` (`qdisc_notify`); without it the answer is a bare acknowledgement,
/// and a bound veth would look unbound and be bound again, its block and filter made anew.
fn ingress_block(socket: &Socket, ifindex: u32) -> io::Result<Option<u32>> {
    let req = Request::new(RTM_GETQDISC, NLM_F_ECHO, ifindex, 0, TC_H_CLSACT, 0);
    let mut block = None;
    let asked = socket.request(req, |tcm, attrs| {
        let clsact = attrs.iter().any(|(ty, v)| *ty == TCA_KIND && v.as_slice() == b"clsact\0");
        if tcm.ifindex == ifindex && clsact {
            block = attrs.iter().find(|(ty, _)| *ty == TCA_INGRESS_BLOCK).and_then(|(_, v)| u32_of(v));
        }
    });
    match asked {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => Ok(None),
        other => other.map(|()| block),
    }
}

/// The parts of a `struct tcmsg` read back.
struct TcMsg {
    ifindex: u32,
    handle: u32,
}

/// One rtnetlink request: header, `struct tcmsg`, attributes.
struct Request(Vec<u8>);

impl Request {
    fn new(kind: u16, flags: u16, ifindex: u32, handle: u32, parent: u32, info: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `bytes`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        buf.extend_from_slice(&[0u8; 4]); // family AF_UNSPEC, padding
        for field in [ifindex, handle, parent, info] {
            buf.extend_from_slice(&field.to_ne_bytes());
        }
        Self(buf)
    }

    fn attr(&mut self, ty: u16, data: &[u8]) {
        let start = self.open(ty);
        self.0.extend_from_slice(data);
        self.close(start);
    }

    /// Starts an attribute whose value follows; `close` sets its length.
    fn open(&mut self, ty: u16) -> usize {
        let start = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        let nested = if ty == TCA_OPTIONS { NLA_F_NESTED } else { 0 };
        self.0.extend_from_slice(&(ty | nested).to_ne_bytes());
        start
    }

    fn close(&mut self, start: usize) {
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }

    fn bytes(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// A `NETLINK_ROUTE` socket of the current network namespace.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn send(&self, req: Request) -> io::Result<()> {
        let bytes = req.bytes();
        // SAFETY: a buffer and its length; the kernel is the destination (a zeroed address).
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as u16;
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Sends a request and waits for the kernel's answer to it.
    fn ack(&self, req: Request) -> io::Result<()> {
        self.request(req, |_, _| {})
    }

    /// Sends a request (a get or a dump) and hands every message of the answer, its `tcmsg`
    /// and attributes, to `each`.
    fn request(&self, req: Request, each: impl FnMut(TcMsg, Vec<(u16, Vec<u8>)>)) -> io::Result<()> {
        self.send(req)?;
        self.receive(each)
    }

    /// Reads until the error message (0: done) or the end of a dump.
    fn receive(&self, mut each: impl FnMut(TcMsg, Vec<(u16, Vec<u8>)>)) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reading into a buffer we own, up to its length.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDR {
                let len = (u32_of(&rest[..4]).unwrap_or(0) as usize).clamp(NLMSG_HDR, rest.len());
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let payload = &rest[NLMSG_HDR..len];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let code = payload.get(..4).and_then(u32_of).unwrap_or(0) as i32;
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    _ if payload.len() >= TCMSG => {
                        let tcm = TcMsg {
                            ifindex: u32_of(&payload[4..8]).unwrap_or(0),
                            handle: u32_of(&payload[8..12]).unwrap_or(0),
                        };
                        each(tcm, attributes(&payload[TCMSG..]));
                    }
                    _ => {}
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
    }
}

/// The attributes in `data`, by type (flags cleared but `NLA_F_NESTED`), with their values.
fn attributes(mut data: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let ty = u16::from_ne_bytes([data[2], data[3]]);
        if len < 4 || len > data.len() {
            break;
        }
        out.push((ty & !(1 << 14), data[4..len].to_vec()));
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    out
}

fn u32_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_framed_and_padded() {
        let mut req = Request::new(RTM_NEWQDISC, NLM_F_CREATE, 7, CLSACT_HANDLE, TC_H_CLSACT, 0);
        req.attr(TCA_KIND, b"clsact\0");
        let bytes = req.bytes();
        assert_eq!(u32_of(&bytes).unwrap() as usize, bytes.len());
        assert_eq!(bytes.len(), NLMSG_HDR + TCMSG + 4 + 8, "\"clsact\\0\" is padded to 8 bytes");
        assert_eq!(attributes(&bytes[NLMSG_HDR + TCMSG..]), vec![(TCA_KIND, b"clsact\0".to_vec())]);
    }

    #[test]
    fn attributes_stop_at_a_length_that_lies() {
        assert_eq!(attributes(&[200, 0, 1, 0, 1, 2, 3, 4]), vec![]);
        assert_eq!(attributes(&[2, 0, 1, 0]), vec![]);
    }

    #[test]
    fn blocks_are_netpaths_own() {
        assert_eq!(block_of(3).unwrap(), 0x6e70_0003);
        assert!(block_of(u32::MAX).is_err());
    }
}
