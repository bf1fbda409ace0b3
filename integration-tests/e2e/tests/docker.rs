//! End to end on a real single-host engine: `cutover serve --backend docker` on this host
//! (controller and embedded proxy; the host reaches the bridge addresses of the project's
//! containers) drives the service `web` of a Compose project brought up by Debian's
//! `docker-compose` 1.29, under real HTTP load through the proxy.
//!
//! The core tests run twice: on Docker, and on Podman's Docker-compatible API when the test
//! script serves it (`CUTOVER_TEST_PODMAN`; the Podman variants skip, saying so, otherwise).
//! Every container, network and volume a test creates carries `dev.cutover.test` and is
//! removed when it ends; scripts/test.sh checks that nothing is left.

use std::time::{Duration, Instant};

use cutover_test_kit::docker::{ComposeTest, Engine, version_with_header};
use cutover_test_kit::{Load, Serve, canary, history, sample};
use serde_json::Value;

/// A canary in two weighted steps with pauses, the old containers removed 3 s after the
/// promotion.
const CANARY: &str = "  strategy:
    canary:
      scaleDownDelay: 3s
      steps:
        - setWeight: 20
        - pause: {duration: 3s}
        - setWeight: 60
        - pause: {duration: 3s}
";

/// Blue/green that waits for a person, with preview by header before the switch.
const BLUE_GREEN_PREVIEW: &str = "  strategy:
    blueGreen:
      previewTraffic: {match: [{header: X-Cutover-Preview}]}
      autoPromotion: false
      scaleDownDelay: 2s
";

/// Blue/green that switches at once, the old containers removed a second later.
const BLUE_GREEN_NOW: &str = "  strategy:
    blueGreen:
      scaleDownDelay: 1s
";

/// A test's Compose project with `web` at v1 (two containers) and a controller on it.
struct Project {
    test: ComposeTest,
    serve: Serve,
    /// The release's name.
    name: String,
    /// `web`'s containers before the release.
    before: Vec<String>,
}

fn project(label: &str, engine: Engine) -> Option<Project> {
    let test = ComposeTest::start(label, engine)?;
    test.write("v1", 2, "", &[], "");
    test.up();
    let before = test.containers("web");
    assert_eq!(before.len(), 2, "{before:?}");
    let serve = test.controller(&[]);
    let name = format!("{}-web", test.project);
    Some(Project {
        test,
        serve,
        name,
        before,
    })
}

impl Project {
    /// Submits the release of `web` to `version` with `sections`; waits until it is routed.
    fn submit(&self, version: &str, sections: &str) -> std::path::PathBuf {
        let file = self.serve.release_file(
            &self.name,
            &self.test.release(&self.name, version, sections),
        );
        let submitted = self.serve.run(&file, false);
        assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
        self.serve.wait_routed(&self.name);
        file
    }

