//! What the daemon's resolver serves: the names of endpoints, each requester seeing only the
//! endpoints of its own networks, read from the state at every question (a name answers the
//! moment its endpoint is ready and not a moment after its detach), and the steering of
//! containers' queries to the resolver's sockets.
use std::{net::Ipv4Addr, os::fd::AsRawFd};

use crate::{
    core::{controller::Controller, session::Paths},
    error::{Error, Result},
    kernel::datapath::dns::DnsSteering,
    state::{lock::Held, store::Store},
};

/// The names, through a connection of the resolver's own: a question never waits behind an
/// attach on the controller's task.
pub struct Directory {
    store: Store,
}

/// What a requester's question about a name finds.
#[derive(Debug, PartialEq, Eq)]
pub enum Found<T> {
    /// The requester is no endpoint: it gets no answer about anyone.
    Stranger,
    /// Nothing of the requester's networks has this name or address.
    Nothing,
    Answer(T),
}

impl Directory {
    pub fn open(paths: &Paths) -> Result<Self> {
        Ok(Self { store: Store::open(&paths.state_dir)? })
    }

    /// The addresses `name` (a single label, or a dotted alias) has for the endpoint at `from`.
    pub fn addresses(&self, from: Ipv4Addr, name: &str) -> Result<Found<Vec<Ipv4Addr>>> {
        if !self.store.is_requester(from)? {
            return Ok(Found::Stranger);
        }
        let addresses = self.store.addresses_of(from, name.trim_end_matches('.'))?;
        Ok(if addresses.is_empty() { Found::Nothing } else { Found::Answer(addresses) })
    }

    /// The name of the endpoint at `ip`, for the endpoint at `from`.
    pub fn name_at(&self, from: Ipv4Addr, ip: Ipv4Addr) -> Result<Found<String>> {
        if !self.store.is_requester(from)? {
            return Ok(Found::Stranger);
        }
        Ok(self.store.name_at(from, ip)?.map_or(Found::Nothing, Found::Answer))
    }

    /// Whether `ip` lies in a subnet of one of netpath's networks: a reverse question about
    /// it is netpath's to answer, never an upstream's.
    pub fn is_netpath_address(&self, ip: Ipv4Addr) -> Result<bool> {
        Ok(self.store.networks()?.iter().any(|n| n.subnet.contains(ip)))
    }
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
