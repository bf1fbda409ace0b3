//! Prometheus's text exposition format (version 0.0.4), written once for every `/metrics`
//! in the workspace: the proxy's and the controller's.
//!
//! It only builds text: the exporters keep their own counters and call these functions to
//! write them out. Label values are escaped as the format asks (backslash, double quote and
//! newline), and so is `# HELP` text (backslash and newline), so that a release or version
//! name with any of those characters cannot break a line or forge a series.

use std::borrow::Cow;
use std::fmt::{Display, Write as _};

/// What a metric family is, for its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Only goes up (or resets to zero on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative `_bucket` series with `le`, plus `_sum` and `_count`.
    Histogram,
}

impl MetricType {
    fn name(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// A label set rendered once (`release="shop",version="v2"`) and reused for every sample
/// of a series, with each value escaped as it is added.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(String);

impl Labels {
    /// No labels: samples are written without braces.
    pub fn new() -> Labels {
        Labels::default()
    }

    /// Adds `name="value"`, the value escaped. `name` must be a valid label name: the
    /// exporters pass literals.
    #[must_use]
    pub fn with(mut self, name: &str, value: &str) -> Labels {
        if !self.0.is_empty() {
            self.0.push(',');
        }
        let _ = write!(self.0, "{name}=\"{}\"", escape_label_value(value));
        self
    }

    /// The rendered pairs, without braces.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Escapes a label value: `\` as `\\`, `"` as `\"`, a newline as `\n`.
pub fn escape_label_value(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Escapes `# HELP` text: `\` as `\\`, a newline as `\n` (quotes stay as they are).
pub fn escape_help(text: &str) -> Cow<'_, str> {
    if !text.contains(['\\', '\n']) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.replace('\\', "\\\\").replace('\n', "\\n"))
}

/// Writes a family's `# HELP` and `# TYPE` lines.
pub fn write_family(out: &mut String, name: &str, help: &str, kind: MetricType) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {}", kind.name());
}

/// Writes one sample: `name{labels} value`, or `name value` without labels.
pub fn write_sample(out: &mut String, name: &str, labels: &Labels, value: impl Display) {
    if labels.0.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {value}", labels.0);
    }
}

/// Writes a family's `# HELP` and `# TYPE` lines, then one sample per `(labels, value)`.
pub fn write_samples<V: Display>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, V)>,
) {
    write_family(out, name, help, kind);
    for (labels, value) in samples {
        write_sample(out, name, &labels, value);
    }
}

/// Writes a histogram's series: a `_bucket` per `(upper bound, cumulative count)`, the
/// `+Inf` bucket holding `count`, then `_sum` and `_count`.
pub fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &Labels,
    buckets: impl IntoIterator<Item = (f64, u64)>,
    sum: f64,
    count: u64,
) {
    let bucket = format!("{name}_bucket");
    for (bound, n) in buckets {
        write_sample(out, &bucket, &le(labels, &bound.to_string()), n);
    }
    write_sample(out, &bucket, &le(labels, "+Inf"), count);
    write_sample(out, &format!("{name}_sum"), labels, sum);
    write_sample(out, &format!("{name}_count"), labels, count);
}

fn le(labels: &Labels, bound: &str) -> Labels {
    labels.clone().with("le", bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label_value("plain"), "plain");
        assert!(matches!(escape_label_value("plain"), Cow::Borrowed(_)));
        assert_eq!(escape_label_value("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let labels = Labels::new().with("release", "x\"} 1\nforged 2");
        assert_eq!(labels.as_str(), "release=\"x\\\"} 1\\nforged 2\"");
    }

    #[test]
    fn help_text_escapes_backslash_and_newline_but_not_quotes() {
        assert_eq!(escape_help("say \"hi\""), "say \"hi\"");
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
        let mut out = String::new();
        write_family(&mut out, "x_total", "two\nlines", MetricType::Counter);
        assert_eq!(out, "# HELP x_total two\\nlines\n# TYPE x_total counter\n");
    }

    #[test]
    fn samples_without_labels_have_no_braces() {
        let mut out = String::new();
        write_sample(&mut out, "up", &Labels::new(), 1);
        write_sample(
            &mut out,
            "up",
            &Labels::new().with("a", "b").with("c", "d"),
            0.5,
        );
        assert_eq!(out, "up 1\nup{a=\"b\",c=\"d\"} 0.5\n");
    }

    #[test]
    fn a_family_is_its_help_and_type_then_its_samples() {
        let mut out = String::new();
        let samples = ["a", "b"].map(|v| (Labels::new().with("v", v), 1));
        write_samples(&mut out, "n", "Ns.", MetricType::Gauge, samples);
        assert_eq!(
            out,
            "# HELP n Ns.\n# TYPE n gauge\nn{v=\"a\"} 1\nn{v=\"b\"} 1\n"
        );
    }

    #[test]
    fn histograms_end_with_inf_sum_and_count() {
        let mut out = String::new();
        let labels = Labels::new().with("outcome", "promoted");
        write_histogram(&mut out, "d", &labels, [(0.5, 1), (60.0, 2)], 42.5, 3);
        assert_eq!(
            out,
            "d_bucket{outcome=\"promoted\",le=\"0.5\"} 1\n\
             d_bucket{outcome=\"promoted\",le=\"60\"} 2\n\
             d_bucket{outcome=\"promoted\",le=\"+Inf\"} 3\n\
             d_sum{outcome=\"promoted\"} 42.5\n\
             d_count{outcome=\"promoted\"} 3\n"
        );
        let mut bare = String::new();
        write_histogram(&mut bare, "l", &Labels::new(), [(1.0, 0)], 0.0, 0);
        assert_eq!(
            bare,
            "l_bucket{le=\"1\"} 0\nl_bucket{le=\"+Inf\"} 0\nl_sum 0\nl_count 0\n"
        );
    }
}
