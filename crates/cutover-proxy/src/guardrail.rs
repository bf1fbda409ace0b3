//! Guardrails: hard limits on the candidate, checked by the proxy itself every 250 ms on
//! its rolling windows. A trip stops all traffic to the candidate (weight, header rules
//! and mirroring) in the next table, within about a second of the breach, long before an
//! analysis interval would notice, and raises an event for the controller.

use std::sync::Arc;
use std::time::Duration;

use cutover_core::spec::GuardrailMetric;
use tokio::sync::watch;

use crate::Shared;
use crate::events::EventKind;

/// How often the guardrails are checked.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// Checks every route's guardrails until shutdown.
pub(crate) async fn watch(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let trips = check(&shared);
        if !trips.is_empty() {
            cut_off(&shared, trips).await;
        }
    }
}

/// The guardrails breached now, on routes whose candidate still gets traffic, as the
/// events a trip raises.
fn check(shared: &Shared) -> Vec<EventKind> {
    let table = shared.table.load();
    let second = shared.second();
    let mut trips = Vec::new();
    for route in &table.routes {
        let Some(candidate) = &route.candidate else {
            continue;
        };
        let gets_traffic = route.weight_bp > 0 || !route.rules.is_empty() || route.mirror_bp > 0;
        if !gets_traffic {
            continue;
        }
        for guard in route.guardrails() {
            let window = candidate
                .stats
                .window(guard.window.as_secs().max(1), second);
            if window.requests < guard.min_requests.max(1) {
                continue;
            }
            let value = match guard.metric {
                GuardrailMetric::ErrorRate => window.error_rate,
                GuardrailMetric::LatencyP99 => window.latency_p99,
            };
            if let Some(value) = value.filter(|v| *v > guard.max) {
                trips.push(EventKind::GuardrailTripped {
                    release: route.config.release.clone(),
                    version: candidate.name.clone(),
                    guardrail: guard.name.clone(),
                    value,
                    max: guard.max,
                    requests: window.requests,
                });
                break;
            }
        }
    }
    trips
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
