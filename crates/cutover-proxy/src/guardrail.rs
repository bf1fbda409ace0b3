//! Guardrails: hard limits on the candidate, checked by the proxy itself on its rolling
//! windows: every guardrail every 250 ms ([`TICK`]), and a route's guardrails as soon as
//! its candidate has failed since they were last checked (looked at every 20 ms,
//! [`FAILURE_LOOK`]). A trip stops all traffic to the candidate (weight, header rules and
//! mirroring) in the next table, within a second of the breach (an error-rate breach
//! within about 20 ms), long before an analysis interval would notice, and raises an
//! event for the controller.
//!
//! Why two paces: a full check sums a window of every route (18 ms for 1,000 routes with
//! 60 s guardrail windows in an optimised build, see
//! `many_healthy_routes_trip_nothing_and_a_check_reports_its_cost`), too much to run
//! often; a candidate's failure count is a few atomic reads (0.2 ms for 1,000 routes),
//! cheap to look at every 20 ms.
//! An error rate can only rise past its limit when failures are added (or when healthy
//! seconds leave the window, which the next full check sees), so an error-rate breach
//! trips as soon as it happens rather than up to a tick later; a latency guardrail is
//! checked with the rest on the tick.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::spec::GuardrailMetric;
use tokio::sync::watch;

use crate::Shared;
use crate::events::EventKind;
use crate::metrics::{VersionStats, WindowStats};
use crate::table::{CompiledRoute, RouteTable};

/// How often every guardrail of every route is checked.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// How often the candidates' failure counts are looked at between two full checks.
pub(crate) const FAILURE_LOOK: Duration = Duration::from_millis(20);

/// Checks the guardrails until shutdown: in full every [`TICK`], and, every
/// [`FAILURE_LOOK`] between, those of the routes whose candidate failed since. While no
/// route has an error-rate guardrail on a candidate that gets traffic, only the full
/// checks run (an idle proxy wakes four times a second, as before).
pub(crate) async fn watch(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut failures = Failures::default();
    let mut next_full = tokio::time::Instant::now();
    let mut next = next_full;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => return,
        }
        let now = tokio::time::Instant::now();
        let pass = if now >= next_full {
            // Missed checks are not made up: the next is a tick from this one.
            next_full = now + TICK;
            Pass::Full
        } else {
            Pass::Failed
        };
        let checked = check(&shared.table.load(), shared.second(), pass, &mut failures);
        next = if checked.watching_failures {
            next_full.min(now + FAILURE_LOOK)
        } else {
            next_full
        };
        if !checked.trips.is_empty() {
            cut_off(&shared, checked.trips).await;
        }
    }
}

/// Which routes a check looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Every route whose candidate gets traffic.
    Full,
    /// Only those whose candidate failed since its route was last checked.
    Failed,
}

/// Each candidate's failure count (its 5xx answers and upstream failures since it was
/// first routed) when its route was last checked, by its counters' address: the counters
/// of a release's version outlive table changes, so a candidate keeps its entry.
#[derive(Default)]
struct Failures {
    seen: HashMap<usize, u64>,
}

impl Failures {
    /// Whether `stats` counts failures that were not there at the last look, noting its
    /// count now either way.
    fn grew(&mut self, stats: &Arc<VersionStats>) -> bool {
        let now = stats.requests_by_class()[4];
        let key = Arc::as_ptr(stats) as usize;
        self.seen.insert(key, now) != Some(now)
    }

    /// Forgets the candidates that are no longer in `table`, so the map never outgrows it.
    fn keep_only(&mut self, table: &RouteTable) {
        if self.seen.len() > table.routes.len() {
            let current: std::collections::HashSet<usize> = table
                .routes
                .iter()
                .filter_map(|r| r.candidate.as_ref())
                .map(|c| Arc::as_ptr(&c.stats) as usize)
                .collect();
            self.seen.retain(|key, _| current.contains(key));
        }
    }
}

/// What a check found.
struct Checked {
    /// The guardrails breached, as the events their trips raise.
    trips: Vec<EventKind>,
    /// Whether any route has an error-rate guardrail on a candidate that gets traffic:
    /// whether looking at failures between full checks can find anything.
    watching_failures: bool,
}

