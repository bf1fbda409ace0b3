//! Checks of `spec.analysis.metrics`: names, providers, limits, comparisons with stable,
//! the tests on evidence and the placeholders of queries and URLs.

use std::collections::BTreeSet;

use super::{Checker, credentials, secret_source, url};
use crate::Duration;
use crate::diagnostic::{Code, FieldPath, did_you_mean};
use crate::spec::{
    BuiltinMetric, Comparison, EvidenceKind, MetricSpec, PrometheusProvider, Provider, WebProvider,
};

const PLACEHOLDERS: [&str; 5] = ["release", "stable", "candidate", "interval", "version"];

pub(super) fn metrics(c: &mut Checker<'_, '_>, path: &FieldPath, metrics: &[MetricSpec]) {
    let mut names = BTreeSet::new();
    for (i, m) in metrics.iter().enumerate() {
        let path = path.index(i);
        if m.name.trim().is_empty() {
            c.error(
                Code::MissingField,
                path.key("name"),
                "a metric needs a name",
            );
        } else if !names.insert(m.name.as_str()) {
            c.error(
                Code::DuplicateName,
                path.key("name"),
                format!("a metric named '{}' is already defined", m.name),
            )
            .hint = Some("metric names must be unique; analysis steps refer to them".into());
        }
        provider(c, &path.key("provider"), &m.provider);
        let compare_has_check = m.compare.as_ref().is_some_and(|k| {
            k.max_increase.is_some() || k.max_increase_percent.is_some() || k.mann_whitney.is_some()
        });
        if m.min.is_none() && m.max.is_none() && !compare_has_check {
            c.error(
                Code::IncompleteMetric,
                path.clone(),
                format!(
                    "metric '{}' has nothing to check, so it could never fail",
                    m.name
                ),
            )
            .hint = Some("set 'max', 'min', or 'compare: {maxIncreasePercent: 20}'".into());
        }
        if let (Some(min), Some(max)) = (m.min, m.max)
            && min > max
        {
            c.error(
                Code::Conflict,
                path.key("min"),
                format!("min {min} is greater than max {max}, so every value fails"),
            );
        }
        for (field, value) in [("min", m.min), ("max", m.max)] {
            if value.is_some_and(f64::is_nan) {
                c.error(
                    Code::InvalidValue,
                    path.key(field),
                    "must be a number, not NaN",
                );
            }
        }
        if let Some(compare) = &m.compare {
            comparison(c, &path, m, compare);
        }
        if matches!(m.provider, Provider::Builtin(BuiltinMetric::ErrorRate)) {
            for (field, value) in [("min", m.min), ("max", m.max)] {
                if let Some(v) = value.filter(|v| !(0.0..=1.0).contains(v)) {
                    c.error(
                        Code::OutOfRange,
                        path.key(field),
                        format!("an error rate is a ratio between 0 and 1, found {v}"),
                    )
                    .hint = Some(format!("for {v}%, write {}", v / 100.0));
                }
            }
        }
        if m.count == 0 {
            c.error(
                Code::OutOfRange,
                path.key("count"),
                "count must be at least 1",
            );
        }
        evidence(c, &path, m);
        if m.interval == Duration::ZERO {
            c.error(
                Code::OutOfRange,
                path.key("interval"),
                "interval must be longer than 0s",
            );
        }
        if m.interval.saturating_mul(u64::from(m.count)) > crate::MAX_DURATION {
            c.error(
                Code::OutOfRange,
                path.key("count"),
                format!(
                    "{} measurements every {} take longer than a year",
                    m.count, m.interval
                ),
            );
        }
    }
}

/// The provider's own settings: what to query and where.
fn provider(c: &mut Checker<'_, '_>, provider: &FieldPath, spec: &Provider) {
    match spec {
        Provider::Prometheus(p) => prometheus(c, provider, p),
        Provider::Web(w) => web(c, provider, w),
        Provider::Builtin(_) => {}
    }
}

