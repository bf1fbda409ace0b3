use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the proxy recognises this service's requests and which of them may go to the
/// candidate regardless of the weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSpec {
    /// Match requests whose `Host` is this name (without port). Absent: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Match requests whose path starts with this prefix. Absent: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Rules evaluated before the weight: a request matching any of them goes to the
    /// candidate for the whole rollout (an "always" group of testers, say).
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_rules: Vec<MatchRule>,
    /// Keep each user on one version: the key is hashed into 10,000 buckets and buckets
    /// below `weight × 100` go to the candidate, so raising the weight only ever moves users
    /// from stable to candidate, never back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyKey>,
}

/// One request-matching rule on a header or a cookie.
///
/// With `exact` or `regex`, a request whose value matches goes to the candidate. With
/// neither, the value decides: `always` sends the request to the candidate, `never` to
/// stable, anything else falls through to the weight (as nginx's `canary-by-header`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MatchRule {
    /// The header to read (case-insensitive). Exactly one of `header` and `cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// The cookie to read. Exactly one of `header` and `cookie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// The value must equal this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value must match this regular expression (Rust `regex` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// What identifies a user for sticky assignment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StickyKey {
    /// The value of this cookie.
    Cookie(String),
    /// The value of this header.
    Header(String),
    /// The client's IP address as the proxy sees it (the TCP peer; behind another proxy,
    /// use a header that carries the client's identity instead).
    ClientIp,
}
