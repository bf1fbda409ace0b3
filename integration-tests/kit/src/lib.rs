//! TEST ONLY: the harnesses cutover's test suites share, so that no crate's `tests/` keeps
//! a copy of another's.
//!
//! - [`binary`]: the `cutover` binary under test, built from the tree on first use;
//! - [`browser`]: a headless Chromium driven over WebDriver (chromedriver);
//! - [`net`]: free ports, a plain `GET`, a refused address, waiting with a deadline;
//! - [`scratch`]: scratch directories, file modes, the local backend's leftover processes;
//! - [`serve`]: a real `cutover serve` and the CLI pointed at it;
//! - [`releases`]: release files of `cutover demo-app` versions, shared strategies,
//!   `cutover record` and `cutover analyze`;
//! - [`load`]: HTTP load through a proxy, counted by the version that answered;
//! - [`prometheus`]: Debian's Prometheus as a process, scraping one target;
//! - [`cluster`]: a multi-node Swarm of engines in network namespaces
//!   (`scripts/swarm-cluster.sh`), one scenario's services on it, load on every node;
//! - [`swarm`]: a corner of a real Docker Swarm and the images `scripts/swarm-env.sh`
//!   builds;
//! - [`docker`]: a Compose project on the real Docker engine or on Podman's Docker API;
//! - [`kube`]: the fake Kubernetes API server (`fake-kube-apiserver`) as a cluster;
//! - [`proxy`]: configurations for an in-process `cutover_proxy::Proxy`;
//! - [`tls`]: self-signed certificates, trust stores and TLS handshakes.
//!
//! A part that the machine lacks (Prometheus, a Swarm, Chromium) makes its test skip, saying so on
//! stderr, except under CI (`CI` set), where it fails the test: CI never skips a suite. Every
//! harness decides so through [`skip_or_fail`].

pub mod binary;
pub mod browser;
pub mod cluster;
pub mod docker;
pub mod kube;
pub mod load;
pub mod net;
pub mod prometheus;
pub mod proxy;
pub mod releases;
pub mod scratch;
pub mod serve;
pub mod swarm;
pub mod tls;

pub use binary::cutover_bin;
pub use load::{Counts, Load, sample};
pub use net::{closed_address, free_port, http_get, wait_healthz, wait_until};
pub use releases::{canary, demo_app, history, record, release, replay};
pub use scratch::{Scratch, instances, mode, path_in, stop_instances};
pub use serve::Serve;

/// What a test does when the machine lacks `missing` (an engine, images, a tool), which
/// `setup` (a script or a command, run by hand) provides: under CI (`CI` set) it fails the
/// test, since CI never skips a suite; elsewhere (a laptop) it says loudly on stderr that
/// the test skips and how to set the part up, and gives `None` for the harness to return.
pub fn skip_or_fail<T>(missing: &str, setup: &str) -> Option<T> {
    assert!(
        std::env::var_os("CI").is_none(),
        "this test needs {missing}, and under CI no test skips: run {setup} first"
    );
    eprintln!("SKIPPED: this test needs {missing}; run {setup} first");
    None
}
