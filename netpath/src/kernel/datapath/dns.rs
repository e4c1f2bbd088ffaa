//! Steering containers' DNS queries to the daemon: `dns_steer` attached to the host namespace,
//! the daemon's sockets in `DNS_SOCKETS`. The attachment is a link this process holds, never
//! pinned: it goes with the process, as the sockets do.
use std::os::fd::AsRawFd;

use aya::{
    maps::{Map, MapData, SockMap},
    programs::{SkLookup, sk_lookup::SkLookupLink},
};
use netpath_common::{dns_socket, names};

use super::Datapath;
use crate::{error::Context, error::Result, kernel::netns::Netns};

/// `dns_steer` attached to a namespace, for as long as this value lives.
pub struct DnsSteering {
    _link: SkLookupLink,
}

impl Datapath {
    /// Sends containers' queries to their gateway's port 53 to `udp` (an unconnected UDP
    /// socket) and `tcp` (a listening one), from the namespace this thread is in.
    pub fn steer_dns(&mut self, udp: &impl AsRawFd, tcp: &impl AsRawFd) -> Result<DnsSteering> {
        let path = self.dir.join(names::DNS_SOCKETS);
        let data = MapData::from_pin(&path).context(|| format!("cannot open pinned map {}", path.display()))?;
        let map = Map::from_map_data(data).context(|| format!("unexpected map type at {}", path.display()))?;
        let mut sockets: SockMap<MapData> = map.try_into().context(|| "DNS_SOCKETS is not a socket map")?;
        sockets.set(dns_socket::UDP, udp, 0).context(|| "cannot put the resolver's UDP socket in DNS_SOCKETS")?;
        sockets.set(dns_socket::TCP, tcp, 0).context(|| "cannot put the resolver's TCP socket in DNS_SOCKETS")?;
        let path = self.dir.join(names::DNS_STEER);
        let mut prog = SkLookup::from_pin(&path).context(|| format!("cannot open {}", path.display()))?;
        let link = prog.attach(Netns::current()?.fd()).context(|| "cannot attach dns_steer to the host namespace")?;
        Ok(DnsSteering { _link: prog.take_link(link).context(|| "cannot take the sk_lookup link")? })
    }
}
