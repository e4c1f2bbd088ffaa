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

use anyhow::{Context, Result, anyhow, bail};

/// Long enough for any set-up or teardown command (a daemon's, a plugin's, `ip`'s); a hung
/// one must not stall the bench.
pub const SETUP_LIMIT: Duration = Duration::from_secs(60);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Set once the teardown starts: from then on nothing is cut short, Ctrl-C or not.
static CLEANING_UP: AtomicBool = AtomicBool::new(false);

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

/// Whether Ctrl-C was pressed and the work should stop (never during the teardown).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) && !CLEANING_UP.load(Ordering::SeqCst)
}

/// The teardown starts: commands run to completion from now on, even after Ctrl-C.
pub fn start_cleanup() {
    CLEANING_UP.store(true, Ordering::SeqCst);
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
    run_within(cmd, limit, None)
}

/// Like [`output_within`], with `input` on the command's stdin.
pub fn feed_within(cmd: &mut Command, limit: Duration, input: &[u8]) -> Result<Output> {
    run_within(cmd, limit, Some(input))
}

fn run_within(cmd: &mut Command, limit: Duration, input: Option<&[u8]>) -> Result<Output> {
    let line = describe(cmd);
    // Its own process group: Ctrl-C reaches the bench, which then stops the child itself.
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
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
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // A child that exits without reading all of it only closes the pipe: nothing to report.
        thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
    }
    let deadline = Instant::now() + limit;
    let exit = ExitWatch::new(&child);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if interrupted() {
            stop(&mut child);
            bail!("`{line}` stopped: interrupted");
        }
        if Instant::now() > deadline {
            stop(&mut child);
            bail!("`{line}` did not finish within {}s", limit.as_secs());
        }
        exit.wait(Duration::from_millis(100));
    };
    let out = Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() };
    if !out.status.success() {
        // The root cause is the tool's own words; callers that name the command more briefly
        // report only that (see `root_cause`).
        return Err(anyhow!("{}", summary(&out)).context(format!("`{line}` failed ({})", out.status)));
    }
    Ok(out)
}

/// Wakes up as soon as a child exits (a pidfd becomes readable then), so a command is timed to
/// its exit, not to the next tick of a polling loop: the attach sweep times commands that take
/// milliseconds. Without pidfds (before Linux 5.3) it falls back to short sleeps.
struct ExitWatch(Option<std::os::fd::OwnedFd>);

impl ExitWatch {
    fn new(child: &std::process::Child) -> Self {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
        // SAFETY: a non-negative result is a descriptor we now own.
        Self((fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// Returns when the child has exited or `at_most` has passed.
    fn wait(&self, at_most: Duration) {
        use std::os::fd::AsRawFd;
        match &self.0 {
            Some(fd) => {
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd for the duration of the call.
                unsafe { libc::poll(&mut pfd, 1, at_most.as_millis() as libc::c_int) };
            }
            None => thread::sleep(at_most.min(Duration::from_millis(1))),
        }
    }
}

/// What a failed command said, without the command line: for reports.
pub fn root_cause(e: &anyhow::Error) -> String {
    e.root_cause().to_string()
}

/// Like [`output_within`], returning stdout as text.
pub fn stdout_within(cmd: &mut Command, limit: Duration) -> Result<String> {
    Ok(String::from_utf8_lossy(&output_within(cmd, limit)?.stdout).into_owned())
}

/// The line of a failed command's output that says why: one that mentions an error (stderr
/// first; CNI plugins report on stdout), else the last line.
fn summary(out: &Output) -> String {
    let error_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|l| l.to_lowercase().contains("error") || l.contains("\"msg\""))
            .map(String::from)
    };
    error_line(&out.stderr)
        .or_else(|| last_line(&out.stderr))
        .or_else(|| error_line(&out.stdout))
        .or_else(|| last_line(&out.stdout))
        .unwrap_or_default()
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
