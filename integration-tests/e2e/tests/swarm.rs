//! End to end on a real Docker Swarm: `cutover serve --backend swarm --no-proxy` on this
//! host drives services on a single-node Swarm; cutover's proxy runs as a Swarm service
//! on the test's overlay network (the host cannot reach overlay addresses), pulls its
//! routes from the controller, and takes real HTTP load on a host-mode published port.
//!
//! `scripts/swarm-env.sh` (run by the test script) prepares the engine and the images. In
//! CI a missing Swarm fails these tests; elsewhere they skip, saying so loudly.

use std::time::{Duration, Instant};

use cutover_test_kit::prometheus::{PROMQL_CANARY, Prometheus};
use cutover_test_kit::swarm::{SwarmTest, demo_image, must};
use cutover_test_kit::{Load, Serve, sample};
use serde_json::Value;

/// A controller for the Swarm, its API reachable from the proxy's container.
fn controller(test: &SwarmTest, extra: &[&str]) -> Serve {
    let mut args = vec!["--backend", "swarm", "--no-proxy", "--name", &test.prefix];
    args.extend_from_slice(extra);
    Serve::start_on("0.0.0.0", &test.prefix, &args)
}

/// A test's release under way: a 2-replica `web` of v1, a controller, the proxy service,
/// and a release of `web` to `version` with `sections` submitted and routed by the proxy.
struct Routed {
    web: String,
    /// `web`'s running tasks before the release.
    before: Vec<String>,
    serve: Serve,
    proxy: std::net::SocketAddr,
    admin: u16,
    name: String,
}

