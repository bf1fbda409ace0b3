//! Where releases run and where their rollout state is kept.
//!
//! The rollout state machine (`cutover_core::rollout::Rollout`) asks for its state to be
//! persisted before every batch of actions; a backend keeps it next to the workload, so a
//! controller restarted anywhere resumes it. This crate holds the local backend's store, a
//! state directory; the `Backend` trait and the local backend's slots come with the
//! controller.

pub mod state_dir;

pub use state_dir::{StateDir, StateError, Stored};
