//! Semantic checks: what serde cannot see, such as weights that go down, analysis steps
//! naming metrics that do not exist, or steps that cannot finish before the deadline.
//!
//! Each check appends [`Diagnostic`]s located through a [`Locator`], so a semantic
//! problem points at its line and column just as a typo does.

use std::collections::BTreeSet;

use crate::Duration;
use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin, Segment};
use crate::load::node::{Node, Value};
use crate::plan::Plan;
use crate::spec::{
    API_VERSION, AnalysisSpec, Backend, DockerTarget, GuardrailMetric, GuardrailSpec, HookSpec,
    HooksSpec, LocalSlot, NotificationSpec, Release, StrategyDocument, StrategySpec, TrafficSpec,
};

mod metrics;
mod notifications;
mod strategy;
use metrics::metrics;
use notifications::notification;
pub use notifications::notifications;
use strategy::{match_rules, strategy};

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
        Backend::Swarm(_) | Backend::Kubernetes(_) | Backend::Docker(_) => {
            if let Backend::Docker(docker) = &r.backend {
                docker_target(&mut c, spec.key("backend").key("docker"), docker);
            }
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
    /// `spec.notifications`.
    pub notifications: Option<&'r [NotificationSpec]>,
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
            notifications: Some(&spec.notifications),
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

    for (i, n) in s.notifications.unwrap_or_default().iter().enumerate() {
        notification(c, &spec.key("notifications").index(i), n);
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

/// The Docker backend's choice of stable containers: exactly one of `service`,
/// `containers` and `label`, and `project` only beside `service`.
fn docker_target(c: &mut Checker<'_, '_>, path: FieldPath, docker: &DockerTarget) {
    let chosen = [
        docker.service.is_some(),
        !docker.containers.is_empty(),
        docker.label.is_some(),
    ]
    .iter()
    .filter(|chosen| **chosen)
    .count();
    if chosen != 1 {
        c.error(
            if chosen == 0 {
                Code::MissingField
            } else {
                Code::Conflict
            },
            path.clone(),
            "the docker backend needs exactly one of 'service', 'containers' and 'label'",
        )
        .hint = Some(
            "a Compose service: 'service: web' (and 'project: shop'); or 'containers: [web-1]'; or 'label: app=web'"
                .into(),
        );
    }
    if docker.project.is_some() && docker.service.is_none() {
        c.error(
            Code::MissingField,
            path.key("service"),
            "'project' chooses a Compose project's service: name it with 'service'",
        );
    }
    for (key, value) in [
        ("project", &docker.project),
        ("service", &docker.service),
        ("label", &docker.label),
        ("network", &docker.network),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            c.error(
                Code::InvalidValue,
                path.key(key),
                format!("'{key}' is empty"),
            );
        }
    }
    if docker.containers.iter().any(|name| name.trim().is_empty()) {
        c.error(
            Code::InvalidValue,
            path.key("containers"),
            "a container name is empty",
        );
    }
    if !docker.readiness_path.starts_with('/') {
        c.error(
            Code::InvalidValue,
            path.key("readinessPath"),
            "the readiness path must start with '/'",
        );
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