fn routed(test: &SwarmTest, version: &str, sections: &str) -> Routed {
    let web = test.service("web", &demo_image("v1"), 2, &[]);
    let before = running_tasks(&web);
    let serve = controller(test, &[]);
    let (proxy, admin) = test.proxy(&serve);
    let name = test.name("shop");
    let file = serve.release_file(&name, &test.release(&name, &web, version, sections));
    let submitted = serve.run(&file, false);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    test.wait_proxy_routes(admin, &name);
    Routed {
        web,
        before,
        serve,
        proxy,
        admin,
        name,
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// IDs of a service's running tasks.
fn running_tasks(service: &str) -> Vec<String> {
    let mut ids: Vec<String> = must(&[
        "service",
        "ps",
        "--quiet",
        "--filter",
        "desired-state=running",
        service,
    ])
    .lines()
    .map(str::to_string)
    .collect();
    ids.sort();
    ids
}

/// Samples the proxy until every answer comes from `version` (the proxy long-polls the
/// controller for its table).
fn wait_all_on(proxy: std::net::SocketAddr, version: &str) {
    let started = Instant::now();
    loop {
        let counts = sample(proxy, 20);
        if counts.answered(version) == 20 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not all traffic on {version}: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn blue_green_switches_under_load_without_a_failed_request() {
    let Some(test) = SwarmTest::start("bg") else {
        return;
    };
    let Routed {
        web,
        serve,
        proxy,
        name,
        before,
        ..
    } = routed(
        &test,
        "v2",
        "  strategy:\n    blueGreen:\n      autoPromotionSeconds: 6\n      scaleDownDelay: 3s\n",
    );
    let load = Load::start(proxy, 50);
    // Adopting the stable service only labels it: its tasks keep running.
    assert_eq!(running_tasks(&web), before);
    let status = serve.wait_done(&name, Duration::from_secs(90));
    assert_eq!(status["outcome"], "promoted", "{status}");
    wait_all_on(proxy, "v2");
    std::thread::sleep(Duration::from_secs(1));
    let counts = load.finish();
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v1") > 0 && counts.answered("v2") > 0,
        "{counts:?}"
    );
    // The old colour is gone after the scale-down delay; the new one carries the state.
    assert_eq!(
        test.services(),
        sorted(vec![format!("{web}-green"), test.name("proxy")])
    );
    let labels = test.labels(&format!("{web}-green"));
    assert_eq!(labels["dev.cutover.role"], "stable", "{labels}");
    assert_eq!(labels["dev.cutover.version"], "v2", "{labels}");
    assert!(labels["dev.cutover.state"].is_string(), "{labels}");
}

#[test]
fn prometheus_rolls_back_a_failing_canary_and_promotes_a_healthy_one() {
    let Some(test) = SwarmTest::start("canary") else {
        return;
    };
    let web = test.service("web", &demo_image("v2"), 2, &[]);
    let prometheus_port = cutover_test_kit::free_port();
    let serve = controller(
        &test,
        &[
            "--prometheus",
            &format!("http://127.0.0.1:{prometheus_port}"),
        ],
    );
    let (proxy, admin) = test.proxy(&serve);
    let Some(prometheus) = Prometheus::start(prometheus_port, admin) else {
        return;
    };
    prometheus.wait_scraping();
    let name = test.name("shop");

    // v3 fails 20 % of its requests.
    let file = serve.release_file(&name, &test.release(&name, &web, "v3", PROMQL_CANARY));
    let submitted = serve.run(&file, false);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    test.wait_proxy_routes(admin, &name);
    let load = Load::start(proxy, 80);
    let status = serve.wait_done(&name, Duration::from_secs(120));
    assert_eq!(status["outcome"], "rolledBack", "{status}");
    wait_all_on(proxy, "v2");
    let counts = load.finish();
    assert!(
        counts.answered("v3") > 0,
        "the canary took no traffic: {counts:?}"
    );
    assert_eq!(counts.failures_except(&["v3"]), 0, "{counts:?}");
    assert_eq!(
        test.services(),
        sorted(vec![test.name("proxy"), web.clone()])
    );
    assert_eq!(test.labels(&web)["dev.cutover.role"], "stable");

    // A healthy v4 is promoted.
    let file = serve.release_file(&name, &test.release(&name, &web, "v4", PROMQL_CANARY));
    let load = Load::start(proxy, 80);
    let output = serve.run(&file, true);
    let counts = load.finish();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["outcome"], "promoted", "{report}");
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    wait_all_on(proxy, "v4");
    assert_eq!(
        test.services(),
        sorted(vec![format!("{web}-green"), test.name("proxy")])
    );
}

#[test]
fn a_missing_image_fails_fast_with_dockers_message_and_leaves_nothing() {
    let Some(test) = SwarmTest::start("noimage") else {
        return;
    };
    let web = test.service("web", &demo_image("v1"), 1, &[]);
    let serve = controller(&test, &[]);
    let name = test.name("shop");
    let file = serve.release_file(
        &name,
        &test.release(
            &name,
            &web,
            "no-such-version",
            "  strategy:\n    progressDeadline: 10m\n    canary:\n      steps:\n        - setWeight: 50\n",
        ),
    );
    let started = Instant::now();
    let output = serve.run(&file, true);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["outcome"], "rolledBack", "{report}");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("No such image: localhost/cutover-demo:no-such-version"),
        "{report}"
    );
    // Not the ten-minute progress deadline: the engine's rejection ends it.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(test.services(), vec![web.clone()]);
    assert_eq!(test.labels(&web)["dev.cutover.role"], "stable");
}

