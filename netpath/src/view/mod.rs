//! What the frontends show: records and reports as text or JSON, and the datapath's
//! statistics, drops and connections read for display.
pub mod conntrack;
pub mod metrics;
pub mod monitor;
pub mod output;
pub mod render;
pub mod stats;
