//! Rows as records, and the object states they carry.
use std::net::{Ipv4Addr, Ipv6Addr};

use netpath_common::EndpointInfo;
use rusqlite::Row;
use serde::Serialize;

use super::sql::{optional_col, parse_col};
use crate::types::creator::Creator;
use crate::types::mac;
use crate::types::name::{Hostname, Naming};
use crate::{
    error::Result,
    types::identity::NsIdentity,
    types::net::{Ipv4Net, Ipv6Net},
    types::port::Port,
    types::port::Proto,
};

/// A row is `creating` from the moment its name or address is reserved until its kernel
/// objects exist. Its creator holds the row's lock ([`crate::lock`]) all that time, so a
/// `creating` row whose lock is free was left by a process that died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Creating,
    Ready,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Ready => "ready",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::ToSql for State {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for State {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match value.as_str()? {
            "creating" => Ok(State::Creating),
            "ready" => Ok(State::Ready),
            _ => Err(rusqlite::types::FromSqlError::InvalidType),
        }
    }
}

impl rusqlite::ToSql for Creator {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl rusqlite::types::FromSql for Creator {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        Creator::parse(value.as_str()?).ok_or(rusqlite::types::FromSqlError::InvalidType)
    }
}

/// What `xdp_uplink` does for a network's inbound traffic. Stored as an integer: 0 and 1 are
/// what the column held when it was a flag, and 1 keeps the safe meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Xdp {
    /// No XDP: `from_uplink` alone.
    #[default]
    Off = 0,
    /// Drops what the outside must not send before the stack sees it; published-port traffic
    /// passes to `from_uplink`.
    Filter = 1,
    /// Filters, and also translates and redirects published-port traffic (devmap) to its
    /// endpoint: for drivers where XDP avoids the skb. On a veth uplink it is slower than
    /// `from_uplink` (docs/DESIGN.md, "XDP on the uplink").
    Redirect = 2,
}

impl Xdp {
    /// The mode a user names: `filter` or `redirect` (`off` is the absence of the option).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "filter" => Some(Self::Filter),
            "redirect" => Some(Self::Redirect),
            _ => None,
        }
    }

    /// Whether `xdp_uplink` runs on the network's uplink.
    pub fn is_on(self) -> bool {
        self != Self::Off
    }

    /// Whether the network's endpoints are `XDP_TARGETS`, which needs GRO at their container's
    /// end.
    pub fn redirects(self) -> bool {
        self == Self::Redirect
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Filter => "filter",
            Self::Redirect => "redirect",
        }
    }
}

impl std::fmt::Display for Xdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl rusqlite::ToSql for Xdp {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok((*self as i64).into())
    }
}

impl rusqlite::types::FromSql for Xdp {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        match value.as_i64()? {
            0 => Ok(Self::Off),
            1 => Ok(Self::Filter),
            2 => Ok(Self::Redirect),
            other => Err(rusqlite::types::FromSqlError::OutOfRange(other)),
        }
    }
}

pub(super) const CREATING: State = State::Creating;

pub(super) const READY: State = State::Ready;

#[derive(Clone, Debug, Serialize)]
pub struct NetworkRecord {
    pub id: u32,
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The IPv6 subnet and gateway of a dual-stack network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Net>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: u32,
    pub internal: bool,
    pub masquerade: bool,
    pub uplink: Option<String>,
    /// What XDP on the uplink does for the network.
    pub xdp: Xdp,
    /// The id an engine (Docker) knows the network by.
    pub external_id: Option<String>,
    pub state: State,
    #[serde(skip)]
    pub owner_pid: i32,
    pub created: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EndpointRecord {
    pub id: String,
    pub network: String,
    #[serde(skip)]
    pub network_id: u32,
    pub ip: Ipv4Addr,
    /// Its IPv6 address on a dual-stack network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub ifname: String,
    pub host_veth: String,
    pub netns: String,
    #[serde(skip)]
    pub netns_id: NsIdentity,
    /// The name it answers to on its network, unique there; `None` when nothing named it.
    pub name: Option<String>,
    /// Other names it answers to, which other endpoints of the network may share.
    pub aliases: Vec<String>,
    /// The container end was handed to an engine, which moved, named and addressed it:
    /// `ifname` is the name netpath created it under, not its name inside.
    pub handed: bool,
    /// Who asked for it; `None` for endpoints made before schema 6 recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creator: Option<Creator>,
    pub state: State,
    #[serde(skip)]
    pub owner_pid: i32,
    pub created: u64,
    pub ports: Vec<Port>,
    /// Its index in the datapath's `ENDPOINT_COUNTERS`.
    #[serde(skip)]
    pub slot: u16,
    /// Its network's XDP mode: the endpoints of a `redirect` network are `XDP_TARGETS`.
    #[serde(skip)]
    pub network_xdp: Xdp,
}

impl EndpointRecord {
    pub fn mac_bytes(&self) -> Result<[u8; 6]> {
        mac::parse_mac(&self.mac)
    }

