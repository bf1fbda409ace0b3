//! Kubernetes API errors sorted into what the controller does next: retry (the API server
//! is away or overloaded, or lost a race) or give up (the release cannot run as written,
//! or cutover lacks a permission).

use cutover_backend::BackendError;

/// One API call as RBAC sees it: the verb and the resource, so that a 403 can say which
/// rule the controller's Role lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call<'a> {
    /// The RBAC verbs the call needs: `get`, `list`, `watch`, `create`, `update`,
    /// `patch`, `delete` (a server-side apply needs `patch`, and `create` when the object
    /// does not exist yet).
    pub verbs: &'a [&'a str],
    /// The resource, plural (`deployments`).
    pub resource: &'a str,
    /// The API group (`apps`; empty for the core group).
    pub group: &'a str,
    /// The namespace.
    pub namespace: &'a str,
}

impl Call<'_> {
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// The HTTP status of an API error, if the server answered one.
pub fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether the server answered 404.
pub fn is_not_found(e: &kube::Error) -> bool {
    code(e) == Some(404)
}

/// Whether the server answered 409 (a stale `resourceVersion`, or a name taken).
pub fn is_conflict(e: &kube::Error) -> bool {
    code(e) == Some(409)
}

/// Turns a failed `call` into the controller's terms.
pub fn classify(call: Call<'_>, e: kube::Error) -> BackendError {
    let what = format!(
        "{} {} in namespace '{}'",
        call.verbs.join(" or "),
        call.qualified(),
        call.namespace
    );
    let verbs = call
        .verbs
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    match &e {
        kube::Error::Api(status) => {
            let message = &status.message;
            // RBAC's own refusals read "... is forbidden: User \"...\" cannot <verb> ...";
            // other 403s (an admission webhook, a quota) say their own reason.
            let rbac = (message.contains(" cannot ") && message.contains(" resource \""))
                || message.is_empty();
            match status.code {
                403 if !rbac => BackendError::Invalid(format!(
                    "forbidden: the API server refused to {what}: {message}"
                )),
                403 => BackendError::Invalid(format!(
                    "forbidden: cutover may not {what}: the controller's Role needs the rule \
                     {{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [{verbs}]}} (see \
                     examples/kubernetes/rbac.yaml). The API server said: {message}",
                    call.group, call.resource
                )),
                401 => BackendError::Unavailable(format!(
                    "the API server refused cutover's credentials to {what} (401): {message}"
                )),
                400 | 422 => BackendError::Invalid(format!(
                    "the API server rejected the request to {what} ({} {}): {message}",
                    status.code, status.reason
                )),
                _ => BackendError::Unavailable(format!(
                    "cannot {what}: the API server answered {} {}: {message}",
                    status.code, status.reason
                )),
            }
        }
        _ => BackendError::Unavailable(format!(
            "cannot {what}: the API server did not answer: {}",
            cutover_core::error_chain(&e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            serde_json::from_value(serde_json::json!({
                "status": "Failure", "message": message, "reason": reason, "code": code,
            }))
            .expect("a status"),
        ))
    }

    const PATCH: Call<'static> = Call {
        verbs: &["patch"],
        resource: "deployments",
        group: "apps",
        namespace: "shop",
    };

    #[test]
    fn forbidden_names_the_missing_rule_and_is_final() {
        let e = classify(
            PATCH,
            api_error(
                403,
                "Forbidden",
                "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:shop:cutover\" cannot patch resource \"deployments\"",
            ),
        );
        assert!(!e.is_retryable());
        let text = e.to_string();
        let apply = classify(
            Call {
                verbs: &["create", "patch"],
                ..PATCH
            },
            api_error(
                403,
                "Forbidden",
                "admission webhook \"policy\" denied the request",
            ),
        )
        .to_string();
        assert!(!apply.contains("Role"), "{apply}");
        let apply = classify(
            Call {
                verbs: &["create", "patch"],
                ..PATCH
            },
            api_error(
                403,
                "Forbidden",
                "User \"x\" cannot create resource \"deployments\"",
            ),
        )
        .to_string();
        assert!(apply.contains(r#"verbs: ["create", "patch"]"#), "{apply}");
        assert!(
            apply.contains("may not create or patch deployments.apps"),
            "{apply}"
        );
        assert!(
            text.contains("may not patch deployments.apps in namespace 'shop'"),
            "{text}"
        );
        assert!(
            text.contains(r#"{apiGroups: ["apps"], resources: ["deployments"], verbs: ["patch"]}"#),
            "{text}"
        );
        assert!(
            text.contains("system:serviceaccount:shop:cutover"),
            "{text}"
        );
    }

    #[test]
    fn outages_and_races_are_retried_and_bad_objects_are_not() {
        assert!(classify(PATCH, api_error(503, "ServiceUnavailable", "x")).is_retryable());
        assert!(classify(PATCH, api_error(409, "Conflict", "x")).is_retryable());
        assert!(classify(PATCH, api_error(429, "TooManyRequests", "x")).is_retryable());
        assert!(!classify(PATCH, api_error(422, "Invalid", "x")).is_retryable());
        assert!(is_conflict(&api_error(409, "Conflict", "x")));
        assert!(is_not_found(&api_error(404, "NotFound", "x")));
    }
}
