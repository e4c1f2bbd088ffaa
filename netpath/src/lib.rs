//! netpath: container bridge networking whose data plane runs in eBPF.
//!
//! The library is the control plane, in layers whose arrows only point down:
//!
//! - [`frontend`]: the CLI, the Docker driver, the CNI plugin, the OCI hooks and the daemon;
//!   each translates its protocol into typed requests and the answers back.
//! - [`view`]: what the frontends show: text and JSON, statistics, drops, connections.
//! - [`core`]: the operations ([`core::Controller`]), which keep the store and the kernel in step.
//! - [`state`] (the SQLite store, address management, settings, locks) and [`kernel`]
//!   (netlink, namespaces, the pinned eBPF datapath); neither uses the other.
//! - [`types`] and [`error`]: values every layer speaks in.
//!
//! `cargo xtask layers` checks these arrows.
pub mod core;
pub mod error;
pub mod fault;
pub mod frontend;
pub mod kernel;
pub mod state;
pub mod types;
pub mod view;

pub use error::{Error, Result};
