//! cutover's Docker backend: releases of containers on one engine (Docker, or Podman's
//! Docker-compatible API), typically a Compose project's service.
//!
//! [`DockerBackend`] adopts the containers that serve now as the stable slot without
//! touching them (no label, no restart: Docker cannot relabel a container); creates each
//! candidate's containers from the stable container's inspected configuration with the new
//! image and nothing that bypasses the proxy ([`clone`]), carrying the Compose labels of the
//! service so that Compose keeps counting them as its own ([`compose`]); judges readiness
//! from Docker's health status or an HTTP probe ([`ready`]); and keeps which containers play
//! which slot, and the rollout state, in the controller's state directory ([`slots`]). The
//! engine is reached with the Swarm backend's JSON client ([`cutover_swarm::raw`]).

pub mod backend;
pub mod clone;
pub mod compose;
pub mod ready;
pub mod slots;

pub use backend::{ConnectError, DockerBackend};
