//! The typed requests the frontends build: parsed at the edge, checked by the core. Addresses
//! and subnets are of either family here; the core says which family a network can take.
use std::net::{IpAddr, Ipv4Addr};

use crate::{
    error::{Error, Field, Message, Result},
    state::store::Xdp,
    types::{
        creator::Creator,
        name::{Hostname, Naming},
        net::{IpNet, Ipv4Net},
        port::Port,
    },
};

/// `netpath network create`.
#[derive(Clone, Debug, Default)]
pub struct NetworkSpec {
    pub name: String,
    pub subnet: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    pub internal: bool,
    pub no_masquerade: bool,
    pub uplink: Option<String>,
    /// What XDP on the uplink does for the network.
    pub xdp: Xdp,
    /// The id an engine (Docker) knows the network by.
    pub external_id: Option<String>,
}

/// Which namespace `netpath attach` wires.
#[derive(Clone, Debug)]
pub enum Target {
    Path(String),
    Pid(u32),
}

/// `netpath attach`.
#[derive(Clone, Debug)]
pub struct AttachSpec {
    pub network: String,
    pub target: Target,
    pub id: Option<String>,
    pub ip: Option<IpAddr>,
    pub mac: Option<[u8; 6]>,
    pub ifname: String,
    pub ports: Vec<Port>,
    /// The name the container answers to on the network (unique there), and its other
    /// names (which other containers may share).
    pub name: Option<Naming>,
    pub aliases: Vec<Hostname>,
    pub creator: Creator,
}

/// `netpath detach`.
#[derive(Clone, Debug)]
pub enum DetachSpec {
    Id(String),
    Netns(String),
}

/// The MTU of a network whose uplink does not say (or that has none).
pub const DEFAULT_MTU: u32 = 1500;

/// Networks carry IPv4 (IPv6 comes with dual-stack networks): a v6 subnet or address in a
/// request is refused by name, not misread.
pub(crate) fn ipv4_subnet(subnet: IpNet) -> Result<Ipv4Net> {
    match subnet {
        IpNet::V4(net) => Ok(net),
        IpNet::V6(net) => Err(ipv6_refused(Field::Subnet, net)),
    }
}

pub(crate) fn ipv4_addr(field: Field, ip: IpAddr) -> Result<Ipv4Addr> {
    match ip {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(ip) => Err(ipv6_refused(field, ip)),
    }
}

fn ipv6_refused(field: Field, what: impl std::fmt::Display) -> Error {
    Error::invalid(Message::field(field).and(format!(" {what} is IPv6; netpath networks are IPv4 only for now")))
}
