use super::follow::bar_filled;
use super::render::{NextStepHint, rfc3339, status_block, time_of};
use serde_json::Value;
use serde_json::json;

#[test]
fn history_times_are_rfc3339_with_date_and_zone() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    // 2026-12-06T12:20:05.123Z
    assert_eq!(rfc3339(1_796_559_605_123), "2026-12-06T12:20:05Z");
    assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    assert_eq!(time_of(&Value::Null), "-");
}

#[test]
fn the_progress_bar_is_full_from_promotion_on_and_empty_after_a_rollback() {
    let at = |phase: &str, step: Value| json!({"phase": phase, "step": step, "steps": 4});
    assert_eq!(bar_filled(&at("step", json!(2)), 20), 10);
    assert_eq!(bar_filled(&at("promoting", Value::Null), 20), 20);
    assert_eq!(bar_filled(&at("scalingDown", Value::Null), 20), 20);
    assert_eq!(bar_filled(&at("promoted", Value::Null), 20), 20);
    assert_eq!(bar_filled(&at("rolledBack", Value::Null), 20), 0);
}

#[test]
fn the_promote_hint_is_said_once_per_wait() {
    let waiting = json!({"name": "shop", "step": 3, "waitingForPerson": true,
        "paused": false, "done": false, "description": "at step 3 (waiting for promote)"});
    let mut hints = NextStepHint::default();
    let first = hints.next(&waiting).expect("a hint");
    assert!(first.contains("`cutover promote shop`"), "{first}");
    assert_eq!(hints.next(&waiting), None);
}

#[test]
fn a_promoted_release_shows_the_promoted_version_as_stable() {
    let status = json!({"name": "shop", "strategy": "canary", "phase": "promoted",
        "description": "promoted", "weight": 0, "done": true, "outcome": "promoted",
        "previousVersion": "v1",
        "stable": {"version": "v2", "endpoints": ["127.0.0.1:4000"]},
        "candidate": {"version": "v2", "endpoints": []}});
    let block = status_block(&status);
    assert!(
        block.contains("stable     v2 127.0.0.1:4000 (promoted, was v1)"),
        "{block}"
    );
    assert!(!block.contains("not running"), "{block}");
}

#[test]
fn status_shows_the_last_failed_notification_of_each_service() {
    let status = json!({"name": "shop", "phase": "step", "step": 1, "steps": 3,
    "previousVersion": "v1",
    "stable": {"version": "v1", "endpoints": []},
    "candidate": {"version": "v2", "endpoints": []},
    "notifications": [
        {"service": "slack", "trigger": "pausedForPerson", "at": 0,
         "error": "slack answered 500 Internal Server Error"}
    ]});
    let block = status_block(&status);
    assert!(
        block.contains(
            "notify     slack did not get pausedForPerson: slack answered 500 Internal Server Error"
        ),
        "{block}"
    );
}
