//! The controller's own metrics, served at `/metrics` in Prometheus's text format: each
//! rollout's phase, weight and step, analysis outcomes, guardrail trips, finished
//! rollouts and their durations, and how long the controller takes to act on an input.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cutover_core::exposition::{
    Labels, MetricType, write_family, write_histogram, write_sample, write_samples,
};

/// Every phase a rollout reports, in the `phase` label.
pub const PHASES: [&str; 9] = [
    "preRollout",
    "deploying",
    "step",
    "promoting",
    "scalingDown",
    "rollingBack",
    "promoted",
    "rolledBack",
    "aborted",
];

/// Bucket bounds, in seconds, for step latency.
const LATENCY_BOUNDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Bucket bounds, in seconds, for rollout durations.
const DURATION_BOUNDS: [f64; 10] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (bucket, bound) in self.buckets.iter_mut().zip(bounds) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.sum += value;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &Labels, bounds: &[f64]) {
        let buckets = bounds
            .iter()
            .enumerate()
            .map(|(i, bound)| (*bound, self.buckets.get(i).copied().unwrap_or(0)));
        write_histogram(out, name, labels, buckets, self.sum, self.count);
    }
}

/// One rollout's gauges.
#[derive(Clone, Debug, Default)]
struct RolloutGauges {
    phase: &'static str,
    weight: u8,
    step: usize,
    steps: usize,
}

#[derive(Default)]
struct State {
    rollouts: BTreeMap<String, RolloutGauges>,
    measurements: BTreeMap<(String, String, &'static str), u64>,
    finished: BTreeMap<&'static str, u64>,
    durations: BTreeMap<&'static str, Histogram>,
    trips: BTreeMap<(String, String), u64>,
    notifications: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    step_latency: Histogram,
}

/// The controller's metrics.
#[derive(Default)]
pub struct ControllerMetrics {
    state: Mutex<State>,
}

impl ControllerMetrics {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Records a rollout's current phase, weight and step.
    pub fn rollout(
        &self,
        release: &str,
        phase: &'static str,
        weight: u8,
        step: usize,
        steps: usize,
    ) {
        self.with(|s| {
            s.rollouts.insert(
                release.to_string(),
                RolloutGauges {
                    phase,
                    weight,
                    step,
                    steps,
                },
            );
        });
    }

    /// Forgets a deleted release's gauges and counters, so `/metrics` stops showing it.
    pub fn forget(&self, release: &str) {
        self.with(|s| {
            s.rollouts.remove(release);
            s.measurements.retain(|(r, _, _), _| r != release);
            s.trips.retain(|(r, _), _| r != release);
        });
    }

    /// Counts one measurement and its result (`pass`, `fail`, `inconclusive`, `error`).
    pub fn measurement(&self, release: &str, metric: &str, result: &'static str) {
        self.with(|s| {
            *s.measurements
                .entry((release.to_string(), metric.to_string(), result))
                .or_default() += 1;
        });
    }

    /// Counts a finished rollout (`promoted`, `rolledBack`, `aborted`) and its duration.
    pub fn finished(&self, outcome: &'static str, seconds: f64) {
        self.with(|s| {
            *s.finished.entry(outcome).or_default() += 1;
            s.durations
                .entry(outcome)
                .or_default()
                .observe(&DURATION_BOUNDS, seconds);
        });
    }

    /// Counts a guardrail trip.
    pub fn trip(&self, release: &str, guardrail: &str) {
        self.with(|s| {
            *s.trips
                .entry((release.to_string(), guardrail.to_string()))
                .or_default() += 1;
        });
    }

    /// Counts one notification by service, trigger and result (`sent`, `failed`: given
    /// up after its attempts, `dropped`: the queue was full). Labels are closed sets, so
    /// no release or receiver can grow the series.
    pub fn notification(&self, service: &'static str, trigger: &'static str, result: &'static str) {
        self.with(|s| {
            *s.notifications
                .entry((service, trigger, result))
                .or_default() += 1;
        });
    }

    /// Records how long the controller took from an input (an observation, a due timer)
    /// to having persisted and dispatched the actions it caused.
    pub fn step_latency(&self, seconds: f64) {
        self.with(|s| s.step_latency.observe(&LATENCY_BOUNDS, seconds));
    }

