//! [`error_chain`]: an error and its causes as one line, for messages people read.

/// An error and its causes in one line. Clients such as hyper's say only "client error
/// (Connect)" and keep the reason (refused, a certificate, no trust store) in the chain; a
/// cause whose text the line already holds is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    #[test]
    fn causes_follow_once() {
        let inner = Layer {
            text: "connection refused",
            source: None,
        };
        let middle = Layer {
            text: "client error (Connect): connection refused",
            source: Some(Box::new(inner)),
        };
        let outer = Layer {
            text: "cannot get deployments",
            source: Some(Box::new(middle)),
        };
        assert_eq!(
            error_chain(&outer),
            "cannot get deployments: client error (Connect): connection refused"
        );
    }
}
