//! Human durations (`30s`, `2m`, `1h30m`, `250ms`) as they appear in release files.
//!
//! Release files are read by people, so durations are written with units; a bare number is
//! rejected with a hint rather than guessed at (is `30` seconds or milliseconds?).

use std::borrow::Cow;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative span of time with millisecond precision, written `1h30m`, `2m`, `30s`, `250ms`.
///
/// Stored as milliseconds so that arithmetic in the state machine is exact and overflow is
/// detected when a file is loaded, not when a timer is armed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    millis: u64,
}

/// The longest duration a release file may state: 365 days. Anything longer is almost
/// certainly a unit mistake (`3000h` meant as `30m`), and bounding it keeps every
/// `now + duration` in the state machine far from `u64` overflow.
pub const MAX_DURATION: Duration = Duration {
    millis: 365 * 24 * 3600 * 1000,
};

/// Why a duration string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration; write a number with a unit, like '30s' or '2m'")]
    Empty,
    /// A number without a unit.
    #[error("'{0}' has no unit; write '{0}s' for seconds or '{0}m' for minutes")]
    MissingUnit(String),
    /// A unit that is not one of `ms`, `s`, `m`, `h`, `d`.
    #[error("unknown unit '{unit}' in '{input}'; use ms, s, m, h or d")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// Characters that are neither digits nor units.
    #[error("'{0}' is not a duration; write it like '30s', '2m' or '1h30m'")]
    Malformed(String),
    /// Larger than [`MAX_DURATION`].
    #[error("'{0}' is longer than 365 days; check the unit")]
    TooLong(String),
}

impl Duration {
    /// Zero time.
    pub const ZERO: Duration = Duration { millis: 0 };

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration { millis }
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            millis: secs.saturating_mul(1000),
        }
    }

    /// The duration in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// The duration in whole seconds, rounded down.
    pub const fn as_secs(self) -> u64 {
        self.millis / 1000
    }

    /// The duration in seconds as a float, for metrics and PromQL `{{interval}}`.
    pub fn as_secs_f64(self) -> f64 {
        self.millis as f64 / 1000.0
    }

    /// `self + other`, saturating instead of overflowing.
    pub const fn saturating_add(self, other: Duration) -> Duration {
        Duration {
            millis: self.millis.saturating_add(other.millis),
        }
    }

    /// `self * n`, saturating instead of overflowing.
    pub const fn saturating_mul(self, n: u64) -> Duration {
        Duration {
            millis: self.millis.saturating_mul(n),
        }
    }

    /// Parses `1h30m`, `2m`, `30s`, `250ms`, `1d`: one or more number-unit pairs, units
    /// `ms`, `s`, `m`, `h`, `d`; a number may have a fraction (`1.5m`).
    pub fn parse(input: &str) -> Result<Duration, DurationError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        if text.parse::<f64>().is_ok() {
            return Err(DurationError::MissingUnit(text.to_string()));
        }
        let mut total: f64 = 0.0;
        let mut rest = text;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if number_len == 0 {
                return Err(DurationError::Malformed(text.to_string()));
            }
            let number: f64 = rest[..number_len]
                .parse()
                .map_err(|_| DurationError::Malformed(text.to_string()))?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let millis_per_unit = match unit {
                "ms" => 1.0,
                "s" => 1_000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                "d" => 86_400_000.0,
                "" => return Err(DurationError::MissingUnit(text.to_string())),
                other => {
                    return Err(DurationError::UnknownUnit {
                        unit: other.to_string(),
                        input: text.to_string(),
                    });
                }
            };
            total += number * millis_per_unit;
            if total > MAX_DURATION.millis as f64 {
                return Err(DurationError::TooLong(text.to_string()));
            }
        }
        Ok(Duration {
            millis: total.round() as u64,
        })
    }
}

impl fmt::Display for Duration {
    /// Formats in the same notation the parser reads, largest units first: `1h30m`, `45s`,
    /// `1m500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.millis;
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        std::time::Duration::from_millis(d.millis)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like '30s', '2m' or '1h30m'")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(DurationError::MissingUnit(v.to_string())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(DurationError::MissingUnit(v.to_string())))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(DurationError::MissingUnit(v.to_string())))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: number-unit pairs with units ms, s, m, h, d, e.g. '30s', '2m', '1h30m'.",
            "pattern": "^(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ms|s|m|h|d))+$",
            "examples": ["30s", "2m", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, millis: u64) {
        assert_eq!(
            Duration::parse(input),
            Ok(Duration::from_millis(millis)),
            "{input}"
        );
    }

    #[test]
    fn parses_every_unit_and_combinations() {
        check("250ms", 250);
        check("30s", 30_000);
        check("2m", 120_000);
        check("1h30m", 5_400_000);
        check("1d", 86_400_000);
        check("1.5m", 90_000);
        check("1m30s500ms", 90_500);
        check(" 10s ", 10_000);
    }

    #[test]
    fn rejects_what_a_person_would_misread() {
        assert_eq!(
            Duration::parse("30"),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert!(matches!(
            Duration::parse("3 mins"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert_eq!(Duration::parse(""), Err(DurationError::Empty));
        assert!(matches!(
            Duration::parse("m5"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            Duration::parse("1.2.3s"),
            Err(DurationError::Malformed(_))
        ));
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        assert!(matches!(
            Duration::parse("400d"),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            Duration::parse("99999999999999999999999h"),
            Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn display_round_trips() {
        for ms in [0, 1, 999, 1000, 90_500, 5_400_000, 86_400_000 + 1] {
            let d = Duration::from_millis(ms);
            assert_eq!(Duration::parse(&d.to_string()), Ok(d));
        }
        assert_eq!(Duration::from_millis(5_400_000).to_string(), "1h30m");
    }
}
