//! Credential-carrying fields: references load and are kept as references; inline
//! credentials lint with a warning that suggests `valueFrom`; broken references are errors.

use std::collections::BTreeMap;

use cutover_core::diagnostic::{Code, Severity};
use cutover_core::load::{self, Document, Format, Source};
use cutover_core::spec::{Provider, SecretSource, SecretValue};

const RELEASE: &str = r#"apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: shop
spec:
  backend:
    swarm: {service: shop, network: shop-net}
  image: shop:v2
  port: 8080
  strategy:
    canary:
      steps:
        - setWeight: 20
        - analysis: {}
  hooks:
    preRollout:
      - url: HOOK_URL
        headers:
          HOOK_HEADERS
  analysis:
    metrics:
      - name: errors
        provider:
          web:
            url: http://metrics.example/errors
            jsonPointer: /value
            headers:
              WEB_HEADERS
        max: 0.01
      - name: prom
        provider:
          prometheus:
            address: http://prometheus.example:9090
            query: sum(up)
            bearerTokenFrom: {file: /run/secrets/prometheus}
        max: 1
"#;

fn load(hook_url: &str, hook_headers: &str, web_headers: &str) -> load::Loaded {
    let text = RELEASE
        .replace("HOOK_URL", hook_url)
        .replace("HOOK_HEADERS", hook_headers)
        .replace("WEB_HEADERS", web_headers);
    load::load(
        Source {
            name: "release.yaml",
            text: &text,
            format: Format::Yaml,
        },
        &BTreeMap::new(),
    )
}

fn codes(loaded: &load::Loaded) -> Vec<(Severity, Code, String)> {
    loaded
        .diagnostics
        .iter()
        .map(|d| (d.severity, d.code, d.path.to_string()))
        .collect()
}

#[test]
fn references_load_as_references_and_raise_no_warning() {
    let loaded = load(
        "http://hooks.example/pre",
        "{Authorization: {valueFrom: {file: /run/secrets/hook}}, X-Trace: plain}",
        "{X-Api-Key: {valueFrom: {env: METRICS_KEY}}}",
    );
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let Some(Document::Release(release)) = loaded.document else {
        panic!("a release");
    };
    let hook = &release.spec.hooks.pre_rollout[0];
    assert_eq!(
        hook.headers["Authorization"].reference(),
        Some(&SecretSource::File("/run/secrets/hook".into()))
    );
    assert_eq!(hook.headers["X-Trace"], SecretValue::Inline("plain".into()));
    let Provider::Web(web) = &release.spec.analysis.metrics[0].provider else {
        panic!("web");
    };
    assert_eq!(
        web.headers["X-Api-Key"].reference(),
        Some(&SecretSource::Env("METRICS_KEY".into()))
    );
    let Provider::Prometheus(prometheus) = &release.spec.analysis.metrics[1].provider else {
        panic!("prometheus");
    };
    assert_eq!(
        prometheus.bearer_token_from,
        Some(SecretSource::File("/run/secrets/prometheus".into()))
    );
    // What is stored (the release as JSON) holds the reference, not a value.
    let stored = serde_json::to_string(&release).expect("json");
    assert!(
        stored.contains(r#"{"valueFrom":{"file":"/run/secrets/hook"}}"#),
        "{stored}"
    );
}

#[test]
fn a_url_can_be_a_reference_too() {
    let loaded = load("{valueFrom: {env: HOOK_URL}}", "{}", "{}");
    assert!(loaded.diagnostics.is_empty(), "{:#?}", loaded.diagnostics);
    let Some(Document::Release(release)) = loaded.document else {
        panic!("a release");
    };
    assert_eq!(
        release.spec.hooks.pre_rollout[0].url.reference(),
        Some(&SecretSource::Env("HOOK_URL".into()))
    );
    let loaded = load("{valueFrom: {file: relative/url}}", "{}", "{}");
    let errors: Vec<String> = codes(&loaded)
        .into_iter()
        .filter(|(s, _, _)| *s == Severity::Error)
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(
        errors,
        vec!["spec.hooks.preRollout[0].url.valueFrom.file".to_string()]
    );
}

#[test]
fn inline_credentials_warn_and_suggest_value_from() {
    let loaded = load(
        "https://ci:hunter2@hooks.example/pre?token=abc&x=1",
        "{Authorization: Bearer abc, X-Trace: plain}",
        "{X-Api-Key: k3y}",
    );
    assert!(
        loaded.document.is_some(),
        "warnings only: {:#?}",
        loaded.diagnostics
    );
    let found = codes(&loaded);
    let warned: Vec<&str> = found
        .iter()
        .filter(|(s, c, _)| *s == Severity::Warning && *c == Code::InlineCredential)
        .map(|(_, _, p)| p.as_str())
        .collect();
    assert_eq!(warned.len(), 4, "{found:#?}");
    for path in [
        "spec.hooks.preRollout[0].url",
        "spec.hooks.preRollout[0].headers.Authorization",
        "spec.analysis.metrics[0].provider.web.headers.X-Api-Key",
    ] {
        assert!(warned.contains(&path), "{path} in {warned:?}");
    }
    let hint = loaded.diagnostics[0].hint.clone().unwrap_or_default();
    assert!(hint.contains("valueFrom"), "{hint}");
}

#[test]
fn references_that_cannot_work_are_errors() {
    let loaded = load(
        "http://hooks.example/pre",
        "{Authorization: {valueFrom: {file: secrets/hook}}}",
        "{X-Api-Key: {valueFrom: {env: 'NOT A NAME'}}}",
    );
    assert!(loaded.document.is_none());
    let errors: Vec<String> = codes(&loaded)
        .into_iter()
        .filter(|(s, _, _)| *s == Severity::Error)
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(
        errors,
        vec![
            "spec.hooks.preRollout[0].headers.Authorization.valueFrom.file".to_string(),
            "spec.analysis.metrics[0].provider.web.headers.X-Api-Key.valueFrom.env".to_string(),
        ]
    );
    // A reference with two sources, or an unknown one, does not load.
    let loaded = load(
        "http://hooks.example/pre",
        "{Authorization: {valueFrom: {file: /a, env: B}}}",
        "{}",
    );
    assert!(loaded.document.is_none(), "{:#?}", loaded.diagnostics);
}
