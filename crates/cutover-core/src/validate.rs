//! Semantic checks: what serde cannot see, such as weights that go down, analysis steps
//! naming metrics that do not exist, or steps that cannot finish before the deadline.
//!
//! Each check appends [`Diagnostic`]s located through a [`Locator`], so a semantic
//! problem points at its line and column just as a typo does.

use std::collections::BTreeSet;

use crate::Duration;
use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin, Segment, did_you_mean};
use crate::load::node::{Node, Value};
use crate::plan::Plan;
use crate::spec::{
    API_VERSION, AnalysisSpec, AnalysisStep, Backend, BuiltinMetric, CanaryStep, EvidenceKind,
    GuardrailMetric, GuardrailSpec, HeaderRouteStep, HookSpec, HooksSpec, LocalSlot, MatchRule,
    MetricSpec, Provider, Release, StrategyDocument, StrategySpec, TrafficSpec,
};

/// Finds where a path was written, and knows which paths were set aside after a
/// structural error (checks about them would only repeat that error).
///
/// A section with a structural error is still checked on what did deserialize, so one
/// run reports every independent mistake. Two things keep that free of false alarms: a
/// list that lost an item has its indices mapped back to the items as written
/// ([`Locator::as_written`]), and a check about a value that lost a part of itself (a
/// pause whose duration was refused has no duration) is dropped with the part.
pub struct Locator<'a> {
    root: &'a Node,
    removed: &'a [FieldPath],
    set_aside: &'a [FieldPath],
}

impl<'a> Locator<'a> {
    /// A locator over the tree a document was deserialized from: `removed` are the paths
    /// where a structural error was reported, `set_aside` every path the deserializer set
    /// aside to go on (reported or not).
    pub fn new(root: &'a Node, removed: &'a [FieldPath], set_aside: &'a [FieldPath]) -> Self {
        Locator {
            root,
            removed,
            set_aside,
        }
    }

    fn origin(&self, path: &FieldPath) -> Origin {
        self.root.origin_of(path)
    }

    /// `path` in the deserialized value as a path in the file: the value's lists lack
    /// the items set aside, so its `steps[2]` may be the file's `steps[3]`.
    pub fn as_written(&self, path: &FieldPath) -> FieldPath {
        if self.set_aside.is_empty() {
            return path.clone();
        }
        let mut out = FieldPath::root();
        for segment in &path.0 {
            match segment {
                Segment::Key(k) => out = out.key(k),
                Segment::Index(wanted) => {
                    // The `wanted`-th item not set aside; ends within `wanted` plus the
                    // number of paths set aside.
                    let mut live = 0;
                    let mut index = 0;
                    loop {
                        if !self.set_aside.contains(&out.index(index)) {
                            if live == *wanted {
                                break;
                            }
                            live += 1;
                        }
                        index += 1;
                    }
                    out = out.index(index);
                }
            }
        }
        out
    }

    /// Whether nothing at or above `path` was set aside, so the value there is whole.
    fn intact(&self, path: &FieldPath) -> bool {
        !self.set_aside.iter().any(|p| path.starts_with(p))
    }

    /// Whether nothing at, above or under `path` was set aside.
    fn untouched(&self, path: &FieldPath) -> bool {
        !self
            .set_aside
            .iter()
            .any(|p| path.starts_with(p) || p.starts_with(path))
    }

    /// The `name`s written in the items of the list at `path` that were set aside: they
    /// are defined as far as the file's reader is concerned, so naming one is no mistake.
    fn names_set_aside(&self, path: &FieldPath) -> Vec<String> {
        let Some(Node {
            value: Value::Seq(items),
            ..
        }) = self.root.at(path)
        else {
            return Vec::new();
        };
        (0..items.len())
            .filter(|i| self.set_aside.contains(&path.index(*i)))
            .filter_map(|i| items[i].get("name")?.value.scalar_text())
            .collect()
    }

    /// Whether something at or under `path` (in the value) was set aside: an absent or
    /// default value there is the loader's doing, not the file's, so a check about its
    /// absence (a pause without a duration, a strategy without steps) would be false.
    fn lost(&self, path: &FieldPath) -> bool {
        let written = self.as_written(path);
        self.set_aside.iter().any(|p| p.starts_with(&written))
    }

