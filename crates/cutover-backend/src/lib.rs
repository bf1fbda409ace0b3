//! Where releases run and where their rollout state is kept.
//!
//! [`Backend`] is what the controller drives: deploy a candidate, report its endpoints,
//! promote, retire, and keep the rollout state next to the workload so that a controller
//! restarted anywhere resumes. [`local::LocalBackend`] runs releases on addresses the
//! user runs or on processes cutover supervises; the Swarm and Kubernetes backends live in
//! their own crates.

pub mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod local;
pub mod locks;
pub mod revision;
pub mod state_dir;
pub mod writer;

pub use backend::{Backend, BackendError, BoxFuture, LogFile, Readiness, Slot, SlotView};
pub use local::LocalBackend;
pub use locks::ReleaseLocks;
pub use state_dir::{StateDir, StateError, Stored, create_private_dir, create_private_file};
pub use writer::writer_id;
