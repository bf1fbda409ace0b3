//! Docker API errors, sorted into what the controller does about them.

use cutover_backend::BackendError;

/// The question the backend asks of a bollard error.
pub trait Classify {
    /// The object does not exist (404).
    fn is_not_found(&self) -> bool;
}

impl Classify for bollard::errors::Error {
    fn is_not_found(&self) -> bool {
        matches!(
            self,
            bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }
        )
    }
}

/// A failed JSON call ([`crate::raw`]) as a [`BackendError`], classified as [`docker`]
/// does.
pub fn api(doing: &str, error: crate::raw::ApiError) -> BackendError {
    let status = error.status.map_or_else(String::new, |s| format!(" ({s})"));
    let text = format!("docker: cannot {doing}{status}: {}", error.message.trim());
    match error.status {
        Some(400 | 404) => BackendError::Invalid(text),
        _ => BackendError::Unavailable(text),
    }
}

/// A Docker API error as a [`BackendError`], saying what was being done. The engine
/// refusing a request as malformed (400) or naming a missing object (404) will not change
/// on a retry; anything else (the engine unreachable, a timeout, a 5xx) may. Callers that
/// know better (a 409 on a service name) decide for themselves.
pub fn docker(doing: &str, error: bollard::errors::Error) -> BackendError {
    match error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => {
            let text = format!("docker: cannot {doing}: {}", message.trim());
            if matches!(status_code, 400 | 404) {
                BackendError::Invalid(text)
            } else {
                BackendError::Unavailable(text)
            }
        }
        other => BackendError::Unavailable(format!("docker: cannot {doing}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        }
    }

    #[test]
    fn malformed_and_missing_are_not_retried_the_rest_is() {
        let refused = docker("create service 'web-green'", server(400, "invalid mount\n"));
        assert!(!refused.is_retryable());
        assert_eq!(
            refused.to_string(),
            "docker: cannot create service 'web-green': invalid mount"
        );
        assert!(!docker("inspect", server(404, "no such service")).is_retryable());
        assert!(docker("remove", server(409, "in use")).is_retryable());
        assert!(docker("update", server(500, "raft unavailable")).is_retryable());
    }

    #[test]
    fn not_found_is_recognised() {
        assert!(server(404, "service web not found").is_not_found());
        assert!(!server(400, "bad").is_not_found());
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
