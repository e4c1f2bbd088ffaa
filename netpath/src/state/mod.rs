//! What netpath remembers: the SQLite store, address management, datapath settings, and the
//! locks that order concurrent commands, all in a directory only root can enter.
pub mod dir;
pub mod ipam;
pub mod lock;
pub mod settings;
pub mod store;