/// The guardrails breached at `second` (on the proxy's clock) on the routes of `table`
/// whose candidate still gets traffic and that `pass` looks at.
fn check(table: &RouteTable, second: u64, pass: Pass, failures: &mut Failures) -> Checked {
    failures.keep_only(table);
    let mut checked = Checked {
        trips: Vec::new(),
        watching_failures: false,
    };
    for route in &table.routes {
        let Some(candidate) = &route.candidate else {
            continue;
        };
        let gets_traffic = route.weight_bp > 0 || !route.rules.is_empty() || route.mirror_bp > 0;
        if !gets_traffic || route.guardrails().is_empty() {
            continue;
        }
        let on_errors = route
            .guardrails()
            .iter()
            .any(|g| g.metric == GuardrailMetric::ErrorRate);
        checked.watching_failures |= on_errors;
        // Looked at on full checks too, so that what counts as new is what came after
        // the route's last check.
        let failed = on_errors && failures.grew(&candidate.stats);
        if pass == Pass::Failed && !failed {
            continue;
        }
        if let Some(trip) = breached(route, candidate, second) {
            checked.trips.push(trip);
        }
    }
    checked
}

/// The first guardrail of `route` that `candidate`'s window breaches at `second`, as the
/// event its trip raises.
fn breached(
    route: &CompiledRoute,
    candidate: &crate::table::Version,
    second: u64,
) -> Option<EventKind> {
    // Summing a window is most of a check's cost: guardrails on the same window (an
    // error rate and a latency, say) share one sum.
    let mut summed: Vec<(u64, WindowStats)> = Vec::new();
    for guard in route.guardrails() {
        let seconds = guard.window.as_secs().max(1);
        let index = match summed.iter().position(|(s, _)| *s == seconds) {
            Some(index) => index,
            None => {
                summed.push((seconds, candidate.stats.window(seconds, second)));
                summed.len() - 1
            }
        };
        let window = &summed[index].1;
        if window.requests < guard.min_requests.max(1) {
            continue;
        }
        let value = match guard.metric {
            GuardrailMetric::ErrorRate => window.error_rate,
            GuardrailMetric::LatencyP99 => window.latency_p99,
        };
        if let Some(value) = value.filter(|v| *v > guard.max) {
            return Some(EventKind::GuardrailTripped {
                release: route.config.release.clone(),
                version: candidate.name.clone(),
                guardrail: guard.name.clone(),
                value,
                max: guard.max,
                requests: window.requests,
            });
        }
    }
    None
}

