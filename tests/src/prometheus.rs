//! A strict reader of Prometheus's text exposition format (0.0.4), so a test can tell a page
//! a scraper would take from one it would reject or misread. It refuses: a sample of a family
//! without HELP and TYPE lines before it, a family whose samples are not together, a name or
//! label that breaks the format's syntax, a bad escape, a repeated series, a counter not named
//! `_total`, and a histogram whose buckets are not cumulative or do not end in `+Inf` equal
//! to its `_count`.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

/// Label names and values, sorted by name.
pub type Labels = Vec<(String, String)>;
/// One series: its metric name and its labels.
pub type Series = (String, Labels);

pub struct Page {
    pub samples: BTreeMap<Series, f64>,
    /// Family name → its TYPE.
    pub types: BTreeMap<String, String>,
}

impl Page {
    /// The value of one series, if the page has it.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.sort();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    /// The value of one series, which the page must have.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?} on the page"))
    }
}

/// Prometheus's own checker, which `cargo xtask test` unpacks next to the netpath binary's
/// profile directory.
fn promtool() -> PathBuf {
    let target = crate::netpath_bin().parent().and_then(std::path::Path::parent).unwrap().to_path_buf();
    let promtool = target.join("prometheus-root/usr/bin/promtool");
    assert!(promtool.exists(), "{} is missing: run `cargo xtask test`", promtool.display());
    promtool
}

/// `promtool check metrics` on a page: its parser and its linter of names, units and HELP.
/// `Err` holds what it says.
pub fn promtool_check(page: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child.stdin.take().unwrap().write_all(page.as_bytes()).expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Parses a whole page; `Err` names the first line at fault and why.
pub fn parse(text: &str) -> Result<Page, String> {
    let mut page = Page { samples: BTreeMap::new(), types: BTreeMap::new() };
    let mut helped = BTreeSet::new();
    // Families whose samples are over: a later sample of one is out of place.
    let mut closed = BTreeSet::new();
    let mut current: Option<String> = None;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the page does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').ok_or_else(|| at("a comment that is no HELP or TYPE".into()))?;
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            check_name(name).map_err(at)?;
            if current.as_deref() != Some(name) {
                if let Some(done) = current.replace(name.to_string()) {
                    closed.insert(done);
                }
            }
            if closed.contains(name) {
                return Err(at("a family comes back after another".into()));
            }
            match keyword {
                "HELP" => {
                    check_help(text).map_err(at)?;
                    if !helped.insert(name.to_string()) {
                        return Err(at("a second HELP".into()));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&text) {
                        return Err(at(format!("unknown type {text:?}")));
                    }
                    if text == "counter" && !name.ends_with("_total") {
                        return Err(at("a counter not named _total".into()));
                    }
                    if page.types.insert(name.to_string(), text.to_string()).is_some() {
                        return Err(at("a second TYPE".into()));
                    }
                }
                _ => return Err(at("a comment that is no HELP or TYPE".into())),
            }
            continue;
        }
        let (name, labels, value) = sample(line).map_err(at)?;
        let family = family_of(&page.types, &name);
        if current.as_deref() != Some(family.as_str()) {
            return Err(at(format!("a sample away from its family {family}'s HELP and TYPE")));
        }
        if !helped.contains(&family) || !page.types.contains_key(&family) {
            return Err(at(format!("family {family} lacks its HELP or its TYPE")));
        }
        if page.samples.insert((name, labels), value).is_some() {
            return Err(at("a series repeated".into()));
        }
    }
    check_histograms(&page)?;
    Ok(page)
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and `_count` belong to it.
fn family_of(types: &BTreeMap<String, String>, name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram") {
                return base.to_string();
            }
        }
    }
    name.to_string()
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with("__") {
        Ok(())
    } else {
        Err(format!("bad label name {name:?}"))
    }
}

/// HELP text may escape only backslash and newline.
fn check_help(text: &str) -> Result<(), String> {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' && !matches!(chars.next(), Some('\\' | 'n')) {
            return Err("bad escape in HELP".into());
        }
    }
    Ok(())
}

