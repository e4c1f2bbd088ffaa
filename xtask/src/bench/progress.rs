//! One line per measurement on stderr: how far, how long so far, how long to go.
use std::time::{Duration, Instant};

pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self { total, done: 0, start: Instant::now() }
    }

    /// Reports a finished step: `[ 12/150  0:42, ~3:10 left] run 1/3  c2c-tcp-1  docker  15.2 Gbit/s`.
    pub fn step(&mut self, what: &str, outcome: &str) {
        self.done += 1;
        let elapsed = self.start.elapsed();
        let left = elapsed.mul_f64((self.total.saturating_sub(self.done)) as f64 / self.done as f64);
        let width = self.total.to_string().len();
        eprintln!(
            "[{:>width$}/{}  {}, ~{} left] {what:<44} {outcome}",
            self.done,
            self.total,
            clock(elapsed),
            clock(left)
        );
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}
