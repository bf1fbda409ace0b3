//! `Status`: the object every error is answered with.

use serde_json::{Value, json};

use crate::resources::ResourceType;

/// A Kubernetes `Status` object (`kind: Status`, `apiVersion: v1`), as the API server answers
/// errors: `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
/// "message":..,"reason":..,"details":{"name":..,"group":..,"kind":..},"code":..}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The HTTP status code (`404`, `409`, ...).
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, ...).
    pub reason: String,
    /// The human-readable message, worded as the real API server words it.
    pub message: String,
    /// `details`: the object's name, API group and kind (the plural resource for most errors),
    /// plus `causes` when there are any.
    pub details: Option<Value>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {})", self.message, self.code, self.reason)
    }
}

impl std::error::Error for Status {}

impl Status {
    /// A failure `Status` with this code, reason and message, without details.
    pub fn new(code: u16, reason: impl Into<String>, message: impl Into<String>) -> Status {
        Status {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` as the JSON object the server sends.
    pub fn to_json(&self) -> Value {
        let mut value = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(map)) = (&self.details, value.as_object_mut()) {
            map.insert("details".into(), details.clone());
        }
        value
    }

    pub(crate) fn with_details(mut self, details: Value) -> Status {
        self.details = Some(details);
        self
    }

    fn object_details(rt: &ResourceType, name: &str) -> Value {
        json!({"name": name, "group": rt.group, "kind": rt.plural})
    }

    /// `deployments.apps "web" not found`.
    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> Status {
        Status::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", rt.qualified()),
        )
        .with_details(Status::object_details(rt, name))
    }

    /// `deployments.apps "web" already exists`.
    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> Status {
        Status::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", rt.qualified()),
        )
        .with_details(Status::object_details(rt, name))
    }

    /// The optimistic-concurrency conflict, in the real server's words.
    pub(crate) fn conflict(rt: &ResourceType, name: &str) -> Status {
        Status::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )
        .with_details(Status::object_details(rt, name))
    }

    /// `Deployment.apps "web" is invalid: FIELD: Invalid value: ...` with one cause per error.
    pub(crate) fn invalid(rt: &ResourceType, name: &str, causes: &[(String, String)]) -> Status {
        let list: Vec<String> = causes
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect();
        let joined = if list.len() == 1 {
            list.join("")
        } else {
            format!("[{}]", list.join(", "))
        };
        let kind_group = if rt.group.is_empty() {
            rt.kind.to_string()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": message, "field": field}))
            .collect();
        Status::new(
            422,
            "Invalid",
            format!("{kind_group} \"{name}\" is invalid: {joined}"),
        )
        .with_details(json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": causes}))
    }

    /// 400 BadRequest.
    pub(crate) fn bad_request(message: impl Into<String>) -> Status {
        Status::new(400, "BadRequest", message)
    }

    /// 410 Expired, as a watch from a compacted resourceVersion gets it.
    pub(crate) fn expired(message: impl Into<String>) -> Status {
        Status::new(410, "Expired", message)
    }

    /// 405 MethodNotAllowed.
    pub(crate) fn method_not_allowed() -> Status {
        Status::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 415 UnsupportedMediaType, listing the media types the resource accepts.
    pub(crate) fn unsupported_media_type(accepted: &[&str]) -> Status {
        Status::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn no_route() -> Status {
        Status::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_the_api_server() {
        let status = Status::new(404, "NotFound", "x").to_json();
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["code"], 404);
    }
}
