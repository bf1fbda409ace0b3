//! cutover's pure core.
//!
//! Everything here is deterministic and free of I/O: no sockets, no files, no clock. The
//! release-file types and their validation, the rollout state machine and the analysis
//! judge take their inputs (text, time, observations) as parameters and return data
//! (typed values, diagnostics, actions, verdicts). The async drivers in the other crates
//! stay thin, and every decision can be tested to the step and replayed in simulation.

pub mod backoff;
mod duration;
pub mod exposition;
pub mod judge;
pub mod spec;

pub use backoff::Backoff;
pub use duration::{Duration, DurationError, MAX_DURATION};
pub mod diagnostic;
pub mod load;
pub mod plan;
pub mod recording;
pub mod report;
pub mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use report::error_chain;
pub mod rollout;
pub mod schema;
