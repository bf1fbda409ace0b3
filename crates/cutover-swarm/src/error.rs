//! Docker API errors, sorted into what the controller does about them.

use cutover_backend::BackendError;

/// A failed Docker API call ([`crate::raw`]) as a [`BackendError`], saying what was being
/// done. The engine refusing a request as malformed (400) or naming a missing object (404)
/// will not change on a retry; anything else (the engine unreachable, a timeout, a 409, a
/// 5xx) may. Callers that know better (a 409 on a service name) decide for themselves.
pub fn api(doing: &str, error: crate::raw::ApiError) -> BackendError {
    let status = error.status.map_or_else(String::new, |s| format!(" ({s})"));
    let text = format!("docker: cannot {doing}{status}: {}", error.message.trim());
    match error.status {
        Some(400 | 404) => BackendError::Invalid(text),
        _ => BackendError::Unavailable(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: u16, message: &str) -> crate::raw::ApiError {
        crate::raw::ApiError {
            status: Some(status),
            message: message.into(),
        }
    }

    #[test]
    fn malformed_and_missing_are_not_retried_the_rest_is() {
        let refused = api("create service 'web-green'", server(400, "invalid mount\n"));
        assert!(!refused.is_retryable());
        assert_eq!(
            refused.to_string(),
            "docker: cannot create service 'web-green' (400): invalid mount"
        );
        assert!(!api("inspect", server(404, "no such service")).is_retryable());
        assert!(api("remove", server(409, "in use")).is_retryable());
        assert!(api("update", server(500, "raft unavailable")).is_retryable());
        let unanswered = crate::raw::ApiError {
            status: None,
            message: "cannot connect to /var/run/docker.sock: refused".into(),
        };
        assert!(api("list services", unanswered).is_retryable());
    }

    #[test]
    fn json_call_errors_name_the_status() {
        let error = crate::raw::ApiError {
            status: Some(500),
            message: "rpc error: code = Unknown desc = update out of sequence".into(),
        };
        assert!(error.is_out_of_sequence());
        let reported = api("update service labels", error);
        assert!(reported.is_retryable());
        assert!(reported.to_string().contains("(500)"), "{reported}");
        let missing = crate::raw::ApiError {
            status: Some(404),
            message: String::new(),
        };
        assert!(missing.is_not_found());
        assert!(!api("inspect", missing).is_retryable());
    }
}
