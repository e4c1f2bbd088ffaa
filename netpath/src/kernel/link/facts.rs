//! What the links there are say: names, MTUs, MACs, XDP modes, kinds and netpath's marks.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached};

use crate::types::name;
use crate::{error::Context, error::Error, error::Result};

use super::Netlink;

impl Netlink {
    /// Marks a link that exists, unless it carries `mark` already (links an older release
    /// made carry none). True when it had to.
    pub async fn ensure_mark(&self, link: &LinkFacts, mark: &str) -> Result<bool> {
        if link.alias.as_deref() == Some(mark) {
            return Ok(false);
        }
        self.set_alias(link.index, mark).await?;
        Ok(true)
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

    /// The first attribute of interface `index` that `pick` takes; `None` when the interface
    /// or such an attribute is missing.
    async fn attribute<T>(&self, index: u32, pick: impl FnMut(LinkAttribute) -> Option<T>) -> Result<Option<T>> {
        let link = self.handle.link().get().match_index(index).execute().try_next().await;
        let link = link.context(|| format!("cannot look up interface {index}"))?;
        Ok(link.into_iter().flat_map(|l| l.attributes).find_map(pick))
    }

    pub async fn name_of(&self, index: u32) -> Result<Option<String>> {
        self.attribute(index, |a| match a {
            LinkAttribute::IfName(name) => Some(name),
            _ => None,
        })
        .await
    }

    /// The MTU of an interface.
    pub async fn mtu_of(&self, index: u32) -> Result<Option<u32>> {
        self.attribute(index, |a| match a {
            LinkAttribute::Mtu(mtu) => Some(mtu),
            _ => None,
        })
        .await
    }

    /// How an XDP program is attached to an interface, as the kernel reports it (`IFLA_XDP`);
    /// `None` when none is.
    pub async fn xdp_mode(&self, index: u32) -> Result<Option<XdpMode>> {
        let attached = self
            .attribute(index, |a| match a {
                LinkAttribute::Xdp(xdp) => xdp.into_iter().find_map(|x| match x {
                    LinkXdp::Attached(attached) => Some(attached),
                    _ => None,
                }),
                _ => None,
            })
            .await?;
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
        self.attribute(index, |a| match a {
            LinkAttribute::Address(mac) if mac.len() == 6 => mac.try_into().ok(),
            _ => None,
        })
        .await
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