/// Publishes a table in which the tripped candidates get no traffic, and records why.
async fn cut_off(shared: &Shared, trips: Vec<EventKind>) {
    let _writer = shared.table_writer.lock().await;
    let mut config = shared.table.load().to_config();
    for trip in &trips {
        if let EventKind::GuardrailTripped { release, .. } = trip
            && let Some(route) = config.routes.iter_mut().find(|r| r.release == *release)
        {
            route.weight = 0;
            route.match_rules.clear();
            route.mirror_percent = 0;
        }
    }
    if let Err(e) = shared.publish(&config) {
        tracing::error!(error = %e, "cannot publish the table that cuts off a tripped candidate");
        return;
    }
    for trip in trips {
        tracing::warn!(event = ?trip, "guardrail tripped: candidate cut off");
        shared.events.push(trip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, RouteTableConfig, VersionConfig};
    use cutover_core::spec::GuardrailSpec;

    /// A guardrail on a 60 s window that needs 20 requests.
    fn guard(metric: GuardrailMetric, max: f64) -> GuardrailSpec {
        GuardrailSpec {
            name: format!("{metric:?}"),
            metric,
            max,
            window: cutover_core::Duration::from_secs(60),
            min_requests: 20,
        }
    }

    /// A table of `routes` routes, each sending 10 % to a candidate with `guardrails`,
    /// keeping `window` seconds of history.
    fn table(routes: usize, guardrails: &[GuardrailSpec], window: u64) -> RouteTable {
        let version = |name: &str| VersionConfig {
            name: name.into(),
            endpoints: vec!["127.0.0.1:9".into()],
        };
        let routes = (0..routes)
            .map(|i| RouteConfig {
                release: format!("r{i}"),
                host: Some(format!("r{i}.test")),
                path_prefix: None,
                stable: version("v1"),
                candidate: Some(version("v2")),
                weight: 10,
                match_rules: Vec::new(),
                sticky: None,
                mirror_percent: 0,
                guardrails: guardrails.to_vec(),
            })
            .collect();
        crate::table::Registry::new(window)
            .compile(&RouteTableConfig { routes }, 1)
            .expect("a valid table")
    }

    /// Records `count` candidate requests of the first route at `second`, answered
    /// `status` after `elapsed`.
    fn record(table: &RouteTable, count: u64, status: u16, elapsed: Duration, second: u64) {
        let stats = &table.routes[0].candidate.as_ref().expect("candidate").stats;
        for _ in 0..count {
            stats.start();
            stats.finish(Some(status), None, elapsed, second);
        }
    }

    /// Regression (issue 15, the guardrail test flaking at 1.004 s): the failures that
    /// breach an error-rate guardrail are checked on the next look at the failure
    /// counts, not up to a tick later.
    #[test]
    fn failures_since_the_last_check_are_checked_before_the_next_tick() {
        let table = table(1, &[guard(GuardrailMetric::ErrorRate, 0.5)], 60);
        let mut failures = Failures::default();
        record(&table, 30, 200, Duration::from_millis(1), 3);
        let healthy = check(&table, 3, Pass::Full, &mut failures);
        assert!(healthy.trips.is_empty());
        assert!(healthy.watching_failures);
        record(&table, 31, 500, Duration::from_millis(1), 3);
        let checked = check(&table, 3, Pass::Failed, &mut failures);
        assert!(
            matches!(
                checked.trips.as_slice(),
                [EventKind::GuardrailTripped { requests: 61, .. }]
            ),
            "{:?}",
            checked.trips
        );
    }

    /// A look between full checks checks only routes whose candidate failed since their
    /// last check; a breach without new failures (latency) waits for the full check, and
    /// with no error-rate guardrail there is nothing to look at between full checks.
    #[test]
    fn only_new_failures_are_checked_between_full_checks() {
        let table = table(1, &[guard(GuardrailMetric::LatencyP99, 0.1)], 60);
        let mut failures = Failures::default();
        record(&table, 30, 200, Duration::from_secs(1), 3);
        let look = check(&table, 3, Pass::Failed, &mut failures);
        assert!(look.trips.is_empty(), "{:?}", look.trips);
        assert!(!look.watching_failures);
        let full = check(&table, 3, Pass::Full, &mut failures);
        assert_eq!(full.trips.len(), 1, "{:?}", full.trips);
    }

    /// Many healthy routes (5 % errors, p99 under the limit) trip nothing, on a full
    /// check or a look at the failures; and what each costs, printed. By default a small
    /// table, so that the test runs in CI; the measurement in the module's doc is
    /// `ROUTES=1000 WINDOW=300 cargo test --profile profiling -p cutover-proxy --lib --
    /// --nocapture guardrail::tests::many_healthy` (`RPS` candidate requests a second,
    /// default 20; `WINDOW`, `metricsWindow`'s default 300 s there).
    #[test]
    fn many_healthy_routes_trip_nothing_and_a_check_reports_its_cost() {
        let var = |name: &str, default: u64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (window, per_second) = (var("WINDOW", 30), var("RPS", 20));
        let routes = usize::try_from(var("ROUTES", 50)).unwrap_or(50);
        let guards = [
            guard(GuardrailMetric::ErrorRate, 0.5),
            guard(GuardrailMetric::LatencyP99, 5.0),
        ];
        let table = table(routes, &guards, window);
        for route in &table.routes {
            let stats = &route.candidate.as_ref().expect("candidate").stats;
            for second in 0..window {
                for n in 0..per_second {
                    stats.start();
                    let status = if n == 0 { 500 } else { 200 };
                    let elapsed = Duration::from_micros(200 + n * n * 150);
                    stats.finish(Some(status), None, elapsed, second);
                }
            }
        }
        let mut failures = Failures::default();
        let started = std::time::Instant::now();
        for _ in 0..20 {
            assert!(
                check(&table, window - 1, Pass::Full, &mut failures)
                    .trips
                    .is_empty()
            );
        }
        let full = started.elapsed() / 20;
        let started = std::time::Instant::now();
        for _ in 0..1000 {
            assert!(
                check(&table, window - 1, Pass::Failed, &mut failures)
                    .trips
                    .is_empty()
            );
        }
        let look = started.elapsed() / 1000;
        eprintln!(
            "{routes} routes, {window} s of {per_second} requests/s: a full check {full:?}, a look at the failures {look:?}"
        );
    }
}
