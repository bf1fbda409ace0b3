//! Docker API errors, sorted into what the controller does about them.

use cutover_backend::BackendError;

/// The questions the backend asks of a Docker API error.
pub trait Classify {
    /// The object does not exist (404).
    fn is_not_found(&self) -> bool;
    /// A compare-and-swap update lost: the service changed since it was read.
    fn is_out_of_sequence(&self) -> bool;
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

    fn is_out_of_sequence(&self) -> bool {
        matches!(
            self,
            bollard::errors::Error::DockerResponseServerError { message, .. }
                if message.contains("update out of sequence")
        )
    }
}

/// A failed JSON call ([`crate::raw`]) as a [`BackendError`], classified as [`docker`]
/// does.
pub fn api(doing: &str, error: crate::raw::ApiError) -> BackendError {
    let text = format!("docker: cannot {doing}: {}", error.message.trim());
    match error.status {
        Some(400 | 404) => BackendError::Invalid(text),
        _ => BackendError::Unavailable(text),
    }
}

/// A Docker API error as a [`BackendError`], saying what was being done. The engine
/// refusing a request as malformed (400) or naming a missing object (404) will not change
/// on a retry; anything else (the engine unreachable, a timeout, a 5xx, a name still held
/// by a service being removed) may.
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
        assert!(docker("create", server(409, "name conflicts")).is_retryable());
        assert!(docker("update", server(500, "raft unavailable")).is_retryable());
    }

    #[test]
    fn out_of_sequence_and_not_found_are_recognised() {
        assert!(
            server(
                500,
                "rpc error: code = Unknown desc = update out of sequence"
            )
            .is_out_of_sequence()
        );
        assert!(!server(500, "something else").is_out_of_sequence());
        assert!(server(404, "service web not found").is_not_found());
        assert!(!server(400, "bad").is_not_found());
    }
}
