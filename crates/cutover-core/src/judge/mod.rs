//! The analysis judge: measurements in, verdicts out. Pure: no clock, no I/O.
//!
//! The driver asks the providers for measurements when the metric's `interval` says so and
//! hands each result in; the judge only decides. Keeping time and I/O out makes every
//! verdict reproducible from the recorded measurements and testable to the measurement.
//!
//! Three levels:
//! * [`assess`] judges one [`Measurement`] against one metric's checks (`min`, `max`,
//!   comparison with stable, Mann-Whitney test) into an [`Assessment`]. Where the provider
//!   gives [`Evidence`] (counts and latency histograms), [`MetricJudge`] pools the
//!   analysis's windows and judges them with the tests of `inference` instead: pass only
//!   when the data excludes a breach, fail only when it shows one.
//! * [`MetricJudge`] accumulates the assessments of one metric over one analysis into a
//!   [`Verdict`], with Argo Rollouts' limits (`failureLimit`, `inconclusiveLimit`,
//!   `consecutiveErrorLimit`, `count`).
//! * [`RunJudge`] combines the metrics of one analysis run into the run's verdict.
//!
//! Missing data is never a pass at any level.

mod assess;
pub mod evidence;
pub mod grid;
mod inference;
pub mod mann_whitney;
mod measurement;
mod metric;
pub mod normal;
pub mod progress;
mod run;
pub mod schedule;
pub mod stats;
#[cfg(test)]
mod testing;

use serde::{Deserialize, Serialize};

pub use assess::{Assessment, MoreData, assess};
pub use evidence::{Bin, Evidence, Histogram};
pub use mann_whitney::{Alternative, MannWhitney, mann_whitney_u};
pub use measurement::{Measurement, MeasurementResult};
pub use metric::MetricJudge;
pub use progress::{AnalysisProgress, MetricProgress};
pub use run::{RunJudge, UnknownMetric};
pub use schedule::{AnalysisRun, Due};

/// The outcome of one metric, or of a whole analysis run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Every measurement is in and none broke a limit.
    Success,
    /// Failed measurements exceeded `failureLimit`.
    Failure,
    /// Too little data to decide: never a pass.
    Inconclusive,
    /// The provider could not be asked, more often than `consecutiveErrorLimit` allows.
    Error,
}
