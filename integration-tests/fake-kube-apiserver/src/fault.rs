//! Injected failures and the request log.

use serde_json::json;

use crate::status::Status;

/// A failure to answer instead of serving matching requests. Faults apply to resource
/// requests only (not to discovery or health endpoints), in the order injected.
///
/// `message` may contain placeholders filled in per request: `{name}`, `{namespace}`,
/// `{resource}` (plural), `{group}`, `{object}` (`deployments.apps "web"`, or
/// `deployments.apps` without a name) and `{scope}` (`the namespace "default"`, or
/// `the cluster scope`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Only requests with this method; `None` matches every method.
    pub method: Option<http::Method>,
    /// Only requests for this resource (plural, e.g. `deployments`); `None` matches all.
    pub resource: Option<String>,
    /// Only requests for this object name; `None` matches all (including collections).
    pub name: Option<String>,
    /// How many matching requests fail; then the fault is spent (`usize::MAX`: forever).
    pub times: usize,
    /// The HTTP status code answered.
    pub status: u16,
    /// The `reason` of the answered Status.
    pub reason: String,
    /// The `message` of the answered Status (placeholders above are filled in).
    pub message: String,
}

impl Fault {
    /// A fault answering every request once with `status`, `reason` and `message`; narrow it
    /// with the builder methods.
    pub fn new(status: u16, reason: impl Into<String>, message: impl Into<String>) -> Fault {
        Fault {
            method: None,
            resource: None,
            name: None,
            times: 1,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// RBAC says no: 403 Forbidden for `verb` (get, list, watch, create, update, patch,
    /// delete) on `resource` (plural), forever, worded as the real API server words it for
    /// the service account `system:serviceaccount:cutover:cutover`:
    /// `deployments.apps "web-green" is forbidden: User "system:serviceaccount:cutover:cutover"
    /// cannot patch resource "deployments" in API group "apps" in the namespace "default"`.
    pub fn forbidden(verb: &str, resource: &str) -> Fault {
        let method = match verb {
            "get" | "list" | "watch" => Some(http::Method::GET),
            "create" => Some(http::Method::POST),
            "update" => Some(http::Method::PUT),
            "patch" => Some(http::Method::PATCH),
            "delete" | "deletecollection" => Some(http::Method::DELETE),
            _ => None,
        };
        Fault {
            method,
            resource: Some(resource.to_string()),
            name: None,
            times: usize::MAX,
            status: 403,
            reason: "Forbidden".into(),
            message: format!(
                "{{object}} is forbidden: User \"system:serviceaccount:cutover:cutover\" cannot {verb} resource \"{{resource}}\" in API group \"{{group}}\" in {{scope}}"
            ),
        }
    }

    /// Only for this method.
    pub fn method(mut self, method: http::Method) -> Fault {
        self.method = Some(method);
        self
    }

    /// Only for this resource (plural).
    pub fn resource(mut self, resource: impl Into<String>) -> Fault {
        self.resource = Some(resource.into());
        self
    }

    /// Only for this object name.
    pub fn name(mut self, name: impl Into<String>) -> Fault {
        self.name = Some(name.into());
        self
    }

    /// Fails this many matching requests.
    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }

    pub(crate) fn matches(
        &self,
        method: &http::Method,
        resource: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        self.times > 0
            && self.method.as_ref().is_none_or(|m| m == method)
            && self.resource.as_deref().is_none_or(|r| Some(r) == resource)
            && self.name.as_deref().is_none_or(|n| Some(n) == name)
    }

    /// The Status for a request to `resource`/`group` (`name` in `namespace`, if any).
    pub(crate) fn status_for(
        &self,
        resource: &str,
        group: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Status {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let object = match name {
            Some(name) => format!("{qualified} \"{name}\""),
            None => qualified,
        };
        let scope = match namespace {
            Some(ns) => format!("the namespace \"{ns}\""),
            None => "the cluster scope".to_string(),
        };
        let message = self
            .message
            .replace("{object}", &object)
            .replace("{scope}", &scope)
            .replace("{resource}", resource)
            .replace("{group}", group)
            .replace("{namespace}", namespace.unwrap_or(""))
            .replace("{name}", name.unwrap_or(""));
        Status::new(self.status, self.reason.clone(), message)
            .with_details(json!({"name": name.unwrap_or(""), "group": group, "kind": resource}))
    }
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The HTTP method.
    pub method: http::Method,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (empty if none).
    pub query: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `fieldManager` query parameter, if any.
    pub field_manager: Option<String>,
    /// The status code answered (200 for a watch that started streaming).
    pub status: u16,
}
