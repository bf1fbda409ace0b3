//! `--set KEY=VALUE`: a field of the release set on the command line.
//!
//! `KEY` is a dotted path with list indices in brackets, as diagnostics print paths:
//! `spec.replicas`, `spec.strategy.canary.steps[0].setWeight`. A key that does not start
//! with a top-level key (`apiVersion`, `kind`, `metadata`, `spec`) is under `spec`, so
//! `version=v5` sets `spec.version` and `replicas=3` sets `spec.replicas`. Values are typed
//! as `CUTOVER_` overrides are (the same machinery, [`super::env`]): `3` is a number where
//! the field wants one, `[a, b]` a list. A key no field matches is reported with the
//! closest field's name.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::env::{Override, is_top_level_key};
use crate::diagnostic::Origin;

/// One `--set KEY=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    key: String,
    value: String,
    segments: Vec<String>,
}

/// Why a `--set` argument cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// No `=` in the argument.
    #[error("'{0}' is not KEY=VALUE; write, for example, --set version=v5")]
    NoEquals(String),
    /// A key with an empty segment or a malformed index.
    #[error(
        "'{0}' is not a field path; write, for example, spec.strategy.canary.steps[0].setWeight"
    )]
    BadKey(String),
}

impl Set {
    /// The key as given.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value as given.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// As an override of the document, named `--set KEY=VALUE` in diagnostics.
    pub(crate) fn to_override(&self) -> Override {
        Override {
            segments: self.segments.clone(),
            text: self.value.clone(),
            origin: Origin::Flag {
                arg: Arc::from(self.to_string().as_str()),
            },
        }
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--set {}={}", self.key, self.value)
    }
}

impl FromStr for Set {
    type Err = SetError;

    fn from_str(arg: &str) -> Result<Set, SetError> {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| SetError::NoEquals(arg.to_string()))?;
        let key = key.trim();
        let bad = || SetError::BadKey(key.to_string());
        let mut segments = Vec::new();
        for part in key.split('.') {
            // `steps[0]` is `steps` then `0`; `steps[0][1]` goes on.
            let (name, mut indices) = match part.find('[') {
                Some(open) => (&part[..open], &part[open..]),
                None => (part, ""),
            };
            if name.is_empty() {
                return Err(bad());
            }
            segments.push(name.to_string());
            while !indices.is_empty() {
                let close = indices.find(']').ok_or_else(bad)?;
                let index = &indices[1..close];
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                segments.push(index.to_string());
                indices = &indices[close + 1..];
                if !indices.is_empty() && !indices.starts_with('[') {
                    return Err(bad());
                }
            }
        }
        if !is_top_level_key(&segments[0]) {
            segments.insert(0, "spec".to_string());
        }
        Ok(Set {
            key: key.to_string(),
            value: value.to_string(),
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(arg: &str) -> Vec<String> {
        arg.parse::<Set>().expect("valid").segments
    }

    #[test]
    fn keys_are_dotted_paths_with_indices_under_spec_by_default() {
        assert_eq!(segments("version=v5"), ["spec", "version"]);
        assert_eq!(segments("spec.replicas=3"), ["spec", "replicas"]);
        assert_eq!(
            segments("spec.strategy.canary.steps[0].setWeight=5"),
            ["spec", "strategy", "canary", "steps", "0", "setWeight"]
        );
        assert_eq!(segments("metadata.name=x"), ["metadata", "name"]);
        let set: Set = "version=a=b".parse().expect("valid");
        assert_eq!((set.key(), set.value()), ("version", "a=b"));
        assert_eq!(set.to_string(), "--set version=a=b");
    }

    #[test]
    fn malformed_arguments_say_what_is_expected() {
        assert!(matches!(
            "version".parse::<Set>(),
            Err(SetError::NoEquals(_))
        ));
        for bad in [
            "=v5",
            "spec..replicas=3",
            "steps[x]=1",
            "steps[0=1",
            "steps[0]x=1",
        ] {
            assert!(
                matches!(bad.parse::<Set>(), Err(SetError::BadKey(_))),
                "{bad}"
            );
        }
    }
}
