//! Links, addresses and routes through rtnetlink. A `Netlink` talks to the namespace it was
//! opened in, whatever thread later uses it.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
        route::{RouteAddress, RouteAttribute, RouteType},
    },
};

use crate::error::{Field, Message};
use crate::kernel::sysctl;
use crate::types::name;
use crate::{error::Context, error::Error, error::Result, kernel::netns, kernel::netns::Netns, types::net::Ipv4Net};

/// What the host end of every endpoint's veth is named with.
pub const HOST_VETH_PREFIX: &str = "npv";
/// What every network's bridge is named with, unless its creator names it.
pub const BRIDGE_PREFIX: &str = "np-";

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

    /// Creates a bridge that carries `mark`.
    pub async fn create_bridge(&self, name: &str, mtu: u32, mark: &str) -> Result<u32> {
        self.handle.link().add(LinkBridge::new(name).mtu(mtu).build()).execute().await.map_err(|e| {
            match errno(&e) {
                Some(libc::EEXIST) => Error::conflict(
                    Message::from(format!("interface '{name}' already exists; pass another ")).and_field(Field::Bridge),
                ),
                _ => Error::system(format!("cannot create bridge '{name}'"), e),
            }
        })?;
        let index = self.require_index(name).await?;
        self.set_alias(index, mark).await?;
        Ok(index)
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

    /// Marks a link that exists, unless it carries `mark` already (links an older release
    /// made carry none). True when it had to.
    pub async fn ensure_mark(&self, link: &LinkFacts, mark: &str) -> Result<bool> {
        if link.alias.as_deref() == Some(mark) {
            return Ok(false);
        }
        self.set_alias(link.index, mark).await?;
        Ok(true)
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
    pub async fn join_bridge(&self, index: u32, bridge: u32, mark: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).controller(bridge).up().alias(mark).build())
            .execute()
            .await
            .context(|| format!("cannot put interface {index} on bridge {bridge} and bring it up"))
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

    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .context(|| format!("cannot add address {ip}/{prefix}"))
    }

    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).build();
        self.handle.route().add(route).execute().await.context(|| format!("cannot add default route via {gateway}"))
    }

    /// The destinations of the IPv4 unicast routes in every table but the local one, except
    /// default routes: what a new subnet must not overlap.
    pub async fn ipv4_routes(&self) -> Result<Vec<Ipv4Net>> {
        let mut routes = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut out = Vec::new();
        while let Some(route) = routes.try_next().await.context(|| "cannot list routes")? {
            let len = route.header.destination_prefix_length;
            if route.header.kind != RouteType::Unicast || len == 0 {
                continue;
            }
            for attr in &route.attributes {
                if let RouteAttribute::Destination(RouteAddress::Inet(dst)) = attr {
                    if let Some(net) = Ipv4Net::from_octets(dst.octets(), len) {
                        out.push(net);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The device of the IPv4 default route of the main table with the lowest metric (the one
    /// the kernel uses), if there is one.
    pub async fn default_route_device(&self) -> Result<Option<u32>> {
        const RT_TABLE_MAIN: u32 = 254;
        let mut routes = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        let mut best: Option<(u32, u32)> = None;
        while let Some(route) = routes.try_next().await.context(|| "cannot list routes")? {
            if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
                continue;
            }
            let attr = |f: fn(&RouteAttribute) -> Option<u32>| route.attributes.iter().find_map(f);
            let table = attr(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
                .unwrap_or(u32::from(route.header.table));
            let metric = attr(|a| if let RouteAttribute::Priority(p) = a { Some(*p) } else { None }).unwrap_or(0);
            let oif = attr(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None });
            if let (RT_TABLE_MAIN, Some(oif)) = (table, oif) {
                if best.is_none_or(|(m, _)| metric < m) {
                    best = Some((metric, oif));
                }
            }
        }
        Ok(best.map(|(_, oif)| oif))
    }

    /// What netpath checks of an interface: its index, the bridge it is enslaved to, and for a
    /// veth the index of its peer (in the peer's namespace).
    pub async fn facts(&self, name: &str) -> Result<Option<LinkFacts>> {
        Ok(self.link_by_name(name).await?.map(|l| LinkFacts::of(&l)))
    }

    /// Every interface of the namespace, by name.
    pub async fn links(&self) -> Result<Vec<(String, LinkFacts)>> {
        let mut links = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(link) = links.try_next().await.context(|| "cannot list interfaces")? {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            if let Some(name) = name {
                out.push((name, LinkFacts::of(&link)));
            }
        }
        Ok(out)
    }

    /// Every IPv4 address of the namespace.
    pub async fn all_ipv4_addresses(&self) -> Result<Vec<Ipv4Addr>> {
        self.addresses(self.handle.address().get()).await
    }

    /// The interface's IPv4 addresses, primary first.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Addr>> {
        self.addresses(self.handle.address().get().set_link_index_filter(index)).await
    }

    async fn addresses(&self, request: rtnetlink::AddressGetRequest) -> Result<Vec<Ipv4Addr>> {
        let mut addrs = request.execute();
        let mut out = Vec::new();
        while let Some(msg) = addrs.try_next().await.context(|| "cannot list addresses")? {
            for attr in &msg.attributes {
                if let AddressAttribute::Local(IpAddr::V4(ip)) = attr {
                    out.push(*ip);
                }
            }
        }
        Ok(out)
    }

    pub async fn name_of(&self, index: u32) -> Result<Option<String>> {
        let link = self.handle.link().get().match_index(index).execute().try_next().await;
        let link = link.context(|| format!("cannot look up interface {index}"))?;
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            })
        }))
    }

    /// The MTU of an interface.
    pub async fn mtu_of(&self, index: u32) -> Result<Option<u32>> {
        let link = self.handle.link().get().match_index(index).execute().try_next().await;
        let link = link.context(|| format!("cannot look up interface {index}"))?;
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(mtu),
                _ => None,
            })
        }))
    }

    /// How an XDP program is attached to an interface, as the kernel reports it (`IFLA_XDP`);
    /// `None` when none is.
    pub async fn xdp_mode(&self, index: u32) -> Result<Option<XdpMode>> {
        let link = self.handle.link().get().match_index(index).execute().try_next().await;
        let link = link.context(|| format!("cannot look up interface {index}"))?;
        let attached = link.into_iter().flat_map(|l| l.attributes).find_map(|a| match a {
            LinkAttribute::Xdp(xdp) => xdp.into_iter().find_map(|x| match x {
                LinkXdp::Attached(attached) => Some(attached),
                _ => None,
            }),
            _ => None,
        });
        Ok(match attached {
            Some(XdpAttached::Driver) => Some(XdpMode::Native),
            Some(XdpAttached::SocketBuffer) => Some(XdpMode::Generic),
            Some(XdpAttached::Hardware) => Some(XdpMode::Offloaded),
            // Several programs at once, or a kind this build does not know.
            Some(XdpAttached::None) | None => None,
            Some(_) => Some(XdpMode::Multiple),
        })
    }

    /// The MAC address of an interface.
    pub async fn mac_of(&self, index: u32) -> Result<Option<[u8; 6]>> {
        let link = self.handle.link().get().match_index(index).execute().try_next().await;
        let link = link.context(|| format!("cannot look up interface {index}"))?;
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Address(mac) if mac.len() == 6 => mac.try_into().ok(),
                _ => None,
            })
        }))
    }
}

