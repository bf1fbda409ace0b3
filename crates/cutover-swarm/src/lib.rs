//! cutover's Docker Swarm backend.
//!
//! A release on Swarm starts from a service that serves now (say, one created by `docker
//! stack deploy`). [`SwarmBackend`] adopts it as the stable slot by labelling it, without
//! restarting it; deploys each candidate as a second service cloned from the stable one's
//! full spec with only the image (and replica count) changed ([`clone`]); judges readiness
//! from the tasks Swarm reports ([`tasks`]); gives the proxy the tasks' addresses on the
//! overlay network (from the task list's JSON, [`raw`]); and promotes by relabelling, so the service names alternate between
//! blue and green colours. The rollout state lives in the labels too ([`labels`]), written
//! compare-and-swap on the service's version, so a controller restarted on any manager
//! resumes.

pub mod backend;
pub mod clone;
pub mod error;
pub mod labels;
pub mod raw;
pub mod tasks;

pub use backend::{ConnectError, SwarmBackend};
