//! The ways in: each frontend parses its protocol into the core's typed requests and words the
//! core's answers and errors for its users.
pub mod cli;
pub mod cni;
pub mod daemon;
pub mod docker;
pub mod http;
pub mod oci;
