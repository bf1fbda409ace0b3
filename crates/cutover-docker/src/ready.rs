//! Whether a candidate container is ready, waiting or failed, from its inspect.

use serde_json::Value;

/// One container's readiness, as its inspect shows it.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Running and healthy (with a healthcheck).
    Healthy,
    /// Running without a healthcheck: the HTTP probe decides.
    Running,
    /// Starting, or not healthy yet.
    Waiting(String),
    /// Exited, dead or restarted: it will not become ready. The engine's words.
    Failed(String),
}

/// Reads a container's inspect.
pub fn state(inspect: &Value) -> State {
    let name = crate::clone::name_of(inspect);
    let st = &inspect["State"];
    let status = st["Status"].as_str().unwrap_or("unknown");
    let restarts = inspect["RestartCount"].as_u64().unwrap_or(0);
    let error = st["Error"].as_str().unwrap_or_default();
    let code = st["ExitCode"].as_i64().unwrap_or(0);
    let words = |what: &str| {
        let mut text = format!("container '{name}' {what} (exit code {code})");
        if !error.is_empty() {
            text.push_str(&format!(": {error}"));
        }
        text
    };
    if matches!(status, "exited" | "dead") {
        return State::Failed(words(&format!("is {status}")));
    }
    if restarts > 0 || status == "restarting" {
        return State::Failed(words(&format!("restarted {} time(s)", restarts.max(1))));
    }
    if status != "running" {
        return State::Waiting(format!("container '{name}' is {status}"));
    }
    // Podman reports an empty status for a container without a healthcheck.
    match st["Health"]["Status"].as_str() {
        None | Some("none" | "") => State::Running,
        Some("healthy") => State::Healthy,
        Some(other) => State::Waiting(format!("container '{name}' is {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_from_inspects() {
        let running = json!({"Name": "/c", "State": {"Status": "running"}, "RestartCount": 0});
        assert_eq!(state(&running), State::Running);
        let podman_unchecked =
            json!({"Name": "/c", "State": {"Status": "running", "Health": {"Status": ""}}});
        assert_eq!(state(&podman_unchecked), State::Running);
        let healthy =
            json!({"Name": "/c", "State": {"Status": "running", "Health": {"Status": "healthy"}}});
        assert_eq!(state(&healthy), State::Healthy);
        let starting =
            json!({"Name": "/c", "State": {"Status": "running", "Health": {"Status": "starting"}}});
        assert_eq!(
            state(&starting),
            State::Waiting("container 'c' is starting".into())
        );
        let exited =
            json!({"Name": "/c", "State": {"Status": "exited", "ExitCode": 3, "Error": ""}});
        assert_eq!(
            state(&exited),
            State::Failed("container 'c' is exited (exit code 3)".into())
        );
        let looping =
            json!({"Name": "/c", "State": {"Status": "running", "ExitCode": 1}, "RestartCount": 2});
        assert_eq!(
            state(&looping),
            State::Failed("container 'c' restarted 2 time(s) (exit code 1)".into())
        );
        let created = json!({"Name": "/c", "State": {"Status": "created"}});
        assert!(matches!(state(&created), State::Waiting(_)));
    }
}
