//! What netpath remembers: the SQLite store, address management, datapath settings, and the
//! locks that order concurrent commands.
pub mod ipam;
pub mod lock;
pub mod settings;
pub mod store;