fn prometheus(c: &mut Checker<'_, '_>, provider: &FieldPath, p: &PrometheusProvider) {
    if p.query.trim().is_empty() && p.proxy_metric.is_none() {
        c.error(Code::IncompleteMetric, provider.key("prometheus").key("query"), "a prometheus metric needs a query or a proxyMetric")
                .hint = Some("e.g. proxyMetric: error_rate (the proxy's counters as evidence), or query: sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{candidate}}\",code_class=\"5xx\"}[{{interval}}]))".into());
    }
    if !p.query.trim().is_empty() && p.proxy_metric.is_some() {
        c.error(
            Code::Conflict,
            provider.key("prometheus").key("proxyMetric"),
            "give either query or proxyMetric, not both",
        )
        .hint = Some(
            "proxyMetric reads the proxy's own series as evidence; query runs your PromQL".into(),
        );
    }
    if p.proxy_metric == Some(BuiltinMetric::RequestRate) {
        c.error(
            Code::InvalidValue,
            provider.key("prometheus").key("proxyMetric"),
            "request_rate is not evidence a test can judge",
        )
        .hint = Some("use error_rate or a latency quantile (latency_p50 ... latency_p99)".into());
    }
    placeholders(c, &provider.key("prometheus").key("query"), &p.query);
    for name in unquoted_placeholders(&p.query) {
        c.warning(
                Code::InvalidValue,
                provider.key("prometheus").key("query"),
                format!("'{{{{{name}}}}}' stands outside quotes in the query: a value with '-' or '.' (such as 'shop-api' or '1.4.0') cannot be written there safely, and the measurement fails"),
            )
            .hint = Some(format!("write it inside a label matcher's quotes, as in {name}=\"{{{{{name}}}}}\""));
    }
    if let Some(address) = &p.address {
        url(c, &provider.key("prometheus").key("address"), address);
    }
    let prometheus = provider.key("prometheus");
    credentials(
        c,
        &prometheus,
        p.address.as_deref().map(|a| ("address", a)),
        &p.headers,
    );
    if let Some(source) = &p.bearer_token_from {
        secret_source(c, &prometheus.key("bearerTokenFrom"), source);
    }
}

fn web(c: &mut Checker<'_, '_>, provider: &FieldPath, w: &WebProvider) {
    let web = provider.key("web");
    match &w.url {
        crate::spec::SecretValue::Inline(u) => {
            url(c, &web.key("url"), u);
            placeholders(c, &web.key("url"), u);
        }
        crate::spec::SecretValue::Reference(r) => {
            secret_source(c, &web.key("url").key("valueFrom"), &r.value_from);
        }
    }
    credentials(c, &web, w.url.inline().map(|u| ("url", u)), &w.headers);
    if !(w.json_pointer.is_empty() || w.json_pointer.starts_with('/')) {
        c.error(
            Code::InvalidValue,
            provider.key("web").key("jsonPointer"),
            format!("'{}' is not a JSON pointer", w.json_pointer),
        )
        .hint = Some(format!(
            "JSON pointers start with '/': '/{}'",
            w.json_pointer.replace('.', "/")
        ));
    }
}

/// `compare`: limits on the increase over stable, the Mann-Whitney test's settings, and a
/// query or URL that can measure stable at all.
fn comparison(c: &mut Checker<'_, '_>, path: &FieldPath, m: &MetricSpec, compare: &Comparison) {
    let compare_path = path.key("compare");
    for (field, value) in [
        ("maxIncrease", compare.max_increase),
        ("maxIncreasePercent", compare.max_increase_percent),
    ] {
        if value.is_some_and(|v| v.is_nan() || v < 0.0) {
            c.error(
                Code::OutOfRange,
                compare_path.key(field),
                "must be zero or more",
            );
        }
    }
    if let Some(test) = &compare.mann_whitney {
        if !(test.confidence > 0.5 && test.confidence < 1.0) {
            c.error(
                Code::OutOfRange,
                compare_path.key("mannWhitney").key("confidence"),
                format!(
                    "confidence must be between 0.5 and 1, found {}",
                    test.confidence
                ),
            )
            .hint = Some("0.95 or 0.98 are usual".into());
        }
        if test.min_samples < 3 {
            c.error(
                Code::OutOfRange,
                compare_path.key("mannWhitney").key("minSamples"),
                "the test needs at least 3 samples per version",
            );
        }
        if test.min_effect_percent.is_nan() || test.min_effect_percent < 0.0 {
            c.error(
                Code::OutOfRange,
                compare_path.key("mannWhitney").key("minEffectPercent"),
                "minEffectPercent must be zero or more",
            );
        }
    }
    // A query or URL without {{version}} yields the candidate's value only.
    let per_version = match &m.provider {
        Provider::Prometheus(p) if p.proxy_metric.is_some() => None,
        Provider::Prometheus(p) => Some(("prometheus", "query", p.query.as_str())),
        // A URL given by reference is checked when it is read.
        Provider::Web(w) => w.url.inline().map(|u| ("web", "url", u)),
        Provider::Builtin(_) => None,
    };
    if let Some((provider, field, text)) = per_version
        && !has_placeholder(text, "version")
    {
        c.error(
            Code::IncompleteMetric,
            path.key("provider").key(provider).key(field),
            format!("'compare' needs stable's value too, but this {field} has no {{{{version}}}}"),
        )
        .hint = Some(format!(
            "write {{{{version}}}} where the version goes; the {field} then runs once for stable and once for the candidate"
        ));
    }
}

