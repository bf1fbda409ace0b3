//! The Docker backend through the `Backend` contract's checks
//! (`cutover_backend::conformance`), on the real engine: each check gets a bridge network,
//! a stable container of `localhost/cutover-demo:v1` (images from `scripts/swarm-env.sh`)
//! and a state directory, named and labelled with its own prefix and removed afterwards.
//! The candidates carry the stable container's labels, the test label among them, so the
//! cleanup finds them too.
//!
//! Without a Docker engine or the images the checks skip, saying so; with `CI` set they
//! fail instead.

use std::path::PathBuf;
use std::sync::Arc;

use cutover_backend::conformance::Harness;
use cutover_backend::{Backend, BoxFuture};
use cutover_core::load::{Format, Source, load_release};
use cutover_core::spec::Release;
use cutover_docker::DockerBackend;
use cutover_test_kit::docker as kit_docker;
use cutover_test_kit::skip_or_fail;
use cutover_test_kit::swarm::{TEST_LABEL, demo_image, docker, must};

/// One check's corner of the engine.
struct Engine {
    prefix: String,
    release: Release,
    state_dir: PathBuf,
}

impl Engine {
    fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.prefix)
    }

    /// The IDs of the check's containers, running only unless `all`.
    fn containers(&self, all: bool) -> Vec<String> {
        let filter = format!("label={}", self.label());
        let mut args = vec!["ps", "--quiet", "--filter", &filter];
        if all {
            args.push("--all");
        }
        docker(&args)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn remove_all(&self) {
        let ids = self.containers(true);
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids.iter().map(String::as_str));
            if let Err(e) = docker(&args) {
                eprintln!("cleanup: {e}");
            }
        }
        let filter = format!("label={}", self.label());
        for id in docker(&["network", "ls", "--quiet", "--filter", &filter])
            .unwrap_or_default()
            .lines()
        {
            if let Err(e) = docker(&["network", "rm", id]) {
                eprintln!("cleanup: {e}");
            }
        }
        for volume in docker(&["volume", "ls", "--quiet", "--filter", &filter])
            .unwrap_or_default()
            .lines()
        {
            if let Err(e) = docker(&["volume", "rm", volume]) {
                eprintln!("cleanup: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }

    fn inspect(&self, container: &str) -> serde_json::Value {
        let text = must(&["inspect", container]);
        let mut list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("inspect JSON");
        list.pop().expect("one container")
    }
}

fn start(check: &str) -> Option<Engine> {
    start_with(check, &[])
}

/// The check's world, its stable container run with `extra` arguments too.
fn start_with(check: &str, extra: &[&str]) -> Option<Engine> {
    let missing = match docker(&["image", "inspect", &demo_image("v2")]) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "a Docker engine with the image {} ({e})",
            demo_image("v2")
        )),
    };
    if let Some(missing) = missing {
        return skip_or_fail(&missing, cutover_test_kit::swarm::SWARM_SETUP);
    }
    let short: String = check.split('_').filter_map(|w| w.chars().next()).collect();
    let prefix = format!("dc{}{short}", std::process::id());
    let network = format!("{prefix}-net");
    let web = format!("{prefix}-web");
    let text = format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {prefix}\nspec:\n  backend:\n    docker:\n      containers: [{web}]\n      network: {network}\n  image: {}\n  port: 8080\n  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n",
        demo_image("v2")
    );
    let source = Source {
        name: "release.yaml",
        text: &text,
        format: Format::Yaml,
    };
    let release = match load_release(source, &Default::default()) {
        Ok((release, _)) => release,
        Err(d) => panic!("{d:?}"),
    };
    let engine = Engine {
        state_dir: std::env::temp_dir().join(format!("cutover-docker-{prefix}")),
        prefix,
        release,
    };
    engine.remove_all();
    let label = engine.label();
    must(&["network", "create", "--label", &label, &network]);
    must(
        &[
            "run",
            "--detach",
            "--name",
            &web,
            "--label",
            &label,
            "--network",
            &network,
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .chain([demo_image("v1").as_str()])
        .collect::<Vec<_>>(),
    );
    Some(engine)
}

async fn engine(check: &'static str) -> Option<Arc<dyn Harness>> {
    let engine = tokio::task::spawn_blocking(move || start(check))
        .await
        .expect("set-up")?;
    Some(Arc::new(engine))
}

impl Harness for Engine {
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>> {
        Box::pin(async move {
            let backend: Arc<dyn Backend> = Arc::new(
                DockerBackend::connect(&self.prefix, &self.state_dir)
                    .await
                    .expect("connects to the Docker engine"),
            );
            backend
        })
    }

    fn release(&self) -> &Release {
        &self.release
    }

    /// One container per slot here (one replica): the running containers are the
    /// workloads.
    fn workloads(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move { tokio::task::block_in_place(|| self.containers(false).len()) })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { tokio::task::block_in_place(|| self.remove_all()) })
    }
}

