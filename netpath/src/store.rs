//! The state database: the source of truth from which every kernel object is derived.
//!
//! SQLite in WAL mode with a busy timeout, so many one-shot `netpath` processes can share it.
//! Every choice that must be unique across processes (a subnet, an address) is made and
//! recorded inside one `BEGIN IMMEDIATE` transaction.
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;

use crate::{
    cidr::Ipv4Net,
    error::{Context, Error, Result},
    ipam,
    netns::NsIdentity,
    ports::{Port, Proto},
};

const SCHEMA_VERSION: i64 = 3;
const SCHEMA: &str = "
CREATE TABLE networks (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    bridge      TEXT NOT NULL UNIQUE,
    subnet      TEXT NOT NULL,
    gateway     TEXT NOT NULL,
    mtu         INTEGER NOT NULL,
    internal    INTEGER NOT NULL,
    masquerade  INTEGER NOT NULL,
    uplink      TEXT,
    xdp         INTEGER NOT NULL,
    state       TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE TABLE endpoints (
    id          TEXT PRIMARY KEY,
    network_id  INTEGER NOT NULL REFERENCES networks(id),
    ip          TEXT NOT NULL,
    mac         TEXT NOT NULL,
    ifname      TEXT NOT NULL,
    host_veth   TEXT NOT NULL UNIQUE,
    netns_path  TEXT NOT NULL,
    netns_dev   INTEGER NOT NULL,
    netns_ino   INTEGER NOT NULL,
    state       TEXT NOT NULL,
    owner_pid   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (network_id, ip)
);
CREATE TABLE ports (
    endpoint_id     TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    proto           TEXT NOT NULL,
    host_ip         TEXT NOT NULL,
    host_port       INTEGER NOT NULL,
    container_port  INTEGER NOT NULL,
    UNIQUE (proto, host_ip, host_port)
);
CREATE TABLE settings (
    key         TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
";

/// Version 2: a namespace's (device, inode) is handed to the next namespace as soon as it
/// dies, so endpoints also record the namespace's cookie (never reused within a boot) and the
/// boot it belongs to. Rows from version 1 keep 0 and '' and are matched by (device, inode).
const MIGRATE_TO_2: &str = "
ALTER TABLE endpoints ADD COLUMN netns_cookie INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN netns_boot TEXT NOT NULL DEFAULT '';
";

/// Version 3, for engines that bring their own identifiers and move the container's side
/// themselves (Docker's remote driver): a network may record the engine's id for it; an
/// endpoint may be `handed` (its veth's container end was given to the engine, which moves,
/// names and addresses it); an engine may claim an endpoint's address and MAC before the
/// endpoint is wired; and the IPAM pools and addresses the engine requested from netpath are
/// recorded, so one allocator serves the engine and `netpath attach` alike.
const MIGRATE_TO_3: &str = "
ALTER TABLE networks ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX networks_external_id ON networks(external_id);
ALTER TABLE endpoints ADD COLUMN handed INTEGER NOT NULL DEFAULT 0;
CREATE TABLE endpoint_claims (
    id          TEXT PRIMARY KEY,
    network_id  INTEGER NOT NULL REFERENCES networks(id) ON DELETE CASCADE,
    ip          TEXT NOT NULL,
    mac         TEXT NOT NULL
);
CREATE TABLE ipam_pools (
    pool        TEXT PRIMARY KEY
);
CREATE TABLE ipam_addresses (
    pool        TEXT NOT NULL REFERENCES ipam_pools(pool) ON DELETE CASCADE,
    ip          TEXT NOT NULL,
    PRIMARY KEY (pool, ip)
);
";

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

const CREATING: State = State::Creating;
const READY: State = State::Ready;

#[derive(Clone, Debug, Serialize)]
pub struct NetworkRecord {
    pub id: u32,
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    pub internal: bool,
    pub masquerade: bool,
    pub uplink: Option<String>,
    /// Published ports are also served by XDP on the uplink.
    pub xdp: bool,
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
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub ifname: String,
    pub host_veth: String,
    pub netns: String,
    #[serde(skip)]
    pub netns_id: NsIdentity,
    /// The container end was handed to an engine, which moved, named and addressed it:
    /// `ifname` is the name netpath created it under, not its name inside.
    pub handed: bool,
    pub state: State,
    #[serde(skip)]
    pub owner_pid: i32,
    pub created: u64,
    pub ports: Vec<Port>,
}

impl EndpointRecord {
    pub fn mac_bytes(&self) -> Result<[u8; 6]> {
        ipam::parse_mac(&self.mac)
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
    pub xdp: bool,
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
    /// See [`EndpointRecord::handed`].
    pub handed: bool,
}

pub enum Reservation {
    /// The id was attached already: the same endpoint again.
    Existing(EndpointRecord),
    /// A new row, `creating`, whose address nobody else can take.
    New(EndpointRecord),
}

pub struct Store {
    conn: Connection,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn parse_col<T: std::str::FromStr>(row: &Row, idx: &str) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("bad {idx} '{text}'").into())
    })
}

