//! SVG charts: grouped bars for the scenarios (one chart per unit, a bar per datapath), and
//! lines for the sweeps (one chart per sweep and metric, a line per datapath); every median
//! with an error bar from the smallest to the largest run.
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    results::{Cell, Status, figure},
    scenario::{ALL, Scenario},
};

const SIZE: (u32, u32) = (960, 500);
/// One colour per datapath, in column order; netpath's stands out.
const PALETTE: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(127, 127, 127),
    RGBColor(148, 103, 189),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
];

/// Draws every chart into `dir`; returns the files written.
pub fn draw(dir: &Path, cells: &[Cell], datapaths: &[&str]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let bar_scenarios: Vec<&Scenario> = ALL.iter().filter(|s| !s.is_sweep()).collect();
    let mut units: Vec<&str> = Vec::new();
    for unit in bar_scenarios.iter().flat_map(|s| s.metrics.iter().map(|m| m.unit)) {
        if !units.contains(&unit) {
            units.push(unit);
        }
    }
    for unit in units {
        let metrics =
            || bar_scenarios.iter().flat_map(|s| s.metrics.iter().filter(|m| m.unit == unit).map(move |m| (s, m)));
        let groups: Vec<(String, &str, &str)> =
            metrics().map(|(s, m)| (group_label(s, m.name), s.name, m.name)).collect();
        let higher_is_better = metrics().all(|(_, m)| m.higher_is_better);
        let has_data = groups
            .iter()
            .any(|(_, s, m)| cells.iter().any(|c| c.scenario == *s && c.metric == *m && c.median.is_some()));
        if !has_data {
            continue;
        }
        let file = dir.join(format!("bars-{}.svg", slug(unit)));
        bars(&file, (unit, higher_is_better), &groups, cells, datapaths)?;
        files.push(file);
    }
    for scenario in ALL.iter().filter(|s| s.is_sweep()) {
        for metric in scenario.metrics {
            let points: Vec<&Cell> = cells
                .iter()
                .filter(|c| c.scenario == scenario.name && c.metric == metric.name && c.median.is_some())
                .collect();
            if points.is_empty() {
                continue;
            }
            let file = dir.join(format!("sweep-{}-{}.svg", scenario.name, metric.name));
            lines(&file, scenario, metric.unit, &points, datapaths)?;
            files.push(file);
        }
    }
    Ok(files)
}

fn group_label(scenario: &Scenario, metric: &str) -> String {
    let short = scenario.name;
    if scenario.metrics.len() > 1 { format!("{short} {metric}") } else { short.to_string() }
}

fn slug(unit: &str) -> String {
    match unit {
        "µs" => "latency-us".into(),
        "conn/s" => "connections-per-s".into(),
        "CPU-s/GB" => "cpu-per-gb".into(),
        "CPU-s/Mpkt" => "cpu-per-mpkt".into(),
        "CPU-s/kconn" => "cpu-per-kconn".into(),
        other => {
            let words = other.replace('/', " per ").to_lowercase();
            let words: Vec<&str> =
                words.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
            words.join("-")
        }
    }
}

fn color(datapaths: &[&str], name: &str) -> RGBColor {
    let index = datapaths.iter().position(|d| *d == name).unwrap_or(0);
    PALETTE[index % PALETTE.len()]
}

fn plot_err<E: std::fmt::Debug>(file: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {}: {e:?}", file.display())
}

fn canvas(file: &Path) -> Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(file, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err(file))?;
    Ok(root)
}