/// The settings of the tests on evidence: confidence, maxCount, and tolerances that a
/// candidate as good as stable can pass.
fn evidence(c: &mut Checker<'_, '_>, path: &FieldPath, m: &MetricSpec) {
    if !(m.confidence > 0.5 && m.confidence < 1.0) {
        c.error(
            Code::OutOfRange,
            path.key("confidence"),
            format!(
                "confidence must be between 0.5 and 1, found {}",
                m.confidence
            ),
        )
        .hint = Some("0.95 or 0.98 are usual".into());
    }
    if let Some(max_count) = m.max_count {
        if max_count < m.count {
            c.error(
                Code::Conflict,
                path.key("maxCount"),
                format!(
                    "maxCount {max_count} is below count {}: it is the most measurements, count the least",
                    m.count
                ),
            )
            .hint = Some(format!("set maxCount to {} or more, or remove it", m.count));
        } else if m.interval.saturating_mul(u64::from(max_count)) > crate::MAX_DURATION {
            c.error(
                Code::OutOfRange,
                path.key("maxCount"),
                format!(
                    "{max_count} measurements every {} take longer than a year",
                    m.interval
                ),
            );
        }
        if m.evidence_kind().is_none() {
            c.warning(
                Code::Ignored,
                path.key("maxCount"),
                "maxCount applies only to metrics judged on evidence (builtin error_rate and latency, or prometheus proxyMetric)",
            );
        }
    }
    if m.evidence_kind().is_some()
        && m.interval != Duration::ZERO
        && !m.interval.as_millis().is_multiple_of(1000)
    {
        c.error(
            Code::InvalidValue,
            path.key("interval"),
            format!(
                "the proxy keeps its evidence in whole seconds, so {} cannot be measured exactly",
                m.interval
            ),
        )
        .hint = Some(format!(
            "use whole seconds, e.g. interval: {}s",
            (m.interval.as_millis() / 1000).max(1)
        ));
    }
    let (Some(kind), Some(compare)) = (m.evidence_kind(), &m.compare) else {
        return;
    };
    if compare.direction != crate::spec::Direction::Increase
        && compare
            .mann_whitney
            .as_ref()
            .is_some_and(|t| t.min_effect_percent >= 100.0)
    {
        c.error(
            Code::OutOfRange,
            path.key("compare")
                .key("mannWhitney")
                .key("minEffectPercent"),
            "a drop of 100 % or more cannot be tested: latencies cannot fall below zero",
        )
        .hint = Some("use a percentage below 100, e.g. minEffectPercent: 50".into());
    }
    let compare_path = path.key("compare");
    for (field, value) in [
        ("maxIncrease", compare.max_increase),
        ("maxIncreasePercent", compare.max_increase_percent),
    ] {
        if value == Some(0.0) {
            c.error(
                Code::Conflict,
                compare_path.key(field),
                format!("{field} 0 tolerates no regression at all, so only a candidate measurably better than stable could ever pass"),
            )
            .hint = Some(match (field, kind) {
                ("maxIncrease", EvidenceKind::ErrorRate) => "allow the smallest increase that matters, e.g. maxIncrease: 0.005 (half a point)".into(),
                ("maxIncrease", _) => "allow the smallest increase that matters, e.g. maxIncrease: 0.01 (10 ms)".into(),
                _ => "allow the smallest increase that matters, e.g. maxIncreasePercent: 20".into(),
            });
        }
    }
    if let Some(test) = &compare.mann_whitney
        && test.min_effect_percent == 0.0
    {
        c.error(
            Code::Conflict,
            compare_path.key("mannWhitney").key("minEffectPercent"),
            "on evidence the candidate passes only when the test excludes a slowdown of minEffectPercent; at 0 only a measurably faster candidate could pass",
        )
        .hint = Some("set minEffectPercent: 10 (or the smallest slowdown that matters)".into());
    }
    if kind == EvidenceKind::ErrorRate && compare.max_increase_percent.is_some_and(|p| p > 0.0) {
        c.warning(
            Code::Conflict,
            compare_path.key("maxIncreasePercent"),
            "a relative limit on an error rate cannot pass while stable has no errors: any percentage of 0 is 0",
        )
        .hint = Some("compare error rates with an absolute tolerance instead, e.g. maxIncrease: 0.005 (half a point)".into());
    }
}

