//! Wall-clock time as the state machine counts it: milliseconds since the Unix epoch.
//! Persisted timestamps survive a restart, so timers keep their meaning across one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover_core::rollout::Timestamp;

/// Now.
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// How long from now until `at` (zero if past).
pub fn until(at: Timestamp) -> Duration {
    Duration::from_millis(at.0.saturating_sub(now().0))
}

/// Sleeps until `at`.
pub async fn sleep_until(at: Timestamp) {
    tokio::time::sleep(until(at)).await;
}
