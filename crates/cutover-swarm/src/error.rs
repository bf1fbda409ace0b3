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
