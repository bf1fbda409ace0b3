//! Release files: parsing, layering, interpolation, and a diagnostic for every mistake.

use std::collections::BTreeMap;

use cutover_core::diagnostic::{Code, Diagnostic, Origin, Severity};
use cutover_core::load::{self, Document, Format, Source};
use cutover_core::spec::{Backend, CanaryStep, LocalSlot, Release};
use proptest::prelude::*;

const BASE: &str = r#"apiVersion: cutover.dev/v1
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
        - setWeight: 100
  analysis:
    metrics:
      - name: errors
        provider: {builtin: error_rate}
        max: 0.01
"#;

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_yaml(text: &str, env: &BTreeMap<String, String>) -> load::Loaded {
    load::load(
        Source {
            name: "release.yaml",
            text,
            format: Format::Yaml,
        },
        env,
    )
}

fn release(text: &str) -> Release {
    match load_yaml(text, &BTreeMap::new()) {
        load::Loaded {
            document: Some(Document::Release(r)),
            ..
        } => *r,
        other => panic!("not a valid release: {:#?}", other.diagnostics),
    }
}

/// Loads `text` and checks that exactly the `expected` codes are reported, in order.
#[track_caller]
fn check(text: &str, expected: &[Code]) -> Vec<Diagnostic> {
    let loaded = load_yaml(text, &BTreeMap::new());
    let codes: Vec<Code> = loaded.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, expected, "diagnostics: {:#?}", loaded.diagnostics);
    for d in &loaded.diagnostics {
        assert!(
            matches!(d.origin, Origin::File { .. }),
            "every diagnostic has a position: {d}"
        );
    }
    loaded.diagnostics
}

/// `BASE` with `from` replaced by `to`.
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_release_is_valid() {
    let r = release(BASE);
    assert_eq!(r.metadata.name, "shop");
    assert_eq!(
        r.spec.replicas, None,
        "defaults fill what the file leaves out"
    );
    assert_eq!(r.spec.strategy.progress_deadline.to_string(), "10m");
}

#[test]
fn three_mistakes_are_all_reported_with_place_and_suggestion() {
    let text = base_with(
        "        - setWeight: 100\n",
        "        - setWeight: 10\n        - analysis: {metrics: [erors]}\n",
    )
    .replace(
        "    metrics:\n      - name: errors\n",
        "    metrics:\n      - name: errors\n        minReqests: 10\n",
    );
    let diagnostics = check(
        &text,
        &[
            Code::DecreasingWeight,
            Code::UndefinedMetric,
            Code::UnknownField,
        ],
    );
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "error: weight goes down from 20 (steps[0]) to 10 at spec.strategy.canary.steps[2].setWeight (release.yaml:15:11); weights must not decrease; a decrease is almost always a typo (use 'cutover abort' to roll back)",
            "error: no metric named 'erors' in spec.analysis.metrics at spec.strategy.canary.steps[3].analysis.metrics[0] (release.yaml:16:32); did you mean 'errors'?",
            "error: unknown field 'minReqests' at spec.analysis.metrics[0] (release.yaml:20:9); did you mean 'minRequests'?",
        ]
    );
}

#[test]
fn syntax_errors_are_located() {
    let d = check("apiVersion: [\n", &[Code::Syntax]);
    assert!(
        matches!(d[0].origin, Origin::File { line: 2, .. }),
        "{}",
        d[0]
    );
}

#[test]
fn misspelt_keys_suggest_the_closest_field_variant_and_value() {
    let d = check(
        &base_with("image:", "imgae:"),
        &[Code::MissingField, Code::UnknownField],
    );
    assert_eq!(d[1].hint.as_deref(), Some("did you mean 'image'?"));
    assert_eq!(
        d[1].to_string().split(" (").next(),
        Some("error: unknown field 'imgae' at spec")
    );
    let d = check(&base_with("swarm:", "swarn:"), &[Code::UnknownField]);
    assert_eq!(d[0].hint.as_deref(), Some("did you mean 'swarm'?"));
    let d = check(
        &base_with("- setWeight: 20", "- setWieght: 20"),
        &[Code::UnknownField],
    );
    assert!(
        d[0].message.starts_with("unknown key 'setWieght'"),
        "{}",
        d[0]
    );
    assert_eq!(d[0].hint.as_deref(), Some("did you mean 'setWeight'?"));
    let d = check(
        &base_with("builtin: error_rate", "builtin: error_rat"),
        &[Code::InvalidValue],
    );
    assert!(
        d[0].message.starts_with("unknown value 'error_rat'"),
        "{}",
        d[0]
    );
}

#[test]
fn a_missing_required_field_is_named_and_the_rest_still_checked() {
    let text = base_with("  port: 8080\n", "").replace("- setWeight: 100", "- setWeight: 120");
    let d = check(&text, &[Code::MissingField, Code::OutOfRange]);
    assert_eq!(d[0].message, "missing field 'port'");
}

#[test]
fn wrong_types_and_out_of_range_numbers() {
    check(
        &base_with("port: 8080", "port: eighty"),
        &[Code::InvalidValue],
    );
    check(&base_with("port: 8080", "port: 70000"), &[Code::OutOfRange]);
    check(&base_with("port: 8080", "port: 0"), &[Code::OutOfRange]);
    check(
        &base_with("- setWeight: 100", "- setWeight: 101"),
        &[Code::OutOfRange],
    );
}

#[test]
fn durations_without_units_or_that_overflow_are_errors() {
    let text = base_with("  strategy:\n", "  strategy:\n    progressDeadline: 30\n");
    let d = check(&text, &[Code::InvalidValue]);
    assert_eq!(
        d[0].message,
        "'30' has no unit; write '30s' for seconds or '30m' for minutes"
    );
    let text = base_with(
        "  strategy:\n",
        "  strategy:\n    progressDeadline: 9999999h\n",
    );
    check(&text, &[Code::InvalidValue]);
    let text = base_with(
        "        max: 0.01\n",
        "        max: 0.01\n        interval: 300d\n        count: 1000\n",
    );
    check(&text, &[Code::DeadlineTooShort, Code::OutOfRange]);
}

