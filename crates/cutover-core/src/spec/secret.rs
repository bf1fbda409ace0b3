//! Values that may carry credentials (hook and metric headers): written inline, or as a
//! reference (`{valueFrom: {file: PATH}}`, `{valueFrom: {env: NAME}}`) that the controller
//! resolves each time it uses the value, so the stored release, a Kubernetes annotation or
//! a Swarm label holds the reference and never the secret.
//!
//! This module only describes and inspects values (no I/O): resolving a reference is the
//! metric providers' and the hooks' business, at use time (`cutover_metrics::secrets`).
//! It also knows what a credential looks like, for `lint`'s warnings and for redacting
//! URLs in messages.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A value written inline or read, when used, from a file or an environment variable of
/// the controller.
///
/// `Debug` never shows an inline value (only its length), so a release printed for
/// debugging does not leak one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SecretValue {
    /// The value itself. Stored as written: prefer a reference for credentials.
    Inline(String),
    /// `{valueFrom: ...}`: where the controller reads the value when it needs it.
    Reference(SecretReference),
}

/// `{valueFrom: {file: PATH}}` or `{valueFrom: {env: NAME}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretReference {
    /// Where the value is.
    pub value_from: SecretSource,
}

/// Where a referenced value is read from, on the controller's host (or in its container).
/// Exactly one key. (A Kubernetes `secretKeyRef` is not supported yet: mount the Secret
/// as a file, or expose it as an environment variable of the controller.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretSource {
    /// A file (absolute path) whose content, without its trailing line break, is the
    /// value; read at each use, so a rotated secret is picked up.
    File(String),
    /// An environment variable of the controller process.
    Env(String),
}

impl SecretValue {
    /// The value if it is written inline.
    pub fn inline(&self) -> Option<&str> {
        match self {
            SecretValue::Inline(value) => Some(value),
            SecretValue::Reference(_) => None,
        }
    }

    /// The reference, if it is one.
    pub fn reference(&self) -> Option<&SecretSource> {
        match self {
            SecretValue::Inline(_) => None,
            SecretValue::Reference(reference) => Some(&reference.value_from),
        }
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretValue::Inline(value) => write!(f, "Inline({REDACTED}, {} bytes)", value.len()),
            SecretValue::Reference(reference) => {
                f.debug_tuple("Reference").field(reference).finish()
            }
        }
    }
}

impl From<&str> for SecretValue {
    fn from(value: &str) -> Self {
        SecretValue::Inline(value.to_string())
    }
}

impl std::fmt::Display for SecretSource {
    /// Where the value comes from, never the value: `file /run/secrets/x`, `env NAME`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "file {path}"),
            SecretSource::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// What stands in for a hidden value.
pub const REDACTED: &str = "<redacted>";

/// Whether a header of this name usually carries a credential: `Authorization`,
/// `Proxy-Authorization`, `Cookie`, or a name with `token`, `key`, `secret`, `password`
/// or `auth` in it (case-insensitive).
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || ["token", "key", "secret", "password", "passwd", "auth"]
        .iter()
        .any(|word| name.contains(word))
}

/// Whether a query parameter of this name usually carries a credential (`key`,
/// `api_key`, `token`, `access_token`, `secret`, `password`, `signature`, `sig`...).
fn is_credential_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(name.as_str(), "sig" | "signature" | "code")
        || ["key", "token", "secret", "password", "passwd", "auth"]
            .iter()
            .any(|word| name.contains(word))
}

/// The byte ranges of `url` that hold credentials: the userinfo (`user:pass@`) and the
/// values of credential-like query parameters, with a word for each.
fn credential_spans(url: &str) -> Vec<(std::ops::Range<usize>, String)> {
    let mut spans = Vec::new();
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = authority_start + rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = url[authority_start..authority_end].rfind('@') {
        spans.push((
            authority_start..authority_start + at,
            "the URL's user:password@ part".to_string(),
        ));
    }
    if let Some(query_start) = url[authority_end..]
        .find('?')
        .map(|i| authority_end + i + 1)
    {
        let query_end = url[query_start..]
            .find('#')
            .map_or(url.len(), |i| query_start + i);
        let mut offset = query_start;
        for pair in url[query_start..query_end].split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && !value.is_empty()
                && is_credential_parameter(name)
            {
                let start = offset + name.len() + 1;
                spans.push((
                    start..start + value.len(),
                    format!("the query parameter '{name}'"),
                ));
            }
            offset += pair.len() + 1;
        }
    }
    spans
}

/// What in `url` looks like a credential, in words (empty when nothing does).
pub fn url_credentials(url: &str) -> Vec<String> {
    credential_spans(url)
        .into_iter()
        .map(|(_, what)| what)
        .collect()
}

/// `url` with its userinfo and the values of credential-like query parameters replaced
/// by [`REDACTED`]: what messages, logs and API answers show of a URL.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    // From the end, so earlier ranges stay valid.
    for (range, _) in credential_spans(url).into_iter().rev() {
        out.replace_range(range, REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_strings_and_references_both_deserialize() {
        let inline: SecretValue = serde_json::from_str("\"Bearer x\"").expect("inline");
        assert_eq!(inline.inline(), Some("Bearer x"));
        let file: SecretValue =
            serde_json::from_str(r#"{"valueFrom": {"file": "/run/secrets/t"}}"#).expect("file");
        assert_eq!(
            file.reference(),
            Some(&SecretSource::File("/run/secrets/t".into()))
        );
        let env: SecretValue =
            serde_json::from_str(r#"{"valueFrom": {"env": "TOKEN"}}"#).expect("env");
        assert_eq!(
            env.reference().map(ToString::to_string).as_deref(),
            Some("env TOKEN")
        );
        for bad in [
            r#"{"valueFrom": {"file": "/a", "env": "B"}}"#,
            r#"{"valueFrom": {"vault": "x"}}"#,
            r#"{"value": "x"}"#,
        ] {
            assert!(serde_json::from_str::<SecretValue>(bad).is_err(), "{bad}");
        }
        // A reference serializes as a reference: what is stored holds no value.
        assert_eq!(
            serde_json::to_string(&file).expect("json"),
            r#"{"valueFrom":{"file":"/run/secrets/t"}}"#
        );
    }

    #[test]
    fn userinfo_and_key_like_parameters_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_url("https://user:pa55@host:8443/p?x=1&api_key=s3cret&token=t#f"),
            "https://<redacted>@host:8443/p?x=1&api_key=<redacted>&token=<redacted>#f"
        );
        assert_eq!(
            redact_url("http://h/p?version={{version}}"),
            "http://h/p?version={{version}}"
        );
        assert_eq!(
            redact_url("http://h/a@b"),
            "http://h/a@b",
            "an @ in the path is no userinfo"
        );
        assert_eq!(url_credentials("http://h/p?q=1"), Vec::<String>::new());
        assert_eq!(url_credentials("http://u:p@h/").len(), 1);
    }

    #[test]
    fn debug_output_never_shows_an_inline_value() {
        let value = SecretValue::from("Bearer s3cret");
        let shown = format!("{value:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(shown, "Inline(<redacted>, 13 bytes)");
    }

    #[test]
    fn credential_headers_are_recognised() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "PRIVATE-TOKEN",
            "X-Auth",
            "Cookie",
        ] {
            assert!(is_credential_header(name), "{name}");
        }
        for name in ["Accept", "X-Request-Id", "Content-Type"] {
            assert!(!is_credential_header(name), "{name}");
        }
    }
}
