//! What the resolver asks of the state: the addresses a name has and the name an address has,
//! as one requester sees them. A requester sees the endpoints of its own networks (those of
//! every endpoint in its namespace), never another network's. Read at every query, so a name
//! answers the moment its endpoint is ready and stops the moment it is detached.
use std::net::Ipv4Addr;

use rusqlite::{OptionalExtension, params};

use super::{db::Store, sql::parse_ip};
use crate::error::Result;

/// The networks the endpoint at `?1` sees, as a common table `mine(network_id)`.
const MINE: &str = "
WITH me AS (SELECT id, netns_cookie, netns_boot FROM endpoints WHERE ip = ?1 AND state = 'ready'),
mine(network_id) AS (
    SELECT o.network_id FROM me JOIN endpoints o
      ON o.id = me.id OR (me.netns_cookie != 0 AND o.netns_cookie = me.netns_cookie AND o.netns_boot = me.netns_boot)
    WHERE o.state = 'ready')";

impl Store {
    /// A number that changes whenever another connection commits a change (SQLite's
    /// `data_version`): what the resolver's answers are kept against.
    pub fn data_version(&self) -> Result<i64> {
        Ok(self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    /// Whether an endpoint has address `from`: only endpoints are answered.
    pub fn is_requester(&self, from: Ipv4Addr) -> Result<bool> {
        let found: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM endpoints WHERE ip = ?1 AND state = 'ready'", [from.to_string()], |r| r.get(0))
            .optional()?;
        Ok(found.is_some())
    }

    /// The addresses of the endpoints of `from`'s networks whose name or alias `name` is
    /// (without case), in the order they were attached.
    pub fn addresses_of(&self, from: Ipv4Addr, name: &str) -> Result<Vec<Ipv4Addr>> {
        let sql = format!(
            "{MINE}
            SELECT ip FROM endpoints e
            WHERE e.state = 'ready' AND e.network_id IN mine
              AND (e.name = ?2 OR EXISTS (SELECT 1 FROM endpoint_aliases a WHERE a.endpoint_id = e.id AND a.alias = ?2))
            ORDER BY e.created_at, e.rowid"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let ips: Vec<String> =
            stmt.query_map(params![from.to_string(), name], |r| r.get(0))?.collect::<Result<_, _>>()?;
        ips.iter().map(|ip| parse_ip(ip)).collect()
    }

    /// The name of the endpoint of `from`'s networks at address `ip`, or its first alias when
    /// it has no name.
    pub fn name_at(&self, from: Ipv4Addr, ip: Ipv4Addr) -> Result<Option<String>> {
        let sql = format!(
            "{MINE}
            SELECT COALESCE(e.name, (SELECT alias FROM endpoint_aliases a WHERE a.endpoint_id = e.id ORDER BY a.rowid LIMIT 1))
            FROM endpoints e WHERE e.state = 'ready' AND e.network_id IN mine AND e.ip = ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let name: Option<Option<String>> =
            stmt.query_row(params![from.to_string(), ip.to_string()], |r| r.get(0)).optional()?;
        Ok(name.flatten())
    }
}