/// Median of each datapath per group, with its error bar; a missing figure leaves a gap marked
/// "–".
fn bars(
    file: &Path,
    (unit, higher_is_better): (&str, bool),
    groups: &[(String, &str, &str)],
    cells: &[Cell],
    datapaths: &[&str],
) -> Result<()> {
    let root = canvas(file)?;
    let cell = |s: &str, m: &str, d: &str| {
        cells.iter().find(|c| c.scenario == s && c.metric == m && c.datapath == d && c.median.is_some())
    };
    let max = groups
        .iter()
        .flat_map(|(_, s, m)| datapaths.iter().filter_map(move |d| cell(s, m, d)).filter_map(|c| c.max.or(c.median)))
        .fold(0.0, f64::max);
    let better = if higher_is_better { "higher is better" } else { "lower is better" };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("median and min–max of the runs, {unit} ({better})"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        // Headroom above the tallest bar for the legend in the upper right.
        .build_cartesian_2d(0.0..groups.len() as f64, 0.0..max * 1.45)
        .map_err(plot_err(file))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .max_light_lines(1)
        .y_desc(unit)
        .y_label_formatter(&|y| figure(*y))
        .draw()
        .map_err(plot_err(file))?;
    let width = 0.8 / datapaths.len() as f64;
    for (i, datapath) in datapaths.iter().enumerate() {
        let fill = color(datapaths, datapath);
        let left = |g: usize| g as f64 + 0.1 + i as f64 * width;
        let bars = groups.iter().enumerate().filter_map(|(g, (_, s, m))| {
            let v = cell(s, m, datapath)?.median?;
            Some(Rectangle::new([(left(g), 0.0), (left(g) + width * 0.9, v)], fill.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(plot_err(file))?
            .label(*datapath)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], fill.filled()));
        let spreads = groups.iter().enumerate().filter_map(|(g, (_, s, m))| {
            let c = cell(s, m, datapath)?;
            error_bar(left(g) + width * 0.45, width * 0.2, c.min?, c.max?, BLACK.stroke_width(1))
        });
        chart.draw_series(spreads.flatten()).map_err(plot_err(file))?;
        let gaps = groups.iter().enumerate().filter(|(_, (_, s, m))| cell(s, m, datapath).is_none()).map(|(g, _)| {
            let x = g as f64 + 0.1 + (i as f64 + 0.45) * width;
            Text::new(
                "–",
                (x, 0.0),
                ("sans-serif", 12).into_font().color(&fill).pos(Pos::new(HPos::Center, VPos::Bottom)),
            )
        });
        chart.draw_series(gaps).map_err(plot_err(file))?;
    }
    let labels = groups.iter().enumerate().map(|(g, (label, _, _))| {
        EmptyElement::at((g as f64 + 0.5, 0.0))
            + Text::new(
                label.clone(),
                (0, 8),
                TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top)),
            )
    });
    chart.draw_series(labels).map_err(plot_err(file))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err(file))?;
    root.present().map_err(plot_err(file))
}

/// A sweep: the median against N (log scale), a line per datapath that has figures.
fn lines(file: &Path, scenario: &Scenario, unit: &str, points: &[&Cell], datapaths: &[&str]) -> Result<()> {
    let root = canvas(file)?;
    let params: Vec<f64> = points.iter().filter_map(|c| c.param).map(f64::from).collect();
    let (min_x, max_x) = (params.iter().copied().fold(f64::MAX, f64::min), params.iter().copied().fold(0.0, f64::max));
    let max_y = points.iter().filter_map(|c| c.max.or(c.median)).fold(0.0, f64::max);
    let metric = points[0].metric;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{}: {metric}, median and min–max ({unit})", scenario.title), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d((min_x * 0.8..max_x * 1.25).log_scale(), 0.0..max_y * 1.15)
        .map_err(plot_err(file))?;
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc("N")
        .y_desc(unit)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| figure(*y))
        .draw()
        .map_err(plot_err(file))?;
    for datapath in datapaths {
        let mut series: Vec<(f64, f64)> = points
            .iter()
            .filter(|c| c.datapath == *datapath && c.status == Status::Ok)
            .filter_map(|c| Some((f64::from(c.param?), c.median?)))
            .collect();
        if series.is_empty() {
            continue;
        }
        series.sort_by(|a, b| a.0.total_cmp(&b.0));
        let stroke = color(datapaths, datapath);
        chart
            .draw_series(LineSeries::new(series.clone(), stroke.stroke_width(2)))
            .map_err(plot_err(file))?
            .label(*datapath)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], stroke.stroke_width(2)));
        chart.draw_series(series.into_iter().map(|p| Circle::new(p, 4, stroke.filled()))).map_err(plot_err(file))?;
        // On the log axis, a cap as wide as a tenth of the point's own N looks the same everywhere.
        let spreads = points
            .iter()
            .filter(|c| c.datapath == *datapath && c.status == Status::Ok)
            .filter_map(|c| {
                let x = f64::from(c.param?);
                error_bar(x, x * 0.05, c.min?, c.max?, stroke.stroke_width(1))
            })
            .flatten();
        chart.draw_series(spreads).map_err(plot_err(file))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err(file))?;
    root.present().map_err(plot_err(file))
}

/// A vertical line at `x` from `min` to `max` with caps `half_cap` either side; nothing where
/// the runs agree.
fn error_bar(x: f64, half_cap: f64, min: f64, max: f64, style: ShapeStyle) -> Option<[PathElement<(f64, f64)>; 3]> {
    if min == max {
        return None;
    }
    let line = |points: Vec<(f64, f64)>| PathElement::new(points, style);
    Some([
        line(vec![(x, min), (x, max)]),
        line(vec![(x - half_cap, min), (x + half_cap, min)]),
        line(vec![(x - half_cap, max), (x + half_cap, max)]),
    ])
}