    /// The metrics in Prometheus's text format.
    pub fn render(&self) -> String {
        self.with(|s| {
            let mut out = String::new();
            render_rollouts(&mut out, &s.rollouts);
            write_samples(
                &mut out,
                "cutover_analysis_measurements_total",
                "Analysis measurements by result.",
                MetricType::Counter,
                s.measurements.iter().map(|((release, metric, result), n)| {
                    let labels = Labels::new()
                        .with("release", release)
                        .with("metric", metric)
                        .with("result", result);
                    (labels, n)
                }),
            );
            write_samples(
                &mut out,
                "cutover_guardrail_trips_total",
                "Guardrail trips seen by the controller.",
                MetricType::Counter,
                s.trips.iter().map(|((release, guardrail), n)| {
                    let labels = Labels::new()
                        .with("release", release)
                        .with("guardrail", guardrail);
                    (labels, n)
                }),
            );
            write_samples(
                &mut out,
                "cutover_notifications_total",
                "Notifications by service, trigger and result (sent, failed, dropped).",
                MetricType::Counter,
                s.notifications
                    .iter()
                    .map(|((service, trigger, result), n)| {
                        let labels = Labels::new()
                            .with("service", service)
                            .with("trigger", trigger)
                            .with("result", result);
                        (labels, n)
                    }),
            );
            write_samples(
                &mut out,
                "cutover_rollouts_total",
                "Rollouts finished, by outcome.",
                MetricType::Counter,
                s.finished
                    .iter()
                    .map(|(outcome, n)| (Labels::new().with("outcome", outcome), n)),
            );
            write_family(
                &mut out,
                "cutover_rollout_duration_seconds",
                "How long finished rollouts took.",
                MetricType::Histogram,
            );
            for (outcome, h) in &s.durations {
                let labels = Labels::new().with("outcome", outcome);
                h.write(
                    &mut out,
                    "cutover_rollout_duration_seconds",
                    &labels,
                    &DURATION_BOUNDS,
                );
            }
            write_family(
                &mut out,
                "cutover_step_latency_seconds",
                "From an input (observation or due timer) to its actions persisted and dispatched.",
                MetricType::Histogram,
            );
            s.step_latency.write(
                &mut out,
                "cutover_step_latency_seconds",
                &Labels::new(),
                &LATENCY_BOUNDS,
            );
            out
        })
    }
}

/// Reads one gauge of a rollout.
type GaugeOf = fn(&RolloutGauges) -> usize;

/// Writes each rollout's phase, weight and step gauges.
fn render_rollouts(out: &mut String, rollouts: &BTreeMap<String, RolloutGauges>) {
    write_family(
        out,
        "cutover_rollout_phase",
        "The rollout's phase: 1 for the current one.",
        MetricType::Gauge,
    );
    for (release, g) in rollouts {
        for phase in PHASES {
            let labels = Labels::new().with("release", release).with("phase", phase);
            write_sample(
                out,
                "cutover_rollout_phase",
                &labels,
                u8::from(phase == g.phase),
            );
        }
    }
    let gauges: [(&str, &str, GaugeOf); 3] = [
        (
            "cutover_rollout_weight",
            "Percentage of weighted traffic on the candidate.",
            |g| usize::from(g.weight),
        ),
        (
            "cutover_rollout_step",
            "The plan step the rollout is at (from 0).",
            |g| g.step,
        ),
        (
            "cutover_rollout_steps",
            "The number of steps in the rollout's plan.",
            |g| g.steps,
        ),
    ];
    for (name, help, value) in gauges {
        let samples = rollouts
            .iter()
            .map(|(release, g)| (Labels::new().with("release", release), value(g)));
        write_samples(out, name, help, MetricType::Gauge, samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_phase_is_one_and_the_others_zero() {
        let m = ControllerMetrics::default();
        m.rollout("shop", "step", 25, 3, 9);
        m.measurement("shop", "error-rate", "pass");
        m.finished("promoted", 42.0);
        m.step_latency(0.003);
        let out = m.render();
        assert!(
            out.contains("cutover_rollout_phase{release=\"shop\",phase=\"step\"} 1"),
            "{out}"
        );
        assert!(out.contains("cutover_rollout_phase{release=\"shop\",phase=\"promoted\"} 0"));
        assert!(out.contains("cutover_rollout_weight{release=\"shop\"} 25"));
        assert!(out.contains(
            "cutover_analysis_measurements_total{release=\"shop\",metric=\"error-rate\",result=\"pass\"} 1"
        ));
        assert!(
            out.contains(
                "cutover_rollout_duration_seconds_bucket{outcome=\"promoted\",le=\"60\"} 1"
            )
        );
        assert!(
            out.contains(
                "cutover_rollout_duration_seconds_bucket{outcome=\"promoted\",le=\"30\"} 0"
            )
        );
        assert!(out.contains("cutover_step_latency_seconds_count 1"));
    }

    #[test]
    fn a_release_name_cannot_break_a_line_or_forge_a_series() {
        let m = ControllerMetrics::default();
        m.trip("shop\"} 1\nforged{a=\"", "error\\rate");
        let out = m.render();
        assert!(
            out.contains(
                "cutover_guardrail_trips_total{release=\"shop\\\"} 1\\nforged{a=\\\"\",guardrail=\"error\\\\rate\"} 1\n"
            ),
            "{out}"
        );
        assert!(!out.lines().any(|l| l.starts_with("forged")), "{out}");
    }
}