#[test]
fn an_unknown_preset_suggests_the_closest() {
    let text = base_with(
        "    canary:\n      steps:\n        - setWeight: 20\n        - analysis: {}\n        - setWeight: 100\n",
        "    use: canary-progresive\n",
    );
    let d = check(&text, &[Code::UnknownPreset]);
    assert_eq!(
        d[0].hint.as_deref(),
        Some("did you mean 'canary-progressive'?")
    );
}

#[test]
fn presets_are_overlaid_by_the_fields_beside_use() {
    let text = base_with(
        "    canary:\n      steps:\n        - setWeight: 20\n        - analysis: {}\n        - setWeight: 100\n",
        "    use: blue-green\n    blueGreen:\n      scaleDownDelay: 10m\n",
    );
    let r = release(&text);
    let bg = r
        .spec
        .strategy
        .blue_green
        .expect("the preset's blue/green block");
    assert_eq!(bg.scale_down_delay.to_string(), "10m", "overridden");
    assert!(bg.pre_promotion_analysis.is_some(), "kept from the preset");
    assert_eq!(r.spec.strategy.preset.as_deref(), Some("blue-green"));
    assert_eq!(
        r.spec.strategy.progress_deadline.to_string(),
        "30m",
        "the preset's deadline"
    );
}

#[test]
fn analysis_references_duplicates_and_incomplete_metrics() {
    let text = BASE.replace(
        "        max: 0.01\n",
        "        max: 0.01\n      - name: errors\n        provider: {prometheus: {query: ''}}\n        max: 1\n      - name: p99\n        provider: {builtin: latency_p99}\n",
    );
    check(
        &text,
        &[
            Code::DuplicateName,
            Code::IncompleteMetric,
            Code::IncompleteMetric,
        ],
    );
    let text = BASE
        .replace(
            "      - name: errors\n        provider: {builtin: error_rate}\n        max: 0.01\n",
            "      []\n",
        )
        .replace("    metrics:\n      []", "    metrics: []");
    check(&text, &[Code::UndefinedMetric]);
}

#[test]
fn prometheus_placeholders_are_checked() {
    let text = base_with(
        "provider: {builtin: error_rate}",
        "provider: {prometheus: {query: 'up{job=\"{{relase}}\"}'}}",
    );
    let d = check(&text, &[Code::InvalidValue]);
    assert_eq!(d[0].hint.as_deref(), Some("did you mean '{{release}}'?"));
}

#[test]
fn the_docker_backend_takes_exactly_one_choice_of_containers() {
    let swarm = "swarm: {service: shop, network: shop-net}";
    for valid in [
        "docker: {project: shop, service: web}",
        "docker: {containers: [web-1, web-2], network: shop_default}",
        "docker: {label: app=web, readinessPath: /healthz}",
    ] {
        let r = release(&base_with(swarm, valid));
        assert_eq!(r.spec.backend.name(), "docker");
    }
    let none = check(
        &base_with(swarm, "docker: {network: shop_default}"),
        &[Code::MissingField],
    );
    assert!(none[0].message.contains("exactly one of"), "{}", none[0]);
    check(
        &base_with(swarm, "docker: {service: web, label: app=web}"),
        &[Code::Conflict],
    );
    check(
        &base_with(swarm, "docker: {project: shop, label: app=web}"),
        &[Code::MissingField],
    );
    check(
        &base_with(swarm, "docker: {service: web, readinessPath: healthz}"),
        &[Code::InvalidValue],
    );
    check(
        &base_with(swarm, "docker: {containers: [\"\"]}"),
        &[Code::InvalidValue],
    );
    let no_image = base_with(swarm, "docker: {service: web}").replace("  image: shop:v2\n", "");
    check(&no_image, &[Code::MissingField]);
}

#[test]
fn contradictions_are_conflicts() {
    check(
        &base_with(
            "        max: 0.01\n",
            "        max: 0.01\n        min: 0.5\n",
        ),
        &[Code::Conflict],
    );
    check(
        &base_with("  strategy:\n", "  strategy:\n    blueGreen: {}\n"),
        &[Code::Conflict],
    );
    let text = base_with(
        "  port: 8080\n",
        "  port: 8080\n  traffic:\n    match:\n      - {header: X-A, cookie: b}\n      - {header: X-B, regex: '('}\n",
    );
    check(&text, &[Code::Conflict, Code::InvalidValue]);
}

#[test]
fn steps_longer_than_the_deadline_are_reported() {
    let text = base_with("  strategy:\n", "  strategy:\n    progressDeadline: 1m\n");
    let d = check(&text, &[Code::DeadlineTooShort]);
    assert_eq!(
        d[0].hint.as_deref(),
        Some("raise progressDeadline to at least 2m30s")
    );
}

#[test]
fn manual_gates_and_ignored_settings_are_warnings() {
    let text = base_with(
        "        - analysis: {}\n",
        "        - analysis: {}\n        - pause: {}\n",
    );
    let d = check(&text, &[Code::ManualGate]);
    assert_eq!(d[0].severity, Severity::Warning);
    let loaded = load_yaml(&text, &BTreeMap::new());
    assert!(
        loaded.document.is_some(),
        "warnings do not make a file invalid"
    );
    let text = r#"apiVersion: cutover.dev/v1
kind: Release
metadata: {name: local}
spec:
  backend:
    local:
      stable: {addresses: ["127.0.0.1:8081"]}
      candidate: {command: ["./app", "--port", "{{port}}"]}
  image: ignored:v1
  port: 8080
  strategy: {use: canary-fast}
  analysis:
    metrics: [{name: errors, provider: {builtin: error_rate}, max: 0.01}]
"#;
    let d = check(text, &[Code::Ignored]);
    assert_eq!(d[0].severity, Severity::Warning);
}

