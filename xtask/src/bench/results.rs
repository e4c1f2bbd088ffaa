//! The figures: one cell per scenario × metric × sweep point × datapath, with the sample of
//! every run, the median and the spread (min–max across runs), and the ratio to netpath
//! computed run by run, with its median and spread.
use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    datapath::Unavailable,
    goals::GoalResult,
    machine::{Machine, PacketFilter},
    scenario::{Outcome, Scenario, Seen},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "missing")]
    Missing,
    #[serde(rename = "n/a")]
    NotApplicable,
}

#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// The sweep's N (ports published, endpoints attached); none outside the sweeps.
    pub param: Option<u32>,
    pub datapath: &'static str,
    pub status: Status,
    /// Why the cell is missing or not applicable.
    pub reason: Option<String>,
    /// One per run, in run order; none where that run failed.
    pub samples: Vec<Option<f64>>,
    /// How many runs gave a figure: the median stands on these alone.
    pub measured_runs: usize,
    pub median: Option<f64>,
    /// The smallest and largest sample.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// This datapath's figure over netpath's from the same run, per run, their median, and
    /// the smallest and largest of them.
    pub ratio_samples: Vec<Option<f64>>,
    /// How many runs gave both figures of the ratio.
    pub ratio_runs: usize,
    pub ratio: Option<f64>,
    pub ratio_min: Option<f64>,
    pub ratio_max: Option<f64>,
    /// Failures of single runs of a cell that did produce figures.
    pub errors: Vec<String>,
}

/// The checks behind one run of a scenario on a datapath.
#[derive(Clone, Debug, Serialize)]
pub struct Observation {
    pub scenario: &'static str,
    pub param: Option<u32>,
    pub datapath: &'static str,
    /// Counted from 1, as the report shows it.
    pub run: usize,
    pub seen: Vec<Seen>,
}

/// Scenario, metric and sweep point: what a datapath's cell is compared on.
type Point<'a> = (&'a str, &'a str, Option<u32>);

/// Cells as the runner fills them.
pub struct Results {
    runs: usize,
    cells: Vec<Cell>,
    observations: Vec<Observation>,
}

impl Results {
    pub fn new(runs: usize) -> Self {
        Self { runs, cells: Vec::new(), observations: Vec::new() }
    }

    /// Keeps what a run checked, whatever became of its figures.
    pub fn observe(
        &mut self,
        scenario: &'static Scenario,
        param: Option<u32>,
        datapath: &'static str,
        run: usize,
        seen: Vec<Seen>,
    ) {
        if !seen.is_empty() {
            self.observations.push(Observation { scenario: scenario.name, param, datapath, run: run + 1, seen });
        }
    }

    pub fn observations(&self) -> Vec<Observation> {
        self.observations.clone()
    }