#[test]
fn a_controller_killed_mid_rollout_resumes_from_the_service_labels() {
    let Some(test) = SwarmTest::start("restart") else {
        return;
    };
    let Routed {
        web,
        mut serve,
        proxy,
        name,
        ..
    } = routed(
        &test,
        "v2",
        "  strategy:\n    canary:\n      scaleDownDelay: 1s\n      steps:\n        - setWeight: 20\n        - pause: {duration: 4s}\n        - setWeight: 60\n        - pause: {duration: 4s}\n",
    );
    serve.wait_for(&name, Duration::from_secs(60), |s| s["weight"] == 20);
    serve.kill();
    // Nothing of the rollout is on this host: the state is in the stable service's labels.
    let state_dir = serve.scratch.path.join("state");
    for entry in std::fs::read_dir(&state_dir).expect("state dir").flatten() {
        if entry.file_name() != "token" {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
    let labels = test.labels(&web);
    assert!(labels["dev.cutover.state"].is_string(), "{labels}");
    // The proxy keeps serving both versions while the controller is gone.
    let meanwhile = sample(proxy, 30);
    assert_eq!(meanwhile.failures_except(&[]), 0, "{meanwhile:?}");
    serve.restart();
    let status = serve.wait_done(&name, Duration::from_secs(90));
    assert_eq!(status["outcome"], "promoted", "{status}");
    let lines = cutover_test_kit::history(&serve, &name);
    let steps: Vec<u32> = lines
        .iter()
        .filter(|l| l.starts_with("step "))
        .filter_map(|l| l["step ".len()..].split(':').next()?.parse().ok())
        .collect();
    assert_eq!(
        steps,
        vec![0, 1, 2, 3],
        "each step once, in order: {lines:#?}"
    );
    wait_all_on(proxy, "v2");
    assert_eq!(
        test.services(),
        sorted(vec![format!("{web}-green"), test.name("proxy")])
    );
}

#[test]
fn the_promoted_service_keeps_its_secret_config_environment_and_volume() {
    let Some(mut test) = SwarmTest::start("keeps") else {
        return;
    };
    let secret = test.object("secret", "db-password", "hunter2");
    let config = test.object("config", "settings", "mode: blue\n");
    let volume = test.volume("data");
    let web = test.service(
        "web",
        &demo_image("v1"),
        1,
        &[
            "--secret",
            &secret,
            "--config",
            &format!("source={config},target=/etc/app/settings.yaml"),
            "--env",
            "GREETING=hello",
            "--mount",
            &format!("type=volume,source={volume},target=/data"),
        ],
    );
    let serve = controller(&test, &[]);
    let name = test.name("shop");
    let file = serve.release_file(
        &name,
        &test.release(
            &name,
            &web,
            "v2",
            "  strategy:\n    blueGreen:\n      scaleDownDelay: 1s\n",
        ),
    );
    let output = serve.run(&file, true);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let promoted = format!("{web}-green");
    test.wait_running(&promoted);
    let spec: Value = serde_json::from_str(&must(&[
        "service",
        "inspect",
        &promoted,
        "--format",
        "{{json .Spec.TaskTemplate.ContainerSpec}}",
    ]))
    .expect("json");
    assert_eq!(spec["Image"], demo_image("v2"), "{spec}");
    assert_eq!(spec["Env"], serde_json::json!(["GREETING=hello"]), "{spec}");
    assert_eq!(spec["Secrets"][0]["SecretName"], secret, "{spec}");
    assert_eq!(spec["Configs"][0]["ConfigName"], config, "{spec}");
    assert_eq!(
        spec["Configs"][0]["File"]["Name"], "/etc/app/settings.yaml",
        "{spec}"
    );
    assert_eq!(spec["Mounts"][0]["Source"], volume, "{spec}");
    assert_eq!(spec["Mounts"][0]["Target"], "/data", "{spec}");
    assert_eq!(test.services(), vec![promoted]);
}

#[test]
fn endpoints_follow_the_tasks_swarm_replaces_and_an_abort_removes_the_candidate() {
    let Some(test) = SwarmTest::start("follow") else {
        return;
    };
    let Routed {
        web,
        serve,
        proxy,
        admin,
        name,
        ..
    } = routed(
        &test,
        "v2",
        "  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n        - pause: {}\n",
    );
    let status = serve.wait_for(&name, Duration::from_secs(60), |s| {
        s["waitingForPerson"] == true
    });
    let endpoints = |s: &Value| -> Vec<String> {
        let mut e: Vec<String> = s["stable"]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        e.sort();
        e
    };
    let before = endpoints(&status);
    assert_eq!(before.len(), 2, "{status}");
    // One of the stable service's containers dies; Swarm starts a replacement, with
    // another address.
    let container = must(&[
        "ps",
        "--quiet",
        "--filter",
        &format!("label=com.docker.swarm.service.name={web}"),
    ]);
    let container = container.lines().next().expect("a container").to_string();
    must(&["rm", "--force", &container]);
    let after = serve.wait_for(&name, Duration::from_secs(60), |s| {
        let now = endpoints(s);
        now.len() == 2 && now != before
    });
    let after = endpoints(&after);
    // The proxy has the new address: no request goes to the dead one.
    let started = Instant::now();
    loop {
        let routes = cutover_test_kit::http_get(admin, "/routes").unwrap_or_default();
        if after.iter().all(|e| routes.contains(e.as_str())) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the proxy never took {after:?}: {routes}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let counts = sample(proxy, 40);
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v1") > 0 && counts.answered("v2") > 0,
        "{counts:?}"
    );
    // An abort ends it: all traffic on v1, the candidate service removed.
    let aborted = serve.cli(&["abort", &name]);
    assert_eq!(aborted.status.code(), Some(0), "{aborted:?}");
    let status = serve.wait_done(&name, Duration::from_secs(60));
    assert_eq!(status["outcome"], "aborted", "{status}");
    wait_all_on(proxy, "v1");
    assert_eq!(
        test.services(),
        sorted(vec![test.name("proxy"), web.clone()])
    );
}

#[test]
fn a_stack_service_is_adopted_untouched_and_cloned_whole() {
    let Some(test) = SwarmTest::start("stack") else {
        return;
    };
    let stack = format!("{}st", test.prefix);
    let compose = format!(
        r#"version: "3.8"
services:
  web:
    image: {image}
    environment:
      GREETING: hello
    healthcheck:
      test: ["CMD", "/cutover", "--version"]
      interval: 1s
      timeout: 2s
      retries: 3
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      labels:
        {label}: {prefix}
      resources:
        limits:
          memory: 256M
      placement:
        constraints: [node.role == manager]
    networks:
      net:
        aliases: [webalias]
networks:
  net:
    external: true
    name: {network}
"#,
        image = demo_image("v1"),
        label = cutover_test_kit::swarm::TEST_LABEL,
        prefix = test.prefix,
        network = test.network,
    );
    let serve = controller(&test, &[]);
    let file = serve.scratch.path.join("stack.yml");
    std::fs::write(&file, compose).expect("compose file");
    must(&[
        "stack",
        "deploy",
        "--compose-file",
        file.to_str().expect("path"),
        &stack,
    ]);
    let web = format!("{stack}_web");
    test.wait_running(&web);
    let template = |service: &str| -> Value {
        serde_json::from_str(&must(&[
            "service",
            "inspect",
            service,
            "--format",
            "{{json .Spec.TaskTemplate}}",
        ]))
        .expect("json")
    };
    let original = template(&web);
    assert!(
        original["ContainerSpec"]["Healthcheck"].is_object(),
        "{original}"
    );
    // The whole spec but cutover's labels.
    let spec_without_cutover = |service: &str| -> Value {
        let mut spec: Value = serde_json::from_str(&must(&[
            "service",
            "inspect",
            service,
            "--format",
            "{{json .Spec}}",
        ]))
        .expect("json");
        if let Some(labels) = spec["Labels"].as_object_mut() {
            labels.retain(|k, _| !k.starts_with("dev.cutover."));
        }
        spec
    };
    let original_spec = spec_without_cutover(&web);
    let tasks = running_tasks(&web);
    let name = test.name("shop");
    let release = serve.release_file(
        &name,
        &format!(
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    swarm:\n      service: {web}\n      network: {}\n  image: {}\n  port: 8080\n  strategy:\n    canary:\n      scaleDownDelay: 1s\n      steps:\n        - setWeight: 50\n        - pause: {{duration: 3s}}\n",
            test.network,
            demo_image("v2")
        ),
    );
    let submitted = serve.run(&release, false);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    serve.wait_for(&name, Duration::from_secs(60), |s| s["weight"] == 50);
    // Adopted and written to several times: the same spec, the same tasks.
    assert_eq!(spec_without_cutover(&web), original_spec);
    assert_eq!(running_tasks(&web), tasks);
    let labels = test.labels(&web);
    assert!(labels["dev.cutover.state"].is_string(), "{labels}");
    let status = serve.wait_done(&name, Duration::from_secs(60));
    assert_eq!(status["outcome"], "promoted", "{status}");
    // The promoted service is the stable one's spec with the new image: healthcheck,
    // environment, resources and placement kept; the stack's alias and labels dropped
    // (they would route around the proxy and let `docker stack deploy --prune` remove it).
    let promoted = format!("{web}-green");
    let mut expected = original.clone();
    expected["ContainerSpec"]["Image"] = demo_image("v2").into();
    if let Some(container) = expected["ContainerSpec"].as_object_mut() {
        if let Some(Value::Object(labels)) = container.get_mut("Labels") {
            labels.retain(|k, _| !k.starts_with("com.docker.stack."));
        }
        // The engine keeps no empty label map.
        if container["Labels"]
            .as_object()
            .is_some_and(|l| l.is_empty())
        {
            container.remove("Labels");
        }
    }
    if let Some(networks) = expected["Networks"].as_array_mut() {
        for network in networks.iter_mut().filter_map(Value::as_object_mut) {
            network.remove("Aliases");
        }
    }
    let mut actual = template(&promoted);
    // Swarm bumps ForceUpdate only on `--force`; it is not part of what was cloned.
    actual["ForceUpdate"] = expected["ForceUpdate"].clone();
    assert_eq!(actual, expected);
    assert_eq!(
        running_tasks(&promoted).len(),
        2,
        "replicas from the stable service"
    );
    let labels = test.labels(&promoted);
    assert!(
        labels.get("com.docker.stack.namespace").is_none(),
        "{labels}"
    );
    assert_eq!(labels["dev.cutover.role"], "stable", "{labels}");
    assert_eq!(test.services(), vec![promoted]);
}

#[test]
fn a_guardrail_trip_in_the_proxy_service_rolls_the_release_back() {
    let Some(test) = SwarmTest::start("guard") else {
        return;
    };
    // v3 fails 20 % of its requests; the guardrail allows 10 %.
    let Routed {
        web,
        serve,
        proxy,
        name,
        ..
    } = routed(
        &test,
        "v3",
        "  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n        - pause: {duration: 60s}\n  guardrails:\n    - name: candidate-5xx\n      metric: error_rate\n      max: 0.1\n      window: 5s\n      minRequests: 10\n",
    );
    let load = Load::start(proxy, 80);
    // The proxy service cuts v3 off and reports it; the controller rolls back long before
    // the pause would end.
    let status = serve.wait_done(&name, Duration::from_secs(40));
    let counts = load.finish();
    assert_eq!(status["outcome"], "rolledBack", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("guardrail 'candidate-5xx'"), "{status}");
    assert!(counts.answered("v3") > 0, "{counts:?}");
    wait_all_on(proxy, "v1");
    assert_eq!(
        test.services(),
        sorted(vec![test.name("proxy"), web.clone()])
    );
}

/// The fence a taking-over controller writes (`recover`) carries the same state text one
/// revision up; the old controller's next write of that text must be refused, not taken
/// for a replay of its own lost write.
#[test]
fn a_fenced_writer_cannot_pass_its_next_write_off_as_a_replay() {
    use cutover_backend::{Backend, BackendError};
    use cutover_swarm::SwarmBackend;

    let Some(test) = SwarmTest::start("fence") else {
        return;
    };
    let web = test.service("web", &demo_image("v1"), 1, &[]);
    let name = test.name("shop");
    let text = test.release(
        &name,
        &web,
        "v2",
        "  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n",
    );
    let source = cutover_core::load::Source {
        name: "release.yaml",
        text: &text,
        format: cutover_core::load::Format::Yaml,
    };
    let (release, _) = cutover_core::load::load_release(source, &Default::default())
        .unwrap_or_else(|d| panic!("{d:?}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let old = SwarmBackend::connect(&test.prefix).await.expect("connects");
        old.stable(&release, "v1").await.expect("adopted");
        let state = serde_json::json!({ "phase": "step" });
        assert_eq!(
            old.store_state(&name, &state, None).await.expect("stored"),
            1
        );
        // A replay of its own write is still recognised.
        assert_eq!(
            old.store_state(&name, &state, None).await.expect("replay"),
            1
        );
        let new = SwarmBackend::connect(&test.prefix).await.expect("connects");
        new.recover(&name).await.expect("fenced");
        assert!(matches!(
            old.store_state(&name, &state, Some(1)).await,
            Err(BackendError::Conflict { .. })
        ));
        assert_eq!(
            new.store_state(&name, &state, Some(2))
                .await
                .expect("stored"),
            3
        );
    });
}

/// The Prometheus image `scripts/swarm-env.sh` builds FROM scratch around Debian's binary,
/// needing no registry: the example stack's default (`examples/swarm/stack.yml`).
const PROMETHEUS_IMAGE: &str = "localhost/cutover-prometheus:debian";

/// Polls `GET path` on `port` of this host until `done` holds for the body; the last body.
fn poll_until(port: u16, path: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let body = cutover_test_kit::http_get(port, path).unwrap_or_default();
        if done(&body) {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: GET {path} answered {body:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The first sample's value of a Prometheus instant-query answer.
fn first_value(answer: &str) -> Option<String> {
    let answer: Value = serde_json::from_str(answer).ok()?;
    Some(
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .to_string(),
    )
}

#[test]
fn the_registry_free_prometheus_image_is_ready_and_scrapes_the_proxy_service() {
    let Some(test) = SwarmTest::start("promimage") else {
        return;
    };
    if let Err(e) = cutover_test_kit::swarm::docker(&["image", "inspect", PROMETHEUS_IMAGE]) {
        assert!(
            std::env::var_os("CI").is_none(),
            "no {PROMETHEUS_IMAGE}: scripts/swarm-env.sh builds it ({e})"
        );
        eprintln!("SKIPPED: this test needs {PROMETHEUS_IMAGE}; run `bash scripts/swarm-env.sh`");
        return;
    }
    // Nobody, without an /etc/passwd in the image.
    assert_eq!(
        must(&[
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            PROMETHEUS_IMAGE
        ]),
        "65534:65534"
    );
    let serve = controller(&test, &[]);
    let (_, admin) = test.proxy(&serve);
    // As the stack's prometheus.yml: the proxy's tasks found by Swarm's DNS.
    let config = test.object(
        "config",
        "prometheus",
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cutover-proxy\n    \
             dns_sd_configs:\n      - names: [tasks.{}]\n        type: A\n        port: 9901\n        \
             refresh_interval: 1s\n",
            test.name("proxy")
        ),
    );
    let port = cutover_test_kit::free_port();
    // The stack's flags, on the image's own /prometheus (writable by nobody).
    test.service_running(
        "prometheus",
        PROMETHEUS_IMAGE,
        1,
        &[
            "--config",
            &format!("source={config},target=/etc/prometheus/prometheus.yml"),
            "--publish",
            &format!("mode=host,target=9090,published={port}"),
        ],
        &[
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=2d",
        ],
    );
    poll_until(port, "/-/ready", "prometheus is not ready", |body| {
        body.contains("Ready")
    });
    // up{job="cutover-proxy"} is 1: the proxy's /metrics was scraped.
    poll_until(
        port,
        "/api/v1/query?query=up%7Bjob%3D%22cutover-proxy%22%7D",
        "the proxy service is not scraped",
        |body| first_value(body).as_deref() == Some("1"),
    );
    // And its samples are stored: a series the proxy's /metrics names is queryable.
    let metrics = cutover_test_kit::http_get(admin, "/metrics").expect("the proxy's /metrics");
    let name = metrics
        .lines()
        .find(|line| line.starts_with("cutover_"))
        .and_then(|line| line.split(['{', ' ']).next())
        .expect("a cutover_ series on the proxy's /metrics")
        .to_string();
    poll_until(
        port,
        &format!("/api/v1/query?query=count%28{name}%7Bjob%3D%22cutover-proxy%22%7D%29"),
        "the proxy's series are not in prometheus",
        |body| first_value(body).is_some_and(|count| count != "0"),
    );
}