    /// Whether a check at `path` (as written) would only repeat a reported error: it lies
    /// under the value refused.
    fn was_removed(&self, path: &FieldPath) -> bool {
        self.removed.iter().any(|r| path.starts_with(r))
    }
}

/// Collects diagnostics for one document.
struct Checker<'l, 'a> {
    at: &'l Locator<'a>,
    out: Vec<Diagnostic>,
}

impl Checker<'_, '_> {
    fn error(
        &mut self,
        code: Code,
        path: FieldPath,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let path = self.at.as_written(&path);
        let origin = self.at.origin(&path);
        self.out
            .push(Diagnostic::error(code, path, origin, message));
        self.out.last_mut().expect("just pushed")
    }

    fn warning(
        &mut self,
        code: Code,
        path: FieldPath,
        message: impl Into<String>,
    ) -> &mut Diagnostic {
        let path = self.at.as_written(&path);
        let origin = self.at.origin(&path);
        self.out
            .push(Diagnostic::warning(code, path, origin, message));
        self.out.last_mut().expect("just pushed")
    }

    fn finish(self) -> Vec<Diagnostic> {
        let at = self.at;
        self.out
            .into_iter()
            .filter(|d| !at.was_removed(&d.path))
            .collect()
    }
}

/// Checks a release.
pub fn release(release: &Release, at: &Locator<'_>) -> Vec<Diagnostic> {
    let mut c = Checker {
        at,
        out: Vec::new(),
    };
    header(&mut c, &release.api_version, &release.kind, "Release");
    name(&mut c, &release.metadata.name);
    let spec = FieldPath::of(&["spec"]);
    let r = &release.spec;

    match &r.backend {
        Backend::Local(local) => {
            let local_path = spec.key("backend").key("local");
            for (slot_name, slot) in [("stable", &local.stable), ("candidate", &local.candidate)] {
                local_slot(&mut c, local_path.key(slot_name), slot);
            }
            if r.image.is_some() {
                c.warning(
                    Code::Ignored,
                    spec.key("image"),
                    "'image' has no effect on the local backend",
                )
                .hint = Some("the candidate is 'backend.local.candidate'".into());
            }
        }
        Backend::Swarm(_) | Backend::Kubernetes(_) => {
            if r.image.as_deref().is_none_or(|i| i.trim().is_empty())
                && !c.at.lost(&spec.key("image"))
            {
                c.error(
                    Code::MissingField,
                    spec.clone(),
                    format!(
                        "the {} backend needs the new version's 'image'",
                        r.backend.name()
                    ),
                )
                .hint = Some("add 'image: registry/app:v2' under spec".into());
            }
        }
    }
    if r.replicas == Some(0) {
        c.error(
            Code::OutOfRange,
            spec.key("replicas"),
            "replicas must be at least 1",
        );
    }
    if r.port == 0 {
        c.error(
            Code::OutOfRange,
            spec.key("port"),
            "port must be between 1 and 65535",
        );
    }

    for (field, value) in [
        ("version", &r.version),
        ("stableVersion", &r.stable_version),
    ] {
        if let Some(value) = value {
            version_name(&mut c, spec.key(field), field, value);
        }
    }

    sections_into(&mut c, &Sections::of(release));
    c.finish()
}

/// Longest version name: a Docker tag's limit.
pub const VERSION_MAX_LEN: usize = 128;

/// Whether `name` may name a version: an image tag's grammar,
/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, so every tag an image can have is a valid version
/// name. Version names go into Prometheus label values, queries, URLs, HTTP headers and
/// backend labels; this set needs no quoting in any of them.
pub fn is_version_name(name: &str) -> bool {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    name.len() <= VERSION_MAX_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.bytes().all(allowed)
}

