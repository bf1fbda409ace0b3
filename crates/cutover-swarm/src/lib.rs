//! cutover's Docker Swarm backend.
//!
//! A release on Swarm starts from a service that serves now (say, one created by `docker
//! stack deploy`). [`SwarmBackend`] adopts it as the stable slot by labelling it, without
//! restarting it; deploys each candidate as a second service cloned from the stable one's
//! whole spec, with the image changed and what would bypass the proxy dropped ([`clone`]);
//! judges readiness from the tasks Swarm reports ([`tasks`]); gives the proxy the tasks'
//! addresses on the overlay network; and promotes by relabelling, so the service names
//! alternate between blue and green colours. Service specs and task lists travel as the
//! engine's JSON ([`raw`]), so a spec comes back exactly as it was read. The rollout state
//! lives in the labels too ([`labels`]), written compare-and-swap, so a controller
//! restarted on any manager resumes.

pub mod backend;
pub mod clone;
pub mod error;
pub mod labels;
pub mod raw;
pub mod tasks;

pub use backend::{ConnectError, SwarmBackend};