/// `name{label="value",...} value [timestamp]`.
fn sample(line: &str) -> Result<(String, Labels, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let (labels, rest) = if line[name_end..].starts_with('{') {
        labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(ts), None) if ts.parse::<i64>().is_ok() => {}
        _ => return Err("trailing text after the value".into()),
    }
    Ok((name.to_string(), labels, value))
}

/// The labels after `{`, through `}`; returns them sorted and the text after `}`.
fn labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut out: Labels = Vec::new();
    loop {
        if let Some(rest) = text.strip_prefix('}') {
            out.sort();
            if out.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err("a label given twice".into());
            }
            return Ok((out, rest));
        }
        let (name, rest) = text.split_once("=\"").ok_or("a label without =\"")?;
        check_label_name(name)?;
        let (value, rest) = quoted(rest)?;
        out.push((name.to_string(), value));
        text = rest.strip_prefix(',').unwrap_or(rest);
        if !rest.starts_with([',', '}']) {
            return Err("labels not separated by commas".into());
        }
    }
}

/// A label value up to its closing quote, unescaped; and the text after the quote.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                _ => return Err("bad escape in a label value".into()),
            },
            '\n' => return Err("a raw newline in a label value".into()),
            c => value.push(c),
        }
    }
    Err("a label value without its closing quote".into())
}

/// Each histogram series: buckets by rising `le`, counts that never fall, the last `+Inf`
/// and equal to `_count`, and a `_sum`.
fn check_histograms(page: &Page) -> Result<(), String> {
    for (family, _) in page.types.iter().filter(|(_, t)| *t == "histogram") {
        let bucket_name = format!("{family}_bucket");
        let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for ((name, labels), value) in &page.samples {
            if *name != bucket_name {
                continue;
            }
            let le = labels.iter().find(|(k, _)| k == "le").ok_or(format!("{name}{labels:?} has no le"))?;
            let le = if le.1 == "+Inf" { f64::INFINITY } else { le.1.parse().map_err(|_| format!("bad le {le:?}"))? };
            let rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            series.entry(rest).or_default().push((le, *value));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{labels:?}: buckets are not cumulative: {buckets:?}"));
            }
            let last =
                buckets.last().filter(|b| b.0 == f64::INFINITY).ok_or(format!("{family}{labels:?}: no +Inf bucket"))?;
            let count = page.samples.get(&(format!("{family}_count"), labels.clone()));
            if count != Some(&last.1) {
                return Err(format!("{family}{labels:?}: +Inf bucket {} but _count {count:?}", last.1));
            }
            if !page.samples.contains_key(&(format!("{family}_sum"), labels.clone())) {
                return Err(format!("{family}{labels:?}: no _sum"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\"} 1\n\
        # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";

    #[test]
    fn takes_a_good_page_and_refuses_each_fault() {
        let page = parse(GOOD).unwrap();
        assert_eq!(page.value("a_total", &[("x", "q\"\\\n")]), 1.0);
        for (bad, why) in [
            (GOOD.replace("# HELP a_total A.\n", ""), "no HELP"),
            (GOOD.replace("# TYPE a_total counter\n", ""), "no TYPE"),
            (GOOD.replace("a_total{", "1a_total{"), "bad name"),
            (GOOD.replace("x=", "x-y="), "bad label name"),
            (GOOD.replace("\\\"\\\\", "\\q"), "bad escape"),
            (GOOD.replace("h_bucket{le=\"+Inf\"} 2", "h_bucket{le=\"+Inf\"} 0"), "not cumulative"),
            (GOOD.replace("h_count 2", "h_count 3"), "+Inf is not _count"),
            (GOOD.replace("h_bucket{le=\"+Inf\"} 2\n", ""), "no +Inf"),
            (
                GOOD.replace("counter", "gauge").replace("a_total", "a").replace("gauge", "counter"),
                "counter without _total",
            ),
            (format!("{GOOD}a_total{{x=\"r\"}} 1\n"), "family split"),
            (GOOD.replace("} 1\n#", "} one\n#"), "bad value"),
        ] {
            assert!(parse(&bad).is_err(), "{why}: taken:\n{bad}");
        }
    }
}