/// Asks whether interfaces of the current thread's namespace exist, by name, through one
/// socket: a `SIOCGIFINDEX` ioctl is a lookup in the kernel's name hash, without the RTNL lock
/// and without the attributes a netlink answer carries.
pub struct NameLookup {
    sock: std::os::fd::OwnedFd,
}

impl NameLookup {
    pub fn new() -> Result<Self> {
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .context(|| "cannot open a socket to look interfaces up")?;
        Ok(Self { sock })
    }

    pub fn exists(&self, name: &str) -> Result<bool> {
        use std::os::fd::AsRawFd;
        // SAFETY: ifreq is plain data; all zeroes is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() > name::IFNAMSIZ_MAX {
            return Ok(false);
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: SIOCGIFINDEX reads the name from and writes the index into `req`.
        let rc = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) };
        match rc {
            0 => Ok(true),
            _ => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
                e => Err(Error::system(format!("cannot look up interface '{name}'"), e)),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    /// The bridge (or other controller) the interface is enslaved to.
    pub controller: Option<u32>,
    /// A veth's peer index, in the peer's namespace.
    pub peer: Option<u32>,
    pub kind: Option<InfoKind>,
    pub alias: Option<String>,
}

impl LinkFacts {
    fn of(link: &LinkMessage) -> Self {
        let mut facts = Self { index: link.header.index, controller: None, peer: None, kind: None, alias: None };
        for attr in &link.attributes {
            match attr {
                LinkAttribute::Controller(i) => facts.controller = Some(*i),
                LinkAttribute::Link(i) => facts.peer = Some(*i),
                LinkAttribute::IfAlias(alias) => facts.alias = Some(alias.clone()),
                LinkAttribute::LinkInfo(info) => {
                    facts.kind = info.iter().find_map(|i| match i {
                        LinkInfo::Kind(kind) => Some(kind.clone()),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        facts
    }

    pub fn is_bridge(&self) -> bool {
        self.kind == Some(InfoKind::Bridge)
    }

    pub fn is_veth(&self) -> bool {
        self.kind == Some(InfoKind::Veth)
    }

    /// Carries a mark of the kind `mark_of("")` makes (`bridge_mark`, `veth_mark`).
    pub fn marked_as(&self, mark_of: fn(&str) -> String) -> bool {
        self.alias.as_deref().is_some_and(|a| a.starts_with(&mark_of("")))
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

/// How XDP runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver, before an skb exists.
    Native,
    /// On the skb, after the driver: the fallback for devices without XDP of their own.
    Generic,
    Offloaded,
    Multiple,
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Offloaded => "offloaded",
            Self::Multiple => "multiple",
        })
    }
}