#[test]
fn interpolation_follows_compose() {
    let text = base_with("image: shop:v2", "image: shop:${TAG:-v1}")
        .replace("port: 8080", "port: ${PORT}");
    let loaded = load_yaml(&text, &env(&[("PORT", "9090")]));
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(r.spec.image.as_deref(), Some("shop:v1"));
    assert_eq!(
        r.spec.port, 9090,
        "a whole-value substitution takes the number's type"
    );

    let text = base_with(
        "image: shop:v2",
        "image: shop:${TAG:?set TAG to the new version}",
    );
    let d = check(&text, &[Code::Interpolation]);
    assert_eq!(
        d[0].message,
        "required variable 'TAG' is not set: set TAG to the new version"
    );
    // Regression (issue 19): an unset plain variable was a warning and read as empty.
    let d = check(
        &base_with("image: shop:v2", "image: shop:${TAG}"),
        &[Code::Interpolation],
    );
    assert_eq!(d[0].severity, Severity::Error);
    assert_eq!(
        d[0].to_string(),
        "error: variable 'TAG' is not set at spec.image (release.yaml:8:10); set TAG, write ${TAG:-default}, or pass --set spec.image=..."
    );
}

#[test]
fn environment_overrides_beat_the_file_and_are_named_in_errors() {
    let loaded = load_yaml(
        BASE,
        &env(&[
            ("CUTOVER_SPEC__REPLICAS", "4"),
            ("CUTOVER_SPEC__STRATEGY__PROGRESS_DEADLINE", "20m"),
        ]),
    );
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(r.spec.replicas, Some(4));
    assert_eq!(r.spec.strategy.progress_deadline.to_string(), "20m");
    let loaded = load_yaml(BASE, &env(&[("CUTOVER_SPEC__PORT", "http")]));
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(
        loaded.diagnostics[0].origin,
        Origin::Env {
            var: "CUTOVER_SPEC__PORT".into()
        }
    );
    assert_eq!(
        loaded.diagnostics[0].to_string(),
        "error: expected a whole number from 0 to 65535, found the string 'http' at spec.port (environment variable CUTOVER_SPEC__PORT)"
    );
}

#[test]
fn toml_and_yaml_give_the_same_release() {
    let toml = r#"apiVersion = "cutover.dev/v1"
kind = "Release"
[metadata]
name = "shop"
[spec]
image = "shop:v2"
port = 8080
[spec.backend.swarm]
service = "shop"
network = "shop-net"
[spec.strategy.canary]
steps = [{ setWeight = 20 }, { analysis = {} }, { setWeight = 100 }]
[[spec.analysis.metrics]]
name = "errors"
provider = { builtin = "error_rate" }
max = 0.01
"#;
    let loaded = load::load(
        Source {
            name: "release.toml",
            text: toml,
            format: Format::Toml,
        },
        &BTreeMap::new(),
    );
    let Some(Document::Release(from_toml)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(*from_toml, release(BASE));
    let bad = toml.replace("port = 8080", "port = 8080\nreplcas = 2");
    let loaded = load::load(
        Source {
            name: "release.toml",
            text: &bad,
            format: Format::Toml,
        },
        &BTreeMap::new(),
    );
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(
        loaded.diagnostics[0].to_string(),
        "error: unknown field 'replcas' at spec (release.toml:8:1); did you mean 'replicas'?"
    );
}

#[test]
fn local_slots_take_addresses_or_commands() {
    let text = r#"apiVersion: cutover.dev/v1
kind: Release
metadata: {name: local}
spec:
  backend:
    local:
      stable: {addresses: ["127.0.0.1:8081", "nohost"]}
      candidate: {command: []}
  port: 8080
  strategy: {canary: {steps: [{setWeight: 100}]}}
"#;
    check(text, &[Code::InvalidValue, Code::MissingField]);
    let fixed = text
        .replace(", \"nohost\"", "")
        .replace("command: []", "command: [./app]");
    let r = release(&fixed);
    let Backend::Local(local) = r.spec.backend else {
        panic!("local")
    };
    assert_eq!(local.candidate, LocalSlot::Command(vec!["./app".into()]));
    assert!(matches!(
        r.spec.strategy.canary.expect("canary").steps[0],
        CanaryStep::SetWeight(100)
    ));
}

#[test]
fn examples_and_presets_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut seen = 0;
    for dir in ["examples", "strategies"] {
        for entry in std::fs::read_dir(format!("{root}/{dir}")).expect("directory exists") {
            let path = entry.expect("entry").path();
            if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "toml")
            ) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            let name = path.display().to_string();
            let loaded = load::load(
                Source {
                    name: &name,
                    text: &text,
                    format: Format::from_path(&path),
                },
                &BTreeMap::new(),
            );
            assert!(!loaded.has_errors(), "{name}: {:#?}", loaded.diagnostics);
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} files checked");
}