cutover_backend::conformance_suite!(engine);

// Beyond the contract: what the Docker backend promises of the containers themselves.

use std::time::{Duration, Instant};

use cutover_backend::{Readiness, Slot};

async fn world(check: &'static str, extra: &'static [&'static str]) -> Option<Engine> {
    tokio::task::spawn_blocking(move || start_with(check, extra))
        .await
        .expect("set-up")
}

/// The adopted container is not touched: same ID, no restart, its inspect the same before
/// the adoption and after a candidate was deployed beside it and removed again.
#[tokio::test(flavor = "multi_thread")]
async fn adoption_leaves_the_stable_container_untouched() {
    let Some(engine) = world("adoption_untouched", &[]).await else {
        return;
    };
    let web = format!("{}-web", engine.prefix);
    let before = engine.inspect(&web);
    let backend = engine.backend().await;
    let engine = Arc::new(engine);
    let outcome = {
        let engine = engine.clone();
        async move {
            let stable = backend.stable(&engine.release, "v1").await.expect("stable");
            assert_eq!(stable.endpoints.len(), 1, "{stable:?}");
            match backend.deploy(&engine.release, "v2").await.expect("deploy") {
                Readiness::Ready(view) => assert_eq!(view.endpoints.len(), 1, "{view:?}"),
                Readiness::Failed { reason } => panic!("the candidate failed: {reason}"),
            }
            backend
                .retire(&engine.release.metadata.name, Slot::Candidate)
                .await
                .expect("retire");
            let after = engine.inspect(&web);
            assert_eq!(before, after, "the adopted container changed");
        }
    };
    let outcome = tokio::spawn(outcome).await;
    tokio::task::block_in_place(|| engine.remove_all());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// An image the engine does not have fails the deploy at once, in the engine's words,
/// and leaves no container behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_fails_at_once_with_the_engines_words_and_leaves_nothing() {
    let Some(engine) = world("missing_image", &[]).await else {
        return;
    };
    let backend = engine.backend().await;
    let mut release = engine.release.clone();
    release.spec.image = Some("localhost/cutover-demo:no-such-tag".into());
    let engine = Arc::new(engine);
    let outcome = {
        let engine = engine.clone();
        async move {
            backend.stable(&release, "v1").await.expect("stable");
            let started = Instant::now();
            let readiness = backend
                .deploy(&release, "v9")
                .await
                .expect("deploy answers");
            let took = started.elapsed();
            match readiness {
                Readiness::Failed { reason } => {
                    assert!(reason.contains("No such image"), "{reason}");
                    assert!(reason.contains("no-such-tag"), "{reason}");
                }
                Readiness::Ready(view) => panic!("a missing image became ready: {view:?}"),
            }
            assert!(took < Duration::from_secs(1), "took {took:?}");
            let left = tokio::task::block_in_place(|| engine.containers(true));
            assert_eq!(left.len(), 1, "only the stable container: {left:?}");
            let candidate = backend
                .endpoints(&release.metadata.name, Slot::Candidate)
                .await
                .expect("endpoints");
            assert_eq!(candidate, None);
        }
    };
    let outcome = tokio::spawn(outcome).await;
    tokio::task::block_in_place(|| engine.remove_all());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The candidate keeps the stable container's environment, named volume, second network
/// and secret file, and gets neither its published port nor its network aliases.
#[tokio::test(flavor = "multi_thread")]
async fn the_candidate_keeps_env_volume_network_and_secret_file() {
    let secrets =
        std::env::temp_dir().join(format!("cutover-docker-secret-{}", std::process::id()));
    std::fs::create_dir_all(&secrets).expect("secret dir");
    let token = secrets.join("token");
    std::fs::write(&token, "s3cret").expect("secret file");
    let mount: &'static str =
        Box::leak(format!("{}:/run/secrets/token:ro", token.display()).into_boxed_str());
    let prefix = format!("dc{}kevnsf", std::process::id());
    let volume: &'static str = Box::leak(format!("{prefix}-data:/data").into_boxed_str());
    let back: &'static str = Box::leak(format!("{prefix}-back").into_boxed_str());
    let extra: &'static [&'static str] = Box::leak(
        vec![
            "--env",
            "GREETING=hello",
            "--volume",
            volume,
            "--volume",
            mount,
            "--publish",
            "127.0.0.1::8080",
            "--network-alias",
            "web",
        ]
        .into_boxed_slice(),
    );
    let Some(engine) = world("keeps_env_volume_network_secret_file", extra).await else {
        return;
    };
    let engine = Arc::new(engine);
    let outcome = {
        let engine = engine.clone();
        async move {
            let web = format!("{}-web", engine.prefix);
            tokio::task::block_in_place(|| {
                must(&["network", "create", "--label", &engine.label(), back]);
                must(&["network", "connect", back, &web]);
            });
            let backend = engine.backend().await;
            backend.stable(&engine.release, "v1").await.expect("stable");
            match backend.deploy(&engine.release, "v2").await.expect("deploy") {
                Readiness::Ready(_) => {}
                Readiness::Failed { reason } => panic!("the candidate failed: {reason}"),
            }
            let stable_id = engine.inspect(&web)["Id"].clone();
            let candidate = tokio::task::block_in_place(|| {
                engine
                    .containers(false)
                    .into_iter()
                    .map(|id| engine.inspect(&id))
                    .find(|c| c["Id"] != stable_id)
                    .expect("a candidate container")
            });
            assert_eq!(candidate["Config"]["Image"], demo_image("v2"));
            let env = candidate["Config"]["Env"].as_array().expect("env");
            assert!(env.contains(&"GREETING=hello".into()), "{env:?}");
            let mounts = candidate["Mounts"].as_array().expect("mounts");
            assert!(
                mounts
                    .iter()
                    .any(|m| m["Name"] == format!("{}-data", engine.prefix)
                        && m["Destination"] == "/data"),
                "{mounts:?}"
            );
            assert!(
                mounts
                    .iter()
                    .any(|m| m["Source"] == token.display().to_string()
                        && m["Destination"] == "/run/secrets/token"
                        && m["RW"] == false),
                "{mounts:?}"
            );
            let networks = candidate["NetworkSettings"]["Networks"]
                .as_object()
                .expect("networks");
            assert!(networks.contains_key(back), "{networks:?}");
            assert!(
                networks.contains_key(&format!("{}-net", engine.prefix)),
                "{networks:?}"
            );
            for (name, settings) in networks {
                let aliases = settings["Aliases"].as_array().cloned().unwrap_or_default();
                assert!(!aliases.contains(&"web".into()), "{name}: {aliases:?}");
            }
            assert_eq!(
                candidate["NetworkSettings"]["Ports"]["8080/tcp"],
                serde_json::Value::Null
            );
            let published = candidate["HostConfig"]["PortBindings"]
                .as_object()
                .map_or(0, |p| p.len());
            assert_eq!(published, 0, "{}", candidate["HostConfig"]);
            backend
                .retire(&engine.release.metadata.name, Slot::Candidate)
                .await
                .expect("retire");
        }
    };
    let outcome = tokio::spawn(outcome).await;
    tokio::task::block_in_place(|| {
        engine.remove_all();
        // Made by `docker run --volume`, so without the test label.
        if let Err(e) = docker(&["volume", "rm", &format!("{prefix}-data")]) {
            eprintln!("cleanup: {e}");
        }
    });
    let _ = std::fs::remove_dir_all(&secrets);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The chosen answer to "what does the next `docker-compose up -d` do after a
/// promotion": the promoted containers carry the service's Compose labels with the config
/// hash unchanged, so with the compose file and `.env` as they were, Compose finds them up
/// to date: same containers, not restarted, and the old version not started again. And
/// `docker-compose down` removes them with the project.
#[tokio::test(flavor = "multi_thread")]
async fn compose_up_after_a_promotion_keeps_the_promoted_containers() {
    let engine = kit_docker::Engine::docker();
    let project = format!("dc{}compose", std::process::id());
    let dir = std::env::temp_dir().join(format!("cutover-docker-{project}"));
    if kit_docker::compose(&engine, &project, &std::env::temp_dir(), &["version"]).is_err()
        || docker(&["image", "inspect", &demo_image("v2")]).is_err()
    {
        skip_or_fail::<()>(
            "docker-compose and the demo images",
            "`bash scripts/test.sh` (as root)",
        );
        return;
    }
    std::fs::create_dir_all(&dir).expect("project dir");
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"3.8\"\nservices:\n  web:\n    image: localhost/cutover-demo:${{TAG}}\n    environment:\n      GREETING: hello\n    labels:\n      {TEST_LABEL}: \"{project}\"\n"
        ),
    )
    .expect("compose file");
    std::fs::write(dir.join(".env"), "TAG=v1\n").expect(".env");
    let text = format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {project}\nspec:\n  backend:\n    docker:\n      project: {project}\n      service: web\n      network: {project}_default\n  image: {}\n  port: 8080\n  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n",
        demo_image("v2")
    );
    let source = Source {
        name: "release.yaml",
        text: &text,
        format: Format::Yaml,
    };
    let release = match load_release(source, &Default::default()) {
        Ok((release, _)) => release,
        Err(d) => panic!("{d:?}"),
    };
    let state_dir = dir.join("state");
    let outcome = {
        let (engine, dir, project) = (engine.clone(), dir.clone(), project.clone());
        tokio::spawn(async move {
            kit_docker::compose(&engine, &project, &dir, &["up", "-d"]).expect("compose up");
            let backend = DockerBackend::connect(&project, &state_dir)
                .await
                .expect("connects");
            let name = &release.metadata.name;
            backend.stable(&release, "v1").await.expect("stable");
            match backend.deploy(&release, "v2").await.expect("deploy") {
                Readiness::Ready(_) => {}
                Readiness::Failed { reason } => panic!("the candidate failed: {reason}"),
            }
            backend.promote(name).await.expect("promote");
            backend.retire(name, Slot::Previous).await.expect("retire");
            let filter = format!("label=com.docker.compose.project={project}");
            let running = || {
                must(&[
                    "ps",
                    "--all",
                    "--filter",
                    &filter,
                    "--format",
                    "{{.ID}} {{.Image}} {{.Status}}",
                ])
            };
            let started = |id: &str| must(&["inspect", "--format", "{{.State.StartedAt}}", id]);
            let before = tokio::task::block_in_place(running);
            let lines: Vec<&str> = before.lines().collect();
            assert_eq!(lines.len(), 1, "{before}");
            assert!(lines[0].contains(":v2"), "{before}");
            let id = lines[0].split(' ').next().unwrap_or_default().to_string();
            let started_before = started(&id);

            let up = kit_docker::compose(&engine, &project, &dir, &["up", "-d"])
                .expect("compose up again");
            assert!(up.contains("up-to-date"), "{up}");
            let after = tokio::task::block_in_place(running);
            assert_eq!(
                after
                    .lines()
                    .map(|l| l.split(' ').next())
                    .collect::<Vec<_>>(),
                vec![Some(id.as_str())],
                "{after}"
            );
            assert!(!after.contains(":v1"), "the old version came back: {after}");
            assert_eq!(
                started(&id),
                started_before,
                "the promoted container restarted"
            );

            // The user records the new tag: Compose replaces the promoted container once,
            // on the same version, and the stable slot follows the replacement.
            std::fs::write(dir.join(".env"), "TAG=v2\n").expect(".env");
            let up = kit_docker::compose(&engine, &project, &dir, &["up", "-d"])
                .expect("compose up on v2");
            assert!(up.contains("Recreating"), "{up}");
            let replaced = tokio::task::block_in_place(running);
            assert!(!replaced.contains(&id), "{replaced}");
            assert!(!replaced.contains(":v1"), "{replaced}");
            let new_id = replaced.split(' ').next().unwrap_or_default().to_string();
            let address = must(&[
                "inspect",
                "--format",
                &format!(
                    "{{{{(index .NetworkSettings.Networks \"{project}_default\").IPAddress}}}}"
                ),
                &new_id,
            ]);
            let stable = backend
                .endpoints(name, Slot::Stable)
                .await
                .expect("endpoints")
                .expect("a stable slot");
            assert_eq!(stable.endpoints, vec![format!("{address}:8080")]);
            assert_eq!(stable.version, "v2");

            kit_docker::compose(&engine, &project, &dir, &["down"]).expect("compose down");
            assert_eq!(
                tokio::task::block_in_place(running),
                "",
                "down left containers"
            );
        })
        .await
    };
    let _ = kit_docker::compose(&engine, &project, &dir, &["down", "--volumes"]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A candidate whose container exits and is restarted in a loop (the stable container's
/// `--restart always` carries over) fails the deploy with its exit code, and leaves no
/// container behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_candidate_fails_with_its_exit_code_and_leaves_nothing() {
    let Some(engine) = world("crash_looping", &["--restart", "always"]).await else {
        return;
    };
    let engine = Arc::new(engine);
    let outcome = {
        let engine = engine.clone();
        async move {
            let backend = engine.backend().await;
            let mut release = engine.release.clone();
            // The cutover binary without arguments prints its usage and exits.
            release.spec.image = Some(cutover_test_kit::swarm::PROXY_IMAGE.into());
            backend.stable(&release, "v1").await.expect("stable");
            let started = Instant::now();
            let readiness =
                tokio::time::timeout(Duration::from_secs(30), backend.deploy(&release, "broken"))
                    .await
                    .expect("the deploy ends by itself")
                    .expect("deploy answers");
            match readiness {
                Readiness::Failed { reason } => {
                    assert!(reason.contains("exit code"), "{reason}");
                    assert!(reason.contains("broken"), "names the container: {reason}");
                }
                Readiness::Ready(view) => panic!("a crashing candidate became ready: {view:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{:?}",
                started.elapsed()
            );
            let left = tokio::task::block_in_place(|| engine.containers(true));
            assert_eq!(left.len(), 1, "only the stable container: {left:?}");
        }
    };
    let outcome = tokio::spawn(outcome).await;
    tokio::task::block_in_place(|| engine.remove_all());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
