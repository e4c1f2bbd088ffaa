//! Links, addresses and routes through rtnetlink. A `Netlink` talks to the namespace it was
//! opened in, whatever thread later uses it.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
    packet_route::{
        address::AddressAttribute,
        link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
        route::{RouteAddress, RouteAttribute, RouteType},
    },
};

use crate::{error::Context, error::Error, error::Result, kernel::netns, kernel::netns::Netns, types::net::Ipv4Net};

pub const IFNAMSIZ_MAX: usize = 15;

/// Interface names: 1 to 15 bytes, no '/', no whitespace, not "." or "..".
pub fn check_ifname(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else if name.len() > IFNAMSIZ_MAX {
        Err(Error::invalid(format!(
            "{what} '{name}' is {} bytes; interface names are at most {IFNAMSIZ_MAX}",
            name.len()
        )))
    } else {
        Err(Error::invalid(format!("{what} '{name}' is not a valid interface name")))
    }
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

    pub async fn create_bridge(&self, name: &str, mtu: u32) -> Result<u32> {
        self.handle.link().add(LinkBridge::new(name).mtu(mtu).build()).execute().await.map_err(|e| {
            match errno(&e) {
                Some(libc::EEXIST) => {
                    Error::conflict(format!("interface '{name}' already exists; pass another --bridge"))
                }
                _ => Error::system(format!("cannot create bridge '{name}'"), e),
            }
        })?;
        self.require_index(name).await
    }

    /// Creates a veth pair whose host end is enslaved to `bridge` and whose peer is created
    /// directly inside `peer_ns` under its final name, so no temporary name can collide.
    /// A peer without a namespace stays in this one, for an engine to move (Docker's Join).
    /// A peer that asks for GRO gets it before the host end comes up: a veth takes frames XDP
    /// redirects into it only if its peer runs NAPI, and it checks that when it comes up
    /// (`enable_gro`).
    pub async fn create_veth(&self, host: &str, bridge: u32, mtu: u32, peer: &VethPeer<'_>) -> Result<u32> {
        let mut peer_msg =
            LinkMessageBuilder::<LinkUnspec>::new().name(peer.name.to_string()).mtu(mtu).address(peer.mac.to_vec());
        if let Some(ns) = peer.netns {
            peer_msg = peer_msg.setns_by_fd(std::os::fd::AsRawFd::as_raw_fd(&ns.fd()));
        }
        let peer_msg = peer_msg.build();
        let mut msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .controller(bridge)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)));
        // Without GRO to turn on first, the host end comes up in the same request.
        if !peer.gro {
            msg = msg.up();
        }
        let msg = msg.build();
        self.handle.link().add(msg).execute().await.map_err(|e| match errno(&e) {
            Some(libc::EEXIST) => Error::conflict(format!(
                "network namespace '{}' already has an interface named '{}'; pass another --ifname",
                peer.netns.map_or("of the host", |ns| ns.path.as_str()),
                peer.name
            )),
            _ => Error::system(format!("cannot create veth '{host}'"), e),
        })?;
        let index = self.require_index(host).await?;
        if peer.gro {
            match peer.netns {
                Some(ns) => netns::run_in(ns, || enable_gro(peer.name))??,
                None => enable_gro(peer.name)?,
            }
            self.set_up(index).await?;
        }
        Ok(index)
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
        if name.len() > IFNAMSIZ_MAX {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkFacts {
    pub index: u32,
    /// The bridge (or other controller) the interface is enslaved to.
    pub controller: Option<u32>,
    /// A veth's peer index, in the peer's namespace.
    pub peer: Option<u32>,
}

impl LinkFacts {
    fn of(link: &LinkMessage) -> Self {
        let mut facts = Self { index: link.header.index, controller: None, peer: None };
        for attr in &link.attributes {
            match attr {
                LinkAttribute::Controller(i) => facts.controller = Some(*i),
                LinkAttribute::Link(i) => facts.peer = Some(*i),
                _ => {}
            }
        }
        facts
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

/// Lets the kernel route packets that arrive on `ifname` (a bridge netpath owns). The
/// datapath's `bpf_fib_lookup` asks as if the packet arrived there, and the kernel answers only
/// for interfaces that forward. This is the interface's own setting, not the host's ip_forward.
pub fn enable_forwarding(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding");
    std::fs::write(&path, "1").context(|| format!("cannot enable forwarding on {ifname}"))
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

/// Turns GRO on for `ifname` in the calling thread's namespace (a container's side of a veth).
/// A veth then runs NAPI (kernel 5.13 and later), which is what it needs to take the frames
/// `xdp_uplink` redirects into its peer; the alternative, an XDP program on it, would run for
/// every frame the container receives. Its peer offers itself as a redirect target
/// (`NDO_XMIT`) only when it comes up after this, or when this is done while both are up.
pub fn enable_gro(ifname: &str) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_SGRO: u32 = 0x0000_002c;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue { cmd: ETHTOOL_SGRO, data: 1 };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(ifname.bytes().take(IFNAMSIZ_MAX)) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    let fail = |e| Error::system(format!("cannot turn GRO on for {ifname}"), e);
    // SAFETY: a socket only for the ioctl, closed when `sock` drops; `req` and `value` outlive
    // the call.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&sock), SIOCETHTOOL, &mut req) };
    if rc < 0 {
        return Err(fail(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Turns IPv6 off on `ifname` in the calling thread's namespace (a container's interface):
/// netpath networks are IPv4 only and the datapath drops IPv6, so the container should not
/// send it at all. Nothing to do on a kernel without IPv6.
pub fn disable_ipv6(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        written => written.context(|| format!("cannot disable IPv6 on {ifname}")),
    }
}

/// Whether `ifname` forwards. Writing `net.ipv4.ip_forward` (any value) resets it on every
/// interface, so `ensure` checks it rather than trusting it stayed as netpath left it.
pub fn forwarding_enabled(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding")).is_ok_and(|v| v.trim() == "1")
}

/// The host's ephemeral port range, which masquerading must stay clear of.
pub fn local_port_range() -> Result<(u16, u16)> {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let text = std::fs::read_to_string(path).context(|| format!("cannot read {path}"))?;
    let mut parts = text.split_whitespace().map(str::parse::<u16>);
    match (parts.next(), parts.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => Err(Error::system(format!("cannot parse {path}"), text)),
    }
}