#[test]
fn the_committed_schema_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/release.schema.json"
    );
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let current = cutover_core::schema::release_schema_json();
    assert!(
        committed == current,
        "docs/release.schema.json is stale; regenerate it with: cargo run -p cutover-cli -- schema > docs/release.schema.json"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    /// Whatever the bytes, loading returns diagnostics and never panics.
    #[test]
    fn arbitrary_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), toml in any::<bool>()) {
        let text = String::from_utf8_lossy(&bytes);
        let format = if toml { Format::Toml } else { Format::Yaml };
        let _ = load::load(Source { name: "fuzz", text: &text, format }, &BTreeMap::new());
    }

    /// Mutations of a valid release (a byte changed, inserted or removed) never panic, and
    /// every error they cause carries a position.
    #[test]
    fn mutated_releases_never_panic(position in 0usize..600, byte in any::<u8>(), kind in 0u8..3) {
        let mut bytes = BASE.as_bytes().to_vec();
        let at = position % bytes.len();
        match kind {
            0 => bytes[at] = byte,
            1 => bytes.insert(at, byte),
            _ => { bytes.remove(at); }
        }
        let text = String::from_utf8_lossy(&bytes);
        let loaded = load::load(Source { name: "fuzz.yaml", text: &text, format: Format::Yaml }, &env(&[("CUTOVER_SPEC__REPLICAS", "2")]));
        for d in &loaded.diagnostics {
            prop_assert!(!matches!(d.origin, Origin::Default), "{}", d);
        }
    }
}

#[test]
fn the_promotion_gate_comes_before_the_blue_green_switch_and_after_canary_steps() {
    use cutover_core::plan::{Plan, PlanStep};
    let hooks = "  hooks:\n    prePromotion:\n      - url: http://gate.internal/ok\n";
    let bg = base_with(
        "    canary:\n      steps:\n        - setWeight: 20\n        - analysis: {}\n        - setWeight: 100\n",
        "    use: blue-green\n",
    ) + hooks;
    let plan = Plan::from_release(&release(&bg)).expect("plan");
    let gate = plan
        .steps
        .iter()
        .position(|s| *s == PlanStep::PromotionGate)
        .expect("a gate");
    let switch = plan
        .steps
        .iter()
        .position(|s| *s == PlanStep::SetWeight { weight: 100 })
        .expect("a switch");
    assert!(gate < switch, "{:?}", plan.steps);
    assert!(
        matches!(plan.steps[gate + 1], PlanStep::SetHeaderRoute { ref rules } if rules.is_empty()),
        "the preview stays up while the gate decides"
    );
    let canary = format!("{BASE}{hooks}");
    let plan = Plan::from_release(&release(&canary)).expect("plan");
    assert_eq!(plan.steps.last(), Some(&PlanStep::PromotionGate));
}

#[test]
fn error_rate_thresholds_are_ratios_and_comparisons_need_both_versions() {
    let d = check(&base_with("max: 0.01", "max: 5"), &[Code::OutOfRange]);
    assert_eq!(d[0].hint.as_deref(), Some("for 5%, write 0.05"));
    let text = base_with(
        "provider: {builtin: error_rate}\n        max: 0.01",
        "provider: {prometheus: {query: 'sum(rate(x{v=\"{{candidate}}\"}[1m]))'}}\n        compare: {maxIncreasePercent: 10, mannWhitney: {minEffectPercent: -1}}",
    );
    check(&text, &[Code::IncompleteMetric, Code::OutOfRange]);
    let fixed = text
        .replace("{{candidate}}", "{{version}}")
        .replace("minEffectPercent: -1", "minEffectPercent: 5");
    check(&fixed, &[]);
}

#[test]
fn environment_overrides_apply_after_the_preset() {
    let text = base_with(
        "    canary:\n      steps:\n        - setWeight: 20\n        - analysis: {}\n        - setWeight: 100\n",
        "    use: canary-progressive\n",
    );
    let loaded = load_yaml(
        &text,
        &env(&[
            ("CUTOVER_SPEC__STRATEGY__PROGRESS_DEADLINE", "50m"),
            ("CUTOVER_SPEC__STRATEGY__CANARY__STEPS__0__SETWEIGHT", "2"),
        ]),
    );
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(r.spec.strategy.progress_deadline.to_string(), "50m");
    let steps = r.spec.strategy.canary.expect("canary").steps;
    assert_eq!(steps[0], CanaryStep::SetWeight(2));
    let loaded = load_yaml(
        &text,
        &env(&[("CUTOVER_SPEC__STRATEGY__CANARY__STEPS__40__SETWEIGHT", "2")]),
    );
    assert_eq!(loaded.diagnostics.len(), 1);
    assert_eq!(
        loaded.diagnostics[0].path.to_string(),
        "spec.strategy.canary.steps"
    );
}

/// Regression: deep nesting overflowed the stack instead of being reported.
#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("a:\n{}x\n", "- ".repeat(10_000));
    let d = check(&deep, &[Code::Syntax]);
    assert!(d[0].message.contains("nests more than"), "{}", d[0]);
    let defaults = format!("{}x{}", "${A:-".repeat(20_000), "}".repeat(20_000));
    let text = base_with("image: shop:v2", &format!("image: \"{defaults}\""));
    check(&text, &[Code::Interpolation]);
}

/// Regression: a whole-value substitution was retyped, so `1.10` became `1.1` in a string.
#[test]
fn substituted_text_keeps_its_exact_form_where_text_is_wanted() {
    let text = base_with("image: shop:v2", "image: ${TAG}").replace("port: 8080", "port: ${PORT}");
    let loaded = load_yaml(&text, &env(&[("TAG", "1.10"), ("PORT", "0x1F90")]));
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(r.spec.image.as_deref(), Some("1.10"));
    assert_eq!(r.spec.port, 8080);
    let loaded = load_yaml(&text, &env(&[("PORT", "8080")]));
    let codes: Vec<Code> = loaded.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(
        codes,
        vec![Code::MissingField, Code::Interpolation],
        "an unset image is no image: {:#?}",
        loaded.diagnostics
    );
    let loaded = load_yaml(BASE, &env(&[("CUTOVER_SPEC__IMAGE", "!important #1")]));
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(
        r.spec.image.as_deref(),
        Some("!important #1"),
        "override values are literal"
    );
}

