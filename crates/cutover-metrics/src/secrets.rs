//! Resolving the references of a release's credential-carrying values
//! ([`SecretValue`]) when they are used, and turning them into request headers.
//!
//! A reference is read at each use (a rotated file is picked up at the next call) and the
//! value lives only in the request: errors name the reference (`file /run/secrets/t`,
//! `env NAME`) and the header, never the value; header values are marked sensitive so
//! that hyper and `Debug` output leave them out.

use std::collections::BTreeMap;
use std::io::Read;

use cutover_core::spec::{SecretSource, SecretValue};
use http::{HeaderName, HeaderValue};

/// The largest secret file read.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Why a value could not be resolved or used. The messages never hold the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the secret from file {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_SECRET_BYTES`].
    #[error("the secret file {0} is larger than 64 KiB")]
    TooLarge(String),
    /// The environment variable is not set (or not UTF-8).
    #[error(
        "the controller's environment variable {0} is not set; set it where the controller runs"
    )]
    Env(String),
    /// The value is empty.
    #[error("the secret from {0} is empty")]
    Empty(String),
    /// The header name is not a header name.
    #[error("'{0}' is not a header name")]
    HeaderName(String),
    /// The value cannot be sent as a header (a line break, say).
    #[error("the value of header '{0}' is not a valid header value")]
    HeaderValue(String),
}

/// Reads the value a source names.
pub fn read_source(source: &SecretSource) -> Result<String, SecretError> {
    let value = match source {
        SecretSource::File(path) => {
            let file = std::fs::File::open(path).map_err(|e| SecretError::File {
                path: path.clone(),
                source: e,
            })?;
            let mut text = String::new();
            file.take(MAX_SECRET_BYTES + 1)
                .read_to_string(&mut text)
                .map_err(|e| SecretError::File {
                    path: path.clone(),
                    source: e,
                })?;
            if text.len() as u64 > MAX_SECRET_BYTES {
                return Err(SecretError::TooLarge(path.clone()));
            }
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        SecretSource::Env(name) => {
            std::env::var(name).map_err(|_| SecretError::Env(name.clone()))?
        }
    };
    if value.is_empty() {
        return Err(SecretError::Empty(source.to_string()));
    }
    Ok(value)
}

/// The value, inline or read now.
pub fn resolve(value: &SecretValue) -> Result<String, SecretError> {
    match value {
        SecretValue::Inline(value) => Ok(value.clone()),
        SecretValue::Reference(reference) => read_source(&reference.value_from),
    }
}

/// What messages show of a URL: an inline one with its credentials redacted, a reference
/// as where it is read from (`the URL from file /run/secrets/x`).
pub fn describe_url(url: &SecretValue) -> String {
    match url {
        SecretValue::Inline(url) => cutover_core::spec::secret::redact_url(url),
        SecretValue::Reference(reference) => format!("the URL from {}", reference.value_from),
    }
}

/// The headers with every value resolved, marked sensitive.
pub fn headers(
    headers: &BTreeMap<String, SecretValue>,
) -> Result<Vec<(HeaderName, HeaderValue)>, SecretError> {
    headers
        .iter()
        .map(|(name, value)| {
            let header = HeaderName::try_from(name.as_str())
                .map_err(|_| SecretError::HeaderName(name.clone()))?;
            let mut value = HeaderValue::try_from(resolve(value)?)
                .map_err(|_| SecretError::HeaderValue(name.clone()))?;
            value.set_sensitive(true);
            Ok((header, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_core::spec::SecretReference;

    fn file_ref(path: &std::path::Path) -> SecretValue {
        SecretValue::Reference(SecretReference {
            value_from: SecretSource::File(path.to_string_lossy().into_owned()),
        })
    }

    #[test]
    fn a_file_reference_is_read_at_each_use_without_its_line_break() {
        let path = std::env::temp_dir().join(format!("cutover-secret-{}", std::process::id()));
        std::fs::write(&path, "Bearer one\n").expect("written");
        let value = file_ref(&path);
        assert_eq!(resolve(&value).expect("read"), "Bearer one");
        std::fs::write(&path, "Bearer two\r\n").expect("rotated");
        assert_eq!(resolve(&value).expect("read"), "Bearer two");
        std::fs::write(&path, "bad\nvalue").expect("written");
        let map = BTreeMap::from([("Authorization".to_string(), value.clone())]);
        let err = headers(&map).expect_err("a line break");
        assert!(!err.to_string().contains("bad"), "{err}");
        std::fs::remove_file(&path).expect("removed");
        let err = resolve(&value).expect_err("gone");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn an_unset_environment_variable_is_an_error_naming_it() {
        let value = SecretValue::Reference(SecretReference {
            value_from: SecretSource::Env("CUTOVER_TEST_SURELY_UNSET_VARIABLE".into()),
        });
        let err = resolve(&value).expect_err("unset");
        assert!(
            err.to_string()
                .contains("CUTOVER_TEST_SURELY_UNSET_VARIABLE"),
            "{err}"
        );
    }
}
