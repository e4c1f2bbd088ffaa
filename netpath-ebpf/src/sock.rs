//! cgroup socket programs: processes of the host namespace reach published ports with no
//! per-packet NAT and no proxy. `connect4`/`sendmsg4` point the socket at the endpoint before
//! the kernel routes it; `getpeername4`/`recvmsg4` show the address that was dialled.
//!
//! Attached to the cgroup v2 root, they see every socket on the machine, so they act only on
//! sockets of the namespace netpath serves (its cookie is in `CONFIG`).
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use netpath_common::{PortKey, PortTarget, SockRevNatKey};

use crate::{
    conntrack,
    maps::{HOST_ADDRS, PORTMAP, SOCK_REVNAT},
    packet::is_loopback,
    portmap,
};

/// The verdict that lets the operation go on.
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    to_endpoint(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    to_endpoint(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    to_dialled(&ctx);
    ALLOW
}

#[cgroup_sock_addr(recvmsg4)]
pub fn recvmsg4(ctx: SockAddrContext) -> i32 {
    to_dialled(&ctx);
    ALLOW
}

/// Only sockets of the namespace netpath serves.
#[inline(always)]
fn served(ctx: &SockAddrContext) -> bool {
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    conntrack::config().is_some_and(|cfg| cfg.host_netns_cookie != 0 && cfg.host_netns_cookie == cookie)
}

/// The published port `addr:port` names from the host: on exactly that address, or on every
/// address when it is a loopback or host address.
#[inline(always)]
fn published(addr: u32, port: u16, proto: u8) -> Option<&'static PortTarget> {
    if !is_loopback(addr) && unsafe { HOST_ADDRS.get(&addr) }.is_none() {
        return unsafe { PORTMAP.get(&PortKey { addr, port, proto, _pad: 0 }) };
    }
    portmap::lookup(addr, port, proto)
}

#[inline(always)]
fn to_endpoint(ctx: &SockAddrContext) {
    if !served(ctx) {
        return;
    }
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    // `user_port` holds the port in network byte order in its low 16 bits.
    let (addr, port) = (sa.user_ip4, sa.user_port as u16);
    let Some(target) = published(addr, port, sa.protocol as u8) else {
        return;
    };
    let key = SockRevNatKey {
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        addr: target.addr,
        port: target.port,
        _pad: 0,
    };
    let _ = SOCK_REVNAT.insert(&key, &PortTarget { addr, port, _pad: 0 }, 0);
    sa.user_ip4 = target.addr;
    sa.user_port = u32::from(target.port);
}

#[inline(always)]
fn to_dialled(ctx: &SockAddrContext) {
    if !served(ctx) {
        return;
    }
    let sa: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    let key = SockRevNatKey {
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        _pad: 0,
    };
    if let Some(dialled) = unsafe { SOCK_REVNAT.get(&key) } {
        sa.user_ip4 = dialled.addr;
        sa.user_port = u32::from(dialled.port);
    }
}