    fn cells_of<'a>(
        &'a mut self,
        scenario: &'static Scenario,
        param: Option<u32>,
        datapath: &'static str,
    ) -> impl Iterator<Item = &'a mut Cell> {
        for metric in scenario.metrics {
            let exists = self.cells.iter().any(|c| {
                c.scenario == scenario.name && c.metric == metric.name && c.param == param && c.datapath == datapath
            });
            if !exists {
                self.cells.push(Cell {
                    scenario: scenario.name,
                    metric: metric.name,
                    unit: metric.unit,
                    higher_is_better: metric.higher_is_better,
                    param,
                    datapath,
                    status: Status::Ok,
                    reason: None,
                    samples: vec![None; self.runs],
                    measured_runs: 0,
                    median: None,
                    min: None,
                    max: None,
                    ratio_samples: Vec::new(),
                    ratio_runs: 0,
                    ratio: None,
                    ratio_min: None,
                    ratio_max: None,
                    errors: Vec::new(),
                });
            }
        }
        self.cells.iter_mut().filter(move |c| c.scenario == scenario.name && c.param == param && c.datapath == datapath)
    }

    /// Per metric: whether its cell is still open (not settled as missing or n/a).
    pub fn open(&mut self, scenario: &'static Scenario, param: Option<u32>, datapath: &'static str) -> Vec<bool> {
        self.cells_of(scenario, param, datapath).map(|c| c.status == Status::Ok).collect()
    }

    /// Settles every metric of this scenario, point and datapath as unavailable.
    pub fn mark(&mut self, scenario: &'static Scenario, param: Option<u32>, datapath: &'static str, why: &Unavailable) {
        let count = scenario.metrics.len();
        self.mark_metrics(scenario, param, datapath, &vec![Some(why.clone()); count]);
    }

    /// Settles the metrics given a reason (one entry per metric, in order). A cell settled
    /// before keeps its first status and reason.
    pub fn mark_metrics(
        &mut self,
        scenario: &'static Scenario,
        param: Option<u32>,
        datapath: &'static str,
        whys: &[Option<Unavailable>],
    ) {
        for (cell, why) in self.cells_of(scenario, param, datapath).zip(whys) {
            let (status, reason) = match why {
                _ if cell.status != Status::Ok => continue,
                None => continue,
                Some(Unavailable::Missing(r)) => (Status::Missing, r),
                Some(Unavailable::NotApplicable(r)) => (Status::NotApplicable, r),
            };
            cell.status = status;
            cell.reason = Some(reason.clone());
        }
    }

    /// Stores one run's outcome of each metric whose cell is still open.
    pub fn record(
        &mut self,
        scenario: &'static Scenario,
        param: Option<u32>,
        datapath: &'static str,
        run: usize,
        outcomes: &[Outcome],
    ) {
        for (cell, outcome) in self.cells_of(scenario, param, datapath).zip(outcomes) {
            match outcome {
                _ if cell.status != Status::Ok => {}
                Ok(value) => cell.samples[run] = Some(*value),
                Err(e) => cell.errors.push(format!("run {}: {e}", run + 1)),
            }
        }
    }

    /// Medians, spreads and ratios; a cell with no sample left is missing, with its first error.
    pub fn finish(mut self, reference: &str) -> Vec<Cell> {
        for cell in &mut self.cells {
            cell.measured_runs = measured(&cell.samples);
            cell.median = median(&cell.samples);
            (cell.min, cell.max) = spread(&cell.samples).unzip();
            if cell.status == Status::Ok && cell.median.is_none() {
                cell.status = Status::Missing;
                cell.reason = Some(cell.errors.first().cloned().unwrap_or_else(|| "not measured".into()));
            }
        }
        let references: BTreeMap<Point, Vec<Option<f64>>> = self
            .cells
            .iter()
            .filter(|c| c.datapath == reference)
            .map(|c| ((c.scenario, c.metric, c.param), c.samples.clone()))
            .collect();
        for cell in &mut self.cells {
            let Some(reference) = references.get(&(cell.scenario, cell.metric, cell.param)) else { continue };
            cell.ratio_samples = ratios(&cell.samples, reference);
            cell.ratio_runs = measured(&cell.ratio_samples);
            cell.ratio = median(&cell.ratio_samples);
            (cell.ratio_min, cell.ratio_max) = spread(&cell.ratio_samples).unzip();
        }
        self.cells
    }
}

impl Cell {
    /// Whether every run gave a figure: a run that failed in a cell that has figures leaves a
    /// median of the others, which must not pass for the whole.
    pub fn complete(&self) -> bool {
        self.measured_runs == self.samples.len()
    }
}

/// How many runs gave a figure.
pub fn measured(samples: &[Option<f64>]) -> usize {
    samples.iter().flatten().count()
}

/// `samples` over `reference`, run by run; none where either run has no figure.
pub fn ratios(samples: &[Option<f64>], reference: &[Option<f64>]) -> Vec<Option<f64>> {
    samples
        .iter()
        .zip(reference)
        .map(|(v, r)| match (v, r) {
            (Some(v), Some(r)) if *r != 0.0 => Some(v / r),
            _ => None,
        })
        .collect()
}

/// The smallest and the largest of the runs that gave a figure.
pub fn spread(samples: &[Option<f64>]) -> Option<(f64, f64)> {
    let mut values = samples.iter().flatten().copied();
    let first = values.next()?;
    Some(values.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
}

/// A figure for people: three significant digits, no exponent (17.8, 0.412, 0.000266, 23400).
pub fn figure(v: f64) -> String {
    let magnitude = if v == 0.0 { 0 } else { v.abs().log10().floor() as i32 };
    let decimals = (2 - magnitude).max(0) as usize;
    format!("{v:.decimals$}")
}

pub fn median(samples: &[Option<f64>]) -> Option<f64> {
    let mut values: Vec<f64> = samples.iter().flatten().copied().collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] })
}

#[derive(Serialize)]
pub struct DatapathInfo {
    pub name: &'static str,
    pub description: String,
}

