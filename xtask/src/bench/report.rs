//! The Markdown report: a header saying what was run where, one table row per scenario,
//! metric and sweep point, one column per datapath, and the reasons behind each gap.
use std::fmt::Write;

use super::{
    results::{Report, Status, figure},
    scenario::ALL,
};

pub fn markdown(report: &Report, charts: &[String]) -> String {
    let mut md = String::new();
    let kind = if report.quick { "quick run (`--quick`)" } else { "full run" };
    let _ = writeln!(md, "# netpath benchmark, {}\n", report.started);
    let _ = writeln!(
        md,
        "A {kind}: {} run(s) per figure, {} s per measurement, datapaths interleaved run by run; \
         each figure is the median, and ×N its ratio to `{}` computed run by run (median of the ratios).\n",
        report.runs, report.seconds_per_measurement, report.reference
    );
    let _ = writeln!(md, "- Machine: {}", report.machine.summary());
    let versions: Vec<String> = report.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(md, "- Versions: {}", versions.join(", "));
    let _ = writeln!(md, "- Finished: {}\n", report.finished);

    let datapaths: Vec<&str> = report.datapaths.iter().map(|d| d.name).collect();
    let _ = writeln!(md, "| scenario | unit | {} |", datapaths.join(" | "));
    let _ = writeln!(md, "|---|---|{}", "---:|".repeat(datapaths.len()));
    let mut reasons: Vec<String> = Vec::new();
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
                    let text = match cell {
                        None => "".to_string(),
                        Some(c) if c.status == Status::Ok => match (c.median, c.ratio) {
                            (Some(v), Some(r)) if *datapath != report.reference => format!("{} (×{r:.2})", figure(v)),
                            (Some(v), _) => figure(v),
                            _ => "".into(),
                        },
                        Some(c) => {
                            let reason = c.reason.clone().unwrap_or_default();
                            let index = reasons.iter().position(|r| *r == reason).unwrap_or_else(|| {
                                reasons.push(reason);
                                reasons.len() - 1
                            });
                            let word = if c.status == Status::Missing { "missing" } else { "n/a" };
                            format!("{word} [{}]", index + 1)
                        }
                    };
                    let _ = write!(row, " {text} |");
                }
                let _ = writeln!(md, "{row}");
            }
        }
    }
    if !reasons.is_empty() {
        let _ = writeln!(md, "\nGaps:\n");
        for (i, reason) in reasons.iter().enumerate() {
            let _ = writeln!(md, "{}. {}", i + 1, reason.replace('\n', " "));
        }
    }
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
