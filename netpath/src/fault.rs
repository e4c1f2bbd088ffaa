//! Fault injection for the crash-safety tests: a debug build stops dead (SIGKILL, no cleanup,
//! no unwinding) at the step named by `NETPATH_FAULT_AT`, so tests can check that the next
//! command or `netpath gc` repairs what a command killed at that instant left; and it pauses
//! itself (SIGSTOP) at the step named by `NETPATH_PAUSE_AT`, so tests can race other commands
//! against one held half-way. Release builds compile the checks away.

/// The steps a command can be stopped after, in the order an attach or detach passes them.
pub const STEPS: &[&str] = &[
    "network:reserved",
    "network:built",
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
    "reload:staged",
    "reload:switched",
];

/// Marks that the command has just finished `step`.
pub fn step(step: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    for (var, signal) in [("NETPATH_FAULT_AT", libc::SIGKILL), ("NETPATH_PAUSE_AT", libc::SIGSTOP)] {
        if std::env::var_os(var).is_some_and(|at| at == step) {
            // SAFETY: raising a signal has no memory-safety preconditions.
            unsafe { libc::raise(signal) };
        }
    }
}
