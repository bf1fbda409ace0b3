//! What the Swarm suites share: Docker on the command line, and one check's corner of the
//! Swarm (an overlay network and a stable service of `localhost/cutover-demo:v1`, images
//! from `scripts/swarm-env.sh`), named and labelled with the check's own prefix.

use std::time::{Duration, Instant};

use cutover_core::load::{Format, Source, load_release};
use cutover_core::spec::Release;

pub use cutover_test_kit::swarm::{TEST_LABEL, demo_image as image, docker, must};

/// One check's corner of the Swarm.
pub struct Swarm {
    /// Names every service, network and label value of the check.
    pub prefix: String,
    /// The check's release: its stable service is `<prefix>-web`.
    pub release: Release,
}

impl Swarm {
    pub fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.prefix)
    }

    /// `(name, replicas wanted)` of every service named with the check's prefix.
    pub fn services(&self) -> Vec<(String, u64)> {
        let listed = docker(&[
            "service",
            "ls",
            "--filter",
            &format!("name={}", self.prefix),
            "--format",
            "{{.Name}} {{.Replicas}}",
        ])
        .unwrap_or_default();
        listed
            .lines()
            .filter_map(|line| {
                let (name, replicas) = line.split_once(' ')?;
                let wanted = replicas
                    .split_once('/')?
                    .1
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()?;
                name.starts_with(&self.prefix)
                    .then(|| (name.to_string(), wanted))
            })
            .collect()
    }

    pub fn remove_all(&self) {
        let names: Vec<String> = self.services().into_iter().map(|(n, _)| n).collect();
        if !names.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(names.iter().map(String::as_str));
            if let Err(e) = docker(&args) {
                eprintln!("cleanup: {e}");
            }
        }
        let started = Instant::now();
        let filter = format!("label={}", self.label());
        loop {
            let networks =
                docker(&["network", "ls", "--quiet", "--filter", &filter]).unwrap_or_default();
            let mut left = false;
            for id in networks.lines() {
                left |= docker(&["network", "rm", id]).is_err();
            }
            if !left || started.elapsed() > Duration::from_secs(60) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Checks for the Swarm and the images and makes the check's network and stable service.
pub fn start(check: &str) -> Option<Swarm> {
    let missing = match docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) {
        Ok(state) if state == "active" => docker(&["image", "inspect", &image("v2")])
            .err()
            .map(|_| format!("the image {}", image("v2"))),
        Ok(state) => Some(format!("a Swarm (this engine's swarm state is '{state}')")),
        Err(e) => Some(format!("a Docker engine ({e})")),
    };
    if let Some(missing) = missing {
        return cutover_test_kit::skip_or_fail(&missing, cutover_test_kit::swarm::SWARM_SETUP);
    }
    // Short: Swarm names are at most 63 characters, and candidates add a suffix.
    let short: String = check.split('_').filter_map(|w| w.chars().next()).collect();
    let prefix = format!("cc{}{short}", std::process::id());
    let network = format!("{prefix}-net");
    let web = format!("{prefix}-web");
    let text = format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {prefix}\nspec:\n  backend:\n    swarm:\n      service: {web}\n      network: {network}\n  image: {}\n  port: 8080\n  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n",
        image("v2")
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
    let swarm = Swarm { prefix, release };
    swarm.remove_all();
    let label = swarm.label();
    must(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--attachable",
        "--label",
        &label,
        &network,
    ]);
    must(&[
        "service",
        "create",
        "--detach",
        "--name",
        &web,
        "--label",
        &label,
        "--network",
        &network,
        "--endpoint-mode",
        "dnsrr",
        "--replicas",
        "1",
        &image("v1"),
    ]);
    let started = Instant::now();
    loop {
        let running = docker(&[
            "service",
            "ls",
            "--filter",
            &format!("name={web}"),
            "--format",
            "{{.Replicas}}",
        ])
        .unwrap_or_default();
        if running.starts_with("1/1") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stable service did not start: {running}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Some(swarm)
}