/// Regression: `CUTOVER_SPEC__STRATEGY__USE` was accepted but changed nothing.
#[test]
fn an_override_can_choose_the_preset() {
    let text = base_with(
        "    canary:\n      steps:\n        - setWeight: 20\n        - analysis: {}\n        - setWeight: 100\n",
        "    use: canary-fast\n",
    );
    let loaded = load_yaml(
        &text,
        &env(&[("CUTOVER_SPEC__STRATEGY__USE", "blue-green")]),
    );
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert!(r.spec.strategy.blue_green.is_some() && r.spec.strategy.canary.is_none());
    let loaded = load_yaml(&text, &env(&[("CUTOVER_SPEC__STRATEGY__USE", "nope")]));
    assert_eq!(loaded.diagnostics[0].code, Code::UnknownPreset);
}

#[test]
fn yaml_merge_keys_and_float_ports_are_explained() {
    let text = base_with("  port: 8080\n", "  port: 8080.0\n");
    let d = check(&text, &[Code::InvalidValue]);
    assert!(d[0].message.ends_with("found 8080.0"), "{}", d[0]);
    let text = base_with(
        "  port: 8080\n",
        "  port: 8080\n  traffic:\n    <<: {host: a}\n",
    );
    let d = check(&text, &[Code::Syntax]);
    assert_eq!(
        d[0].to_string(),
        "error: YAML merge keys ('<<') are not supported (release.yaml:11:5); write the fields out, or use a strategy preset with 'use:'"
    );
}

/// The finding's file: anchors with tags, nine levels of ten (a billion values once
/// expanded), behind a valid release header.
fn tagged_bomb() -> String {
    let mut text = String::from(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {name: shop}\nlol:\n  a0: &a0 !t [x, x, x, x, x, x, x, x, x, x]\n",
    );
    for level in 1..=9 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        text.push_str(&format!("  a{level}: &a{level} !t [{items}]\n"));
    }
    text
}

fn file_position(d: &Diagnostic) -> (&str, u32, u32) {
    match &d.origin {
        Origin::File {
            source,
            line,
            column,
        } => (source, *line, *column),
        other => panic!("not a file position: {other:?}"),
    }
}

/// Regression: `cutover lint` on this file grew past 4 GB (saphyr's alias budget does not
/// look inside tagged lists). It is refused from the parser's events, before a tree is
/// built, at the alias that passes the node budget.
#[test]
fn the_tagged_billion_laughs_is_refused_with_the_budget_named() {
    let text = tagged_bomb();
    let d = check(&text, &[Code::Syntax]);
    assert!(d[0].message.contains("node budget"), "{}", d[0]);
    assert!(d[0].message.contains("20000 values"), "{}", d[0]);
    // a4 holds 2 + 10 * 12222 values: its first alias of a3 passes the budget.
    assert_eq!(file_position(&d[0]), ("release.yaml", 9, 15));
    let hint = d[0].hint.as_deref().unwrap_or_default();
    assert!(hint.contains("anchors and aliases"), "{hint}");

    // What was counted stops within one anchor of the budget, and nothing was built.
    let source: std::sync::Arc<str> = "release.yaml".into();
    let over =
        load::budget::measure_yaml(&source, &text, &load::budget::LIMITS).expect_err("over budget");
    assert!(over.tally.nodes > load::budget::LIMITS.nodes);
    assert!(
        over.tally.nodes <= load::budget::LIMITS.nodes + 12_222,
        "{:?}",
        over.tally
    );
}

/// The same with the settings loader (`cutover proxy --config`) and the release loader
/// the API uses: every entry point goes through the budget.
#[test]
fn every_loader_refuses_the_bomb() {
    let text = tagged_bomb();
    let source = Source {
        name: "bomb.yaml",
        text: &text,
        format: Format::Yaml,
    };
    let errors = load::load_as::<serde_json::Value>(source, &BTreeMap::new()).expect_err("refused");
    assert!(errors[0].message.contains("node budget"), "{}", errors[0]);
    let errors = load::load_release_resolved(source).expect_err("refused");
    assert!(errors[0].message.contains("node budget"), "{}", errors[0]);
}

/// Aliases of one long string: few values, but gigabytes of text once expanded.
#[test]
fn aliases_of_a_long_string_pass_the_expanded_size_budget() {
    let long = "y".repeat(100_000);
    let aliases = vec!["*s"; 50].join(", ");
    let text = base_with(
        "  port: 8080\n",
        &format!("  port: 8080\n  x-long: &s '{long}'\n  x-copies: [{aliases}]\n"),
    );
    let d = check(&text, &[Code::Syntax]);
    assert!(d[0].message.contains("expanded size budget"), "{}", d[0]);
}

#[test]
fn a_file_over_the_size_budget_is_refused_before_parsing() {
    let padding = format!("# {}\n", "x".repeat(1000)).repeat(1100);
    let yaml = format!("{BASE}{padding}");
    let d = check(&yaml, &[Code::Syntax]);
    assert!(d[0].message.contains("file size budget"), "{}", d[0]);
    assert_eq!(file_position(&d[0]), ("release.yaml", 1, 1));
    let toml = load::load(
        Source {
            name: "release.toml",
            text: &yaml,
            format: Format::Toml,
        },
        &BTreeMap::new(),
    );
    assert!(toml.diagnostics[0].message.contains("file size budget"));
}

/// TOML cannot alias, but a file under the size budget can still hold more values than
/// any release needs, and its arrays nest.
#[test]
fn toml_is_held_to_the_node_and_depth_budgets() {
    let load_toml = |text: &str| {
        load::load(
            Source {
                name: "release.toml",
                text,
                format: Format::Toml,
            },
            &BTreeMap::new(),
        )
    };
    let many = format!("x = [{}]\n", vec!["1"; 30_000].join(","));
    let loaded = load_toml(&many);
    assert_eq!(loaded.diagnostics.len(), 1, "{:#?}", loaded.diagnostics);
    assert!(loaded.diagnostics[0].message.contains("node budget"));
    assert_eq!(file_position(&loaded.diagnostics[0]).1, 1);

    let deep = format!("x = {}1{}\n", "[".repeat(70), "]".repeat(70));
    let loaded = load_toml(&deep);
    let first = &loaded.diagnostics[0];
    assert!(first.message.contains("depth budget"), "{first}");
}