    /// Samples the proxy until every answer comes from `version`.
    fn wait_all_on(&self, version: &str) {
        let started = Instant::now();
        loop {
            let counts = sample(self.serve.proxy(), 20);
            if counts.answered(version) == 20 {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "not all traffic on {version}: {counts:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until none of `ids` exists any more.
    fn wait_gone(&self, ids: &[String], limit: Duration) {
        self.test
            .wait(limit, &format!("containers {ids:?} still exist"), || {
                ids.iter().all(|id| self.test.inspect(id).is_null())
            });
    }

    /// The containers of `web` now, checked to be `count` of `version`.
    fn web_on(&self, version: &str, count: usize) -> Vec<String> {
        let now = self.test.containers("web");
        assert_eq!(
            self.test.versions(&now),
            vec![version.to_string(); count],
            "{now:?}"
        );
        now
    }
}

fn inspect_all(test: &ComposeTest, ids: &[String]) -> Vec<Value> {
    ids.iter().map(|id| test.inspect(id)).collect()
}

// --- a Compose service adopted untouched; a canary promoted under load -------------------

fn adopted_untouched_and_promoted_under_load(engine: Engine) {
    let Some(p) = project("canary", engine) else {
        return;
    };
    let inspected = inspect_all(&p.test, &p.before);
    p.submit("v2", CANARY);
    // Adoption changes nothing about the running containers: same IDs, same inspect.
    assert_eq!(
        inspect_all(&p.test, &p.before),
        inspected,
        "adoption touched the stable containers"
    );
    let load = Load::start(p.serve.proxy(), 50);
    let status = p.serve.wait_done(&p.name, Duration::from_secs(120));
    assert_eq!(status["outcome"], "promoted", "{status}");
    p.wait_all_on("v2");
    std::thread::sleep(Duration::from_secs(1));
    let counts = load.finish();
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v1") > 0 && counts.answered("v2") > 0,
        "{counts:?}"
    );
    // The old containers are gone after the scale-down delay; two of v2 are the service.
    p.wait_gone(&p.before, Duration::from_secs(30));
    let now = p.web_on("v2", 2);
    assert_eq!(p.test.labelled(), now, "nothing else is left");
}

#[test]
fn docker_adopts_a_compose_service_untouched_and_promotes_a_canary_under_load() {
    adopted_untouched_and_promoted_under_load(Engine::docker());
}

#[test]
fn podman_adopts_a_compose_service_untouched_and_promotes_a_canary_under_load() {
    if let Some(engine) = Engine::podman() {
        adopted_untouched_and_promoted_under_load(engine);
    }
}

// --- a candidate at 20 % errors rolled back by the builtin analysis ----------------------

fn failing_candidate_rolled_back(engine: Engine) {
    let Some(p) = project("errors", engine) else {
        return;
    };
    // v3 answers 20 % of its requests with 5xx; the bound is 10 %.
    p.submit("v3", &canary(0.1));
    let load = Load::start(p.serve.proxy(), 50);
    let status = p.serve.wait_done(&p.name, Duration::from_secs(120));
    assert_eq!(status["outcome"], "rolledBack", "{status}");
    p.wait_all_on("v1");
    let counts = load.finish();
    assert!(
        counts.answered("v3") > 0,
        "the canary took no traffic: {counts:?}"
    );
    assert_eq!(counts.failures_except(&["v3"]), 0, "{counts:?}");
    // The candidate's containers are removed; the stable ones are the same as before.
    p.test.wait(
        Duration::from_secs(30),
        "the candidate's containers are still there",
        || p.test.labelled() == p.before,
    );
    p.web_on("v1", 2);
}

#[test]
fn docker_rolls_back_a_candidate_failing_20_percent_by_the_builtin_analysis() {
    failing_candidate_rolled_back(Engine::docker());
}

#[test]
fn podman_rolls_back_a_candidate_failing_20_percent_by_the_builtin_analysis() {
    if let Some(engine) = Engine::podman() {
        failing_candidate_rolled_back(engine);
    }
}

// --- blue/green with preview by header, `promote --full` --------------------------------

fn blue_green_previewed_and_promoted_in_full(engine: Engine) {
    let Some(p) = project("bluegreen", engine) else {
        return;
    };
    p.submit("v2", BLUE_GREEN_PREVIEW);
    let load = Load::start(p.serve.proxy(), 50);
    let waiting = p.serve.wait_for(&p.name, Duration::from_secs(60), |s| {
        s["waitingForPerson"] == true
    });
    assert_eq!(waiting["candidate"]["version"], "v2", "{waiting}");
    // The preview header reaches the new colour; everyone else stays on the old one.
    for _ in 0..10 {
        assert_eq!(
            version_with_header(p.serve.proxy(), "X-Cutover-Preview", "always").as_deref(),
            Some("v2")
        );
    }
    let plain = sample(p.serve.proxy(), 20);
    assert_eq!(plain.answered("v1"), 20, "{plain:?}");
    let promoted = p.serve.cli(&["promote", &p.name, "--full"]);
    assert_eq!(promoted.status.code(), Some(0), "{promoted:?}");
    let status = p.serve.wait_done(&p.name, Duration::from_secs(60));
    assert_eq!(status["outcome"], "promoted", "{status}");
    p.wait_all_on("v2");
    std::thread::sleep(Duration::from_secs(1));
    let counts = load.finish();
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v1") > 0 && counts.answered("v2") > 0,
        "{counts:?}"
    );
    p.wait_gone(&p.before, Duration::from_secs(30));
    p.web_on("v2", 2);
}

#[test]
fn docker_blue_green_previews_by_header_and_promotes_in_full_without_a_failed_request() {
    blue_green_previewed_and_promoted_in_full(Engine::docker());
}

#[test]
fn podman_blue_green_previews_by_header_and_promotes_in_full_without_a_failed_request() {
    if let Some(engine) = Engine::podman() {
        blue_green_previewed_and_promoted_in_full(engine);
    }
}

// --- a missing image ---------------------------------------------------------------------

#[test]
fn a_missing_image_fails_in_under_a_second_with_the_engines_message() {
    let Some(p) = project("noimage", Engine::docker()) else {
        return;
    };
    let file = p.serve.release_file(
        &p.name,
        &p.test.release(
            &p.name,
            "no-such-version",
            "  strategy:\n    progressDeadline: 10m\n    canary:\n      steps:\n        - setWeight: 50\n",
        ),
    );
    let started = Instant::now();
    let submitted = p.serve.run(&file, false);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    let status = p
        .serve
        .wait_for(&p.name, Duration::from_secs(60), |s| s["done"] == true);
    let took = started.elapsed();
    assert_eq!(status["outcome"], "rolledBack", "{status}");
    let reason = status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("No such image: localhost/cutover-demo:no-such-version"),
        "{status}"
    );
    // The engine's answer ends it, not the ten-minute progress deadline.
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Nothing was left: the stable containers only, untouched.
    assert_eq!(p.test.labelled(), p.before);
    p.web_on("v1", 2);
}

