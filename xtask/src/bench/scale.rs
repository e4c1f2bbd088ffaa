//! The scale sweep: how netpath's costs grow with the number of endpoints. One network on a
//! /20 of its own grows, one timed attach after another, to each point N in turn; at each
//! point the bench times what a runtime or an operator then pays: one more attach (the p50
//! of the last ten), a detach (the p50 of five, of an extra endpoint attached untimed just
//! before each), `netpath gc` with nothing to collect, `netpath endpoint ls --format json`,
//! `netpath restore` with everything intact, and reads the memory of the datapath's pinned
//! maps. Attach and detach are also given as ratios to the first point of the same run: a
//! cost that stays flat stays near 1.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{
    Ctx,
    attach::percentile,
    datapath::Scaler,
    netns::Netns,
    process::{SETUP_LIMIT, check_interrupt, stdout_within},
    scenario::Outcome,
};

const NETWORK: &str = "scale";
const SUBNET: &str = "10.202.0.0/20";
/// Attaches whose p50 is a point's attach figure: the last ones before it.
const LAST_ATTACHES: usize = 10;
/// Detaches timed at each point.
const DETACHES: usize = 5;

/// Grows the network through `counts` (ascending) and hands each point's outcomes, in the
/// order of the scenario's metrics, to `point` as soon as they are measured. The network and
/// its namespaces are removed afterwards, whatever happened.
pub fn sweep(
    ctx: &Ctx,
    datapath: &str,
    scaler: &dyn Scaler,
    counts: &[u32],
    point: impl FnMut(u32, Vec<Outcome>),
) -> Result<()> {
    scaler.netpath(ctx, &["network", "create", NETWORK, "--subnet", SUBNET])?;
    let mut grown = Namespaces(Vec::new());
    let result = grow(ctx, datapath, scaler, counts, &mut grown, point);
    let removed = scaler.netpath(ctx, &["network", "rm", NETWORK, "--force"]);
    drop(grown);
    result?;
    removed.map(drop)
}

fn grow(
    ctx: &Ctx,
    datapath: &str,
    scaler: &dyn Scaler,
    counts: &[u32],
    grown: &mut Namespaces,
    mut point: impl FnMut(u32, Vec<Outcome>),
) -> Result<()> {
    let probe = Namespaces(vec![Netns::create(&format!("{datapath}-probe"))?]);
    let mut attaches = Vec::new();
    let mut first: Option<(f64, f64)> = None;
    for &count in counts {
        super::step(&format!("growing the {NETWORK} network of {datapath} to {count} endpoints"));
        while grown.0.len() < count as usize {
            let i = grown.0.len();
            grown.0.push(Netns::create(&format!("{datapath}-s{i}"))?);
            attaches.push(timed(|| attach(ctx, scaler, &format!("s{i}"), &grown.0[i]))?);
            check_interrupt()?;
        }
        let attach_p50 = median(&attaches[attaches.len().saturating_sub(LAST_ATTACHES)..]);
        let mut detaches = Vec::new();
        for _ in 0..DETACHES {
            attach(ctx, scaler, "probe", &probe.0[0])?;
            detaches.push(timed(|| scaler.netpath(ctx, &["detach", "--id", "probe"]).map(drop))?);
        }
        let detach_p50 = median(&detaches);
        let gc = timed(|| expect_nothing_collected(ctx, scaler))? / 1000.0;
        let list = timed(|| expect_listed(ctx, scaler, count))? / 1000.0;
        let restore = timed(|| scaler.netpath(ctx, &["restore"]).map(drop))? / 1000.0;
        let maps = maps_mib(&scaler.datapath_dir()?)?;
        let (attach_0, detach_0) = *first.get_or_insert((attach_p50, detach_p50));
        point(
            count,
            vec![
                Ok(attach_p50),
                Ok(attach_p50 / attach_0),
                Ok(detach_p50),
                Ok(detach_p50 / detach_0),
                Ok(gc),
                Ok(list),
                Ok(restore),
                Ok(maps),
            ],
        );
    }
    Ok(())
}

fn attach(ctx: &Ctx, scaler: &dyn Scaler, id: &str, ns: &Netns) -> Result<()> {
    let netns = ns.path().to_string_lossy();
    scaler.netpath(ctx, &["attach", "--network", NETWORK, "--netns", &netns, "--id", id]).map(drop)
}

/// `netpath gc` with every endpoint alive must find nothing; a figure of a gc that collected
/// something would be another measurement.
fn expect_nothing_collected(ctx: &Ctx, scaler: &dyn Scaler) -> Result<()> {
    let out = scaler.netpath(ctx, &["gc"])?;
    if out.trim() != "nothing to collect" {
        bail!("`netpath gc` collected something with every endpoint alive: {}", out.trim());
    }
    Ok(())
}

fn expect_listed(ctx: &Ctx, scaler: &dyn Scaler, count: u32) -> Result<()> {
    let out = scaler.netpath(ctx, &["endpoint", "ls", "--network", NETWORK, "--format", "json"])?;
    let listed: Value = serde_json::from_str(&out).context("`netpath endpoint ls --format json`")?;
    match listed.as_array().map(Vec::len) {
        Some(n) if n == count as usize => Ok(()),
        other => bail!("`netpath endpoint ls` listed {other:?} endpoints of {count}"),
    }
}

/// MiB the kernel charges for the maps pinned in `dir` (`bytes_memlock`): preallocated maps
/// cost the same at every N.
fn maps_mib(dir: &Path) -> Result<f64> {
    let mut bytes = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        // Programs are pinned beside the maps: bpftool refuses them as maps.
        let Ok(out) = stdout_within(
            std::process::Command::new("bpftool").args(["-j", "map", "show", "pinned"]).arg(&path),
            SETUP_LIMIT,
        ) else {
            continue;
        };
        let map: Value = serde_json::from_str(&out).with_context(|| format!("bpftool on {}", path.display()))?;
        bytes += map["bytes_memlock"].as_u64().with_context(|| format!("no bytes_memlock for {}", path.display()))?;
    }
    if bytes == 0 {
        bail!("no pinned map found in {}", dir.display());
    }
    Ok(bytes as f64 / (1024.0 * 1024.0))
}

/// Milliseconds `f` took.
fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(duration_ms(start.elapsed()))
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile(&sorted, 0.50)
}

/// Namespaces deleted when they go out of scope.
struct Namespaces(Vec<Netns>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            ns.delete();
        }
    }
}
