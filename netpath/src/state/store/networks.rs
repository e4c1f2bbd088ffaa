//! Networks: names, bridges and subnets reserved in one transaction.
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{db::Store, rows::*, sql::now};
use crate::error::{Field, Message};
use crate::{error::Error, error::Result, state::ipam, types::net::Ipv4Net};

impl Store {
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
            return Err(Error::conflict(
                Message::from(format!(
                    "bridge '{}' already belongs to network '{}'; pass another ",
                    req.bridge, other.name
                ))
                .and_field(Field::Bridge),
            ));
        }
        let subnet = match req.subnet {
            Some(subnet) => {
                if let Some(other) = existing.iter().find(|n| n.subnet.overlaps(&subnet)) {
                    return Err(Error::conflict(
                        Message::from(format!("network '{}' already uses {}; pick another ", other.name, other.subnet))
                            .and_field(Field::Subnet),
                    ));
                }
                if let Some(route) = routes.iter().find(|r| r.overlaps(&subnet)) {
                    return Err(Error::conflict(
                        Message::from(format!("subnet {subnet} overlaps the host's route to {route}; pick another "))
                            .and_field(Field::Subnet),
                    ));
                }
                subnet
            }
            None => free_default_subnet(existing.iter().map(|n| n.subnet), routes)?,
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
}

/// The first free subnet of the default pool, clear of `taken` (networks and pools) and of
/// the host's `routes`.
pub(super) fn free_default_subnet(taken: impl Iterator<Item = Ipv4Net>, routes: &[Ipv4Net]) -> Result<Ipv4Net> {
    let taken: Vec<Ipv4Net> = taken.chain(routes.iter().copied()).collect();
    ipam::free_subnet(ipam::DEFAULT_POOL, ipam::DEFAULT_PREFIX, &taken).ok_or_else(|| {
        Error::conflict(
            Message::from(format!(
                "no free /{} left in the default pool {}; pass ",
                ipam::DEFAULT_PREFIX,
                ipam::DEFAULT_POOL
            ))
            .and_field(Field::Subnet),
        )
    })
}
