//! Processes the bench starts: one-shot commands with a deadline, background servers and
//! daemons stopped by their PID, and Ctrl-C turned into an orderly cleanup.
use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM only set a flag: the bench stops at the next step and cleans up.
pub fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with "interrupted" once Ctrl-C was pressed, so `?` unwinds to the cleanup.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

/// Runs `cmd` to completion within `limit`, killing it past that; stdout and stderr are
/// captured. The error names the command and quotes its stderr.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let line = describe(cmd);
    // Its own process group: Ctrl-C reaches the bench, which then stops the child itself.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run `{line}`"))?;
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline || interrupted() {
            stop(&mut child);
            bail!("`{line}` did not finish within {}s", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(10));
    };
    let out = Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() };
    if !out.status.success() {
        bail!("`{line}` failed ({}): {}", out.status, last_line(&out.stderr).unwrap_or_else(|| last_line(&out.stdout).unwrap_or_default()));
    }
    Ok(out)
}

/// Like [`output_within`], returning stdout as text.
pub fn stdout_within(cmd: &mut Command, limit: Duration) -> Result<String> {
    Ok(String::from_utf8_lossy(&output_within(cmd, limit)?.stdout).into_owned())
}

/// The last non-empty line of a command's output, for error messages.
pub fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_string())
}

/// A background process (a server, a daemon) that is stopped by its PID when dropped.
pub struct Daemon {
    name: String,
    child: Child,
}

impl Daemon {
    /// Starts `cmd` with its output in `log`, in its own process group.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let line = describe(cmd);
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}: `{line}`"))?;
        Ok(Self { name: name.to_string(), child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, naming the daemon and its log, if it has already exited.
    pub fn check_alive(&mut self, log: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = std::fs::read(log).ok().and_then(|b| last_line(&b)).unwrap_or_default();
            bail!("{} exited ({status}); {}: {tail}", self.name, log.display());
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, a grace period, then SIGKILL; always reaped.
pub fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a PID this process started or recorded; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Whether a process with this PID exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
