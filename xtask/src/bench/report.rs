//! The Markdown report: a header saying what was run where, the goals of issue 13 met or not,
//! one table row per scenario, metric and sweep point, one column per datapath (median, the
//! runs' min–max, the ratio to netpath and its min–max), and the reasons behind each gap
//! and the failed runs behind each incomplete cell.
use std::fmt::Write;

use super::{
    goals::GoalResult,
    results::{Cell, Observation, Report, Status, figure},
    scenario::ALL,
};

pub fn markdown(report: &Report, charts: &[String]) -> String {
    let mut md = String::new();
    let kind = if report.quick { "quick run (`--quick`)" } else { "full run" };
    let _ = writeln!(md, "# netpath benchmark, {}\n", report.started);
    let _ = writeln!(
        md,
        "A {kind}: {} run(s) per figure, {} s per measurement, datapaths interleaved run by run; \
         each figure is the median with the runs' min–max in brackets and n= the runs that gave it \
         (**n=2/3** where a run failed, its error in the footnote), and ×N its ratio to `{}` \
         computed run by run (median of the ratios, and their min–max).\n",
        report.runs, report.seconds_per_measurement, report.reference
    );
    let _ = writeln!(md, "- Machine: {}", report.machine.summary());
    let versions: Vec<String> = report.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(md, "- Versions: {}", versions.join(", "));
    let _ = writeln!(md, "- Finished: {}\n", report.finished);
    goal_table(&mut md, &report.goals);

    let datapaths: Vec<&str> = report.datapaths.iter().map(|d| d.name).collect();
    let _ = writeln!(md, "| scenario | unit | {} |", datapaths.join(" | "));
    let _ = writeln!(md, "|---|---|{}", "---:|".repeat(datapaths.len()));
    let mut notes = Footnotes::default();
    for scenario in ALL {
        for metric in scenario.metrics {
            let mut params: Vec<Option<u32>> = report
                .cells
                .iter()
                .filter(|c| c.scenario == scenario.name && c.metric == metric.name)
                .map(|c| c.param)
                .collect();
            params.sort();
            params.dedup();
            for param in params {
                let mut label = scenario.title.replace(", with N ports published", "").replace(" N endpoints", "");
                if scenario.metrics.len() > 1 {
                    label = format!("{label} ({})", metric.name);
                }
                if let Some(n) = param {
                    let what = if scenario.name == "ports" { "ports published" } else { "endpoints" };
                    label = format!("{label}, {n} {what}");
                }
                let arrow = if metric.higher_is_better { "↑" } else { "↓" };
                let mut row = format!("| {label} | {} {arrow} |", metric.unit);
                for datapath in &datapaths {
                    let cell = report.cells.iter().find(|c| {
                        c.scenario == scenario.name
                            && c.metric == metric.name
                            && c.param == param
                            && c.datapath == *datapath
                    });
                    let text = cell.map(|c| cell_entry(c, *datapath == report.reference, &mut notes));
                    let text = text.unwrap_or_default();
                    let _ = write!(row, " {text} |");
                }
                let _ = writeln!(md, "{row}");
            }
        }
    }
    if !notes.0.is_empty() {
        let _ = writeln!(md, "\nGaps and failed runs:\n");
        for (i, note) in notes.0.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, note.replace('\n', " "));
        }
    }
    observation_table(&mut md, &report.observations);
    let _ = writeln!(md, "\nDatapaths:\n");
    for d in &report.datapaths {
        let _ = writeln!(md, "- `{}`: {}", d.name, d.description);
    }
    let _ = writeln!(md, "\nMethod:\n");
    for line in &report.method {
        let _ = writeln!(md, "- {line}");
    }
    if !charts.is_empty() {
        let _ =
            writeln!(md, "\nCharts: {}", charts.iter().map(|c| format!("[{c}]({c})")).collect::<Vec<_>>().join(", "));
    }
    md
}

/// The reasons and failures the table points to, numbered in order of first use.
#[derive(Default)]
struct Footnotes(Vec<String>);

impl Footnotes {
    /// The number of `note`, added if new.
    fn number(&mut self, note: String) -> usize {
        let index = self.0.iter().position(|n| *n == note).unwrap_or_else(|| {
            self.0.push(note);
            self.0.len() - 1
        });
        index + 1
    }
}

/// A table entry: the figures of a cell with figures, `missing [k]` or `n/a [k]` for one
/// without; a cell where a run failed is marked, the failures in footnote k.
fn cell_entry(c: &Cell, is_reference: bool, notes: &mut Footnotes) -> String {
    let reason = c.reason.clone().unwrap_or_default();
    match c.status {
        Status::Ok if c.complete() => cell_text(c, is_reference),
        Status::Ok => format!("{} [{}]", cell_text(c, is_reference), notes.number(failed_runs(c))),
        Status::Missing => format!("missing [{}]", notes.number(reason)),
        Status::NotApplicable => format!("n/a [{}]", notes.number(reason)),
    }
}

/// What the footnote of an incomplete cell says.
fn failed_runs(c: &Cell) -> String {
    let failed = c.samples.len() - c.measured_runs;
    format!(
        "{failed} of {} runs of {} {} on {} failed: {}",
        c.samples.len(),
        c.scenario,
        c.metric,
        c.datapath,
        c.errors.join("; ")
    )
}