const NETWORK_COLS: &str = "id, name, bridge, subnet, gateway, mtu, internal, masquerade, uplink, xdp, external_id, state, owner_pid, created_at";

fn network_row(row: &Row) -> rusqlite::Result<NetworkRecord> {
    Ok(NetworkRecord {
        id: row.get("id")?,
        name: row.get("name")?,
        bridge: row.get("bridge")?,
        subnet: parse_col(row, "subnet")?,
        gateway: parse_col(row, "gateway")?,
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

const ENDPOINT_SELECT: &str = "SELECT e.id, n.name AS network, e.network_id, e.ip, n.subnet, n.gateway, e.mac,
    e.ifname, e.host_veth, e.netns_path, e.netns_dev, e.netns_ino, e.netns_cookie, e.netns_boot, e.handed,
    e.state, e.owner_pid, e.created_at
    FROM endpoints e JOIN networks n ON n.id = e.network_id";

fn endpoint_row(row: &Row) -> rusqlite::Result<EndpointRecord> {
    let subnet: Ipv4Net = parse_col(row, "subnet")?;
    Ok(EndpointRecord {
        id: row.get("id")?,
        network: row.get("network")?,
        network_id: row.get("network_id")?,
        ip: parse_col(row, "ip")?,
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
        handed: row.get("handed")?,
        state: row.get("state")?,
        owner_pid: row.get("owner_pid")?,
        created: row.get("created_at")?,
        ports: Vec::new(),
    })
}

fn port_row(row: &Row) -> rusqlite::Result<Port> {
    let proto: String = row.get("proto")?;
    let host_ip: String = row.get("host_ip")?;
    Ok(Port {
        proto: Proto::parse(&proto).unwrap_or(Proto::Tcp),
        host_ip: host_ip.parse().ok(),
        host_port: row.get("host_port")?,
        container_port: row.get("container_port")?,
    })
}

fn ports_of(conn: &Connection, endpoint: &str) -> rusqlite::Result<Vec<Port>> {
    let mut stmt = conn.prepare(
        "SELECT proto, host_ip, host_port, container_port FROM ports WHERE endpoint_id = ?1 ORDER BY proto, host_port",
    )?;
    stmt.query_map([endpoint], port_row)?.collect()
}

/// Fills in each endpoint's published ports.
fn with_ports(conn: &Connection, mut endpoints: Vec<EndpointRecord>) -> rusqlite::Result<Vec<EndpointRecord>> {
    for ep in &mut endpoints {
        ep.ports = ports_of(conn, &ep.id)?;
    }
    Ok(endpoints)
}

/// Refuses ports that another endpoint, or the request itself, publishes already.
fn check_ports(conn: &Connection, requested: &[Port]) -> Result<()> {
    let mut stmt = conn.prepare("SELECT endpoint_id, proto, host_ip, host_port, container_port FROM ports")?;
    let taken = stmt
        .query_map([], |r| Ok((r.get::<_, String>("endpoint_id")?, port_row(r)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (i, port) in requested.iter().enumerate() {
        if let Some((owner, _)) = taken.iter().find(|(_, t)| t.collides(port)) {
            return Err(Error::conflict(format!(
                "host port {}/{} is already published by endpoint '{owner}'; pick another",
                port.host_port, port.proto
            )));
        }
        if requested[..i].iter().any(|p| p.collides(port)) {
            return Err(Error::invalid(format!("host port {}/{} is published twice", port.host_port, port.proto)));
        }
    }
    Ok(())
}

fn insert_ports(conn: &Connection, endpoint: &str, ports: &[Port]) -> Result<()> {
    for port in ports {
        conn.execute(
            "INSERT INTO ports (endpoint_id, proto, host_ip, host_port, container_port) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                endpoint,
                port.proto.to_string(),
                port.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                port.host_port,
                port.container_port
            ],
        )?;
    }
    Ok(())
}

fn parse_ip(text: &str) -> Result<Ipv4Addr> {
    text.parse().map_err(|_| Error::system("state database", format!("bad address '{text}'")))
}

/// The addresses an engine holds in `pool` through netpath's IPAM.
fn ipam_addresses(conn: &Connection, pool: Ipv4Net) -> Result<BTreeSet<u32>> {
    let mut stmt = conn.prepare("SELECT ip FROM ipam_addresses WHERE pool = ?1")?;
    let rows = stmt.query_map([pool.to_string()], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    rows.iter().map(|ip| parse_ip(ip).map(u32::from)).collect()
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).context(|| format!("cannot create state directory {}", dir.display()))?;
        let path = dir.join("netpath.db");
        let conn = Connection::open(&path).context(|| format!("cannot open state database {}", path.display()))?;
        conn.busy_timeout(Duration::from_secs(60))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut store = Self { conn };
        store.migrate(&path)?;
        Ok(store)
    }

    fn migrate(&mut self, path: &Path) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0..=2 => {
                if version == 0 {
                    tx.execute_batch(SCHEMA)?;
                }
                if version < 2 {
                    tx.execute_batch(MIGRATE_TO_2)?;
                }
                tx.execute_batch(MIGRATE_TO_3)?;
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            }
            SCHEMA_VERSION => {}
            newer => {
                return Err(Error::invalid(format!(
                    "state database {} has schema version {newer}, newer than this netpath ({SCHEMA_VERSION}); upgrade netpath",
                    path.display()
                )));
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Reserves the network's name, bridge and subnet. `routes` are the host's routes, which an
    /// automatic subnet must not overlap either.
    pub fn create_network(&mut self, req: &NewNetwork, routes: &[Ipv4Net]) -> Result<NetworkRecord> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Vec<NetworkRecord> = {
            let mut stmt = tx.prepare(&format!("SELECT {NETWORK_COLS} FROM networks"))?;
            stmt.query_map([], network_row)?.collect::<rusqlite::Result<_>>()?
        };
        if let Some(other) = existing.iter().find(|n| req.external_id.is_some() && n.external_id == req.external_id) {
            return Err(Error::conflict(format!("network '{}' already has this engine id", other.name)));
        }
        if existing.iter().any(|n| n.name == req.name) {
            return Err(Error::conflict(format!("network '{}' already exists; pick another name", req.name)));
        }
        if let Some(other) = existing.iter().find(|n| n.bridge == req.bridge) {
            return Err(Error::conflict(format!(
                "bridge '{}' already belongs to network '{}'; pass another --bridge",
                req.bridge, other.name
            )));
        }
        let subnet = match req.subnet {
            Some(subnet) => {
                if let Some(other) = existing.iter().find(|n| n.subnet.overlaps(&subnet)) {
                    return Err(Error::conflict(format!(
                        "network '{}' already uses {}; pick another --subnet",
                        other.name, other.subnet
                    )));
                }
                if let Some(route) = routes.iter().find(|r| r.overlaps(&subnet)) {
                    return Err(Error::conflict(format!(
                        "subnet {subnet} overlaps the host's route to {route}; pick another --subnet"
                    )));
                }
                subnet
            }
            None => {
                let taken: Vec<Ipv4Net> = existing.iter().map(|n| n.subnet).chain(routes.iter().copied()).collect();
                ipam::free_subnet(ipam::DEFAULT_POOL, ipam::DEFAULT_PREFIX, &taken).ok_or_else(|| {
                    Error::conflict(format!(
                        "no free /{} left in the default pool {}; pass --subnet",
                        ipam::DEFAULT_PREFIX,
                        ipam::DEFAULT_POOL
                    ))
                })?
            }
        };
        let gateway = ipam::gateway_for(subnet, req.gateway)?;
        tx.execute(
            "INSERT INTO networks (name, bridge, subnet, gateway, mtu, internal, masquerade, uplink, xdp, state, owner_pid,
                created_at, external_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                req.name,
                req.bridge,
                subnet.to_string(),
                gateway.to_string(),
                req.mtu,
                req.internal,
                req.masquerade,
                req.uplink,
                req.xdp,
                CREATING,
                std::process::id(),
                now(),
                req.external_id
            ],
        )?;
        let id = tx.last_insert_rowid();
        let record = tx.query_row(&format!("SELECT {NETWORK_COLS} FROM networks WHERE id = ?1"), [id], network_row)?;
        tx.commit()?;
        Ok(record)
    }

    pub fn set_network_ready(&self, id: u32) -> Result<()> {
        self.conn.execute("UPDATE networks SET state = ?1 WHERE id = ?2", params![READY, id])?;
        Ok(())
    }

    pub fn remove_network(&self, id: u32) -> Result<()> {
        self.conn.execute("DELETE FROM networks WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn find_network(&self, name: &str) -> Result<Option<NetworkRecord>> {
        Ok(self
            .conn
            .query_row(&format!("SELECT {NETWORK_COLS} FROM networks WHERE name = ?1"), [name], network_row)
            .optional()?)
    }

    /// A network that is ready for use, or an error that names it.
    pub fn network(&self, name: &str) -> Result<NetworkRecord> {
        match self.find_network(name)? {
            Some(n) if n.state == READY => Ok(n),
            Some(_) => Err(Error::not_found(format!(
                "network '{name}' is not ready: being created, or left half-created by a command that died (create it again)"
            ))),
            None => Err(Error::not_found(format!("network '{name}' does not exist; see `netpath network ls`"))),
        }
    }

    pub fn networks(&self) -> Result<Vec<NetworkRecord>> {
        let mut stmt = self.conn.prepare(&format!("SELECT {NETWORK_COLS} FROM networks ORDER BY name"))?;
        Ok(stmt.query_map([], network_row)?.collect::<rusqlite::Result<_>>()?)
    }

    /// Reserves an address for a new endpoint, or returns the endpoint this id already has.
    pub fn reserve_endpoint(&mut self, req: &NewEndpoint) -> Result<Reservation> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing =
            tx.query_row(&format!("{ENDPOINT_SELECT} WHERE e.id = ?1"), [&req.id], endpoint_row).optional()?;
        if let Some(existing) = existing {
            if existing.network_id != req.network.id {
                return Err(Error::conflict(format!(
                    "endpoint '{}' is attached to network '{}'; detach it first",
                    req.id, existing.network
                )));
            }
            if existing.state != READY {
                return Err(Error::conflict(format!(
                    "endpoint '{}' is being attached by another process; retry",
                    req.id
                )));
            }
            let ports = ports_of(&tx, &existing.id)?;
            return Ok(Reservation::Existing(EndpointRecord { ports, ..existing }));
        }
        let used: BTreeSet<u32> = {
            let mut stmt = tx.prepare("SELECT ip FROM endpoints WHERE network_id = ?1")?;
            let rows = stmt.query_map([req.network.id], |r| r.get::<_, String>(0))?;
            let mut used = BTreeSet::new();
            for ip in rows {
                let ip = ip?;
                let ip: Ipv4Addr =
                    ip.parse().map_err(|_| Error::system("state database", format!("bad address '{ip}'")))?;
                used.insert(u32::from(ip));
            }
            used
        };
        check_ports(&tx, &req.ports)?;
        let net = &req.network;
        let ip = match req.ip {
            Some(ip) => {
                ipam::check_requested(net.subnet, net.gateway, ip, &used)?;
                ip
            }
            // Addresses an engine holds through netpath's IPAM are taken too.
            None => ipam::lowest_free(net.subnet, net.gateway, &(&used | &ipam_addresses(&tx, net.subnet)?))
                .ok_or_else(|| {
                    Error::conflict(format!("network '{}' has no free address left in {}", net.name, net.subnet))
                })?,
        };
        let mac = req.mac.unwrap_or_else(|| ipam::mac_for(ip));
        let mac_text = ipam::format_mac(&mac);
        let owner: Option<String> = tx
            .query_row("SELECT id FROM endpoints WHERE network_id = ?1 AND mac = ?2", params![net.id, mac_text], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(owner) = owner {
            return Err(Error::conflict(format!(
                "MAC address {mac_text} is already used by endpoint '{owner}' on network '{}'; pick another --mac",
                net.name
            )));
        }
        let inserted = tx.execute(
            "INSERT INTO endpoints (id, network_id, ip, mac, ifname, host_veth, netns_path, netns_dev, netns_ino,
                netns_cookie, netns_boot, state, owner_pid, created_at, handed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            params![
                req.id,
                net.id,
                ip.to_string(),
                ipam::format_mac(&mac),
                req.ifname,
                req.host_veth,
                req.netns_path,
                req.netns_id.dev,
                req.netns_id.ino,
                req.netns_id.cookie,
                req.netns_id.boot,
                CREATING,
                std::process::id(),
                now(),
                req.handed
            ],
        );
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted {
            if e.code == rusqlite::ErrorCode::ConstraintViolation {
                return Err(Error::conflict(format!(
                    "host interface name '{}' is taken by another endpoint; pass another --id",
                    req.host_veth
                )));
            }
        }
        inserted?;
        insert_ports(&tx, &req.id, &req.ports)?;
        let mut record = tx.query_row(&format!("{ENDPOINT_SELECT} WHERE e.id = ?1"), [&req.id], endpoint_row)?;
        record.ports = ports_of(&tx, &req.id)?;
        tx.commit()?;
        Ok(Reservation::New(record))
    }

    pub fn set_endpoint_ready(&self, id: &str) -> Result<()> {
        self.conn.execute("UPDATE endpoints SET state = ?1 WHERE id = ?2", params![READY, id])?;
        Ok(())
    }

    pub fn remove_endpoint(&self, id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM endpoints WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>> {
        let found =
            self.conn.query_row(&format!("{ENDPOINT_SELECT} WHERE e.id = ?1"), [id], endpoint_row).optional()?;
        Ok(with_ports(&self.conn, found.into_iter().collect())?.pop())
    }

    /// Endpoints, of one network or of all, ordered by network and address.
    pub fn endpoints(&self, network_id: Option<u32>) -> Result<Vec<EndpointRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "{ENDPOINT_SELECT} WHERE ?1 IS NULL OR e.network_id = ?1 ORDER BY n.name, e.created_at, e.id"
        ))?;
        Ok(with_ports(&self.conn, stmt.query_map([network_id], endpoint_row)?.collect::<rusqlite::Result<_>>()?)?)
    }

    /// Every endpoint without its ports: for checks that run at every attach and must stay
    /// cheap with many endpoints.
    pub fn endpoints_bare(&self) -> Result<Vec<EndpointRecord>> {
        let mut stmt = self.conn.prepare(ENDPOINT_SELECT)?;
        Ok(stmt.query_map([], endpoint_row)?.collect::<rusqlite::Result<_>>()?)
    }

    pub fn has_published_ports(&self) -> Result<bool> {
        Ok(self.conn.query_row("SELECT EXISTS (SELECT 1 FROM ports)", [], |r| r.get(0))?)
    }

    pub fn setting(&self, key: &str) -> Result<Option<i64>> {
        Ok(self.conn.query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    pub fn set_setting(&self, key: &str, value: i64) -> Result<()> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            params![key, value],
        )?;
        Ok(())
    }

    /// Rows still `creating`: being created by a live process, or left by one that died; the
    /// caller tells them apart by trying their locks.
    pub fn creating(&self) -> Result<(Vec<NetworkRecord>, Vec<EndpointRecord>)> {
        let networks = {
            let mut stmt = self.conn.prepare(&format!("SELECT {NETWORK_COLS} FROM networks WHERE state = ?1"))?;
            stmt.query_map([CREATING], network_row)?.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let endpoints = {
            let mut stmt = self.conn.prepare(&format!("{ENDPOINT_SELECT} WHERE e.state = ?1"))?;
            with_ports(&self.conn, stmt.query_map([CREATING], endpoint_row)?.collect::<rusqlite::Result<Vec<_>>>()?)?
        };
        Ok((networks, endpoints))
    }

    /// Moves an endpoint to another namespace: the container restarted in a new one.
    pub fn set_endpoint_netns(&self, id: &str, path: &str, netns: &NsIdentity) -> Result<()> {
        self.conn.execute(
            "UPDATE endpoints SET netns_path = ?1, netns_dev = ?2, netns_ino = ?3, netns_cookie = ?4, netns_boot = ?5
             WHERE id = ?6",
            params![path, netns.dev, netns.ino, netns.cookie, netns.boot, id],
        )?;
        Ok(())
    }
}

/// What engines (Docker) need beyond `netpath attach`: their ids, their IPAM, ports published
/// after the endpoint exists, addresses claimed before it is wired.
impl Store {
    pub fn network_by_external_id(&self, external_id: &str) -> Result<Option<NetworkRecord>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {NETWORK_COLS} FROM networks WHERE external_id = ?1"),
                [external_id],
                network_row,
            )
            .optional()?)
    }

    /// Publishes more ports of an existing endpoint, refused when another endpoint has them.
    pub fn add_ports(&mut self, endpoint: &str, ports: &[Port]) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        check_ports(&tx, ports)?;
        insert_ports(&tx, endpoint, ports)?;
        tx.commit()?;
        Ok(())
    }

    pub fn remove_ports(&self, endpoint: &str) -> Result<()> {
        self.conn.execute("DELETE FROM ports WHERE endpoint_id = ?1", [endpoint])?;
        Ok(())
    }

    /// Records the address and MAC an engine gave an endpoint it has not wired yet.
    pub fn claim_endpoint(&self, id: &str, network_id: u32, ip: Ipv4Addr, mac: &[u8; 6]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO endpoint_claims (id, network_id, ip, mac) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET network_id = ?2, ip = ?3, mac = ?4",
            params![id, network_id, ip.to_string(), ipam::format_mac(mac)],
        )?;
        Ok(())
    }

    /// An endpoint's claim: network id, address and MAC.
    pub fn claim(&self, id: &str) -> Result<Option<(u32, Ipv4Addr, [u8; 6])>> {
        let row = self
            .conn
            .query_row("SELECT network_id, ip, mac FROM endpoint_claims WHERE id = ?1", [id], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .optional()?;
        row.map(|(net, ip, mac)| Ok((net, parse_ip(&ip)?, ipam::parse_mac(&mac)?))).transpose()
    }

    pub fn remove_claim(&self, id: &str) -> Result<()> {
        self.conn.execute("DELETE FROM endpoint_claims WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Reserves an IPAM pool: the one asked for, if nothing overlaps it, or the first free
    /// subnet of the default pool, as `network create` picks one.
    pub fn request_pool(&mut self, pool: Option<Ipv4Net>, routes: &[Ipv4Net]) -> Result<Ipv4Net> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut taken: Vec<(String, Ipv4Net)> = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT name, subnet FROM networks UNION ALL SELECT '', pool FROM ipam_pools")?;
            for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
                let (name, subnet) = row?;
                let subnet =
                    subnet.parse().map_err(|_| Error::system("state database", format!("bad subnet '{subnet}'")))?;
                taken.push((name, subnet));
            }
        }
        let pool = match pool {
            Some(pool) => {
                if let Some((name, other)) = taken.iter().find(|(_, t)| t.overlaps(&pool)) {
                    let owner = if name.is_empty() { "an IPAM pool".to_string() } else { format!("network '{name}'") };
                    return Err(Error::conflict(format!("{owner} already uses {other}; pick another subnet")));
                }
                pool
            }
            None => {
                let taken: Vec<Ipv4Net> = taken.iter().map(|(_, t)| *t).chain(routes.iter().copied()).collect();
                ipam::free_subnet(ipam::DEFAULT_POOL, ipam::DEFAULT_PREFIX, &taken).ok_or_else(|| {
                    Error::conflict(format!(
                        "no free /{} left in {}; pass a subnet",
                        ipam::DEFAULT_PREFIX,
                        ipam::DEFAULT_POOL
                    ))
                })?
            }
        };
        ipam::gateway_for(pool, None)?;
        tx.execute("INSERT INTO ipam_pools (pool) VALUES (?1)", [pool.to_string()])?;
        tx.commit()?;
        Ok(pool)
    }

    pub fn release_pool(&self, pool: Ipv4Net) -> Result<()> {
        self.conn.execute("DELETE FROM ipam_pools WHERE pool = ?1", [pool.to_string()])?;
        Ok(())
    }

    /// Reserves an address of a pool: the one asked for, the first host for a gateway, or
    /// the lowest free one; endpoints of the pool's network hold theirs too.
    pub fn request_address(&mut self, pool: Ipv4Net, ip: Option<Ipv4Addr>, gateway: bool) -> Result<Ipv4Addr> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM ipam_pools WHERE pool = ?1)", [pool.to_string()], |r| r.get(0))?;
        if !known {
            return Err(Error::not_found(format!("IPAM pool {pool} was not requested from netpath")));
        }
        let mut used = ipam_addresses(&tx, pool)?;
        {
            let mut stmt = tx.prepare(
                "SELECT e.ip FROM endpoints e JOIN networks n ON n.id = e.network_id WHERE n.subnet = ?1
                 UNION ALL SELECT gateway FROM networks WHERE subnet = ?1",
            )?;
            for ip in stmt.query_map([pool.to_string()], |r| r.get::<_, String>(0))? {
                used.insert(u32::from(parse_ip(&ip?)?));
            }
        }
        // The network address is never a host, so nothing is excluded as a gateway here.
        let ip = match ip {
            Some(ip) => {
                ipam::check_requested(pool, pool.addr(), ip, &used)?;
                ip
            }
            None if gateway => {
                let first = Ipv4Addr::from(*pool.hosts().start());
                ipam::check_requested(pool, pool.addr(), first, &used)?;
                first
            }
            None => ipam::lowest_free(pool, pool.addr(), &used)
                .ok_or_else(|| Error::conflict(format!("no free address left in {pool}")))?,
        };
        tx.execute("INSERT INTO ipam_addresses (pool, ip) VALUES (?1, ?2)", [pool.to_string(), ip.to_string()])?;
        tx.commit()?;
        Ok(ip)
    }

    pub fn release_address(&self, pool: Ipv4Net, ip: Ipv4Addr) -> Result<()> {
        self.conn
            .execute("DELETE FROM ipam_addresses WHERE pool = ?1 AND ip = ?2", [pool.to_string(), ip.to_string()])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("netpath-store-{}-{}", std::process::id(), now_nanos()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn now_nanos() -> u128 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
    }

    fn net(name: &str, subnet: Option<&str>) -> NewNetwork {
        NewNetwork {
            name: name.into(),
            bridge: format!("np-{name}"),
            subnet: subnet.map(|s| s.parse().unwrap()),
            gateway: None,
            mtu: 1500,
            internal: false,
            masquerade: true,
            uplink: None,
            xdp: false,
            external_id: None,
        }
    }

    fn endpoint(id: &str, network: &NetworkRecord, ip: Option<&str>) -> NewEndpoint {
        NewEndpoint {
            id: id.into(),
            network: network.clone(),
            ip: ip.map(|s| s.parse().unwrap()),
            mac: None,
            ifname: "eth0".into(),
            host_veth: format!("npv{id}"),
            netns_path: "/run/netns/x".into(),
            netns_id: NsIdentity { dev: 1, ino: 2, cookie: 3, boot: "b".into() },
            ports: Vec::new(),
            handed: false,
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_and_keeps_its_rows() {
        let dir = tempdir();
        {
            let conn = Connection::open(dir.join("netpath.db")).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute_batch(
                "INSERT INTO networks VALUES (1, 'web', 'np-web', '10.9.0.0/24', '10.9.0.1', 1500, 0, 1, NULL, 0, 'ready', 1, 0);
                 INSERT INTO endpoints VALUES ('a', 1, '10.9.0.2', '02:4e:0a:09:00:02', 'eth0', 'npva', '/run/netns/a',
                     7, 8, 'ready', 1, 0);",
            )
            .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let ep = store.endpoint("a").unwrap().unwrap();
        assert_eq!(ep.netns_id, NsIdentity { dev: 7, ino: 8, cookie: 0, boot: String::new() });
        assert_eq!(ep.state, State::Ready);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn networks_get_disjoint_subnets_and_unique_names() {
        let dir = tempdir();
        let mut store = Store::open(&dir).unwrap();
        let routes = ["10.200.0.0/24".parse().unwrap()];
        let a = store.create_network(&net("a", None), &routes).unwrap();
        let b = store.create_network(&net("b", None), &routes).unwrap();
        assert_eq!(a.subnet.to_string(), "10.200.4.0/22");
        assert_eq!(b.subnet.to_string(), "10.200.8.0/22");
        assert_eq!(a.gateway.to_string(), "10.200.4.1");
        let err = store.create_network(&net("c", Some("10.200.8.0/24")), &[]).unwrap_err().to_string();
        assert_eq!(err, "network 'b' already uses 10.200.8.0/22; pick another --subnet");
        let err = store.create_network(&net("a", Some("10.9.0.0/24")), &[]).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        // A refused request leaves no row.
        assert_eq!(store.networks().unwrap().len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn engine_ipam_and_attach_share_one_allocator() {
        let dir = tempdir();
        let mut store = Store::open(&dir).unwrap();
        let pool: Ipv4Net = "10.9.0.0/24".parse().unwrap();
        assert_eq!(store.request_pool(Some(pool), &[]).unwrap(), pool);
        assert!(store.request_pool(Some("10.9.0.128/25".parse().unwrap()), &[]).is_err(), "overlap");
        let auto = store.request_pool(None, &["10.200.0.0/22".parse().unwrap()]).unwrap();
        assert_eq!(auto.to_string(), "10.200.4.0/22");
        assert_eq!(store.request_address(pool, None, true).unwrap().to_string(), "10.9.0.1");
        assert_eq!(store.request_address(pool, None, false).unwrap().to_string(), "10.9.0.2");
        let n =
            store.create_network(&NewNetwork { external_id: Some("d1".into()), ..net("a", Some("10.9.0.0/24")) }, &[]);
        let n = n.unwrap();
        store.set_network_ready(n.id).unwrap();
        assert_eq!(store.network_by_external_id("d1").unwrap().unwrap().id, n.id);
        // An attach without --ip skips what the engine holds, and the engine sees the attach.
        let Reservation::New(e) = store.reserve_endpoint(&endpoint("e1", &n, None)).unwrap() else { panic!() };
        assert_eq!(e.ip.to_string(), "10.9.0.3");
        assert!(store.request_address(pool, Some(e.ip), false).is_err());
        assert_eq!(store.request_address(pool, None, false).unwrap().to_string(), "10.9.0.4");
        store.release_address(pool, "10.9.0.2".parse().unwrap()).unwrap();
        assert_eq!(store.request_address(pool, None, false).unwrap().to_string(), "10.9.0.2");
        store.release_pool(pool).unwrap();
        assert!(store.request_address(pool, None, false).is_err(), "a released pool hands out nothing");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn endpoints_reserve_addresses_once() {
        let dir = tempdir();
        let mut store = Store::open(&dir).unwrap();
        let n = store.create_network(&net("a", Some("10.9.0.0/24")), &[]).unwrap();
        store.set_network_ready(n.id).unwrap();
        let Reservation::New(e1) = store.reserve_endpoint(&endpoint("e1", &n, None)).unwrap() else { panic!() };
        assert_eq!(e1.ip.to_string(), "10.9.0.2");
        assert_eq!(e1.mac, "02:4e:0a:09:00:02");
        store.set_endpoint_ready("e1").unwrap();
        let Reservation::Existing(again) = store.reserve_endpoint(&endpoint("e1", &n, None)).unwrap() else { panic!() };
        assert_eq!(again.ip, e1.ip);
        let err = store.reserve_endpoint(&endpoint("e2", &n, Some("10.9.0.2"))).err().unwrap().to_string();
        assert!(err.contains("already in use"), "{err}");
        let Reservation::New(e2) = store.reserve_endpoint(&endpoint("e2", &n, None)).unwrap() else { panic!() };
        assert_eq!(e2.ip.to_string(), "10.9.0.3");
        store.remove_endpoint("e1").unwrap();
        let Reservation::New(e3) = store.reserve_endpoint(&endpoint("e3", &n, None)).unwrap() else { panic!() };
        assert_eq!(e3.ip.to_string(), "10.9.0.2", "a freed address is handed out again");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
