//! What netpath asks of the kernel: links and addresses over netlink, network namespaces, and
//! the pinned eBPF datapath (loading, maps, links, reloads, feature probes).
pub mod bpflink;
pub mod datapath;
pub mod link;
pub mod netns;
pub mod ports;
pub mod probe;
pub mod random;
pub mod reload;
pub mod sysctl;
pub mod tcblock;
