//! The connection: opened in WAL mode, migrated to this release's schema, with a busy handler
//! made for many short processes (see the module's page).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::schema::{
    MIGRATE_TO_2, MIGRATE_TO_3, MIGRATE_TO_4, MIGRATE_TO_5, MIGRATE_TO_6, MIGRATE_TO_7, SCHEMA, SCHEMA_VERSION,
};
use crate::{
    error::{Context, Error, Result},
    state::dir::{open_private, private_dir, private_files},
};

pub struct Store {
    pub(super) conn: Connection,
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

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        private_dir(dir)?;
        private_files(dir)?;
        let path = dir.join("netpath.db");
        // SQLite gives the WAL and shared-memory files the database's mode; it would create
        // the database itself 0644.
        drop(open_private(&path)?);
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
            0..=6 => {
                if version == 0 {
                    tx.execute_batch(SCHEMA)?;
                }
                if version < 2 {
                    tx.execute_batch(MIGRATE_TO_2)?;
                }
                if version < 3 {
                    tx.execute_batch(MIGRATE_TO_3)?;
                }
                if version < 4 {
                    tx.execute_batch(MIGRATE_TO_4)?;
                }
                if version < 5 {
                    tx.execute_batch(MIGRATE_TO_5)?;
                }
                if version < 6 {
                    tx.execute_batch(MIGRATE_TO_6)?;
                }
                tx.execute_batch(MIGRATE_TO_7)?;
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
