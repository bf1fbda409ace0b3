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
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn start(check: &str) -> Option<Engine> {
    let missing = match docker(&["image", "inspect", &demo_image("v2")]) {
        Ok(_) => None,
        Err(e) => Some(format!("a Docker engine with the image {} ({e})", demo_image("v2"))),
    };
    if let Some(missing) = missing {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Docker conformance run needs {missing}: scripts/swarm-env.sh sets it up"
        );
        eprintln!(
            "SKIPPED: the Docker conformance run needs {missing}; run `bash scripts/swarm-env.sh` (as root) first"
        );
        return None;
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
    must(&[
        "run",
        "--detach",
        "--name",
        &web,
        "--label",
        &label,
        "--network",
        &network,
        &demo_image("v1"),
    ]);
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