// --- SIGKILL mid-rollout -----------------------------------------------------------------

#[test]
fn a_controller_killed_mid_rollout_resumes_with_each_step_once() {
    let Some(mut p) = project("restart", Engine::docker()) else {
        return;
    };
    p.submit(
        "v2",
        "  strategy:\n    canary:\n      scaleDownDelay: 1s\n      steps:\n        - setWeight: 20\n        - pause: {duration: 4s}\n        - setWeight: 60\n        - pause: {duration: 4s}\n",
    );
    p.serve
        .wait_for(&p.name, Duration::from_secs(60), |s| s["weight"] == 20);
    let candidates: Vec<String> = p
        .test
        .labelled()
        .into_iter()
        .filter(|id| !p.before.contains(id))
        .collect();
    assert_eq!(candidates.len(), 2, "{candidates:?}");
    p.serve.kill();
    // The containers keep running while the controller is gone.
    assert_eq!(p.test.containers("web").len(), 4);
    p.serve.restart();
    let status = p.serve.wait_done(&p.name, Duration::from_secs(90));
    assert_eq!(status["outcome"], "promoted", "{status}");
    let lines = history(&p.serve, &p.name);
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
    p.wait_all_on("v2");
    // The resumed controller kept the candidate it had made: no second one.
    p.wait_gone(&p.before, Duration::from_secs(30));
    assert_eq!(p.web_on("v2", 2), candidates);
}

// --- env, volume, network and secret file kept on the candidate --------------------------