/// `version` and `stableVersion`: names in the set [`is_version_name`] allows, or an error
/// that names the set and suggests a name in it.
fn version_name(c: &mut Checker<'_, '_>, path: FieldPath, field: &str, name: &str) {
    // An empty one was refused by the loader, whatever layer left it empty.
    if is_version_name(name) || name.trim().is_empty() {
        return;
    }
    let mapped: String = name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '-') {
                ch
            } else {
                '-'
            }
        })
        .collect();
    let suggestion: String = mapped
        .trim_start_matches(['.', '-'])
        .trim_end_matches('-')
        .chars()
        .take(VERSION_MAX_LEN)
        .collect();
    // As written, but control characters made visible and a long name cut short.
    let mut shown = String::new();
    for ch in name.chars().take(80) {
        if ch.is_control() {
            shown.extend(ch.escape_default());
        } else {
            shown.push(ch);
        }
    }
    let d = c.error(
        Code::InvalidValue,
        path,
        format!(
            "'{shown}' is not a valid {field}: use letters, digits, '_', '.' and '-', starting with a letter, digit or '_', at most {VERSION_MAX_LEN} characters (the characters of an image tag)"
        ),
    );
    d.hint = Some(if suggestion.is_empty() {
        "name the version like an image tag, e.g. 'v2' or '1.4.0-rc.1'".into()
    } else {
        format!("try '{suggestion}'")
    });
}

/// The sections of a release's spec that are checked on their own, so they can be
/// checked even when another part of the file is too broken to build a whole release.
#[derive(Clone, Copy, Default)]
pub struct Sections<'r> {
    /// `spec.traffic`.
    pub traffic: Option<&'r TrafficSpec>,
    /// `spec.strategy`.
    pub strategy: Option<&'r StrategySpec>,
    /// `spec.analysis`.
    pub analysis: Option<&'r AnalysisSpec>,
    /// `spec.guardrails`.
    pub guardrails: Option<&'r [GuardrailSpec]>,
    /// `spec.hooks`.
    pub hooks: Option<&'r HooksSpec>,
}

impl<'r> Sections<'r> {
    /// Every section of a whole release.
    pub fn of(release: &'r Release) -> Self {
        let spec = &release.spec;
        Sections {
            traffic: Some(&spec.traffic),
            strategy: Some(&spec.strategy),
            analysis: Some(&spec.analysis),
            guardrails: Some(&spec.guardrails),
            hooks: Some(&spec.hooks),
        }
    }
}

/// Checks the sections that could be read.
pub fn sections(s: &Sections<'_>, at: &Locator<'_>) -> Vec<Diagnostic> {
    let mut c = Checker {
        at,
        out: Vec::new(),
    };
    sections_into(&mut c, s);
    c.finish()
}

