//! What the daemon did itself: how long each kind of operation took (a histogram) and how
//! many failed, by error class. Kept by the daemon in memory since it started; a restart
//! starts them from zero, which Prometheus takes for a counter reset.
use std::{collections::BTreeMap, time::Duration};

use super::text::{Exposition, Kind};
use crate::error::Error;

/// Upper bounds in seconds: a Docker call answers in milliseconds, an attach that waits on
/// the kernel or a lock may take seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

const DURATION: &str = "netpath_daemon_operation_duration_seconds";
const ERRORS: &str = "netpath_daemon_operation_errors_total";

#[derive(Default)]
struct Histogram {
    /// Observations per bucket, not cumulative; the last slot holds those above every bound.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        let bucket = BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(BUCKETS.len());
        self.counts[bucket] += 1;
        self.sum += seconds;
    }

    /// `_bucket` samples, cumulative and ending in `+Inf`, then `_sum` and `_count`.
    fn write(&self, page: &mut Exposition, operation: &str) {
        let bucket = format!("{DURATION}_bucket");
        let mut seen = 0;
        let bounds = BUCKETS.iter().map(|le| le.to_string()).chain(["+Inf".to_string()]);
        for (le, count) in bounds.zip(self.counts) {
            seen += count;
            page.sample(&bucket, &[("operation", operation), ("le", &le)], seen);
        }
        page.sample(&format!("{DURATION}_sum"), &[("operation", operation)], self.sum);
        page.sample(&format!("{DURATION}_count"), &[("operation", operation)], seen);
    }
}

#[derive(Default)]
struct Operation {
    duration: Histogram,
    /// Failures by `Error::class`.
    errors: BTreeMap<&'static str, u64>,
}

/// Every kind of operation the daemon has run, by name.
#[derive(Default)]
pub struct Operations {
    by_name: BTreeMap<&'static str, Operation>,
}

impl Operations {
    /// Counts one run of `operation` that took `took` and failed with `error`, if it did.
    pub fn record(&mut self, operation: &'static str, took: Duration, error: Option<&Error>) {
        let op = self.by_name.entry(operation).or_default();
        op.duration.observe(took.as_secs_f64());
        if let Some(e) = error {
            *op.errors.entry(e.class()).or_default() += 1;
        }
    }

    pub(super) fn write(&self, page: &mut Exposition) {
        page.family(DURATION, Kind::Histogram, "How long the daemon took to carry out each kind of operation.");
        for (name, op) in &self.by_name {
            op.duration.write(page, name);
        }
        page.family(ERRORS, Kind::Counter, "Operations of the daemon that failed, by error class.");
        for (name, op) in &self.by_name {
            for (class, n) in &op.errors {
                page.sample(ERRORS, &[("operation", name), ("class", class)], n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_errors_counted_by_class() {
        let mut ops = Operations::default();
        ops.record("join", Duration::from_millis(3), None);
        ops.record("join", Duration::from_millis(30), Some(&Error::not_found("no such endpoint")));
        ops.record("join", Duration::from_secs(60), None);
        let mut page = Exposition::default();
        ops.write(&mut page);
        let text = page.finish();
        let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("{text}"));
        let bucket = |le: &str| format!("{DURATION}_bucket{{operation=\"join\",le=\"{le}\"}}");
        assert_eq!(line(&bucket("0.0025")), format!("{} 0", bucket("0.0025")));
        assert_eq!(line(&bucket("0.005")), format!("{} 1", bucket("0.005")));
        assert_eq!(line(&bucket("0.05")), format!("{} 2", bucket("0.05")));
        assert_eq!(line(&bucket("10")), format!("{} 2", bucket("10")));
        assert_eq!(line(&bucket("+Inf")), format!("{} 3", bucket("+Inf")));
        assert_eq!(line(&format!("{DURATION}_count")), format!("{DURATION}_count{{operation=\"join\"}} 3"));
        assert_eq!(line(ERRORS), format!("{ERRORS}{{operation=\"join\",class=\"not_found\"}} 1"));
    }
}
