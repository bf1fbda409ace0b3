//! What a provider hands the judge: one measurement of one metric, or why there is none.

use serde::{Deserialize, Serialize};

use super::evidence::Evidence;

/// One measurement of one metric, for the candidate and (when the metric compares) for
/// stable, taken over the same window.
///
/// Every field may be missing, because providers differ: a PromQL query without
/// `{{version}}` yields only the candidate's value, a query over an idle window yields
/// nothing, and only some providers know how many requests a value stands for or can hand
/// over raw samples. The judge treats what is missing as "no data", never as a pass.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// The candidate's value; `None` (or NaN) means no data.
    #[serde(default)]
    pub candidate: Option<f64>,
    /// Stable's value over the same window, for comparisons; `None` when not measured.
    #[serde(default)]
    pub stable: Option<f64>,
    /// How many requests the candidate's value is computed from, when the provider knows:
    /// an error rate of 100% over one request says nothing, so too few requests make the
    /// measurement inconclusive (`minRequests`).
    #[serde(default)]
    pub candidate_requests: Option<u64>,
    /// The candidate's raw samples (e.g. per-request latencies), for the Mann-Whitney test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidate_samples: Vec<f64>,
    /// Stable's raw samples over the same window, for the Mann-Whitney test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stable_samples: Vec<f64>,
    /// The candidate's evidence over the window (counts and latency histogram), from
    /// providers that have it. With evidence, the judge pools the analysis's windows and
    /// tests them; the values above are then only for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_evidence: Option<Evidence>,
    /// Stable's evidence over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_evidence: Option<Evidence>,
}

impl Measurement {
    /// A measurement of the candidate alone, for metrics judged by fixed thresholds.
    pub fn of_candidate(candidate: f64) -> Self {
        Measurement {
            candidate: Some(candidate),
            ..Measurement::default()
        }
    }

    /// A measurement of both versions, for metrics that compare the candidate with stable.
    pub fn of_both(candidate: f64, stable: f64) -> Self {
        Measurement {
            candidate: Some(candidate),
            stable: Some(stable),
            ..Measurement::default()
        }
    }

    /// The same measurement, stating how many requests the candidate's value stands for.
    pub fn with_requests(self, candidate_requests: u64) -> Self {
        Measurement {
            candidate_requests: Some(candidate_requests),
            ..self
        }
    }

    /// The same measurement, with both versions' evidence for the tests on evidence.
    pub fn with_evidence(self, candidate: Evidence, stable: Option<Evidence>) -> Self {
        Measurement {
            candidate_evidence: Some(candidate),
            stable_evidence: stable,
            ..self
        }
    }

    /// The same measurement, with both versions' raw samples for the statistical test.
    pub fn with_samples(self, candidate_samples: Vec<f64>, stable_samples: Vec<f64>) -> Self {
        Measurement {
            candidate_samples,
            stable_samples,
            ..self
        }
    }
}

/// One attempt at measuring a metric: the provider answered, or it could not be asked.
///
/// The two are kept apart because they count differently: a provider error says nothing
/// about the candidate, so it never fails or passes a measurement and does not count
/// towards `count`; only too many errors in a row end the metric (in `Error`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MeasurementResult {
    /// The provider answered (possibly with no data).
    Value(Measurement),
    /// The provider could not be asked or its answer could not be read; the message says
    /// why, for the operator.
    Error(String),
}

impl From<Measurement> for MeasurementResult {
    fn from(measurement: Measurement) -> Self {
        MeasurementResult::Value(measurement)
    }
}
