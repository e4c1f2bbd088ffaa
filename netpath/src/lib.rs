//! netpath: container bridge networking whose data plane runs in eBPF.
//!
//! The library is the control plane: [`controller::Controller`] creates networks and attaches
//! network namespaces, keeping its state in SQLite ([`store`]) and the eBPF datapath's pinned
//! maps ([`datapath`]) in step with it.
pub mod bpflink;
pub mod cidr;
pub mod cli;
pub mod cni;
pub mod conntrack;
pub mod controller;
pub mod daemon;
pub mod datapath;
pub mod docker;
pub mod ensure;
pub mod error;
pub mod fault;
pub mod gc;
pub mod handed;
pub mod ipam;
pub mod link;
pub mod lock;
pub mod monitor;
pub mod netns;
pub mod oci;
pub mod output;
pub mod ports;
pub mod privileges;
pub mod probe;
pub mod reload;
pub mod restore;
pub mod settings;
pub mod stats;
pub mod store;
pub mod verify;

pub use error::{Error, Result};
