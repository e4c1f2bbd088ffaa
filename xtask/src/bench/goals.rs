//! Issue 13's goals that the bench can measure, as data: each names the cell it judges and
//! what it is compared with (another cell of the same run, or a fixed value), and is
//! evaluated run by run. Adding a goal is one entry in [`GOALS`].
use serde::Serialize;

use super::results::{Cell, Status, measured, median, ratios, spread};

/// One cell: scenario, metric, sweep point and datapath.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Figure {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub param: Option<u32>,
    pub datapath: &'static str,
}

/// A scenario's metric on a datapath, outside the sweeps.
const fn cell(scenario: &'static str, metric: &'static str, datapath: &'static str) -> Figure {
    Figure { scenario, metric, param: None, datapath }
}

/// What the figure is compared with.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Against {
    /// The ratio figure / this figure, run by run.
    Figure(Figure),
    /// The figure itself, in its own unit.
    Value,
}

#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
}

impl Bound {
    fn holds(self, v: f64) -> bool {
        match self {
            Bound::AtLeast(limit) => v >= limit,
            Bound::AtMost(limit) => v <= limit,
            Bound::Below(limit) => v < limit,
        }
    }

    /// `v` with three decimals, rounded towards missing the goal, so a figure never looks
    /// better than it is (0.9696 against ≥ 0.97 shows as 0.969).
    fn show(self, v: f64) -> String {
        let scaled = v * 1000.0;
        let rounded = match self {
            Bound::AtLeast(_) => scaled.floor(),
            Bound::AtMost(_) | Bound::Below(_) => scaled.ceil(),
        };
        format!("{:.3}", rounded / 1000.0)
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Goal {
    pub text: &'static str,
    pub figure: Figure,
    pub against: Against,
    pub bound: Bound,
}

const fn ratio(text: &'static str, figure: Figure, against: Figure, bound: Bound) -> Goal {
    Goal { text, figure, against: Against::Figure(against), bound }
}

const NETPATH: &str = "netpath";

/// netpath's `metric` of `scenario` over `datapath`'s, bounded.
const fn vs(
    text: &'static str,
    scenario: &'static str,
    metric: &'static str,
    datapath: &'static str,
    bound: Bound,
) -> Goal {
    ratio(text, cell(scenario, metric, NETPATH), cell(scenario, metric, datapath), bound)
}

/// An XDP variant's inbound 64-byte UDP rate over the TC path's.
const fn xdp_over_tc(text: &'static str, xdp: &'static str) -> Goal {
    ratio(text, cell("udp-in", "packets", xdp), cell("udp-in", "packets", NETPATH), Bound::AtLeast(1.5))
}

/// The share of its connection rate a datapath keeps under the unsolicited flood.
const fn flood_kept(text: &'static str, datapath: &'static str) -> Goal {
    Goal { text, figure: cell("flood", "kept", datapath), against: Against::Value, bound: Bound::AtLeast(0.8) }
}

pub const GOALS: &[Goal] = &[
    vs(
        "from_container ≤ 2× the reference program, ns/packet, 64-byte UDP",
        "udp-rate",
        "program",
        "redirect-ref",
        Bound::AtMost(2.0),
    ),
    vs(
        "from_container ≤ 2× the reference program, ns/packet, TCP 1 stream",
        "c2c-tcp-1",
        "program",
        "redirect-ref",
        Bound::AtMost(2.0),
    ),
    vs("c2c TCP 1 stream ≥ 0.97× veth", "c2c-tcp-1", "throughput", "veth", Bound::AtLeast(0.97)),
    vs("c2c TCP 4 streams ≥ 0.97× veth", "c2c-tcp-4", "throughput", "veth", Bound::AtLeast(0.97)),
    vs("c2c TCP 4 streams ≥ 1.0× Docker", "c2c-tcp-4", "throughput", "docker", Bound::AtLeast(1.0)),
    vs("c2c UDP 64-byte pps ≥ 0.95× veth", "udp-rate", "packets", "veth", Bound::AtLeast(0.95)),
    vs("UDP ping-pong p50 ≤ 1.05× veth", "latency", "p50", "veth", Bound::AtMost(1.05)),
    vs("CPU-seconds per GB, c2c ≤ 1.05× veth", "c2c-tcp-1", "cpu", "veth", Bound::AtMost(1.05)),
    vs("CPU-seconds per GB, c2c ≤ 0.9× Docker", "c2c-tcp-1", "cpu", "docker", Bound::AtMost(0.9)),
    vs("CPU-seconds per GB, egress ≤ 1.05× veth", "egress-tcp", "cpu", "veth", Bound::AtMost(1.05)),
    vs("CPU-seconds per GB, egress ≤ 0.9× Docker", "egress-tcp", "cpu", "docker", Bound::AtMost(0.9)),
    vs("CPU-seconds per GB, inbound published ≤ 1.05× veth", "ingress-tcp", "cpu", "veth", Bound::AtMost(1.05)),
    vs("CPU-seconds per GB, inbound published ≤ 0.9× Docker", "ingress-tcp", "cpu", "docker", Bound::AtMost(0.9)),
    vs("tc block: c2c TCP 1 stream ≥ 0.98× TCX", "c2c-tcp-1", "throughput", "netpath-tcx", Bound::AtLeast(0.98)),
    vs("tc block: c2c TCP 4 streams ≥ 0.98× TCX", "c2c-tcp-4", "throughput", "netpath-tcx", Bound::AtLeast(0.98)),
    vs("tc block: c2c UDP 64-byte pps ≥ 0.98× TCX", "udp-rate", "packets", "netpath-tcx", Bound::AtLeast(0.98)),
    vs("tc block: UDP ping-pong p50 ≤ 1.02× TCX", "latency", "p50", "netpath-tcx", Bound::AtMost(1.02)),
    vs("DNS: a container's name, p50 ≤ 1.0× Docker's embedded resolver", "dns", "p50", "docker", Bound::AtMost(1.0)),
    vs(
        "DNS: a container's name, queries/s ≥ 1.0× Docker's embedded resolver",
        "dns",
        "queries",
        "docker",
        Bound::AtLeast(1.0),
    ),
    xdp_over_tc("XDP redirect: inbound 64-byte UDP pps to a published port ≥ 1.5× the TC path", "netpath-xdp-redirect"),
    xdp_over_tc("XDP filter: inbound 64-byte UDP pps to a published port ≥ 1.5× the TC path", "netpath-xdp"),
    flood_kept("XDP filter: under an unsolicited flood, connection rate ≥ 0.8× without", "netpath-xdp"),
    flood_kept("XDP redirect: under an unsolicited flood, connection rate ≥ 0.8× without", "netpath-xdp-redirect"),
    attach("attach p50 ≤ 10 ms (CLI, 500 one after another)", "attach", "p50", 500, Bound::AtMost(10.0)),
    attach("attach p99 ≤ 25 ms (CLI, 500 one after another)", "attach", "p99", 500, Bound::AtMost(25.0)),
    attach("500 sequential attaches < 5 s", "attach", "time", 500, Bound::Below(5.0)),
    attach("100 concurrent attaches < 3 s", "attach-concurrent", "time", 100, Bound::Below(3.0)),
];

/// An attach figure of netpath's CLI, judged on its value.
const fn attach(text: &'static str, scenario: &'static str, metric: &'static str, n: u32, bound: Bound) -> Goal {
    Goal {
        text,
        figure: Figure { scenario, metric, param: Some(n), datapath: NETPATH },
        against: Against::Value,
        bound,
    }
}

/// A goal as this run measured it.
#[derive(Debug, Serialize)]
pub struct GoalResult {
    pub goal: Goal,
    /// The ratio (or the value) per run, its median and its spread.
    pub samples: Vec<Option<f64>>,
    pub median: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Judged on the median; none when it could not be measured.
    pub met: Option<bool>,
    /// Why it could not be measured.
    pub reason: Option<String>,
}

impl GoalResult {
    /// The median and the spread as the report shows them, rounded towards missing the goal.
    pub fn shown(&self) -> Option<String> {
        let (median, min, max) = (self.median?, self.min?, self.max?);
        let bound = self.goal.bound;
        let prefix = if matches!(self.goal.against, Against::Figure(_)) { "×" } else { "" };
        let runs = measured(&self.samples);
        Some(if min == max {
            format!("{prefix}{} n={runs}", bound.show(median))
        } else {
            format!("{prefix}{} ({}–{}) n={runs}", bound.show(median), bound.show(min), bound.show(max))
        })
    }
}

pub fn evaluate(goals: &[Goal], cells: &[Cell]) -> Vec<GoalResult> {
    goals.iter().map(|goal| evaluate_one(goal, cells)).collect()
}

fn evaluate_one(goal: &Goal, cells: &[Cell]) -> GoalResult {
    let samples = match complete(goal.figure, cells).and_then(|figure| match goal.against {
        Against::Value => Ok(figure.to_vec()),
        Against::Figure(other) => Ok(ratios(figure, complete(other, cells)?)),
    }) {
        Ok(samples) => samples,
        Err(reason) => {
            return GoalResult {
                goal: *goal,
                samples: Vec::new(),
                median: None,
                min: None,
                max: None,
                met: None,
                reason: Some(reason),
            };
        }
    };
    let median = median(&samples);
    let (min, max) = spread(&samples).unzip();
    let reason = median.is_none().then(|| "no run measured both figures".to_string());
    GoalResult { goal: *goal, met: median.map(|m| goal.bound.holds(m)), samples, median, min, max, reason }
}

/// The samples of a cell with a figure from every run, or why there are none: a median of
/// the runs that did not fail would judge the goal on part of the evidence.
fn complete(figure: Figure, cells: &[Cell]) -> Result<&[Option<f64>], String> {
    let found = cells.iter().find(|c| {
        c.scenario == figure.scenario
            && c.metric == figure.metric
            && c.param == figure.param
            && c.datapath == figure.datapath
    });
    let name = format!("{} {} of {}", figure.scenario, figure.metric, figure.datapath);
    match found {
        None => Err(format!("{name} was not measured in this run")),
        Some(c) if c.status != Status::Ok => Err(format!("{name}: {}", c.reason.clone().unwrap_or_default())),
        Some(c) if !c.complete() => Err(format!(
            "{name}: only {} of {} runs gave a figure ({})",
            c.measured_runs,
            c.samples.len(),
            c.errors.join("; ")
        )),
        Some(c) => Ok(&c.samples),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{datapath, results::Results, scenario::Scenario};

    fn cells(netpath: &[f64], veth: &[f64]) -> Vec<Cell> {
        let scenario = Scenario::by_name("c2c-tcp-1").unwrap();
        let mut results = Results::new(netpath.len());
        for (run, (n, v)) in netpath.iter().zip(veth).enumerate() {
            results.record(scenario, None, "netpath", run, &[Ok(*n)]);
            results.record(scenario, None, "veth", run, &[Ok(*v)]);
        }
        results.finish("netpath")
    }

    const AT_LEAST: Goal = vs("tcp ≥ 0.97× veth", "c2c-tcp-1", "throughput", "veth", Bound::AtLeast(0.97));

    #[test]
    fn a_goal_is_the_median_of_the_ratios_of_each_run() {
        // Ratios 1.125, 0.875, 1.0: median 1.0, met, though one run missed.
        let r = evaluate_one(&AT_LEAST, &cells(&[9.0, 7.0, 8.0], &[8.0, 8.0, 8.0]));
        assert_eq!(r.samples, vec![Some(1.125), Some(0.875), Some(1.0)]);
        assert_eq!((r.min, r.max, r.met), (Some(0.875), Some(1.125), Some(true)));
        assert_eq!(r.shown().as_deref(), Some("×1.000 (0.875–1.125) n=3"));
    }

    #[test]
    fn a_goal_missed_by_a_hair_is_missed_and_does_not_show_as_met() {
        let r = evaluate_one(&AT_LEAST, &cells(&[9.696], &[10.0]));
        assert_eq!(r.met, Some(false));
        assert_eq!(r.shown().as_deref(), Some("×0.969 n=1"));
        let at_most = vs("p50 ≤ 1.05× veth", "c2c-tcp-1", "throughput", "veth", Bound::AtMost(1.05));
        let r = evaluate_one(&at_most, &cells(&[10.5001], &[10.0]));
        assert_eq!(r.met, Some(false));
        assert_eq!(r.shown().as_deref(), Some("×1.051 n=1"));
    }

    #[test]
    fn a_goal_without_its_figures_says_why_and_is_not_judged() {
        let missing = vs("vs docker", "c2c-tcp-1", "throughput", "docker", Bound::AtLeast(1.0));
        let r = evaluate_one(&missing, &cells(&[10.0], &[10.0]));
        assert_eq!(r.met, None);
        assert!(r.reason.unwrap().contains("docker was not measured"), "names the missing cell");
        let unavailable = vs("cpu", "c2c-tcp-1", "cpu", "veth", Bound::AtMost(1.05));
        assert_eq!(evaluate_one(&unavailable, &cells(&[10.0], &[10.0])).met, None);
    }

    #[test]
    fn a_goal_is_not_judged_on_a_cell_that_lost_a_run() {
        let scenario = Scenario::by_name("c2c-tcp-1").unwrap();
        for lost in ["netpath", "veth"] {
            let mut results = Results::new(3);
            for run in 0..3 {
                for datapath in ["netpath", "veth"] {
                    let outcome = if run == 1 && datapath == lost { Err("iperf3 timed out".into()) } else { Ok(10.0) };
                    results.record(scenario, None, datapath, run, &[outcome]);
                }
            }
            // The two runs left would meet the goal: it must still not be judged.
            let r = evaluate_one(&AT_LEAST, &results.finish("netpath"));
            assert_eq!(r.met, None, "judged though {lost} lost a run");
            let reason = r.reason.unwrap();
            assert!(reason.contains(&format!("c2c-tcp-1 throughput of {lost}: only 2 of 3 runs")), "{reason}");
            assert!(reason.contains("run 2: iperf3 timed out"), "{reason}");
        }
    }

    #[test]
    fn a_value_goal_judges_the_figure_itself() {
        let goal = Goal {
            text: "≤ 9.6",
            figure: cell("c2c-tcp-1", "throughput", NETPATH),
            against: Against::Value,
            bound: Bound::AtMost(9.6),
        };
        let r = evaluate_one(&goal, &cells(&[9.5, 9.7, 9.6], &[1.0, 1.0, 1.0]));
        assert_eq!((r.median, r.met), (Some(9.6), Some(true)));
        assert_eq!(r.shown().as_deref(), Some("9.600 (9.500–9.700) n=3"));
    }

    #[test]
    fn every_goal_names_a_scenario_and_metric_that_exist() {
        for goal in GOALS {
            let figures = match goal.against {
                Against::Figure(other) => vec![goal.figure, other],
                Against::Value => vec![goal.figure],
            };
            for f in figures {
                let scenario = Scenario::by_name(f.scenario).unwrap();
                assert!(
                    datapath::all().iter().any(|d| d.name() == f.datapath),
                    "{}: no datapath {}",
                    goal.text,
                    f.datapath
                );
                assert!(scenario.metrics.iter().any(|m| m.name == f.metric), "{}: no metric {}", goal.text, f.metric);
            }
        }
    }
}
