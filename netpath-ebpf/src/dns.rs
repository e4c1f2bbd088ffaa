//! `sk_lookup` program of the host namespace: a container's DNS query to its network's gateway
//! goes to the daemon's resolver sockets (`DNS_SOCKETS`), ahead of any socket bound to port 53
//! there (a host dnsmasq on `*:53`), without rewriting a byte of the packet, so the resolver
//! sees who asked. With no daemon running its sockets are gone from the map and the kernel's
//! own lookup answers: a host resolver, or a port unreachable, never a silent timeout.
use aya_ebpf::{
    bindings::{bpf_sk_lookup, sk_action::SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use netpath_common::{NetworkInfo, dns_socket};

use crate::maps::{DNS_SOCKETS, ENDPOINTS, NETWORKS};

const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const DNS_PORT: u32 = 53;

#[sk_lookup]
pub fn dns_steer(ctx: SkLookupContext) -> u32 {
    let lookup: &bpf_sk_lookup = unsafe { &*ctx.lookup };
    if lookup.family == AF_INET && lookup.local_port == DNS_PORT && asks_its_gateway(lookup) {
        let slot = if lookup.protocol == IPPROTO_TCP { dns_socket::TCP } else { dns_socket::UDP };
        // No socket in the slot (no daemon): the kernel's lookup goes on.
        let _ = DNS_SOCKETS.redirect_sk_lookup(&ctx, slot, 0);
    }
    SK_PASS
}

/// Whether the query comes from an endpoint, through its network's bridge, to that network's
/// gateway: a LAN host cannot reach the resolver by spoofing a container's address.
#[inline(always)]
fn asks_its_gateway(lookup: &bpf_sk_lookup) -> bool {
    // Map keys must come from the stack, not the context.
    let remote = lookup.remote_ip4;
    let Some(endpoint) = (unsafe { ENDPOINTS.get(&remote) }) else {
        return false;
    };
    let Some(network) = (unsafe { NETWORKS.get(&endpoint.network_id) }) else {
        return false;
    };
    network.gateway == lookup.local_ip4 && network.bridge_ifindex == lookup.ingress_ifindex
}

/// Whether a container's packet goes to its gateway's DNS port (`port` in network byte order).
#[inline(always)]
pub fn asks_gateway(daddr: u32, port: u16, network: &NetworkInfo) -> bool {
    daddr == network.gateway && port == (DNS_PORT as u16).to_be()
}