fn placeholders(c: &mut Checker<'_, '_>, path: &FieldPath, text: &str) {
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            c.error(
                Code::InvalidValue,
                path.clone(),
                "'{{' without a closing '}}'",
            );
            return;
        };
        let name = after[..end].trim();
        if !PLACEHOLDERS.contains(&name) {
            let d = c.error(
                Code::InvalidValue,
                path.clone(),
                format!("unknown placeholder '{{{{{name}}}}}'"),
            );
            d.hint = did_you_mean(name, PLACEHOLDERS)
                .map(|h| {
                    h.replace('\'', "")
                        .replace("did you mean ", "did you mean '{{")
                        .replace('?', "}}'?")
                })
                .or_else(|| {
                    Some(format!(
                        "placeholders: {}",
                        PLACEHOLDERS.map(|p| format!("{{{{{p}}}}}")).join(", ")
                    ))
                });
        }
        rest = &after[end + 2..];
    }
}

/// The placeholders of a PromQL query, other than `{{interval}}`, written outside any string
/// or comment. The Prometheus provider writes a value there only if it is letters, digits,
/// `_` and `:` (anything else could change the query), so release and version names,
/// which may hold `-` and `.`, belong inside quotes.
fn unquoted_placeholders(query: &str) -> Vec<&str> {
    #[derive(PartialEq)]
    enum At {
        Code,
        Quoted(char),
        Comment,
    }
    let mut found = Vec::new();
    let mut at = At::Code;
    let mut rest = query;
    while let Some(ch) = rest.chars().next() {
        if at == At::Code
            && let Some(after) = rest.strip_prefix("{{")
            && let Some(end) = after.find("}}")
        {
            let name = after[..end].trim();
            if PLACEHOLDERS.contains(&name) && name != "interval" && !found.contains(&name) {
                found.push(name);
            }
            rest = &after[end + 2..];
            continue;
        }
        let mut skip = ch.len_utf8();
        at = match (at, ch) {
            (At::Code, '"' | '\'' | '`') => At::Quoted(ch),
            (At::Code, '#') => At::Comment,
            (At::Quoted(q), '\\') if q != '`' => {
                skip += rest[skip..].chars().next().map_or(0, char::len_utf8);
                At::Quoted(q)
            }
            (At::Quoted(q), c) if c == q => At::Code,
            (At::Comment, '\n') => At::Code,
            (other, _) => other,
        };
        rest = &rest[skip..];
    }
    found
}

/// Whether `text` contains the placeholder `{{name}}` (spaces inside the braces allowed).
fn has_placeholder(text: &str, name: &str) -> bool {
    text.split("{{").skip(1).any(|rest| {
        rest.split("}}")
            .next()
            .is_some_and(|inner| inner.trim() == name)
    })
}
