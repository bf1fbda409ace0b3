use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::MatchRule;
use crate::Duration;

/// How traffic moves from stable to candidate: canary steps or a blue/green switch.
///
/// Either written inline, or `use: PRESET` with any fields here overriding the preset's
/// (maps merge key by key, lists are replaced whole).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategySpec {
    /// The preset this strategy starts from, by name (`canary-progressive`, `blue-green`,
    /// ...; see `strategies/`). Fields given beside it override the preset's.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// A canary: a list of steps that move weight and gate on analysis or people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStrategy>,
    /// A blue/green switch: the candidate runs beside stable at full size and takes all
    /// traffic at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStrategy>,
    /// The longest the rollout may take, not counting time spent waiting for a person
    /// (an indefinite pause, a manual pause, an inconclusive analysis). Past it, the rollout
    /// rolls back.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Duration,
}

fn default_progress_deadline() -> Duration {
    Duration::from_secs(600)
}

/// A canary: steps run in order; after the last, the candidate is promoted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryStrategy {
    /// The steps. A step is a one-key map: `setWeight`, `pause`, `analysis`,
    /// `setHeaderRoute` or `mirror`. No steps: the candidate takes all traffic at once.
    #[serde(default)]
    pub steps: Vec<CanaryStep>,
    /// How long the old stable version keeps running after promotion, so in-flight
    /// requests drain and a quick manual switch back stays possible.
    #[serde(default = "default_scale_down_delay")]
    pub scale_down_delay: Duration,
}

/// One canary step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum CanaryStep {
    /// Send this percentage (0 to 100) of traffic to the candidate.
    SetWeight(u32),
    /// Wait: for `duration`, or without one until a person runs `cutover promote`.
    Pause(PauseStep),
    /// Run the analysis (all of `spec.analysis.metrics`, or the ones named) and go on only
    /// if it passes; a failure rolls back, an inconclusive result waits for a person.
    Analysis(AnalysisStep),
    /// Send requests matching these rules to the candidate, whatever the weight. An empty
    /// list removes the header route.
    SetHeaderRoute(HeaderRouteStep),
    /// Copy this percentage of requests to the candidate; its answers are discarded.
    Mirror(MirrorStep),
}

/// A pause step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PauseStep {
    /// How long to wait. Absent: wait for `cutover promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
}

/// An analysis gate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisStep {
    /// Names of metrics from `spec.analysis.metrics`. Empty or absent: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
}

/// A header route to the candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderRouteStep {
    /// Requests matching any rule go to the candidate.
    #[serde(default, rename = "match")]
    pub match_rules: Vec<MatchRule>,
}

/// A mirroring step.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MirrorStep {
    /// Percentage of requests (0 to 100) copied to the candidate. 0 stops mirroring.
    pub percent: u32,
}

/// A blue/green switch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlueGreenStrategy {
    /// Before the switch, send requests matching these rules to the new version so people
    /// and smoke tests can try it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_traffic: Option<HeaderRouteStep>,
    /// Switch without a person once the pre-promotion analysis passed. `false` waits for
    /// `cutover promote`.
    #[serde(default = "default_true")]
    pub auto_promotion: bool,
    /// With `autoPromotion`, wait this many seconds before switching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_seconds: Option<u64>,
    /// Analysis of the new version, on preview traffic, before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisStep>,
    /// Analysis after the switch, while the old version still runs; a failure switches back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisStep>,
    /// How long the old version keeps running after the switch.
    #[serde(default = "default_scale_down_delay")]
    pub scale_down_delay: Duration,
}

impl Default for BlueGreenStrategy {
    fn default() -> Self {
        BlueGreenStrategy {
            preview_traffic: None,
            auto_promotion: true,
            auto_promotion_seconds: None,
            pre_promotion_analysis: None,
            post_promotion_analysis: None,
            scale_down_delay: default_scale_down_delay(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_scale_down_delay() -> Duration {
    Duration::from_secs(30)
}
