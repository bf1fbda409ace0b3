//! Metric providers: where the numbers that judge a candidate come from.
//!
//! A provider turns one metric of one analysis into a [`MeasurementResult`] for the judge:
//! the candidate's value, stable's value over the same window where the metric compares
//! them, the candidate's request count for `minRequests`, and raw samples for the
//! statistical test. A provider that cannot answer returns an error result; a provider
//! that has no data returns a measurement without a value. Neither is ever a pass.
//!
//! - [`builtin`]: the proxy's own counters, read in-process through [`WindowSource`].
//! - [`prometheus`]: an instant PromQL query.
//! - [`web`]: a number read by JSON pointer from a document served over HTTP.
//!
//! [`secrets`] resolves the header values a release gives by reference, at use time.

pub mod builtin;
mod http;
pub mod https;
pub mod prometheus;
pub mod secrets;
mod template;
pub mod web;

pub use builtin::WindowSource;
pub use cutover_core::judge::{Measurement, MeasurementResult};
pub use template::{Context, Destination, TemplateError, render};
