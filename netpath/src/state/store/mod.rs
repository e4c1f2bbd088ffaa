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
mod db;
mod endpoints;
mod engine;
mod networks;
mod resolve;
mod rows;
mod schema;
mod sql;

pub use db::Store;
pub use rows::{EndpointRecord, NetworkRecord, NewEndpoint, NewNetwork, Reservation, State, Xdp};

#[cfg(test)]
mod tests;
