//! The attach sweeps: how long a runtime waits for an endpoint. Namespaces are made beforehand
//! (untimed); then either one attach command after another, each timed (per-attach p50 and
//! p99, and the whole series as their sum), or N commands launched at once, as a runtime
//! starting N containers, timed until the last one returns. What a datapath leaves to the
//! runtime (`Attacher::complete`) runs after the clock stopped: after each attach, or after
//! the whole concurrent batch. Every endpoint's address is collected: the
//! concurrent batch fails unless it got N distinct addresses. Endpoints are detached and the
//! namespaces removed afterwards, whatever happened.
use std::{
    collections::HashSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{
    Config, Ctx,
    datapath::Attacher,
    netns::Netns,
    process::check_interrupt,
    scenario::{Kind, Outcome},
};

/// Commands launched at once in the concurrent sweep.
pub const CONCURRENT: u32 = 100;

/// The sweep points (N) of an attach scenario.
pub fn counts(cfg: &Config, kind: Kind) -> Vec<u32> {
    match kind {
        Kind::AttachConcurrent => vec![CONCURRENT],
        _ => cfg.endpoint_counts.clone(),
    }
}

/// One run of an attach scenario with `count` endpoints: one outcome per metric.
pub fn measure(ctx: &Ctx, datapath: &str, attacher: &dyn Attacher, kind: Kind, count: u32) -> Vec<Outcome> {
    let text = |e: anyhow::Error| format!("{e:#}");
    match kind {
        Kind::AttachConcurrent => vec![concurrent(ctx, datapath, attacher, count).map_err(text)],
        _ => match sequential(ctx, datapath, attacher, count) {
            Ok(series) => vec![Ok(series.p50), Ok(series.p99), Ok(series.total)],
            Err(e) => vec![Err(text(e)); 3],
        },
    }
}

/// Milliseconds one detach takes, of an endpoint attached just before (untimed), with the
/// datapath's tables as they are: the conntrack-pressure scenario times one before its flood
/// and one after it, when the tables are full.
pub fn detach_time(ctx: &Ctx, datapath: &str, attacher: &dyn Attacher) -> Result<f64> {
    let batch = Batch::create(&format!("{datapath}-d"), 1)?;
    let ns = &batch.namespaces[0];
    attacher.attach(ctx, 0, ns)?;
    attacher.complete(ctx, 0, ns)?;
    let start = Instant::now();
    attacher.detach(ctx, 0, ns)?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

/// What a sequential series of attaches took.
struct Series {
    /// Per attach, milliseconds.
    p50: f64,
    p99: f64,
    /// The whole series, seconds: the sum of the timed attaches.
    total: f64,
}

fn sequential(ctx: &Ctx, datapath: &str, attacher: &dyn Attacher, count: u32) -> Result<Series> {
    let batch = Batch::create(datapath, count)?;
    let mut attached = 0;
    let mut each = Vec::new();
    let mut timed = Duration::ZERO;
    let result = (|| -> Result<()> {
        for (i, ns) in batch.namespaces.iter().enumerate() {
            let one = Instant::now();
            attacher.attach(ctx, i as u32, ns)?;
            let took = one.elapsed();
            each.push(took.as_secs_f64() * 1000.0);
            timed += took;
            attached += 1;
            attacher.complete(ctx, i as u32, ns)?;
            check_interrupt()?;
        }
        Ok(())
    })();
    batch.detach(ctx, attacher, attached);
    result?;
    each.sort_by(f64::total_cmp);
    Ok(Series { p50: percentile(&each, 0.50), p99: percentile(&each, 0.99), total: timed.as_secs_f64() })
}

/// `count` attaches launched at once; seconds until the last returned.
fn concurrent(ctx: &Ctx, datapath: &str, attacher: &dyn Attacher, count: u32) -> Result<f64> {
    let batch = Batch::create(datapath, count)?;
    let start = Instant::now();
    let results: Vec<Result<Ipv4Addr>> = std::thread::scope(|scope| {
        let workers: Vec<_> = batch
            .namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| scope.spawn(move || attacher.attach(ctx, i as u32, ns)))
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| bail!("an attach thread panicked"))).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    // Only a whole batch is detached in one go: a failed attach left nothing to detach.
    let attached: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
    let completed: Result<()> =
        attached.iter().try_for_each(|&i| attacher.complete(ctx, i as u32, &batch.namespaces[i]));
    batch.detach_these(ctx, attacher, &attached);
    completed?;
    let mut addresses = HashSet::new();
    for result in results {
        addresses.insert(result?);
    }
    if addresses.len() != count as usize {
        bail!("{count} concurrent attaches got only {} distinct addresses", addresses.len());
    }
    Ok(wall)
}

/// The value below which a fraction `q` of the sorted `values` lie (nearest rank).
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

/// The namespaces of one batch, deleted when it goes out of scope.
struct Batch {
    namespaces: Vec<Netns>,
}

impl Batch {
    fn create(datapath: &str, count: u32) -> Result<Self> {
        let mut batch = Self { namespaces: Vec::new() };
        for i in 0..count {
            batch.namespaces.push(Netns::create(&format!("{datapath}-e{i}"))?);
        }
        Ok(batch)
    }

    /// Detaches the first `attached` endpoints, best effort.
    fn detach(&self, ctx: &Ctx, attacher: &dyn Attacher, attached: usize) {
        self.detach_these(ctx, attacher, &(0..attached).collect::<Vec<_>>());
    }

    fn detach_these(&self, ctx: &Ctx, attacher: &dyn Attacher, indices: &[usize]) {
        for &i in indices {
            let _ = attacher.detach(ctx, i as u32, &self.namespaces[i]);
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            ns.delete();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
