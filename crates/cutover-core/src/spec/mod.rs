//! The release-file format, version 1: plain serde types, one module per section.
//!
//! These types are the **API boundary** of the format: the JSON Schema in
//! `docs/release.schema.json` is generated from them, the loader deserializes into them, and
//! the controller stores them. They hold data only; the checks that relate one field to
//! another live in [`crate::validate`].

mod analysis;
mod guardrail;
mod hooks;
mod release;
pub mod secret;
mod strategy;
mod traffic;

pub use analysis::{
    AnalysisSpec, BuiltinMetric, Comparison, Direction, EvidenceKind, MetricSpec,
    PrometheusProvider, Provider, StatisticalTest, WebProvider,
};
pub use guardrail::{GuardrailMetric, GuardrailSpec};
pub use hooks::{HookPoint, HookSpec, HooksSpec};
pub use release::{
    API_VERSION, Backend, DockerTarget, KubernetesTarget, LocalSlot, LocalTarget, Metadata,
    Release, ReleaseSpec, StrategyDocument, SwarmTarget, image_tag,
};
pub use secret::{SecretReference, SecretSource, SecretValue};
pub use strategy::{
    AnalysisStep, BlueGreenStrategy, CanaryStep, CanaryStrategy, HeaderRouteStep, MirrorStep,
    PauseStep, StrategySpec,
};
pub use traffic::{MatchRule, StickyKey, TrafficSpec};
