//! The operations: each validates a typed request, records its intent in the store, makes the
//! kernel match, and reports in the core's own words.
pub mod controller;
pub mod endpoint;
pub mod ensure;
pub mod gc;
pub mod handed;
pub mod names;
pub mod network;
pub mod publish;
pub mod request;
pub mod resolver;
pub mod restore;
pub mod session;
pub mod status;
pub mod verify;

// The core's API, as the frontends name it: the controller, its requests and its records.
pub use controller::Controller;
pub use request::{AttachSpec, DEFAULT_MTU, DetachSpec, NetworkSpec, Target};
pub use session::Paths;

pub use crate::state::{
    settings::{self, Settings},
    store::{EndpointRecord, NetworkRecord, State, Xdp},
};
