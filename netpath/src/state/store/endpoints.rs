//! Endpoints, their published ports and the names they answer to: addresses and names
//! reserved in one transaction.
use std::{collections::BTreeSet, net::Ipv4Addr};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    db::Store,
    engine::ipam_addresses,
    rows::*,
    sql::{now, parse_ip},
};
use crate::error::{Field, Message};
use crate::types::{
    mac,
    name::{Hostname, Naming},
};
use crate::{error::Error, error::Result, state::ipam, types::identity::NsIdentity, types::port::Port};

fn ports_of(conn: &Connection, endpoint: &str) -> rusqlite::Result<Vec<Port>> {
    let mut stmt = conn.prepare(
        "SELECT proto, host_ip, host_port, container_port FROM ports WHERE endpoint_id = ?1 ORDER BY proto, host_port",
    )?;
    stmt.query_map([endpoint], port_row)?.collect()
}

fn aliases_of(conn: &Connection, endpoint: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT alias FROM endpoint_aliases WHERE endpoint_id = ?1 ORDER BY rowid")?;
    stmt.query_map([endpoint], |r| r.get(0))?.collect()
}

/// Fills in an endpoint's published ports and aliases, which rows of their own hold.
fn fill(conn: &Connection, ep: &mut EndpointRecord) -> rusqlite::Result<()> {
    ep.ports = ports_of(conn, &ep.id)?;
    ep.aliases = aliases_of(conn, &ep.id)?;
    Ok(())
}

pub(super) fn filled(conn: &Connection, mut endpoints: Vec<EndpointRecord>) -> rusqlite::Result<Vec<EndpointRecord>> {
    for ep in &mut endpoints {
        fill(conn, ep)?;
    }
    Ok(endpoints)
}

/// The endpoint of the network whose name `name` is (names compare without case: the
/// column's collation).
fn name_holder(conn: &Connection, network_id: u32, name: &Hostname) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT id FROM endpoints WHERE network_id = ?1 AND name = ?2",
        params![network_id, name.as_str()],
        |r| r.get(0),
    )
    .optional()
}

/// An endpoint of the network that has `name` as an alias.
fn alias_holder(conn: &Connection, network_id: u32, name: &Hostname) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT a.endpoint_id FROM endpoint_aliases a JOIN endpoints e ON e.id = a.endpoint_id
         WHERE e.network_id = ?1 AND a.alias = ?2 ORDER BY a.rowid LIMIT 1",
        params![network_id, name.as_str()],
        |r| r.get(0),
    )
    .optional()
}

/// The name the endpoint gets, refusing names another endpoint of the network answers to in
/// a way that would make a name ambiguous: a name resolves to its one endpoint, so it may be
/// neither another's name nor another's alias, and an alias may not be another's name.
/// Aliases may be shared: the resolver answers with every endpoint that has it (Docker's
/// `--network-alias` rule). A derived name that is taken is left out instead of refused.
fn check_names<'a>(conn: &Connection, req: &'a NewEndpoint) -> Result<Option<&'a Hostname>> {
    let net = &req.network;
    let taken = |field: Field, name: &Hostname, holder: String, as_what: &str| {
        Error::conflict(Message::field(field).and(format!(
            " '{name}' is {as_what} endpoint '{holder}' on network '{}'; pick another, or detach '{holder}' first",
            net.name
        )))
    };
    for alias in &req.aliases {
        if let Some(holder) = name_holder(conn, net.id, alias)? {
            return Err(taken(Field::Alias, alias, holder, "the name of"));
        }
    }
    let Some(naming) = &req.name else {
        return Ok(None);
    };
    let name = naming.hostname();
    let holder = match name_holder(conn, net.id, name)? {
        Some(holder) => Some((holder, "the name of")),
        None => alias_holder(conn, net.id, name)?.map(|holder| (holder, "an alias of")),
    };
    match (holder, naming) {
        (None, _) => Ok(Some(name)),
        (Some(_), Naming::Derived(_)) => Ok(None),
        (Some((holder, as_what)), Naming::Chosen(_)) => Err(taken(Field::Name, name, holder, as_what)),
    }
}

/// Records the aliases, but not the endpoint's own name again.
fn insert_aliases(conn: &Connection, endpoint: &str, name: Option<&Hostname>, aliases: &[Hostname]) -> Result<()> {
    for alias in aliases.iter().filter(|alias| !name.is_some_and(|name| name.is(alias.as_str()))) {
        conn.execute(
            "INSERT INTO endpoint_aliases (endpoint_id, alias) VALUES (?1, ?2)",
            params![endpoint, alias.as_str()],
        )?;
    }
    Ok(())
}