#[test]
fn the_candidate_keeps_env_volume_networks_and_secret_file() {
    let Some(test) = ComposeTest::start("keeps", Engine::docker()) else {
        return;
    };
    std::fs::write(test.dir.join("db-password.txt"), "hunter2\n").expect("secret file");
    let label = test.label();
    test.write(
        "v1",
        1,
        "    environment:\n      GREETING: hello\n    volumes:\n      - data:/data\n    networks: [default, back]\n    secrets: [db-password]\n",
        &["back"],
        &format!(
            "volumes:\n  data:\n    labels:\n      - {label}\nsecrets:\n  db-password:\n    file: ./db-password.txt\n"
        ),
    );
    test.up();
    let stable = test.containers("web");
    let old = test.inspect(&stable[0]);
    let serve = test.controller(&[]);
    let name = format!("{}-web", test.project);
    let file = serve.release_file(&name, &test.release(&name, "v2", BLUE_GREEN_NOW));
    let output = serve.run(&file, true);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["outcome"], "promoted", "{report}");
    let promoted = test.containers("web");
    let promoted: Vec<&String> = promoted.iter().filter(|id| !stable.contains(id)).collect();
    assert_eq!(promoted.len(), 1, "{promoted:?}");
    let new = test.inspect(promoted[0]);
    assert_eq!(new["Config"]["Image"], "localhost/cutover-demo:v2", "{new}");
    assert_eq!(new["Config"]["Env"], old["Config"]["Env"], "{new}");
    assert!(
        new["Config"]["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "GREETING=hello")),
        "{new}"
    );
    // The named volume and the secret file, mounted where they were.
    let mounts = |c: &Value| -> Vec<(String, String, String)> {
        let mut m: Vec<(String, String, String)> = c["Mounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["Type"].as_str().unwrap_or_default().to_string(),
                    m["Name"]
                        .as_str()
                        .or(m["Source"].as_str())
                        .unwrap_or_default()
                        .to_string(),
                    m["Destination"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        m.sort();
        m
    };
    let kept = mounts(&new);
    assert_eq!(kept, mounts(&old), "{new}");
    assert!(
        kept.contains(&(
            "volume".into(),
            format!("{}_data", test.project),
            "/data".into()
        )),
        "{kept:?}"
    );
    assert!(
        kept.iter().any(|(kind, source, target)| kind == "bind"
            && source.ends_with("db-password.txt")
            && target == "/run/secrets/db-password"),
        "{kept:?}"
    );
    // Both networks, with no alias that would reach the candidate around the proxy.
    let networks = new["NetworkSettings"]["Networks"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = networks.keys().collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            &format!("{}_back", test.project),
            &format!("{}_default", test.project)
        ]
    );
    for (network, settings) in &networks {
        let aliases = settings["Aliases"].as_array().cloned().unwrap_or_default();
        assert!(
            !aliases.iter().any(|a| a == "web"),
            "the candidate answers to `web` on {network}: {aliases:?}"
        );
    }
    // The old container is stopped and removed after the scale-down delay.
    test.wait(
        Duration::from_secs(30),
        "the old container is still there",
        || test.inspect(&stable[0]).is_null(),
    );
}

// --- what the next `docker compose up -d` does ---------------------------------------------

fn compose_up_after_promotion(engine: Engine) {
    let Some(p) = project("composeup", engine) else {
        return;
    };
    p.submit("v2", BLUE_GREEN_NOW);
    let status = p.serve.wait_done(&p.name, Duration::from_secs(90));
    assert_eq!(status["outcome"], "promoted", "{status}");
    p.wait_gone(&p.before, Duration::from_secs(30));
    let promoted = p.web_on("v2", 2);
    let started: Vec<Value> = inspect_all(&p.test, &promoted)
        .iter()
        .map(|c| c["State"]["StartedAt"].clone())
        .collect();

    // The next `up -d`, `.env` still naming v1: Compose takes the promoted containers for
    // its own and up to date. No restart, and v1 does not come back.
    let output = p.test.up();
    assert!(output.contains("is up-to-date"), "{output}");
    assert_eq!(p.web_on("v2", 2), promoted);
    let again: Vec<Value> = inspect_all(&p.test, &promoted)
        .iter()
        .map(|c| c["State"]["StartedAt"].clone())
        .collect();
    assert_eq!(again, started, "compose restarted the promoted containers");
    p.wait_all_on("v2");

    // Writing the promoted tag to `.env` makes the compose file say what runs: the next
    // `up -d` recreates the containers once, on the same version.
    p.test.set_tag("v2");
    let output = p.test.up();
    assert!(output.contains("Recreating"), "{output}");
    let recreated = p.web_on("v2", 2);
    assert!(recreated.iter().all(|id| !promoted.contains(id)));
    // The proxy follows the containers Compose made in place of cutover's.
    p.wait_all_on("v2");
    let output = p.test.up();
    assert!(output.contains("is up-to-date"), "{output}");
    assert_eq!(p.web_on("v2", 2), recreated);

    // `docker compose down` removes them like any of the project's containers.
    p.test
        .compose(&["down", "--timeout", "2"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.test.labelled(), Vec::<String>::new());
}

#[test]
fn docker_compose_up_after_a_promotion_keeps_the_promoted_containers_running() {
    compose_up_after_promotion(Engine::docker());
}

#[test]
fn podman_compose_up_after_a_promotion_keeps_the_promoted_containers_running() {
    if let Some(engine) = Engine::podman() {
        compose_up_after_promotion(engine);
    }
}
