//! The operations: each validates a typed request, records its intent in the store, makes the
//! kernel match, and reports in the core's own words.
pub mod controller;
pub mod ensure;
pub mod gc;
pub mod handed;
pub mod restore;
pub mod verify;
