//! Connection tracking for NAT: two entries per connection, one per direction, each mapping
//! the tuple a packet arrives with to the tuple it leaves with.
//!
//! A connection starts in `CT_NEW`, a small LRU of its own, and moves to `CT` once it is
//! established (TCP: the opener acknowledged the answer; other protocols: an answer came back),
//! so a flood of opens nobody completes can only evict other unanswered opens.
//!
//! The original-direction entry holds the connection's state and last-seen time; each entry
//! keeps the TCP sequence position of its own direction and how far the other side allows it
//! to go (as nf_conntrack's `tcp_in_window`): a position moves only forward and within that
//! window, so a sender that cannot see the connection cannot walk it to where its reset lands.
//! The handshake moves on only with acknowledgements of the other side's SYN, which a sender
//! with a spoofed source never sees: blind ACKs leave a connection in `CT_NEW`. An entry counts only while its
//! partner points back at it: after an LRU eviction, a flow can never inherit the SNAT port
//! another flow claimed meanwhile. A tuple belongs to at most one entry of the two tables: an
//! evicted half is put back, and a tuple claimed, only where neither table holds it.
use core::mem::MaybeUninit;

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_loop},
    maps::LruHashMap,
};
use netpath_common::{Config, CtEntry, CtKey, IPPROTO_TCP, ct_dir, ct_state, drop_reason, seq_known};