/// JSON is read as YAML, so a JSON release is held to the same budgets (a deep array
/// here).
#[test]
fn json_text_is_held_to_the_same_budgets() {
    let deep = format!("{{\"a\": {}1{}}}", "[".repeat(65), "]".repeat(65));
    let d = check(&deep, &[Code::Syntax]);
    assert!(d[0].message.contains("depth budget"), "{}", d[0]);
    let wide = format!("{{\"a\": [{}]}}", vec!["1"; 25_000].join(","));
    let d = check(&wide, &[Code::Syntax]);
    assert!(d[0].message.contains("node budget"), "{}", d[0]);
}

/// Regression: this version lints clean and reached Prometheus as
/// `version="v2"} or vector(1) #"`. Version names now have the characters of an image tag.
#[test]
fn a_version_outside_the_image_tag_set_is_explained() {
    let text = base_with(
        "  image: shop:v2\n",
        "  image: shop:v2\n  version: 'v2\"} or vector(1) #'\n",
    );
    let d = check(&text, &[Code::InvalidValue]);
    assert_eq!(d[0].path.to_string(), "spec.version");
    assert_eq!(file_position(&d[0]).1, 9);
    assert!(
        d[0].message.contains("letters, digits, '_', '.' and '-'"),
        "{}",
        d[0]
    );
    assert!(
        d[0].message
            .starts_with("'v2\"} or vector(1) #' is not a valid version"),
        "{}",
        d[0]
    );
    assert_eq!(d[0].hint.as_deref(), Some("try 'v2---or-vector-1'"));

    let text = base_with(
        "  image: shop:v2\n",
        "  image: shop:v2\n  stableVersion: 'v1&admin=1#'\n",
    );
    let d = check(&text, &[Code::InvalidValue]);
    assert_eq!(d[0].path.to_string(), "spec.stableVersion");
    assert_eq!(d[0].hint.as_deref(), Some("try 'v1-admin-1'"));

    let too_long = format!("  image: shop:v2\n  version: {}\n", "v".repeat(129));
    check(
        &base_with("  image: shop:v2\n", &too_long),
        &[Code::InvalidValue],
    );
    check(
        &base_with("  image: shop:v2\n", "  image: shop:v2\n  version: .v2\n"),
        &[Code::InvalidValue],
    );
}

/// Every image tag is a valid version name: the controller takes versions from tags.
#[test]
fn image_tags_are_valid_versions() {
    for tag in [
        "v2",
        "_v2",
        "1.4.0-rc.1",
        "2024.01.31_build-7",
        "latest",
        "0123456789abcdef",
        &"a".repeat(128),
    ] {
        let text = base_with(
            "  image: shop:v2\n",
            &format!("  image: shop:v2\n  version: '{tag}'\n  stableVersion: '{tag}'\n"),
        );
        let d = load_yaml(&text, &BTreeMap::new()).diagnostics;
        assert!(!d.iter().any(Diagnostic::is_error), "{tag}: {d:#?}");
    }
}

proptest! {
    /// The documented set, `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (Docker's tag grammar), is
    /// exactly what validation accepts.
    #[test]
    fn version_names_are_exactly_the_docker_tag_grammar(name in "[ -~]{0,3}|[A-Za-z0-9_][A-Za-z0-9_.-]{0,130}") {
        let grammar = name.len() <= 128
            && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        prop_assert_eq!(cutover_core::validate::is_version_name(&name), grammar);
    }
}

/// The fuzzer's committed corpus (the examples, the presets, the bomb, deep files, and any
/// crash found and fixed) replays in the ordinary tests: each seed loads as YAML and as
/// TOML without a panic, and a document comes only without errors.
#[test]
fn the_fuzz_corpus_loads_without_panicking() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fuzz/corpus/load_release"
    );
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("the corpus is committed") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("seed");
        let text = String::from_utf8_lossy(&bytes);
        for format in [Format::Yaml, Format::Toml] {
            let loaded = load::load(
                Source {
                    name: "seed",
                    text: &text,
                    format,
                },
                &env(&[("TAG", "v2")]),
            );
            assert!(!(loaded.document.is_some() && loaded.has_errors()));
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} seeds");
}

/// The Prometheus provider refuses to write a release or version name outside PromQL
/// quotes unless it is letters, digits, '_' and ':'; lint says so before a rollout fails.
#[test]
fn placeholders_outside_promql_quotes_are_warned_about() {
    let metric = |query: &str| {
        base_with(
            "        provider: {builtin: error_rate}\n",
            &format!("        provider: {{prometheus: {{query: '{query}'}}}}\n"),
        )
    };
    let d = check(
        &metric("sum(rate({{release}}_requests_total{v=\"{{version}}\"}[{{interval}}]))"),
        &[Code::InvalidValue],
    );
    assert_eq!(d[0].severity, Severity::Warning);
    assert!(
        d[0].message.contains("'{{release}}' stands outside quotes"),
        "{}",
        d[0]
    );
    assert_eq!(
        d[0].hint.as_deref(),
        Some("write it inside a label matcher's quotes, as in release=\"{{release}}\"")
    );
    // Inside double, single and raw strings, in a comment, and {{interval}}: quiet.
    check(
        &metric(
            "x{a=\"{{release}}\",b=`{{stable}}`,c=\"\\\"{{version}}\"}[{{interval}}] # {{candidate}}",
        ),
        &[],
    );
}