/// `9.8 (9.1–10.2) n=3, ×1.02 (0.98–1.05)`: the median, the runs' range and how many runs
/// gave a figure (`**n=2/3**` when one failed), then the ratio to the reference and its range
/// (a range only where the runs differ; its count only where it differs from the figure's).
fn cell_text(c: &Cell, is_reference: bool) -> String {
    let Some(median) = c.median else { return String::new() };
    let runs = c.samples.len();
    let mut text = format!("{}{} {}", figure(median), range(c.min, c.max, figure), count(c.measured_runs, runs));
    if let (Some(r), false) = (c.ratio, is_reference) {
        let _ = write!(text, ", ×{r:.2}{}", range(c.ratio_min, c.ratio_max, |v| format!("{v:.2}")));
        if c.ratio_runs != c.measured_runs {
            let _ = write!(text, " {}", count(c.ratio_runs, runs));
        }
    }
    text
}

/// `n=3` when every run gave a figure, `**n=2/3**` when not.
fn count(measured: usize, runs: usize) -> String {
    if measured == runs { format!("n={runs}") } else { format!("**n={measured}/{runs}**") }
}

/// ` (min–max)`, or nothing when the runs agree (or there was one).
fn range(min: Option<f64>, max: Option<f64>, show: impl Fn(f64) -> String) -> String {
    match (min, max) {
        (Some(min), Some(max)) if min != max => format!(" ({}–{})", show(min), show(max)),
        _ => String::new(),
    }
}

/// One line per run that checked something behind its figures, with what it found.
fn observation_table(md: &mut String, observations: &[Observation]) {
    if observations.is_empty() {
        return;
    }
    let _ = writeln!(md, "\nChecks behind the figures, run by run:\n");
    let _ = writeln!(md, "| scenario | datapath | run | seen |");
    let _ = writeln!(md, "|---|---|---|---|");
    for o in observations {
        let point = o.param.map(|n| format!(", N={n}")).unwrap_or_default();
        let seen: Vec<String> = o.seen.iter().map(|s| format!("{}: {}", s.what, shown(&s.value))).collect();
        let _ = writeln!(md, "| {}{point} | {} | {} | {} |", o.scenario, o.datapath, o.run, seen.join("; "));
    }
}

/// A value as text, a string without its quotes.
fn shown(value: &serde_json::Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), String::from)
}

/// One line per goal: the measured ratio (or value) with its range, and whether it is met.
fn goal_table(md: &mut String, goals: &[GoalResult]) {
    if goals.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "Goals of issue 13: netpath's figure over the other datapath's, run by run; the median decides, \
         the runs' min–max is in brackets, n= the runs behind it, and every figure is rounded towards \
         missing the goal. A goal is judged only where every run gave both figures.\n"
    );
    let _ = writeln!(md, "| goal | measured | met |");
    let _ = writeln!(md, "|---|---|---|");
    for goal in goals {
        let (measured, met) = match (goal.shown(), goal.met) {
            (Some(shown), Some(met)) => (shown, if met { "met" } else { "**not met**" }),
            _ => (format!("not judged: {}", goal.reason.as_deref().unwrap_or_default().replace('\n', " ")), "–"),
        };
        let _ = writeln!(md, "| {} | {measured} | {met} |", goal.goal.text);
    }
    let _ = writeln!(md);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{results::Results, scenario::Scenario};

    #[test]
    fn a_cell_shows_its_spread_and_its_ratio_spread_only_where_runs_differ() {
        let scenario = Scenario::by_name("c2c-tcp-1").unwrap();
        let mut results = Results::new(3);
        for (run, (netpath, veth)) in [(10.0, 9.8), (10.0, 9.1), (10.0, 10.2)].into_iter().enumerate() {
            results.record(scenario, None, "netpath", run, &[Ok(netpath)]);
            results.record(scenario, None, "veth", run, &[Ok(veth)]);
        }
        let cells = results.finish("netpath");
        let cell = |d: &str| cells.iter().find(|c| c.datapath == d).unwrap();
        assert_eq!(cell_text(cell("veth"), false), "9.80 (9.10–10.2) n=3, ×0.98 (0.91–1.02)");
        assert_eq!(cell_text(cell("netpath"), true), "10.0 n=3");
    }

    #[test]
    fn a_cell_that_lost_a_run_is_marked_and_its_failure_footnoted() {
        let scenario = Scenario::by_name("c2c-tcp-1").unwrap();
        let mut results = Results::new(3);
        for run in 0..3 {
            let netpath = if run == 2 { Err("np-connrate: connection refused".into()) } else { Ok(10.0) };
            results.record(scenario, None, "netpath", run, &[netpath]);
            results.record(scenario, None, "veth", run, &[Ok(9.0)]);
        }
        let cells = results.finish("netpath");
        let cell = |d: &str| cells.iter().find(|c| c.datapath == d).unwrap();
        let mut notes = Footnotes::default();
        notes.number("an earlier gap".into());
        assert_eq!(cell_entry(cell("netpath"), true, &mut notes), "10.0 **n=2/3** [2]");
        assert_eq!(
            notes.0[1],
            "1 of 3 runs of c2c-tcp-1 throughput on netpath failed: run 3: np-connrate: connection refused"
        );
        // veth's own runs are whole; its ratio lost the run netpath lost.
        assert_eq!(cell_entry(cell("veth"), false, &mut notes), "9.00 n=3, ×0.90 **n=2/3**");
        assert_eq!(notes.0.len(), 2, "a whole cell adds no footnote");
    }
}
