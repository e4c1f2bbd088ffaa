//! The state database: the source of truth from which every kernel object is derived.
//!
//! SQLite in WAL mode, so many one-shot `netpath` processes can share it. Every choice that must
//! be unique across processes (a subnet, an address) is made and recorded inside one `BEGIN
//! IMMEDIATE` transaction.
//!
//! Made for short processes: closing does not checkpoint (SQLite's default would copy the WAL
//! into the database, sync it and delete the WAL, which the next command then creates and syncs
//! again: several milliseconds per command); the WAL is checkpointed when it grows past
//! SQLite's automatic threshold instead. A writer that finds the database locked retries
//! within a fraction of a millisecond, not after SQLite's default back-off (up to 100 ms a try),
//! so a hundred concurrent attaches take turns instead of sleeping.
use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use crate::{error::Context, error::Error, error::Result, state::ipam, types::net::Ipv4Net};

mod endpoints;
mod engine;
mod networks;
mod rows;
mod schema;

pub use rows::{EndpointRecord, NetworkRecord, NewEndpoint, NewNetwork, Reservation, State, Xdp};
use schema::{MIGRATE_TO_2, MIGRATE_TO_3, MIGRATE_TO_4, SCHEMA, SCHEMA_VERSION};

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

/// The first free subnet of the default pool, clear of `taken` (networks and pools) and of
/// the host's `routes`; `hint` says how the asker names a subnet of its own choice.
fn free_default_subnet(taken: impl Iterator<Item = Ipv4Net>, routes: &[Ipv4Net], hint: &str) -> Result<Ipv4Net> {
    let taken: Vec<Ipv4Net> = taken.chain(routes.iter().copied()).collect();
    ipam::free_subnet(ipam::DEFAULT_POOL, ipam::DEFAULT_PREFIX, &taken).ok_or_else(|| {
        Error::conflict(format!(
            "no free /{} left in the default pool {}; {hint}",
            ipam::DEFAULT_PREFIX,
            ipam::DEFAULT_POOL
        ))
    })
}

/// How long a command waits for the database's lock before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);
/// The first pause between two tries for the lock; it doubles up to `BUSY_MAX_PAUSE`. Holders
/// keep it well under a millisecond.
const BUSY_FIRST_PAUSE: Duration = Duration::from_micros(100);
const BUSY_MAX_PAUSE: Duration = Duration::from_millis(2);

/// SQLite's busy handler, called with the number of tries so far: true to try again.
fn busy(tries: i32) -> bool {
    thread_local!(static SINCE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) });
    let now = Instant::now();
    let since = SINCE.with(|s| match (tries, s.get()) {
        (1.., Some(since)) => since,
        _ => {
            s.set(Some(now));
            now
        }
    });
    if now - since >= BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep((BUSY_FIRST_PAUSE * 2u32.pow(tries.clamp(0, 5) as u32)).min(BUSY_MAX_PAUSE));
    true
}

fn parse_ip(text: &str) -> Result<Ipv4Addr> {
    text.parse().map_err(|_| Error::system("state database", format!("bad address '{text}'")))
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).context(|| format!("cannot create state directory {}", dir.display()))?;
        let path = dir.join("netpath.db");
        let conn = Connection::open(&path).context(|| format!("cannot open state database {}", path.display()))?;
        conn.busy_handler(Some(busy))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
        let mut store = Self { conn };
        store.migrate(&path)?;
        Ok(store)
    }

    fn migrate(&mut self, path: &Path) -> Result<()> {
        // The common case reads the version without taking the write lock.
        let current: i64 = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0..=3 => {
                if version == 0 {
                    tx.execute_batch(SCHEMA)?;
                }
                if version < 2 {
                    tx.execute_batch(MIGRATE_TO_2)?;
                }
                if version < 3 {
                    tx.execute_batch(MIGRATE_TO_3)?;
                }
                tx.execute_batch(MIGRATE_TO_4)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kernel::netns::NsIdentity, types::net::Ipv4Net};

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
            xdp: Xdp::Off,
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
                     7, 8, 'ready', 1, 0);
                 INSERT INTO endpoints VALUES ('b', 1, '10.9.0.3', '02:4e:0a:09:00:03', 'eth0', 'npvb', '/run/netns/b',
                     7, 9, 'ready', 1, 0);",
            )
            .unwrap();
        }
        let store = Store::open(&dir).unwrap();
        let ep = store.endpoint("a").unwrap().unwrap();
        assert_eq!(ep.netns_id, NsIdentity { dev: 7, ino: 8, cookie: 0, boot: String::new() });
        assert_eq!(ep.state, State::Ready);
        let slots: Vec<u16> = store.endpoints(None).unwrap().iter().map(|e| e.slot).collect();
        assert_eq!(slots, [0, 1], "each migrated endpoint gets a counter slot of its own");
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

    fn new_slot(store: &mut Store, id: &str, n: &NetworkRecord) -> u16 {
        match store.reserve_endpoint(&endpoint(id, n, None)).unwrap() {
            Reservation::New(e) => e.slot,
            Reservation::Existing(_) => panic!("{id} existed"),
        }
    }

    #[test]
    fn counter_slots_are_unique_across_networks_and_reused_lowest_first() {
        let dir = tempdir();
        let mut store = Store::open(&dir).unwrap();
        let a = store.create_network(&net("a", Some("10.9.0.0/24")), &[]).unwrap();
        let b = store.create_network(&net("b", Some("10.10.0.0/24")), &[]).unwrap();
        let mut slot = |id: &str, n: &NetworkRecord| new_slot(&mut store, id, n);
        assert_eq!([slot("a1", &a), slot("b1", &b), slot("a2", &a)], [0, 1, 2]);
        store.remove_endpoint("b1").unwrap();
        store.remove_endpoint("a1").unwrap();
        let mut slot = |id: &str, n: &NetworkRecord| new_slot(&mut store, id, n);
        assert_eq!([slot("b2", &b), slot("b3", &b), slot("a3", &a)], [0, 1, 3]);
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