#[test]
fn settings_of_the_tests_on_evidence_are_checked_with_the_fix_named() {
    // A zero tolerance could only pass a candidate better than stable.
    let zero = check(
        &base_with("        max: 0.01\n", "        compare: {maxIncrease: 0}\n"),
        &[Code::Conflict],
    );
    assert!(
        zero[0]
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("maxIncrease: 0.005"))
    );
    let effect = check(
        &base_with(
            "        provider: {builtin: error_rate}\n        max: 0.01\n",
            "        provider: {builtin: latency_p99}\n        compare: {mannWhitney: {}}\n",
        ),
        &[Code::Conflict],
    );
    assert!(
        effect[0]
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("minEffectPercent: 10"))
    );
    // maxCount below count, a confidence out of range, an interval of part of a second.
    check(
        &base_with(
            "        max: 0.01\n",
            "        max: 0.01\n        count: 5\n        maxCount: 3\n        confidence: 1.5\n        interval: 1500ms\n",
        ),
        &[Code::Conflict, Code::OutOfRange, Code::InvalidValue],
    );
    // A relative tolerance on an error rate: a warning that says what to use instead.
    let relative = check(
        &base_with(
            "        max: 0.01\n",
            "        compare: {maxIncreasePercent: 20}\n",
        ),
        &[Code::Conflict],
    );
    assert_eq!(relative[0].severity, cutover_core::Severity::Warning);
    // A Prometheus metric reads the proxy's series as evidence, or runs a query: not both.
    check(
        &base_with(
            "        provider: {builtin: error_rate}\n",
            "        provider: {prometheus: {query: 'up', proxyMetric: error_rate}}\n",
        ),
        &[Code::Conflict],
    );
    release(&base_with(
        "        provider: {builtin: error_rate}\n        max: 0.01\n",
        "        provider: {prometheus: {proxyMetric: error_rate}}\n        compare: {maxIncrease: 0.005}\n        count: 2\n        maxCount: 10\n        confidence: 0.95\n",
    ));
}

/// `BASE` on the local backend with the candidate's command and version from `VERSION`,
/// as docs/ci.md writes it.
const FROM_CI: &str = r#"apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: hello
spec:
  backend:
    local:
      stable:
        command: [demo-app, --app-version, v1]
      candidate:
        command: [demo-app, --app-version, "${VERSION}"]
  version: ${VERSION}
  port: 8080
  strategy:
    canary:
      steps:
        - setWeight: 50
"#;

/// Regression (issue 19): with VERSION unset, lint said "ok, 2 warnings" and the rollout
/// promoted a version the controller named itself, started with an empty argument.
#[test]
fn an_unset_variable_is_an_error_naming_it_the_place_and_the_fix() {
    let loaded = load_yaml(FROM_CI, &BTreeMap::new());
    assert!(loaded.document.is_none());
    let lines: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec![
            "error: variable 'VERSION' is not set at spec.backend.local.candidate.command[2] (release.yaml:11:44); set VERSION, write ${VERSION:-default}, or pass --set spec.backend.local.candidate.command[2]=...",
            "error: variable 'VERSION' is not set at spec.version (release.yaml:12:12); set VERSION, write ${VERSION:-default}, or pass --set version=...",
        ]
    );
    // Set but empty is no better where a version or a command word goes.
    let loaded = load_yaml(FROM_CI, &env(&[("VERSION", "")]));
    assert_eq!(loaded.diagnostics.len(), 2, "{:#?}", loaded.diagnostics);
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.is_error() && d.message == "variable 'VERSION' is set but empty")
    );
    // With a value, or a default, it is a release.
    let loaded = load_yaml(FROM_CI, &env(&[("VERSION", "v5")]));
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(r.spec.version.as_deref(), Some("v5"));
    let text = FROM_CI.replace("${VERSION}", "${VERSION:-v2}");
    assert_eq!(release(&text).spec.version.as_deref(), Some("v2"));
}

/// An empty version is refused on every path, not replaced by a made-up name: written
/// so, left empty by an override, or sent to the controller already resolved.
#[test]
fn an_empty_version_is_refused_not_replaced() {
    for written in ["version: \"\"", "version:", "version: ${VERSION:-}"] {
        let text = FROM_CI
            .replace("version: ${VERSION}", written)
            .replace("\"${VERSION}\"", "v2");
        let loaded = load_yaml(&text, &BTreeMap::new());
        let errors: Vec<&Diagnostic> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert_eq!(errors.len(), 1, "{written}: {:#?}", loaded.diagnostics);
        assert_eq!(errors[0].path.to_string(), "spec.version", "{written}");
    }
    let text = FROM_CI
        .replace("\"${VERSION}\"", "v2")
        .replace("${VERSION}", "v2");
    let loaded = load_yaml(&text, &env(&[("CUTOVER_SPEC__VERSION", "")]));
    assert_eq!(
        loaded.diagnostics[0].to_string(),
        "error: version is empty at spec.version (environment variable CUTOVER_SPEC__VERSION); write a name such as 'v2', pass --set version=v2, or leave the line out to name the version from the image tag"
    );
    // What the controller's API parses: the release as `run` sends it (JSON).
    for body in [r#""version": """#, r#""version": null"#] {
        let json = format!(
            r#"{{"apiVersion": "cutover.dev/v1", "kind": "Release", "metadata": {{"name": "hello"}}, "spec": {{"backend": {{"local": {{"stable": {{"addresses": ["127.0.0.1:1"]}}, "candidate": {{"addresses": ["127.0.0.1:2"]}}}}}}, {body}, "port": 8080, "strategy": {{"canary": {{"steps": [{{"setWeight": 50}}]}}}}}}}}"#
        );
        let refused = load::load_release_resolved(Source {
            name: "release.json",
            text: &json,
            format: Format::Yaml,
        })
        .expect_err("refused");
        assert!(
            refused.iter().any(|d| d.message == "version is empty"),
            "{body}: {refused:#?}"
        );
    }
    // Leaving the field out still names the version from the image tag (documented).
    assert_eq!(release(BASE).spec.version, None);
}

