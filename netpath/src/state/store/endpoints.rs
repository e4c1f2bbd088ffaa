//! Endpoints and their published ports: addresses reserved in one transaction.
use std::{collections::BTreeSet, net::Ipv4Addr};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    db::Store,
    engine::ipam_addresses,
    rows::*,
    sql::{now, parse_ip},
};
use crate::error::{Field, Message};
use crate::types::mac;
use crate::{error::Error, error::Result, state::ipam, types::identity::NsIdentity, types::port::Port};

pub(super) fn ports_of(conn: &Connection, endpoint: &str) -> rusqlite::Result<Vec<Port>> {
    let mut stmt = conn.prepare(
        "SELECT proto, host_ip, host_port, container_port FROM ports WHERE endpoint_id = ?1 ORDER BY proto, host_port",
    )?;
    stmt.query_map([endpoint], port_row)?.collect()
}

/// Fills in each endpoint's published ports.
pub(super) fn with_ports(
    conn: &Connection,
    mut endpoints: Vec<EndpointRecord>,
) -> rusqlite::Result<Vec<EndpointRecord>> {
    for ep in &mut endpoints {
        ep.ports = ports_of(conn, &ep.id)?;
    }
    Ok(endpoints)
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
        let used: BTreeSet<Ipv4Addr> = {
            let mut stmt = tx.prepare("SELECT ip FROM endpoints WHERE network_id = ?1")?;
            let rows = stmt.query_map([req.network.id], |r| r.get::<_, String>(0))?;
            rows.map(|ip| parse_ip(&ip?)).collect::<Result<_>>()?
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
                netns_cookie, netns_boot, state, owner_pid, created_at, handed, slot, creator)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
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
                req.creator
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

    /// Rows still `creating`: being created by a live process, or left by one that died; the
    /// caller tells them apart by trying their locks, and re-reads a row (with its ports) under
    /// its lock. Endpoints come without their ports: every attach asks, and while many attach
    /// at once most of these rows belong to live processes.
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
