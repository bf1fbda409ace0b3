//! The Swarm backend through the `Backend` contract's checks
//! (`cutover_backend::conformance`), on the real engine: each check gets an overlay network
//! and a stable service of `localhost/cutover-demo:v1` (images from
//! `scripts/swarm-env.sh`), named and labelled with its own prefix and removed afterwards.
//!
//! Without a Docker Swarm the checks skip, saying so; with `CI` set they fail instead.

mod support;

use std::sync::Arc;

use cutover_backend::conformance::Harness;
use cutover_backend::{Backend, BoxFuture};
use cutover_core::spec::Release;
use cutover_swarm::SwarmBackend;
use support::{Swarm, start};

async fn swarm(check: &'static str) -> Option<Arc<dyn Harness>> {
    let swarm = tokio::task::spawn_blocking(move || start(check))
        .await
        .expect("set-up")?;
    Some(Arc::new(swarm))
}

impl Harness for Swarm {
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>> {
        Box::pin(async move {
            let backend: Arc<dyn Backend> = Arc::new(
                SwarmBackend::connect(&self.prefix)
                    .await
                    .expect("connects to the Swarm"),
            );
            backend
        })
    }

    fn release(&self) -> &Release {
        &self.release
    }

    fn workloads(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            let services = tokio::task::block_in_place(|| self.services());
            services.iter().filter(|(_, wanted)| *wanted > 0).count()
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { tokio::task::block_in_place(|| self.remove_all()) })
    }
}

cutover_backend::conformance_suite!(swarm);
