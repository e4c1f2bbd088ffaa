//! Fault injection for the crash-safety tests: a debug build stops dead (SIGKILL, no cleanup,
//! no unwinding) at the step named by `NETPATH_FAULT_AT`, so tests can check that the next
//! command or `netpath gc` repairs what a command killed at that instant left. Release builds
//! compile the check away.

/// The steps a command can be stopped after, in the order an attach or detach passes them.
pub const STEPS: &[&str] = &[
    "attach:locked",
    "attach:reserved",
    "attach:veth",
    "attach:datapath",
    "attach:published",
    "attach:addressed",
    "attach:ready",
    "detach:locked",
    "detach:veth",
    "detach:datapath",
    "detach:row",
];

/// Marks that the command has just finished `step`.
pub fn step(step: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    if std::env::var_os("NETPATH_FAULT_AT").is_some_and(|at| at == step) {
        // SAFETY: raising a signal has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}