use crate::{
    maps::{CONFIG, CT, CT_NEW, ENDPOINTS, VETHS},
    packet::{Ipv4, L4, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    portmap::published,
    snat_quota,
};

const BPF_NOEXIST: u64 = 1;
const NS_PER_SEC: u64 = 1_000_000_000;
/// Candidate source ports tried for a new flow before giving up.
const PORT_TRIES: u32 = 32;
/// How far from the expected sequence number a RST or FIN may be and still be believed.
/// Legitimate ones carry the sender's next sequence number, give or take a retransmission.
const SEQ_WINDOW: u32 = 1 << 20;
/// The window scale windows are taken at: the largest RFC 7323 allows. The scale a side offers
/// in its SYN is not read, so a window is never taken for narrower than it is (a legitimate
/// segment always fits); the bound is that much looser than nf_conntrack's.
const MAX_WSCALE: u32 = 14;
/// The widest window a side can advertise, and so how far behind the other side's position an
/// acknowledgement may be and still be taken as one.
const MAX_WINDOW: u32 = 0xffff << MAX_WSCALE;

type Table = LruHashMap<CtKey, CtEntry>;

/// What conntrack says about a packet.
pub enum Tracked {
    /// No connection: the caller decides whether the packet may open one.
    No,
    /// A packet of a tracked connection: rewrite it to this tuple.
    Translate(CtEntry),
    /// A packet of a tracked connection that must not pass, with the drop reason.
    Refuse(u32),
}

// What `lookup_into` and `create_into` answer: translate, translate a connection that just
// got established, no connection, or a drop reason.
const TRANSLATE: u32 = 0;
const TRANSLATE_ESTABLISHED: u32 = u32::MAX - 1;
const UNTRACKED: u32 = u32::MAX;
/// `create_into`'s owner, and its claim, for a connection that keeps its tuple (no SNAT port is
/// drawn).
const NO_OWNER: u32 = u32::MAX;
const NO_CLAIM: u32 = snat_quota::NONE;

// Lookups and creations run as BPF subprograms (`inline(never)`) that answer with a scalar:
// the verifier then explores what follows a call once, not once per way through it, which
// keeps every program far below its complexity limit. A connection's two entries always live
// in the same table (created together in `CT_NEW`, promoted together to `CT`), so a packet's
// lookup stays in the table its own entry is in; only claiming a tuple, which must be unique
// across both, looks at both.

/// The entry at `key`, from either table, with the table that holds it.
#[inline(always)]
fn find(key: &CtKey) -> Option<(&'static Table, &'static CtEntry)> {
    // SAFETY: map value references from successful lookups; plain data.
    if let Some(e) = unsafe { CT.get(key) } {
        return Some((&CT, e));
    }
    unsafe { CT_NEW.get(key) }.map(|e| (&CT_NEW, e))
}

/// The table that `table` is not.
#[inline(always)]
fn other(table: &'static Table) -> &'static Table {
    if core::ptr::eq(table, &CT) { &CT_NEW } else { &CT }
}

/// Inserts `rkey` into `table` when no table holds it. Another CPU may put the same tuple in
/// the other table at the same time (each checked before inserting): both then see the other's
/// insert afterwards, and both take theirs back.
#[inline(always)]
fn insert_alone(table: &'static Table, rkey: &CtKey, entry: &CtEntry) -> bool {
    if table.insert(rkey, entry, BPF_NOEXIST).is_err() {
        return false;
    }
    if unsafe { other(table).get(rkey) }.is_none() {
        return true;
    }
    let _ = table.remove(rkey);
    false
}

/// Whether `reply` is the reply entry of the connection whose original entry is at `key`.
#[inline(always)]
fn points_back(reply: &CtEntry, key: &CtKey) -> bool {
    reply.dir == ct_dir::REPLY && CtKey::partner(reply, key.proto) == *key
}

#[inline(always)]
pub fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn key(ip: &Ipv4, l4: &L4) -> CtKey {
    CtKey { saddr: ip.saddr, daddr: ip.daddr, sport: l4.sport, dport: l4.dport, proto: ip.proto, _pad: 0, _pad2: 0 }
}

/// Whether the connection whose original entry is `e` is over: idle past its timeout, or an
/// endpoint at either end detached. Its entries then count as absent everywhere, and give
/// their tuples and claims back, without anyone walking the tables to remove them: the LRU
/// reuses their room.
#[inline(always)]
fn ended(cfg: &Config, proto: u8, e: &CtEntry, now: u64) -> bool {
    now.saturating_sub(e.last_seen) > u64::from(cfg.timeout(proto, e.state)) * NS_PER_SEC
        || !attached(e.src_veth)
        || !attached(e.dst_veth)
}

/// Whether the endpoint end `veth` (0: not an endpoint) is still attached.
#[inline(always)]
fn attached(veth: u32) -> bool {
    // SAFETY: map value reference from a successful lookup; only its presence is read.
    veth == 0 || unsafe { VETHS.get(&veth) }.is_some()
}

/// A SYN for a connection that closed: the same tuple starts over.
#[inline(always)]
fn reopens(tcp_flags: u8, state: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN && state >= ct_state::CLOSING
}

#[inline(always)]
fn next_state(state: u8, proto: u8, tcp_flags: u8, dir: u8) -> u8 {
    if proto != IPPROTO_TCP {
        return if dir == ct_dir::REPLY && state == ct_state::NEW { ct_state::ESTABLISHED } else { state };
    }
    if tcp_flags & TCP_RST != 0 || state == ct_state::CLOSED {
        return ct_state::CLOSED;
    }
    if tcp_flags & TCP_FIN != 0 || state == ct_state::CLOSING {
        return ct_state::CLOSING;
    }
    let acks = tcp_flags & TCP_ACK != 0;
    match (state, dir) {
        (ct_state::NEW, ct_dir::REPLY) if acks && tcp_flags & TCP_SYN != 0 => ct_state::ANSWERED,
        (ct_state::ANSWERED, ct_dir::ORIGINAL) if acks && tcp_flags & TCP_SYN == 0 => ct_state::ESTABLISHED,
        _ => state,
    }
}

/// Whether a packet may open a connection to a published port: for TCP only a SYN, so stray
/// segments (answers to the host's own connections, spoofed resets) create nothing.
#[inline(always)]
pub fn opens(proto: u8, tcp_flags: u8) -> bool {
    proto != IPPROTO_TCP || tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// Sequence order (RFC 9293): `a` comes after `b`.
#[inline(always)]
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

#[inline(always)]
fn near(seq: u32, next: u32) -> bool {
    seq.wrapping_sub(next).wrapping_add(SEQ_WINDOW) <= 2 * SEQ_WINDOW
}

/// Whether the segment acknowledges exactly what `peer`'s direction has sent (its SYN, during
/// the handshake).
#[inline(always)]
fn acknowledges(l4: &L4, peer: &CtEntry) -> bool {
    l4.tcp_flags & TCP_ACK != 0 && peer.seq_known & seq_known::NEXT != 0 && l4.ack == peer.seq_next
}

/// Whether a segment of direction `dir` (entry `own`, the other direction's `peer`) is
/// consistent with what the connection has seen; the state is the connection's.
#[inline(always)]
fn acceptable(state: u8, dir: u8, own: &CtEntry, peer: &CtEntry, l4: &L4) -> bool {
    let flags = l4.tcp_flags;
    let known = own.seq_known & seq_known::NEXT != 0;
    if flags & TCP_RST != 0 {
        // Before its direction has sent anything, a reset is believed only as the refusal of
        // the other side's SYN, which it acknowledges (RFC 9293, SYN-SENT).
        return if known { near(l4.seq, own.seq_next) } else { acknowledges(l4, peer) };
    }
    if flags & TCP_FIN != 0 && known && !near(l4.seq, own.seq_next) {
        return false;
    }
    match (state, dir) {
        // The opener has nothing to acknowledge before the answer.
        (ct_state::NEW, ct_dir::ORIGINAL) => flags & TCP_ACK == 0,
        // The answer, and the opener's ACK that establishes the connection, acknowledge the
        // other side's SYN.
        (ct_state::NEW, ct_dir::REPLY) | (ct_state::ANSWERED, ct_dir::ORIGINAL) => {
            flags & TCP_ACK == 0 || acknowledges(l4, peer)
        }
        _ => true,
    }
}

/// Moves `own`'s position forward within what `peer`'s side allowed, and takes the segment's
/// acknowledgement and window as `peer`'s new bound when it acknowledges data `peer` sent.
#[inline(always)]
fn advance(own: &mut CtEntry, peer: &mut CtEntry, l4: &L4) {
    let end = l4.seq.wrapping_add(l4.seq_len);
    let allowed = own.seq_known & seq_known::MAX == 0 || !after(end, own.seq_max);
    if own.seq_known & seq_known::NEXT == 0 || (after(end, own.seq_next) && allowed) {
        own.seq_next = end;
        own.seq_known |= seq_known::NEXT;
    }
    if l4.tcp_flags & TCP_ACK == 0 || peer.seq_known & seq_known::NEXT == 0 {
        return;
    }
    // An acknowledgement of data never sent, or far behind, bounds nothing: it would let a
    // blind sender move the bound around the sequence space.
    let sent = !after(l4.ack, peer.seq_next) && !after(peer.seq_next, l4.ack.wrapping_add(MAX_WINDOW));
    let bound = l4.ack.wrapping_add(u32::from(l4.window) << MAX_WSCALE);
    if sent && (peer.seq_known & seq_known::MAX == 0 || after(bound, peer.seq_max)) {
        peer.seq_max = bound;
        peer.seq_known |= seq_known::MAX;
    }
}

/// Checks a TCP segment against its connection's sequence numbers and tracks them:
/// `TRANSLATE`, or the drop reason.
#[inline(never)]
fn track_tcp(state: u8, dir: u8, own: *mut CtEntry, peer: *mut CtEntry, l4: &L4) -> u32 {
    // SAFETY: map value pointers from successful lookups; racing CPUs only move them forward.
    let (own, peer) = unsafe { (&mut *own, &mut *peer) };
    if !acceptable(state, dir, own, peer, l4) {
        return drop_reason::OUT_OF_WINDOW;
    }
    advance(own, peer, l4);
    TRANSLATE
}

/// Whether the original entry behind the reply entry `reply` (at `rkey`) is live and still
/// translates back to it.
#[inline(always)]
fn live_original(cfg: &Config, table: &Table, rkey: &CtKey, reply: &CtEntry, now: u64) -> Option<*mut CtEntry> {
    let ptr = table.get_ptr_mut(&CtKey::partner(reply, rkey.proto))?;
    // SAFETY: map value pointer from a successful lookup.
    let orig = unsafe { &*ptr };
    (orig.dir == ct_dir::ORIGINAL && orig.reverses(rkey) && !ended(cfg, rkey.proto, orig, now)).then_some(ptr)
}

/// Whether the reply entry of the connection whose original is `orig` (at `key`) translates
/// back to it. A reply half the LRU evicted alone is put back, unless another flow claimed
/// its tuple meanwhile, in either table (a promotion moves a pair from one to the other).
#[inline(always)]
fn reply_points_back(table: &'static Table, key: &CtKey, orig: &CtEntry, now: u64) -> bool {
    let rkey = CtKey::partner(orig, key.proto);
    match find(&rkey) {
        Some((_, reply)) => points_back(reply, key),
        None => insert_alone(table, &rkey, &CtEntry::reverse_of(key, ct_dir::REPLY, now)),
    }
}

/// Whether the tuple `rkey` answers a live connection that `addr` opened.
#[inline(always)]
pub fn answers(cfg: &Config, rkey: &CtKey, addr: u32, now: u64) -> bool {
    let Some((table, reply)) = find(rkey) else {
        return false;
    };
    reply.dir == ct_dir::REPLY && reply.daddr == addr && live_original(cfg, table, rkey, reply, now).is_some()
}

/// The translation for a packet of a tracked connection, either direction.
#[inline(always)]
pub fn lookup(key: &CtKey, l4: &L4) -> Tracked {
    let mut to = MaybeUninit::<CtEntry>::uninit();
    match lookup_into(key, l4, to.as_mut_ptr()) {
        // SAFETY: `lookup_into` writes the entry when it translates.
        TRANSLATE => Tracked::Translate(unsafe { to.assume_init() }),
        TRANSLATE_ESTABLISHED => {
            let to = unsafe { to.assume_init() };
            let okey = if to.dir == ct_dir::ORIGINAL { *key } else { CtKey::partner(&to, key.proto) };
            // Called from here, not from `lookup_into`: the two subprograms' stack frames are
            // then never stacked on each other.
            promote(&okey);
            Tracked::Translate(to)
        }
        UNTRACKED => Tracked::No,
        reason => Tracked::Refuse(reason),
    }
}

#[inline(never)]
fn lookup_into(key: &CtKey, l4: &L4, out: *mut CtEntry) -> u32 {
    let Some(cfg) = config() else {
        return UNTRACKED;
    };
    // One body for both tables (the table is a value): one stack frame, not two.
    let (table, own): (&'static Table, *mut CtEntry) = if let Some(own) = CT.get_ptr_mut(key) {
        (&CT, own)
    } else if let Some(own) = CT_NEW.get_ptr_mut(key) {
        (&CT_NEW, own)
    } else {
        return UNTRACKED;
    };
    // SAFETY: map value pointers from successful lookups; racing CPUs only move them forward.
    // The entry is read through the caller's `out`, never copied into this frame: it sits on
    // the deepest call chains, whose frames together may not pass 512 bytes. What tracking
    // moves afterwards (positions, state) is not part of the translation.
    unsafe { out.write(*own) };
    let entry = unsafe { &*out };
    let now = now();
    let orig = if entry.dir == ct_dir::ORIGINAL {
        if reopens(l4.tcp_flags, entry.state)
            || ended(cfg, key.proto, entry, now)
            || !reply_points_back(table, key, entry, now)
        {
            return UNTRACKED;
        }
        own
    } else {
        match live_original(cfg, table, key, entry, now) {
            Some(orig) => orig,
            None => return UNTRACKED,
        }
    };
    if key.proto == IPPROTO_TCP {
        let peer = if entry.dir == ct_dir::ORIGINAL {
            table.get_ptr_mut(&CtKey::partner(entry, key.proto))
        } else {
            Some(orig)
        };
        let Some(peer) = peer else {
            return UNTRACKED;
        };
        // SAFETY: `orig` is a map value pointer from a successful lookup.
        let verdict = track_tcp(unsafe { (*orig).state }, entry.dir, own, peer, l4);
        if verdict != TRANSLATE {
            return verdict;
        }
    }
    let dir = entry.dir;
    let o = unsafe { &mut *orig };
    let state = next_state(o.state, key.proto, l4.tcp_flags, dir);
    o.state = state;
    o.last_seen = now;
    unsafe { (*out).last_seen = now };
    if state == ct_state::ESTABLISHED && core::ptr::eq(table, &CT_NEW) { TRANSLATE_ESTABLISHED } else { TRANSLATE }
}

/// Moves an established connection's two entries from `CT_NEW` to `CT`, reply first, so a
/// lookup in between still finds a complete pair.
#[inline(never)]
fn promote(okey: &CtKey) {
    let Some(o) = (unsafe { CT_NEW.get(okey) }) else {
        return;
    };
    let orig = *o;
    let rkey = CtKey::partner(&orig, okey.proto);
    // A pair moves whole: a reply half evicted since the lookup is not made up here, where its
    // tuple may have been claimed meanwhile (the next packet's lookup decides).
    let Some(r) = (unsafe { CT_NEW.get(&rkey) }) else {
        return;
    };
    let reply = *r;
    if CT.insert(&rkey, &reply, BPF_NOEXIST).is_ok() && CT.insert(okey, &orig, 0).is_ok() {
        let _ = CT_NEW.remove(okey);
        let _ = CT_NEW.remove(&rkey);
    }
}

/// Starts tracking a connection whose first packet has `key` and leaves as `out`. With an
/// owner (the endpoint's counter slot), the source port of `out` is drawn from the SNAT range
/// so that the reply tuple is unique, within the owner's quota. `out` becomes the translation
/// to apply; `Err` holds the drop reason.
#[inline(always)]
pub fn create(key: &CtKey, out: &mut CtEntry, l4: &L4, owner: Option<u16>) -> Result<(), u32> {
    match create_into(key, out, l4, owner.map_or(NO_OWNER, u32::from)) {
        TRANSLATE => Ok(()),
        reason => Err(reason),
    }
}

#[inline(never)]
fn create_into(key: &CtKey, out: &mut CtEntry, l4: &L4, owner: u32) -> u32 {
    // First, while little else is live: nothing spills around the call.
    let quota_claim = match owner {
        NO_OWNER => NO_CLAIM,
        slot => match snat_quota::free_claim(slot as u16, key.saddr) {
            snat_quota::NONE => return drop_reason::SNAT_QUOTA,
            quota_claim => quota_claim,
        },
    };
    let Some(cfg) = config() else {
        return drop_reason::NAT_EXHAUSTED;
    };
    let now = now();
    out.dir = ct_dir::ORIGINAL;
    out.state = ct_state::NEW;
    out.last_seen = now;
    if key.proto == IPPROTO_TCP {
        out.seq_next = l4.seq.wrapping_add(l4.seq_len);
        out.seq_known = seq_known::NEXT;
    }
    if quota_claim == NO_CLAIM {
        let rkey = CtKey::partner(out, key.proto);
        if claim(cfg, key, &rkey, now) {
            return commit_original(cfg, key, out, &rkey, l4.tcp_flags);
        }
        return drop_reason::NAT_EXHAUSTED;
    }
    let min = u32::from(cfg.snat_port_min);
    let span = u32::from(cfg.snat_port_max).wrapping_sub(min).wrapping_add(1);
    if min == 0 || span == 0 || span > 65536 {
        return drop_reason::NAT_EXHAUSTED;
    }
    let mut search =
        PortSearch { cfg, key, out, tcp_flags: l4.tcp_flags, min, span, verdict: drop_reason::NAT_EXHAUSTED };
    // `bpf_loop` has the verifier check one try, not every one of them unrolled.
    unsafe {
        bpf_loop(PORT_TRIES, try_port as *mut c_void, (&mut search as *mut PortSearch).cast(), 0);
    }
    let verdict = search.verdict;
    if verdict == TRANSLATE {
        snat_quota::record(cfg, quota_claim, &CtKey::partner(out, key.proto));
    }
    verdict
}

/// What one try of the SNAT port search needs, and what the search found.
struct PortSearch<'a> {
    cfg: &'a Config,
    key: &'a CtKey,
    out: &'a mut CtEntry,
    tcp_flags: u8,
    min: u32,
    span: u32,
    verdict: u32,
}

/// One try: a port drawn at random across the whole range (no predictable sequence to probe),
/// kept if its reply tuple can be claimed. Returns 1 to stop the loop.
#[inline(never)]
extern "C" fn try_port(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `create_into` passes its `PortSearch`, alive for the whole loop.
    let search = unsafe { &mut *ctx.cast::<PortSearch>() };
    let offset = unsafe { bpf_get_prandom_u32() }.checked_rem(search.span).unwrap_or(0);
    search.out.sport = ((search.min + offset) as u16).to_be();
    let rkey = CtKey::partner(search.out, search.key.proto);
    if !claim(search.cfg, search.key, &rkey, search.out.last_seen) {
        return 0;
    }
    search.verdict = commit_original(search.cfg, search.key, search.out, &rkey, search.tcp_flags);
    1
}

/// Claims the reply tuple `rkey` for the connection at `key`, seen `now`: free when nobody
/// holds it, or its holder's connection is gone, or it is this very connection starting over.
/// The claim is an insert that fails if another CPU got there first. The reply entry is built
/// here, not by the caller: `create_into`'s frame is on the deepest call chain of
/// `from_container_egress`, whose frames together may not pass 512 bytes.
#[inline(never)]
fn claim(cfg: &Config, key: &CtKey, rkey: &CtKey, now: u64) -> bool {
    if let Some((table, held)) = find(rkey) {
        let free = held.dir == ct_dir::REPLY
            && (CtKey::partner(held, key.proto) == *key || live_original(cfg, table, rkey, held, now).is_none());
        if !free {
            return false;
        }
        let _ = table.remove(rkey);
    }
    insert_alone(&CT_NEW, rkey, &CtEntry::reverse_of(key, ct_dir::REPLY, now))
}

/// Records the original entry once its reply entry is claimed. Another CPU may have created
/// the same connection meanwhile: then its translation stands (copied into `out`) and our
/// claim is given back.
#[inline(never)]
fn commit_original(cfg: &Config, key: &CtKey, out: &mut CtEntry, rkey: &CtKey, tcp_flags: u8) -> u32 {
    let now = out.last_seen;
    if let Some((table, e)) = find(key) {
        if e.dir == ct_dir::REPLY && live_original(cfg, table, key, e, now).is_some() {
            // The tuple already answers a live connection the other way round.
            let _ = CT_NEW.remove(rkey);
            return drop_reason::NAT_EXHAUSTED;
        }
        if e.dir == ct_dir::ORIGINAL && stands(cfg, table, key, e, rkey, tcp_flags, now) {
            // The same connection, created by another CPU meanwhile: its translation stands.
            let _ = CT_NEW.remove(rkey);
            *out = *e;
            return TRANSLATE;
        }
        let _ = table.remove(key);
    }
    if CT_NEW.insert(key, out, BPF_NOEXIST).is_ok() {
        return TRANSLATE;
    }
    let _ = CT_NEW.remove(rkey);
    drop_reason::NAT_EXHAUSTED
}

/// Whether the live original entry `e` already at `key` keeps its translation: it is not
/// closing, its reply entry points back at it, and it is not the tuple `rkey` just claimed.
#[inline(always)]
fn stands(cfg: &Config, table: &Table, key: &CtKey, e: &CtEntry, rkey: &CtKey, tcp_flags: u8, now: u64) -> bool {
    let erkey = CtKey::partner(e, key.proto);
    let reply_intact = unsafe { table.get(&erkey) }.is_some_and(|r| points_back(r, key));
    !reopens(tcp_flags, e.state) && !ended(cfg, key.proto, e, now) && erkey != *rkey && reply_intact
}

/// For an ICMP error about a packet of a tracked connection (`inner`, as it was sent): the
/// translation its connection's answers get, found through the embedded header.
#[inline(always)]
pub fn lookup_embedded(cfg: &Config, inner: &Ipv4, sport: u16, dport: u16) -> Option<CtEntry> {
    let rkey = CtKey {
        saddr: inner.daddr,
        daddr: inner.saddr,
        sport: dport,
        dport: sport,
        proto: inner.proto,
        _pad: 0,
        _pad2: 0,
    };
    let (table, entry) = find(&rkey)?;
    let now = now();
    let valid = if entry.dir == ct_dir::ORIGINAL {
        !ended(cfg, rkey.proto, entry, now)
    } else {
        live_original(cfg, table, &rkey, entry, now).is_some()
    };
    valid.then_some(*entry)
}

/// The translation for a packet arriving from outside: its tracked connection's, or a new
/// connection's when it opens one to a published port. `No` when it is neither.
#[inline(always)]
pub fn inbound(ip: &Ipv4, l4: &L4) -> Tracked {
    let key = key(ip, l4);
    match lookup(&key, l4) {
        Tracked::No => {}
        tracked => return tracked,
    }
    let Some(target) = published(ip, l4) else {
        return Tracked::No;
    };
    if !opens(ip.proto, l4.tcp_flags) {
        return Tracked::Refuse(drop_reason::NOT_SYN);
    }
    // The connection lives as long as the endpoint behind the port: no endpoint, no connection.
    let Some(ep) = (unsafe { ENDPOINTS.get(&target.addr) }) else {
        return Tracked::Refuse(drop_reason::DATAPATH_INCOMPLETE);
    };
    let mut out = CtEntry {
        saddr: ip.saddr,
        daddr: target.addr,
        sport: l4.sport,
        dport: target.port,
        dst_veth: ep.host_ifindex,
        ..Default::default()
    };
    match create(&key, &mut out, l4, None) {
        Ok(()) => Tracked::Translate(out),
        Err(reason) => Tracked::Refuse(reason),
    }
}