    /// Its `ENDPOINTS` entry, once its host veth has `host_ifindex`.
    pub fn datapath_info(&self, host_ifindex: u32) -> Result<EndpointInfo> {
        Ok(EndpointInfo { host_ifindex, network_id: self.network_id, mac: self.mac_bytes()?, slot: self.slot })
    }
}

/// What `network create` asks for; unset fields are chosen by the store.
pub struct NewNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u32,
    pub internal: bool,
    pub masquerade: bool,
    pub uplink: Option<String>,
    pub xdp: Xdp,
    pub external_id: Option<String>,
}

/// What `attach` asks for.
pub struct NewEndpoint {
    pub id: String,
    pub network: NetworkRecord,
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub ifname: String,
    pub host_veth: String,
    pub netns_path: String,
    pub netns_id: NsIdentity,
    pub ports: Vec<Port>,
    /// See [`EndpointRecord::name`] and [`EndpointRecord::aliases`]; the aliases are distinct.
    /// One that is the name the endpoint gets is not kept as an alias too.
    pub name: Option<Naming>,
    pub aliases: Vec<Hostname>,
    /// See [`EndpointRecord::handed`].
    pub handed: bool,
    pub creator: Creator,
}

pub enum Reservation {
    /// The id was attached already: the same endpoint again.
    Existing(EndpointRecord),
    /// A new row, `creating`, whose address nobody else can take.
    New(EndpointRecord),
}

pub(super) const NETWORK_COLS: &str = "id, name, bridge, subnet, gateway, subnet6, gateway6, mtu, internal, masquerade, uplink, xdp, external_id, state, owner_pid, created_at";

pub(super) fn network_row(row: &Row) -> rusqlite::Result<NetworkRecord> {
    Ok(NetworkRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        bridge: row.get("bridge")?,
        subnet: parse_col(row, "subnet")?,
        gateway: parse_col(row, "gateway")?,
        subnet6: optional_col(row, "subnet6")?,
        gateway6: optional_col(row, "gateway6")?,
        mtu: row.get("mtu")?,
        internal: row.get("internal")?,
        masquerade: row.get("masquerade")?,
        uplink: row.get("uplink")?,
        xdp: row.get("xdp")?,
        external_id: row.get("external_id")?,
        state: row.get("state")?,
        owner_pid: row.get("owner_pid")?,
        created: row.get("created_at")?,
    })
}

pub(super) const ENDPOINT_SELECT: &str =
    "SELECT e.id, n.name AS network, e.network_id, e.ip, e.ip6, n.subnet, n.gateway, e.mac,
    e.ifname, e.host_veth, e.netns_path, e.netns_dev, e.netns_ino, e.netns_cookie, e.netns_boot, e.name,
    e.handed, e.creator,
    e.state, e.owner_pid, e.created_at, e.slot, n.xdp
    FROM endpoints e JOIN networks n ON n.id = e.network_id";

pub(super) fn endpoint_row(row: &Row) -> rusqlite::Result<EndpointRecord> {
    let subnet: Ipv4Net = parse_col(row, "subnet")?;
    Ok(EndpointRecord {
        id: row.get("id")?,
        network: row.get("network")?,
        network_id: row.get("network_id")?,
        ip: parse_col(row, "ip")?,
        ip6: optional_col(row, "ip6")?,
        prefix: subnet.prefix(),
        gateway: parse_col(row, "gateway")?,
        mac: row.get("mac")?,
        ifname: row.get("ifname")?,
        host_veth: row.get("host_veth")?,
        netns: row.get("netns_path")?,
        netns_id: NsIdentity {
            dev: row.get("netns_dev")?,
            ino: row.get("netns_ino")?,
            cookie: row.get("netns_cookie")?,
            boot: row.get("netns_boot")?,
        },
        name: row.get("name")?,
        aliases: Vec::new(),
        handed: row.get("handed")?,
        creator: row.get("creator")?,
        state: row.get("state")?,
        owner_pid: row.get("owner_pid")?,
        created: row.get("created_at")?,
        ports: Vec::new(),
        slot: row.get("slot")?,
        network_xdp: row.get("xdp")?,
    })
}

pub(super) fn port_row(row: &Row) -> rusqlite::Result<Port> {
    let proto: String = row.get("proto")?;
    let host_ip: String = row.get("host_ip")?;
    Ok(Port {
        proto: Proto::parse(&proto).unwrap_or(Proto::Tcp),
        host_ip: host_ip.parse().ok(),
        host_port: row.get("host_port")?,
        container_port: row.get("container_port")?,
    })
}