#[derive(Serialize)]
pub struct MetricInfo {
    pub name: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

#[derive(Serialize)]
pub struct ScenarioInfo {
    pub name: &'static str,
    pub title: &'static str,
    pub metrics: Vec<MetricInfo>,
}

impl From<&Scenario> for ScenarioInfo {
    fn from(s: &Scenario) -> Self {
        let metrics = s
            .metrics
            .iter()
            .map(|m| MetricInfo { name: m.name, unit: m.unit, higher_is_better: m.higher_is_better })
            .collect();
        Self { name: s.name, title: s.title, metrics }
    }
}

/// Everything `results.json` holds.
#[derive(Serialize)]
pub struct Report {
    pub started: String,
    pub finished: String,
    pub quick: bool,
    pub runs: usize,
    pub seconds_per_measurement: u32,
    pub port_counts: Vec<u32>,
    pub endpoint_counts: Vec<u32>,
    pub scale_counts: Vec<u32>,
    pub reference: &'static str,
    pub machine: Machine,
    pub versions: BTreeMap<String, String>,
    pub datapaths: Vec<DatapathInfo>,
    pub scenarios: Vec<ScenarioInfo>,
    pub cells: Vec<Cell>,
    /// What each run checked behind its figures.
    pub observations: Vec<Observation>,
    /// Issue 13's goals the bench can measure, each against its cells.
    pub goals: Vec<GoalResult>,
    pub method: Vec<String>,
    /// The machine's packet filter as found before the run and after its teardown.
    pub packet_filter: [PacketFilter; 2],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scenario::ALL;

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(figure(17.844), "17.8");
        assert_eq!(figure(605.2), "605");
        assert_eq!(figure(23_921.2), "23921");
        assert_eq!(figure(0.000_266_1), "0.000266");
        assert_eq!(figure(0.0), "0.00");
    }

    #[test]
    fn median_skips_failed_runs() {
        assert_eq!(median(&[Some(3.0), None, Some(1.0), Some(2.0)]), Some(2.0));
        assert_eq!(median(&[Some(1.0), Some(4.0)]), Some(2.5));
        assert_eq!(median(&[None]), None);
    }

    #[test]
    fn spread_is_the_range_of_the_runs_that_gave_a_figure() {
        assert_eq!(spread(&[Some(9.8), None, Some(10.2), Some(9.1)]), Some((9.1, 10.2)));
        assert_eq!(spread(&[Some(4.0)]), Some((4.0, 4.0)));
        assert_eq!(spread(&[None, None]), None);
    }

    #[test]
    fn ratios_pair_runs_and_unavailable_cells_keep_their_reason() {
        let c2c = &ALL[0];
        let mut results = Results::new(3);
        for (run, (netpath, docker)) in [(10.0, 5.0), (20.0, 5.0), (10.0, 8.0)].into_iter().enumerate() {
            results.record(c2c, None, "netpath", run, &[Ok(netpath)]);
            results.record(c2c, None, "docker", run, &[Ok(docker)]);
        }
        results.record(c2c, None, "cni", 0, &[Err("boom".into())]);
        results.mark(c2c, None, "veth", &Unavailable::NotApplicable("why".into()));
        let cells = results.finish("netpath");
        let cell = |d: &str| cells.iter().find(|c| c.datapath == d).unwrap();
        assert_eq!(cell("docker").median, Some(5.0));
        assert_eq!(cell("docker").ratio_samples, vec![Some(0.5), Some(0.25), Some(0.8)]);
        assert_eq!(cell("docker").ratio, Some(0.5));
        assert_eq!((cell("docker").ratio_min, cell("docker").ratio_max), (Some(0.25), Some(0.8)));
        assert_eq!((cell("docker").min, cell("docker").max), (Some(5.0), Some(8.0)));
        assert_eq!((cell("netpath").min, cell("netpath").max), (Some(10.0), Some(20.0)));
        assert_eq!(cell("netpath").ratio, Some(1.0));
        assert_eq!((cell("cni").status, cell("cni").reason.as_deref()), (Status::Missing, Some("run 1: boom")));
        assert_eq!((cell("veth").status, cell("veth").reason.as_deref()), (Status::NotApplicable, Some("why")));
    }

    #[test]
    fn a_settled_cell_keeps_its_first_reason() {
        let c2c = &ALL[0];
        let mut results = Results::new(1);
        results.mark(c2c, None, "veth", &Unavailable::NotApplicable("no program".into()));
        results.mark(c2c, None, "veth", &Unavailable::Missing("failed".into()));
        results.record(c2c, None, "veth", 0, &[Ok(1.0)]);
        let cells = results.finish("netpath");
        assert!(cells.iter().all(|c| c.status == Status::NotApplicable && c.reason.as_deref() == Some("no program")));
        assert!(cells.iter().all(|c| c.samples == vec![None]), "a settled cell records nothing");
    }
}
