//! What every table's code needs: the clock rows are stamped with, and text columns parsed.
use std::{
    net::Ipv4Addr,
    time::{SystemTime, UNIX_EPOCH},
};

use rusqlite::Row;

use crate::error::{Error, Result};

pub(super) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(super) fn parse_col<T: std::str::FromStr>(row: &Row, idx: &str) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    text.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("bad {idx} '{text}'").into())
    })
}

pub(super) fn parse_ip(text: &str) -> Result<Ipv4Addr> {
    text.parse().map_err(|_| Error::system("state database", format!("bad address '{text}'")))
}

/// A nullable text column, parsed when present.
pub(super) fn optional_col<T: std::str::FromStr>(row: &Row, idx: &str) -> rusqlite::Result<Option<T>> {
    match row.get::<_, Option<String>>(idx)? {
        None => Ok(None),
        Some(_) => parse_col(row, idx).map(Some),
    }
}
