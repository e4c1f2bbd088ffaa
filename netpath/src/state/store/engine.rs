//! What engines (Docker) need beyond `netpath attach`: their IPAM pools and addresses in
//! netpath's one allocator, and addresses claimed before an endpoint is wired.
use std::{collections::BTreeSet, net::Ipv4Addr};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{db::Store, networks::free_default_subnet, sql::parse_ip};
use crate::error::{Field, Message};
use crate::types::mac;
use crate::{error::Error, error::Result, state::ipam, types::net::Ipv4Net};

/// The addresses an engine holds in `pool` through netpath's IPAM.
pub(super) fn ipam_addresses(conn: &Connection, pool: Ipv4Net) -> Result<BTreeSet<Ipv4Addr>> {
    let mut stmt = conn.prepare("SELECT ip FROM ipam_addresses WHERE pool = ?1")?;
    let rows = stmt.query_map([pool.to_string()], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    rows.iter().map(|ip| parse_ip(ip)).collect()
}

impl Store {
    /// Records the address and MAC an engine gave an endpoint it has not wired yet.
    pub fn claim_endpoint(&self, id: &str, network_id: u32, ip: Ipv4Addr, mac: &[u8; 6]) -> Result<()> {
        self.conn.execute(
            "INSERT INTO endpoint_claims (id, network_id, ip, mac) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET network_id = ?2, ip = ?3, mac = ?4",
            params![id, network_id, ip.to_string(), mac::format_mac(mac)],
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
        row.map(|(net, ip, mac)| Ok((net, parse_ip(&ip)?, mac::parse_mac(&mac)?))).transpose()
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
                    return Err(Error::conflict(
                        Message::from(format!("{owner} already uses {other}; pick another ")).and_field(Field::Subnet),
                    ));
                }
                pool
            }
            None => free_default_subnet(taken.iter().map(|(_, t)| *t), routes)?,
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
                used.insert(parse_ip(&ip?)?);
            }
        }
        // The network address is never a host, so nothing is excluded as a gateway here.
        let ip = match ip {
            Some(ip) => {
                ipam::check_requested(pool, pool.addr(), ip, &used)?;
                ip
            }
            None if gateway => {
                let first =
                    pool.hosts().next().ok_or_else(|| Error::conflict(format!("{pool} has no host address")))?;
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