/// Refuses ports that another endpoint, or the request itself, publishes already.
pub(super) fn check_ports(conn: &Connection, requested: &[Port]) -> Result<()> {
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

pub(super) fn insert_ports(conn: &Connection, endpoint: &str, ports: &[Port]) -> Result<()> {
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

/// The lowest counter slot no endpoint holds, of any network.
fn free_slot(conn: &Connection) -> Result<u16> {
    let mut stmt = conn.prepare("SELECT slot FROM endpoints ORDER BY slot")?;
    let mut next = 0u32;
    for slot in stmt.query_map([], |r| r.get::<_, u32>(0))? {
        if slot? != next {
            break;
        }
        next += 1;
    }
    u16::try_from(next).map_err(|_| {
        Error::conflict(format!("netpath already has {next} endpoints, as many as it can count; detach some first"))
    })
}

impl Store {
    /// Reserves an address for a new endpoint, or returns the endpoint this id already has.
    pub fn reserve_endpoint(&mut self, req: &NewEndpoint) -> Result<Reservation> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing =
            tx.query_row(&format!("{ENDPOINT_SELECT} WHERE e.id = ?1"), [&req.id], endpoint_row).optional()?;
        if let Some(mut existing) = existing {
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
            fill(&tx, &mut existing)?;
            return Ok(Reservation::Existing(existing));
        }
        let used: BTreeSet<Ipv4Addr> = {
            let mut stmt = tx.prepare("SELECT ip FROM endpoints WHERE network_id = ?1")?;
            let rows = stmt.query_map([req.network.id], |r| r.get::<_, String>(0))?;
            rows.map(|ip| parse_ip(&ip?)).collect::<Result<_>>()?
        };
        check_ports(&tx, &req.ports)?;
        let name = check_names(&tx, req)?;
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
        let slot = free_slot(&tx)?;
        let mac = req.mac.unwrap_or_else(|| mac::mac_for(ip));
        let mac_text = mac::format_mac(&mac);
        let owner: Option<String> = tx
            .query_row("SELECT id FROM endpoints WHERE network_id = ?1 AND mac = ?2", params![net.id, mac_text], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(owner) = owner {
            return Err(Error::conflict(
                Message::from(format!(
                    "MAC address {mac_text} is already used by endpoint '{owner}' on network '{}'; pick another ",
                    net.name
                ))
                .and_field(Field::Mac),
            ));
        }
        let inserted = tx.execute(
            "INSERT INTO endpoints (id, network_id, ip, mac, ifname, host_veth, netns_path, netns_dev, netns_ino,
                netns_cookie, netns_boot, state, owner_pid, created_at, handed, slot, creator, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                req.id,
                net.id,
                ip.to_string(),
                mac::format_mac(&mac),
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
                req.handed,
                slot,
                req.creator,
                name.map(Hostname::as_str)
            ],
        );
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted {
            if e.code == rusqlite::ErrorCode::ConstraintViolation {
                return Err(Error::conflict(
                    Message::from(format!(
                        "host interface name '{}' is taken by another endpoint; pass another ",
                        req.host_veth
                    ))
                    .and_field(Field::EndpointId),
                ));
            }
        }
        inserted?;
        insert_ports(&tx, &req.id, &req.ports)?;
        insert_aliases(&tx, &req.id, name, &req.aliases)?;
        let mut record = tx.query_row(&format!("{ENDPOINT_SELECT} WHERE e.id = ?1"), [&req.id], endpoint_row)?;
        fill(&tx, &mut record)?;
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
        Ok(filled(&self.conn, found.into_iter().collect())?.pop())
    }

    /// Endpoints, of one network or of all, ordered by network and address.
    pub fn endpoints(&self, network_id: Option<u32>) -> Result<Vec<EndpointRecord>> {
        let mut stmt = self.conn.prepare(&format!(
            "{ENDPOINT_SELECT} WHERE ?1 IS NULL OR e.network_id = ?1 ORDER BY n.name, e.created_at, e.id"
        ))?;
        Ok(filled(&self.conn, stmt.query_map([network_id], endpoint_row)?.collect::<rusqlite::Result<_>>()?)?)
    }

    /// Every endpoint without its ports: for the reap, which must stay cheap with many
    /// endpoints.
    pub fn endpoints_bare(&self) -> Result<Vec<EndpointRecord>> {
        let mut stmt = self.conn.prepare(ENDPOINT_SELECT)?;
        Ok(stmt.query_map([], endpoint_row)?.collect::<rusqlite::Result<_>>()?)
    }

    pub fn has_published_ports(&self) -> Result<bool> {
        Ok(self.conn.query_row("SELECT EXISTS (SELECT 1 FROM ports)", [], |r| r.get(0))?)
    }

    /// Rows still `creating`: being created by a live process, or left by one that died; the
    /// caller tells them apart by trying their locks, and re-reads a row (with its ports) under
    /// its lock. Endpoints come without their ports: while many attach at once most of these
    /// rows belong to live processes.
    pub fn creating(&self) -> Result<(Vec<NetworkRecord>, Vec<EndpointRecord>)> {
        let networks = {
            let mut stmt = self.conn.prepare(&format!("SELECT {NETWORK_COLS} FROM networks WHERE state = ?1"))?;
            stmt.query_map([CREATING], network_row)?.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let endpoints = {
            let mut stmt = self.conn.prepare(&format!("{ENDPOINT_SELECT} WHERE e.state = ?1"))?;
            stmt.query_map([CREATING], endpoint_row)?.collect::<rusqlite::Result<Vec<_>>>()?
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
}
