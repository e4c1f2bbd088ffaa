//! The bench's yardstick, not part of the datapath: a TCX classifier that does nothing but
//! find its peer and `bpf_redirect_peer` to it. `cargo xtask bench` (datapath `redirect-ref`)
//! attaches it to the host veths of two containers and puts `from_container`'s ns per packet
//! next to this one's, on the same traffic in the same run: the least any eBPF container hop
//! can cost on this machine.
//!
//! netpath loads its programs by name (`names::PROGRAMS`) and never this one; its only map is
//! unpinned, so loading the object pins nothing new.
use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::bpf_redirect_peer,
    macros::{classifier, map},
    maps::HashMap,
    programs::TcContext,
};

/// Host veth ifindex → the host veth ifindex whose peer gets the frame. The bench fills it.
#[map]
static REFERENCE_PEERS: HashMap<u32, u32> = HashMap::with_max_entries(8, 0);

#[classifier]
pub fn redirect_peer_ref(ctx: TcContext) -> i32 {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: a plain u32 the bench writes whole.
    match unsafe { REFERENCE_PEERS.get(&ifindex) } {
        Some(&peer) => unsafe { bpf_redirect_peer(peer, 0) as i32 },
        None => TC_ACT_SHOT as i32,
    }
}
