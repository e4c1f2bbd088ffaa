//! Prometheus's text exposition format, version 0.0.4: each family's `# HELP` and `# TYPE`
//! lines, then its samples, one a line, with label values and help text escaped.
use std::fmt::{Display, Write};

/// The media type a scraper is answered with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A page of families, written in order. A family's samples must follow its header: the
/// format has no way to come back to one.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// Starts family `name`; the samples written next belong to it.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {}", kind.name());
    }

    /// One sample: `name{label="value",...} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// A label value as the format quotes it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escapes() {
        let mut page = Exposition::default();
        page.family("netpath_things_total", Kind::Counter, "Things,\nseen \\ counted.");
        page.sample("netpath_things_total", &[("name", "a\"b\\c\nd"), ("x", "y")], 3);
        page.sample("netpath_things_total", &[], 0.5);
        assert_eq!(
            page.finish(),
            "# HELP netpath_things_total Things,\\nseen \\\\ counted.\n# TYPE netpath_things_total counter\n\
             netpath_things_total{name=\"a\\\"b\\\\c\\nd\",x=\"y\"} 3\nnetpath_things_total 0.5\n"
        );
    }
}
