//! Links, addresses and routes through rtnetlink. A `Netlink` talks to the namespace it was
//! opened in, whatever thread later uses it. This file makes, joins and removes links;
//! `routes` adds addresses and routes, `facts` reads what links there are.

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage},
};

use crate::error::{Field, Message};
use crate::kernel::{random, sysctl};
use crate::{error::Context, error::Error, error::Result, kernel::netns, kernel::netns::Netns};

pub mod facts;
mod routes;

/// What the host end of every endpoint's veth is named with.
pub const HOST_VETH_PREFIX: &str = "npv";
/// What every network's bridge is named with, unless its creator names it.
pub const BRIDGE_PREFIX: &str = "np-";

/// A random, locally administered unicast MAC.
fn random_mac() -> Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    random::fill(&mut mac)?;
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Ok(mac)
}

/// The alias (`IFLA_IFALIAS`) of a bridge netpath made for a network: a name proves nothing,
/// so gc deletes only links that carry netpath's mark for their kind.
pub fn bridge_mark(network: &str) -> String {
    format!("netpath:network:{network}")
}

/// The alias of the host end of an endpoint's veth.
pub fn veth_mark(endpoint: &str) -> String {
    format!("netpath:endpoint:{endpoint}")
}

/// The errno of a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the current thread's namespace.
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context(|| "cannot open a netlink socket")?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// A connection inside `ns`: the socket is opened on a thread that entered it.
    pub fn connect_in(ns: &Netns) -> Result<Self> {
        Self::connect_in_after(ns, || Ok(()))
    }

    /// A connection inside `ns`, opened after `first` ran there: one trip into the namespace
    /// (a thread that enters it) for both.
    pub fn connect_in_after(ns: &Netns, first: impl FnOnce() -> Result<()> + Send) -> Result<Self> {
        let runtime = tokio::runtime::Handle::current();
        let (conn, handle, _) = netns::run_in(ns, move || {
            first()?;
            let _guard = runtime.enter();
            rtnetlink::new_connection().context(|| format!("cannot open a netlink socket in '{}'", ns.path))
        })??;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>> {
        match self.handle.link().get().match_name(name.to_string()).execute().try_next().await {
            Ok(link) => Ok(link),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(Error::system(format!("cannot look up interface '{name}'"), e)),
        }
    }

    pub async fn index_of(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link_by_name(name).await?.map(|l| l.header.index))
    }

    pub async fn require_index(&self, name: &str) -> Result<u32> {
        self.index_of(name).await?.ok_or_else(|| Error::not_found(format!("interface '{name}' does not exist")))
    }

    /// Creates a bridge that carries `mark`, with a MAC of its own (see `pin_mac`).
    pub async fn create_bridge(&self, name: &str, mtu: u32, mark: &str) -> Result<u32> {
        let bridge = LinkBridge::new(name).mtu(mtu).address(random_mac()?.to_vec()).build();
        self.handle.link().add(bridge).execute().await.map_err(|e| match errno(&e) {
            Some(libc::EEXIST) => Error::conflict(
                Message::from(format!("interface '{name}' already exists; pass another ")).and_field(Field::Bridge),
            ),
            _ => Error::system(format!("cannot create bridge '{name}'"), e),
        })?;
        let index = self.require_index(name).await?;
        self.set_alias(index, mark).await?;
        Ok(index)
    }

    /// Sets a bridge's MAC to the one it has. A bridge whose MAC nobody set takes the lowest
    /// of its ports' and changes it when that port leaves: every container would keep sending
    /// to the gateway's old MAC, which the bridge no longer takes as its own, until its
    /// neighbour entry expired. A MAC that was set stays (for bridges an older netpath made).
    pub async fn pin_mac(&self, index: u32) -> Result<()> {
        let Some(mac) = self.mac_of(index).await? else { return Ok(()) };
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).address(mac.to_vec()).build())
            .execute()
            .await
            .context(|| format!("cannot set the MAC of interface {index}"))
    }

    /// The kernel ignores `IFLA_IFALIAS` in a request that creates a link: a mark is set by a
    /// request of its own. A command killed between the two leaves an unmarked link, but its
    /// row (reserved first, `creating`) still names it, and gc removes it through the row.
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).alias(alias).build())
            .execute()
            .await
            .context(|| format!("cannot set the alias of interface {index}"))
    }

    /// Creates a veth pair whose host end stays down and on no bridge: until `join_bridge`, no
    /// frame the peer sends goes anywhere, so a container that already runs cannot use the
    /// pair before the datapath is attached to its host end. The peer is created directly
    /// inside `peer_ns` under its final name, so no temporary name can collide. A peer without
    /// a namespace stays in this one, for an engine to move (Docker's Join). A peer that asks
    /// for GRO gets it here, before the host end comes up: a veth takes frames XDP redirects
    /// into it only if its peer runs NAPI, and it checks that when it comes up (`enable_gro`).
    pub async fn create_veth(&self, host: &str, mtu: u32, peer: &VethPeer<'_>) -> Result<u32> {
        let mut peer_msg =
            LinkMessageBuilder::<LinkUnspec>::new().name(peer.name.to_string()).mtu(mtu).address(peer.mac.to_vec());
        if let Some(ns) = peer.netns {
            peer_msg = peer_msg.setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&ns.fd()));
        }
        let peer_msg = peer_msg.build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle.link().add(msg).execute().await.map_err(|e| match errno(&e) {
            Some(libc::EEXIST) => Error::conflict(
                Message::from(format!(
                    "network namespace '{}' already has an interface named '{}'; pass another ",
                    peer.netns.map_or("of the host", |ns| ns.path.as_str()),
                    peer.name
                ))
                .and_field(Field::Ifname),
            ),
            _ => Error::system(format!("cannot create veth '{host}'"), e),
        })?;
        let index = self.require_index(host).await?;
        if peer.gro {
            match peer.netns {
                Some(ns) => netns::run_in(ns, || sysctl::enable_gro(peer.name))??,
                None => sysctl::enable_gro(peer.name)?,
            }
        }
        Ok(index)
    }

    /// Puts a host veth made by `create_veth` on `bridge` and brings it up, in one request:
    /// the last step of wiring an endpoint, once its datapath is attached.
    /// Puts a host veth on its bridge, brings it up and marks it netpath's (`mark`), in one
    /// request: the mark costs an attach no round trip of its own.
    pub async fn join_bridge(&self, index: u32, bridge: (u32, &str), mark: &str) -> Result<()> {
        let (bridge, name) = bridge;
        let joined = self
            .handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(bridge).up().alias(mark).build())
            .execute()
            .await;
        joined.map_err(|e| match errno(&e) {
            // Port numbers are 10 bits: the kernel refuses the 1024th port.
            Some(libc::EXFULL) => Error::conflict(format!(
                "bridge {name} is full: a Linux bridge takes at most 1023 interfaces; attach to another network"
            )),
            _ => Error::system(format!("cannot put interface {index} on bridge {name} and bring it up"), e),
        })
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .context(|| format!("cannot bring up interface {index}"))
    }

    pub async fn delete(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno(&e) != Some(libc::ENODEV) => {
                Err(Error::system(format!("cannot delete interface {index}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Deletes the interface by name; a missing one is already what we want.
    pub async fn delete_by_name(&self, name: &str) -> Result<()> {
        match self.index_of(name).await? {
            Some(index) => self.delete(index).await,
            None => Ok(()),
        }
    }
}

/// The container end of a veth pair.
pub struct VethPeer<'a> {
    pub name: &'a str,
    pub mac: [u8; 6],
    /// Where the peer is created; `None`: here, in the host's namespace.
    pub netns: Option<&'a Netns>,
    /// Turn GRO on at the peer, so that its host end takes frames XDP redirects into it.
    pub gro: bool,
}
