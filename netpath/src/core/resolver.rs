//! What the daemon's resolver serves: the names of endpoints, each requester seeing only the
//! endpoints of its own networks, read from the state at every question (a name answers the
//! moment its endpoint is ready and not a moment after its detach), and the steering of
//! containers' queries to the resolver's sockets.
use std::{collections::HashMap, hash::Hash, net::Ipv4Addr, os::fd::AsRawFd};

use crate::{
    core::{controller::Controller, session::Paths},
    error::{Error, Result},
    kernel::datapath::dns::DnsSteering,
    state::{lock::Held, store::Store},
};

/// The names, through a connection of the resolver's own: a question never waits behind an
/// attach on the controller's task. Answers are kept until the database changes (SQLite's
/// `data_version`, one read per question), so a container that asks the same name again
/// costs a lookup in memory, and an attach or detach is seen at the next question.
pub struct Directory {
    store: Store,
    seen: i64,
    addresses: HashMap<(Ipv4Addr, String), Found<Vec<Ipv4Addr>>>,
    names: HashMap<(Ipv4Addr, Ipv4Addr), Found<String>>,
}

/// Answers kept at most, of each kind: a container asking random names empties the cache
/// rather than growing it.
const KEPT: usize = 4096;

/// What a requester's question about a name finds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found<T> {
    /// The requester is no endpoint: it gets no answer about anyone.
    Stranger,
    /// Nothing of the requester's networks has this name or address.
    Nothing,
    Answer(T),
}

impl Directory {
    pub fn open(paths: &Paths) -> Result<Self> {
        let store = Store::open(&paths.state_dir)?;
        let seen = store.data_version()?;
        Ok(Self { store, seen, addresses: HashMap::new(), names: HashMap::new() })
    }

    /// Forgets every answer when the database changed since the last question.
    fn refresh(&mut self) -> Result<()> {
        let now = self.store.data_version()?;
        if now != self.seen || self.addresses.len() >= KEPT || self.names.len() >= KEPT {
            self.addresses.clear();
            self.names.clear();
            self.seen = now;
        }
        Ok(())
    }

    /// The addresses `name` (a single label, or a dotted alias) has for the endpoint at `from`.
    pub fn addresses(&mut self, from: Ipv4Addr, name: &str) -> Result<Found<Vec<Ipv4Addr>>> {
        self.refresh()?;
        let name = name.trim_end_matches('.').to_string();
        remembered(&mut self.addresses, &self.store, (from, name), |store, name| {
            let addresses = store.addresses_of(from, name)?;
            Ok((!addresses.is_empty()).then_some(addresses))
        })
    }

    /// The name of the endpoint at `ip`, for the endpoint at `from`.
    pub fn name_at(&mut self, from: Ipv4Addr, ip: Ipv4Addr) -> Result<Found<String>> {
        self.refresh()?;
        remembered(&mut self.names, &self.store, (from, ip), |store, ip| store.name_at(from, *ip))
    }

    /// Whether `ip` lies in a subnet of one of netpath's networks: a reverse question about
    /// it is netpath's to answer, never an upstream's.
    pub fn is_netpath_address(&self, ip: Ipv4Addr) -> Result<bool> {
        Ok(self.store.networks()?.iter().any(|n| n.subnet.contains(ip)))
    }
}

/// The answer kept for `(from, key)`, else what `look` finds for the requester at `from` (none
/// for a stranger), kept for the next question.
fn remembered<K: Eq + Hash, T: Clone>(
    kept: &mut HashMap<(Ipv4Addr, K), Found<T>>,
    store: &Store,
    key: (Ipv4Addr, K),
    look: impl FnOnce(&Store, &K) -> Result<Option<T>>,
) -> Result<Found<T>> {
    if let Some(found) = kept.get(&key) {
        return Ok(found.clone());
    }
    let found = if store.is_requester(key.0)? {
        look(store, &key.1)?.map_or(Found::Nothing, Found::Answer)
    } else {
        Found::Stranger
    };
    kept.insert(key, found.clone());
    Ok(found)
}

/// The resolver at work: containers' queries steered to its sockets, and its lock held, for
/// as long as this value lives.
pub struct Answering {
    _steering: DnsSteering,
    _lock: Held,
}

impl Controller {
    /// Sends containers' queries to their gateway's port 53 to the resolver's sockets, and
    /// says so to other processes (`resolver_answers`). One resolver per state directory.
    pub fn steer_dns(&mut self, udp: &impl AsRawFd, tcp: &impl AsRawFd) -> Result<Answering> {
        let lock = self.locks.try_resolver()?.ok_or_else(|| {
            Error::conflict("another netpath daemon already answers containers' DNS queries; stop it or pass --no-dns")
        })?;
        Ok(Answering { _steering: self.datapath()?.steer_dns(udp, tcp)?, _lock: lock })
    }

    /// Whether a daemon's resolver answers on the gateways now: only then is the gateway a
    /// nameserver worth writing into a container's resolv.conf.
    pub fn resolver_answers(&self) -> Result<bool> {
        self.locks.resolver_answers()
    }
}