fn sections_into(c: &mut Checker<'_, '_>, s: &Sections<'_>) {
    let spec = FieldPath::of(&["spec"]);
    let traffic = spec.key("traffic");
    if let Some(prefix) = s.traffic.and_then(|t| t.path_prefix.as_ref())
        && !prefix.starts_with('/')
    {
        c.error(
            Code::InvalidValue,
            traffic.key("pathPrefix"),
            format!("path prefix '{prefix}' must start with '/'"),
        )
        .hint = Some(format!("write '/{prefix}'"));
    }
    if let Some(t) = s.traffic {
        match_rules(c, &traffic.key("match"), &t.match_rules);
    }

    let analysis_path = spec.key("analysis");
    let metrics_path = analysis_path.key("metrics");
    // A metric set aside after an error in it is still defined as written; metrics lost
    // as a whole (`metrics: 5`) leave the names unknown.
    let analysis_intact = s.analysis.is_some() && c.at.intact(&metrics_path);
    let set_aside_names = c.at.names_set_aside(&metrics_path);
    let metric_names: Vec<&str> = s
        .analysis
        .map(|a| {
            a.metrics
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .chain(set_aside_names.iter().map(String::as_str))
        .collect();
    if let Some(strat) = s.strategy {
        strategy(
            c,
            &spec.key("strategy"),
            strat,
            analysis_intact.then_some(metric_names.as_slice()),
        );
        let defined = s.analysis.map(|a| a.metrics.as_slice()).unwrap_or_default();
        // Durations refused in either section would make the timeline a guess.
        let whole = c.at.untouched(&spec.key("strategy")) && c.at.untouched(&analysis_path);
        if whole && let Ok(plan) = Plan::from_strategy(strat, defined) {
            deadline(
                c,
                &spec.key("strategy").key("progressDeadline"),
                &plan,
                strat.progress_deadline,
            );
        }
    }
    if let Some(analysis) = s.analysis {
        metrics(c, &analysis_path.key("metrics"), &analysis.metrics);
    }

    let mut guardrail_names = BTreeSet::new();
    for (i, g) in s.guardrails.unwrap_or_default().iter().enumerate() {
        let path = spec.key("guardrails").index(i);
        if !guardrail_names.insert(g.name.as_str()) {
            c.error(
                Code::DuplicateName,
                path.key("name"),
                format!("a guardrail named '{}' is already defined", g.name),
            );
        }
        if g.metric == GuardrailMetric::ErrorRate && !(0.0..=1.0).contains(&g.max) {
            c.error(
                Code::OutOfRange,
                path.key("max"),
                format!("an error rate is a ratio between 0 and 1, found {}", g.max),
            )
            .hint = Some(format!("for {}%, write {}", g.max, g.max / 100.0));
        }
        if g.max.is_nan() || g.max < 0.0 {
            c.error(
                Code::OutOfRange,
                path.key("max"),
                "max must be a non-negative number",
            );
        }
        if g.window == Duration::ZERO {
            c.error(
                Code::OutOfRange,
                path.key("window"),
                "window must be longer than 0s",
            );
        }
    }

    if let Some(h) = s.hooks {
        for (point, hooks) in [
            ("preRollout", &h.pre_rollout),
            ("prePromotion", &h.pre_promotion),
            ("postPromotion", &h.post_promotion),
            ("onRollback", &h.on_rollback),
        ] {
            for (i, hook) in hooks.iter().enumerate() {
                hook_spec(c, spec.key("hooks").key(point).index(i), hook);
            }
        }
    }
}

/// Checks a strategy preset document.
pub fn strategy_document(doc: &StrategyDocument, at: &Locator<'_>) -> Vec<Diagnostic> {
    let mut c = Checker {
        at,
        out: Vec::new(),
    };
    header(&mut c, &doc.api_version, &doc.kind, "Strategy");
    name(&mut c, &doc.metadata.name);
    let path = FieldPath::of(&["spec"]);
    if doc.spec.preset.is_some() {
        c.error(
            Code::Conflict,
            path.key("use"),
            "a preset cannot use another preset",
        )
        .hint = Some("copy the steps you want instead".into());
    }
    strategy(&mut c, &path, &doc.spec, None);
    if let Ok(plan) = Plan::from_strategy(&doc.spec, &[]) {
        deadline(
            &mut c,
            &path.key("progressDeadline"),
            &plan,
            doc.spec.progress_deadline,
        );
    }
    c.finish()
}

fn header(c: &mut Checker<'_, '_>, api_version: &str, kind: &str, expected_kind: &str) {
    if api_version != API_VERSION {
        c.error(
            Code::InvalidValue,
            FieldPath::of(&["apiVersion"]),
            format!("unsupported apiVersion '{api_version}'"),
        )
        .hint = Some(format!("this version of cutover reads '{API_VERSION}'"));
    }
    if kind != expected_kind {
        c.error(
            Code::InvalidValue,
            FieldPath::of(&["kind"]),
            format!("expected kind '{expected_kind}', found '{kind}'"),
        );
    }
}

fn name(c: &mut Checker<'_, '_>, name: &str) {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !valid {
        let suggestion: String = name
            .to_lowercase()
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
            .collect::<String>()
            .trim_matches('-')
            .chars()
            .take(63)
            .collect();
        let d = c.error(
            Code::InvalidValue,
            FieldPath::of(&["metadata", "name"]),
            format!("'{name}' is not a valid name: use lowercase letters, digits and '-', at most 63 characters"),
        );
        if !suggestion.is_empty() {
            d.hint = Some(format!("try '{suggestion}'"));
        }
    }
}

fn local_slot(c: &mut Checker<'_, '_>, path: FieldPath, slot: &LocalSlot) {
    match slot {
        LocalSlot::Addresses(addresses) => {
            let path = path.key("addresses");
            if addresses.is_empty() {
                c.error(
                    Code::MissingField,
                    path.clone(),
                    "at least one address is needed",
                );
            }
            for (i, address) in addresses.iter().enumerate() {
                let valid = address.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !valid {
                    c.error(
                        Code::InvalidValue,
                        path.index(i),
                        format!("'{address}' is not a host:port address"),
                    )
                    .hint = Some("write it like '127.0.0.1:8081' or 'app-1.internal:8080'".into());
                }
            }
        }
        LocalSlot::Command(argv) => {
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                c.error(
                    Code::MissingField,
                    path.key("command"),
                    "the command needs at least a program",
                )
                .hint = Some("write it as a list: ['./app', '--port', '{{port}}']".into());
            }
        }
    }
}

fn match_rules(c: &mut Checker<'_, '_>, path: &FieldPath, rules: &[MatchRule]) {
    for (i, rule) in rules.iter().enumerate() {
        let path = path.index(i);
        match (&rule.header, &rule.cookie) {
            (Some(_), Some(_)) => {
                c.error(
                    Code::Conflict,
                    path.clone(),
                    "a rule matches either a header or a cookie, not both",
                )
                .hint = Some("split it into two rules".into());
            }
            (None, None) => {
                c.error(
                    Code::MissingField,
                    path.clone(),
                    "a rule needs 'header' or 'cookie'",
                );
            }
            _ => {}
        }
        if rule.exact.is_some() && rule.regex.is_some() {
            c.error(
                Code::Conflict,
                path.clone(),
                "'exact' and 'regex' cannot both be set",
            );
        }
        if let Some(pattern) = &rule.regex
            && let Err(e) = regex_syntax::Parser::new().parse(pattern)
        {
            let message = e.to_string();
            let last = message.lines().last().unwrap_or("").trim();
            let last = last.strip_prefix("error: ").unwrap_or(last);
            c.error(
                Code::InvalidValue,
                path.key("regex"),
                format!("invalid regular expression: {last}"),
            );
        }
    }
}

fn strategy(c: &mut Checker<'_, '_>, path: &FieldPath, s: &StrategySpec, metrics: Option<&[&str]>) {
    match (&s.canary, &s.blue_green) {
        (Some(_), Some(_)) => {
            c.error(
                Code::Conflict,
                path.clone(),
                "a strategy is either 'canary' or 'blueGreen', not both",
            );
        }
        (None, None) if !c.at.lost(&path.key("canary")) && !c.at.lost(&path.key("blueGreen")) => {
            c.error(
                Code::MissingField,
                path.clone(),
                "the strategy needs 'canary' steps or a 'blueGreen' block",
            )
            .hint = Some(format!(
                "or start from a preset: 'use: canary-progressive' (presets: {})",
                crate::load::preset_names().collect::<Vec<_>>().join(", ")
            ));
        }
        _ => {}
    }
    if s.progress_deadline == Duration::ZERO {
        c.error(
            Code::OutOfRange,
            path.key("progressDeadline"),
            "progressDeadline must be longer than 0s",
        );
    }
    if let Some(canary) = &s.canary {
        let steps_path = path.key("canary").key("steps");
        if canary.steps.is_empty() && !c.at.lost(&steps_path) {
            c.warning(
                Code::Ignored,
                steps_path.clone(),
                "no steps: the candidate takes all traffic at once",
            )
            .hint = Some(
                "add 'setWeight' steps, or use the blueGreen strategy for an all-at-once switch"
                    .into(),
            );
        }
        let mut last_weight: Option<(u32, usize)> = None;
        for (i, step) in canary.steps.iter().enumerate() {
            let step_path = steps_path.index(i);
            match step {
                CanaryStep::SetWeight(w) => {
                    let weight_path = step_path.key("setWeight");
                    if *w > 100 {
                        c.error(
                            Code::OutOfRange,
                            weight_path,
                            format!("weight {w} is above 100"),
                        )
                        .hint = Some("weights are percentages from 0 to 100".into());
                    } else if let Some((previous, at)) = last_weight.filter(|(p, _)| *w < *p) {
                        let at = match c.at.as_written(&steps_path.index(at)).0.last() {
                            Some(Segment::Index(written)) => *written,
                            _ => at,
                        };
                        c.error(
                            Code::DecreasingWeight,
                            weight_path,
                            format!("weight goes down from {previous} (steps[{at}]) to {w}"),
                        )
                        .hint = Some("weights must not decrease; a decrease is almost always a typo (use 'cutover abort' to roll back)".into());
                    }
                    if *w <= 100 {
                        last_weight = Some((last_weight.map_or(*w, |(p, _)| p.max(*w)), i));
                    }
                }
                CanaryStep::Pause(pause) => {
                    if pause.duration.is_none()
                        && !c.at.lost(&step_path.key("pause").key("duration"))
                    {
                        c.warning(
                            Code::ManualGate,
                            step_path.key("pause"),
                            "this pause has no duration: the rollout waits here for 'cutover promote'",
                        )
                        .hint = Some("in CI, 'cutover run --wait' blocks until --timeout; give it a duration like 'pause: {duration: 5m}'".into());
                    }
                }
                CanaryStep::Analysis(step) => {
                    analysis_ref(c, &step_path.key("analysis"), step, metrics);
                }
                CanaryStep::SetHeaderRoute(route) => {
                    header_route(c, &step_path.key("setHeaderRoute"), route);
                }
                CanaryStep::Mirror(mirror) => {
                    if mirror.percent > 100 {
                        c.error(
                            Code::OutOfRange,
                            step_path.key("mirror").key("percent"),
                            format!("mirror percent {} is above 100", mirror.percent),
                        );
                    }
                }
            }
        }
    }
    if let Some(bg) = &s.blue_green {
        let bg_path = path.key("blueGreen");
        if let Some(preview) = &bg.preview_traffic {
            header_route(c, &bg_path.key("previewTraffic"), preview);
        }
        if !bg.auto_promotion {
            c.warning(
                Code::ManualGate,
                bg_path.key("autoPromotion"),
                "autoPromotion is off: the switch waits for 'cutover promote'",
            )
            .hint = Some("in CI, 'cutover run --wait' blocks until --timeout".into());
            if bg.auto_promotion_seconds.is_some() {
                c.warning(
                    Code::Ignored,
                    bg_path.key("autoPromotionSeconds"),
                    "autoPromotionSeconds has no effect while autoPromotion is false",
                );
            }
        }
        if let Some(step) = &bg.pre_promotion_analysis {
            analysis_ref(c, &bg_path.key("prePromotionAnalysis"), step, metrics);
        }
        if let Some(step) = &bg.post_promotion_analysis {
            analysis_ref(c, &bg_path.key("postPromotionAnalysis"), step, metrics);
        }
    }
}

fn header_route(c: &mut Checker<'_, '_>, path: &FieldPath, route: &HeaderRouteStep) {
    match_rules(c, &path.key("match"), &route.match_rules);
}

/// `metrics` is `None` where the metrics are not known (presets) or were set aside.
fn analysis_ref(
    c: &mut Checker<'_, '_>,
    path: &FieldPath,
    step: &AnalysisStep,
    metrics: Option<&[&str]>,
) {
    let Some(defined) = metrics else {
        return;
    };
    if defined.is_empty() {
        c.error(
            Code::UndefinedMetric,
            path.clone(),
            "this analysis has no metric to run: spec.analysis.metrics is empty",
        )
        .hint = Some(
            "define one, e.g. '- {name: errors, provider: {builtin: error_rate}, max: 0.01}'"
                .into(),
        );
        return;
    }
    for (i, wanted) in step.metrics.iter().enumerate() {
        if !defined.contains(&wanted.as_str()) {
            let d = c.error(
                Code::UndefinedMetric,
                path.key("metrics").index(i),
                format!("no metric named '{wanted}' in spec.analysis.metrics"),
            );
            d.hint = did_you_mean(wanted, defined.iter().copied())
                .or_else(|| Some(format!("defined metrics: {}", defined.join(", "))));
        }
    }
}

const PLACEHOLDERS: [&str; 5] = ["release", "stable", "candidate", "interval", "version"];

fn metrics(c: &mut Checker<'_, '_>, path: &FieldPath, metrics: &[MetricSpec]) {
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
        let provider = path.key("provider");
        match &m.provider {
            Provider::Prometheus(p) => {
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
                    .hint = Some("proxyMetric reads the proxy's own series as evidence; query runs your PromQL".into());
                }
                if p.proxy_metric == Some(BuiltinMetric::RequestRate) {
                    c.error(
                        Code::InvalidValue,
                        provider.key("prometheus").key("proxyMetric"),
                        "request_rate is not evidence a test can judge",
                    )
                    .hint = Some(
                        "use error_rate or a latency quantile (latency_p50 ... latency_p99)".into(),
                    );
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
            Provider::Web(w) => {
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
            Provider::Builtin(_) => {}
        }
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
                    format!(
                        "'compare' needs stable's value too, but this {field} has no {{{{version}}}}"
                    ),
                )
                .hint = Some(format!(
                    "write {{{{version}}}} where the version goes; the {field} then runs once for stable and once for the candidate"
                ));
            }
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

fn url(c: &mut Checker<'_, '_>, path: &FieldPath, url: &str) {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        c.error(
            Code::InvalidValue,
            path.clone(),
            format!(
                "'{}' is not an http:// or https:// URL",
                crate::spec::secret::redact_url(url)
            ),
        );
    }
}

fn hook_spec(c: &mut Checker<'_, '_>, path: FieldPath, hook: &HookSpec) {
    match &hook.url {
        crate::spec::SecretValue::Inline(u) => url(c, &path.key("url"), u),
        crate::spec::SecretValue::Reference(r) => {
            secret_source(c, &path.key("url").key("valueFrom"), &r.value_from);
        }
    }
    credentials(
        c,
        &path,
        hook.url.inline().map(|u| ("url", u)),
        &hook.headers,
    );
    if hook.timeout == Duration::ZERO {
        c.error(
            Code::OutOfRange,
            path.key("timeout"),
            "timeout must be longer than 0s",
        );
    }
}

fn deadline(c: &mut Checker<'_, '_>, path: &FieldPath, plan: &Plan, deadline: Duration) {
    let needed = plan.minimum_duration();
    if needed > deadline {
        let d = c.error(
            Code::DeadlineTooShort,
            path.clone(),
            format!("the steps take at least {needed}, longer than progressDeadline {deadline}, so every rollout would roll back"),
        );
        d.hint = Some(format!("raise progressDeadline to at least {needed}"));
    }
}

/// Credentials written inline (warnings: they are stored with the release, in the state
/// file, a Kubernetes annotation or Swarm labels) and references that cannot work (errors).
/// `path` is the object holding `headers` and the URL (`url`: its field name and value).
fn credentials(
    c: &mut Checker<'_, '_>,
    path: &FieldPath,
    url: Option<(&str, &str)>,
    headers: &std::collections::BTreeMap<String, crate::spec::SecretValue>,
) {
    use crate::spec::secret::{is_credential_header, url_credentials};
    if let Some((field, url)) = url {
        for what in url_credentials(url) {
            c.warning(
                Code::InlineCredential,
                path.key(field),
                format!("{what} is written inline, and stored with the release"),
            )
            .hint = Some(format!(
                "give the URL by reference ({field}: {{valueFrom: {{file: /run/secrets/NAME}}}}), or send the credential in a header given by reference"
            ));
        }
    }
    for (name, value) in headers {
        let at = path.key("headers").key(name);
        match value.reference() {
            None if is_credential_header(name) => {
                c.warning(
                    Code::InlineCredential,
                    at,
                    format!("header '{name}' looks like a credential and is written inline, so it is stored with the release"),
                )
                .hint = Some(format!(
                    "give it by reference, read by the controller at each use: {name}: {{valueFrom: {{file: /run/secrets/NAME}}}} or {{valueFrom: {{env: NAME}}}}"
                ));
            }
            None => {}
            Some(source) => secret_source(c, &at.key("valueFrom"), source),
        }
    }
}

/// A reference must name an absolute file or an environment variable.
fn secret_source(c: &mut Checker<'_, '_>, path: &FieldPath, source: &crate::spec::SecretSource) {
    use crate::spec::SecretSource;
    match source {
        SecretSource::File(file) if !file.starts_with('/') => {
            c.error(
                Code::InvalidValue,
                path.key("file"),
                format!("'{file}' is not an absolute path"),
            )
            .hint = Some(
                "the controller reads it, from its own working directory: give the full path"
                    .into(),
            );
        }
        SecretSource::Env(name)
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            c.error(
                Code::InvalidValue,
                path.key("env"),
                format!("'{name}' is not an environment variable name (letters, digits, '_')"),
            );
        }
        _ => {}
    }
}