fn load_set(text: &str, sets: &[&str]) -> load::Loaded {
    let sets: Vec<load::Set> = sets.iter().map(|s| s.parse().expect("KEY=VALUE")).collect();
    load::load_with(
        Source {
            name: "release.yaml",
            text,
            format: Format::Yaml,
        },
        &BTreeMap::new(),
        &sets,
    )
}

#[test]
fn set_arguments_set_fields_by_path_and_are_named_in_errors() {
    let loaded = load_set(
        FROM_CI,
        &[
            "version=v5",
            "spec.backend.local.candidate.command[2]=v5",
            "spec.replicas=3",
            "spec.strategy.canary.steps[0].setWeight=5",
        ],
    );
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(r.spec.version.as_deref(), Some("v5"));
    assert_eq!(r.spec.replicas, Some(3));
    assert_eq!(
        r.spec.strategy.canary.expect("canary").steps[0],
        CanaryStep::SetWeight(5)
    );
    let Backend::Local(local) = r.spec.backend else {
        panic!("local")
    };
    assert_eq!(
        local.candidate,
        LocalSlot::Command(vec!["demo-app".into(), "--app-version".into(), "v5".into()])
    );

    // The command line wins over CUTOVER_ variables.
    let loaded = load::load_with(
        Source {
            name: "release.yaml",
            text: BASE,
            format: Format::Yaml,
        },
        &env(&[("CUTOVER_SPEC__VERSION", "v4")]),
        &["version=v5".parse().expect("valid")],
    );
    let Some(Document::Release(r)) = loaded.document else {
        panic!("{:#?}", loaded.diagnostics)
    };
    assert_eq!(r.spec.version.as_deref(), Some("v5"));

    let loaded = load_set(BASE, &["spec.replicas=many"]);
    assert_eq!(
        loaded.diagnostics[0].to_string(),
        "error: expected a whole number from 0 to 4294967295, found the string 'many' at spec.replicas (--set spec.replicas=many)"
    );
    assert_eq!(
        loaded.diagnostics[0].origin,
        Origin::Flag {
            arg: "--set spec.replicas=many".into()
        }
    );
}

#[test]
fn an_unknown_set_key_suggests_the_field() {
    let loaded = load_set(BASE, &["verison=v5"]);
    let lines: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        vec!["error: unknown field 'verison' at spec (--set verison=v5); did you mean 'version'?"]
    );
    let loaded = load_set(BASE, &["spec.strategy.canary.steps[7].setWeight=5"]);
    assert_eq!(
        loaded.diagnostics[0].message,
        "index 7 is past the end of a list of 3"
    );
}

/// Regression (issue 19): one structural error in `spec.strategy` hid that section's
/// other mistakes, so a user fixed one error per run.
#[test]
fn lint_reports_every_mistake_of_a_section_in_one_run() {
    let text = base_with(
        "        - setWeight: 100\n",
        "        - pause: {duration: 10}\n        - setWeight: 150\n        - analysis: {metrics: [erors]}\n",
    );
    let d = check(
        &text,
        &[Code::InvalidValue, Code::OutOfRange, Code::UndefinedMetric],
    );
    assert_eq!(
        d[0].path.to_string(),
        "spec.strategy.canary.steps[2].pause.duration"
    );
    assert_eq!(
        d[1].path.to_string(),
        "spec.strategy.canary.steps[3].setWeight"
    );
    assert_eq!(
        d[2].path.to_string(),
        "spec.strategy.canary.steps[4].analysis.metrics[0]"
    );
    // The pause that lost its duration is not also "a pause without a duration".
    assert!(d.iter().all(|d| d.code != Code::ManualGate));
}

/// A list that lost an item to an error keeps its indices: a mistake after it is reported
/// at its own line, and a metric set aside still counts as defined.
#[test]
fn checks_after_a_removed_item_point_at_the_item_as_written() {
    let text = base_with(
        "        - setWeight: 100\n",
        "        - setWieght: 30\n        - setWeight: 10\n        - analysis: {metrics: [latency]}\n",
    )
    .replace(
        "    metrics:\n",
        "    metrics:\n      - name: latency\n        max: 0.5\n",
    );
    let d = check(
        &text,
        &[
            Code::UnknownField,
            Code::DecreasingWeight,
            Code::MissingField,
        ],
    );
    assert_eq!(d[0].path.to_string(), "spec.strategy.canary.steps[2]");
    assert_eq!(
        d[1].to_string(),
        "error: weight goes down from 20 (steps[0]) to 10 at spec.strategy.canary.steps[3].setWeight (release.yaml:16:11); weights must not decrease; a decrease is almost always a typo (use 'cutover abort' to roll back)"
    );
    assert_eq!(d[2].message, "missing field 'provider'");
}

/// Checking a section on what deserialized must not turn the loader's doing into a
/// mistake of the file: a list emptied by an error is not "no steps", and an error beside
/// a missing image does not hide it.
#[test]
fn what_was_set_aside_is_not_reported_as_absent() {
    let text = base_with(
        "      steps:\n        - setWeight: 20\n        - analysis: {}\n        - setWeight: 100\n",
        "      steps:\n        - setWieght: 20\n",
    );
    let d = check(&text, &[Code::UnknownField]);
    assert_eq!(d[0].path.to_string(), "spec.strategy.canary.steps[0]");
    let text = base_with("  image: shop:v2\n", "  replicas: many\n");
    check(&text, &[Code::MissingField, Code::InvalidValue]);
    let text = base_with("  image: shop:v2\n", "  image: [shop, v2]\n");
    let d = check(&text, &[Code::InvalidValue]);
    assert_eq!(d[0].path.to_string(), "spec.image");
}
