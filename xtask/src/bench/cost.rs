//! What a measurement costs: the whole machine's CPU time, read from /proc/stat around it and
//! divided by the work the load generator did; and the run time of an eBPF program per run,
//! from the kernel's BPF run-time statistics, turned on for that measurement only.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use aya::programs::ProgramInfo;

use super::traffic::Work;

/// Busy CPU time of all CPUs since boot, in seconds.
pub fn busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    // SAFETY: sysconf only reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        bail!("sysconf(_SC_CLK_TCK) gave {hz}");
    }
    Ok(busy_jiffies(&stat)? as f64 / hz as f64)
}

/// From /proc/stat's first line, `cpu  user nice system idle iowait irq softirq steal guest
/// guest_nice` (all CPUs, in clock ticks): everything but idle, iowait and steal (time the
/// hypervisor gave to someone else). Guest time is already counted in user and nice.
fn busy_jiffies(stat: &str) -> Result<u64> {
    let line = stat.lines().next().unwrap_or_default();
    let mut fields = line.split_whitespace();
    if fields.next() != Some("cpu") {
        bail!("/proc/stat does not start with the all-CPU line: {line:?}");
    }
    let ticks: Vec<u64> =
        fields.take(8).map(str::parse).collect::<Result<_, _>>().with_context(|| format!("/proc/stat: {line:?}"))?;
    let [user, nice, system, _idle, _iowait, irq, softirq, _steal] = ticks[..] else {
        bail!("/proc/stat's cpu line has fewer than 8 fields: {line:?}");
    };
    Ok(user + nice + system + irq + softirq)
}

/// Runs `traffic`; returns its figure and the machine's CPU-seconds per `unit` of its work
/// (e.g. 1e9 for per GB when the work is bytes).
pub fn metered(unit: f64, traffic: impl FnOnce() -> Result<Work>) -> Result<[f64; 2]> {
    let before = busy_seconds()?;
    let work = traffic()?;
    let busy = busy_seconds()? - before;
    Ok([work.figure, per_unit(busy, work.amount, unit)?])
}

/// `busy` CPU-seconds per `unit` of `amount`.
fn per_unit(busy: f64, amount: f64, unit: f64) -> Result<f64> {
    if amount <= 0.0 {
        bail!("no work done, so no CPU cost per unit of it");
    }
    Ok(busy / (amount / unit))
}

/// How often an eBPF program ran and for how long, as the kernel counts while its run-time
/// statistics are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramRuns {
    pub runs: u64,
    pub ns: u64,
}

impl From<ProgramInfo> for ProgramRuns {
    fn from(info: ProgramInfo) -> Self {
        Self { runs: info.run_count(), ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX) }
    }
}

/// An eBPF program on a datapath's container-to-container path.
pub trait ProgramStats {
    /// Its counts so far.
    fn runs(&self) -> Result<ProgramRuns>;
}

/// A program pinned as `<pin root>/<any directory>/<name>` (netpath pins its programs under a
/// directory named for its build).
pub struct PinnedProgram {
    pub pin_root: PathBuf,
    pub name: &'static str,
}

impl PinnedProgram {
    /// Where it is pinned.
    pub fn pin(&self) -> Result<PathBuf> {
        let dirs = std::fs::read_dir(&self.pin_root).with_context(|| format!("listing {}", self.pin_root.display()))?;
        dirs.flatten()
            .map(|d| d.path().join(self.name))
            .find(|p| p.exists())
            .with_context(|| format!("no program {} pinned under {}", self.name, self.pin_root.display()))
    }
}

impl ProgramStats for PinnedProgram {
    fn runs(&self) -> Result<ProgramRuns> {
        let pin = self.pin()?;
        let info = ProgramInfo::from_pin(&pin).with_context(|| format!("reading {}", pin.display()))?;
        Ok(info.into())
    }
}

/// Runs `traffic` with the kernel's BPF run-time statistics on (through `BPF_ENABLE_STATS`:
/// they go off again when its file descriptor closes, whatever happens), and returns
/// `program`'s nanoseconds per run over it.
pub fn program_cost(program: &dyn ProgramStats, traffic: impl FnOnce() -> Result<Work>) -> Result<f64> {
    let _stats_on =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("turning on the kernel's BPF run-time statistics")?;
    let before = program.runs()?;
    traffic()?;
    ns_per_run(before, program.runs()?)
}

fn ns_per_run(before: ProgramRuns, after: ProgramRuns) -> Result<f64> {
    let runs = after.runs.saturating_sub(before.runs);
    if runs == 0 {
        bail!("the program did not run: the traffic went around it");
    }
    Ok(after.ns.saturating_sub(before.ns) as f64 / runs as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_iowait_and_steal() {
        let stat = "cpu  100 20 30 1000 50 5 7 400 60 0\ncpu0 1 2 3 4 5 6 7 8 9 0\nintr 1\n";
        assert_eq!(busy_jiffies(stat).unwrap(), 100 + 20 + 30 + 5 + 7);
    }

    #[test]
    fn malformed_proc_stat_is_an_error_not_a_zero() {
        assert!(busy_jiffies("").is_err());
        assert!(busy_jiffies("cpu0 1 2 3 4 5 6 7 8\n").is_err());
        assert!(busy_jiffies("cpu  1 2 3\n").is_err());
        assert!(busy_jiffies("cpu  1 2 x 4 5 6 7 8\n").is_err());
    }

    #[test]
    fn the_running_machine_has_busy_time() {
        assert!(busy_seconds().unwrap() > 0.0);
    }

    #[test]
    fn cost_per_unit_of_work() {
        // 1.5 CPU-seconds for 3 GB: 0.5 per GB.
        assert_eq!(per_unit(1.5, 3e9, 1e9).unwrap(), 0.5);
        assert!(per_unit(1.5, 0.0, 1e9).is_err());
    }

    #[test]
    fn ns_per_run_counts_only_the_window_and_refuses_an_idle_program() {
        let before = ProgramRuns { runs: 1000, ns: 50_000 };
        assert_eq!(ns_per_run(before, ProgramRuns { runs: 3000, ns: 250_000 }).unwrap(), 100.0);
        assert!(ns_per_run(before, before).is_err());
    }
}
