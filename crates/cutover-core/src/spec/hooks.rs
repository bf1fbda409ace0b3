use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::spec::SecretValue;

/// Webhooks by rollout point. Each is a list; all hooks of a point run, in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HooksSpec {
    /// Before the candidate is deployed. A failure rolls back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_rollout: Vec<HookSpec>,
    /// A gate before promotion: a non-2xx answer holds the rollout and the hook is asked
    /// again, until it passes or the progress deadline passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre_promotion: Vec<HookSpec>,
    /// After promotion. Informational: a failure is logged, nothing more.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post_promotion: Vec<HookSpec>,
    /// After a rollback. Informational.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_rollback: Vec<HookSpec>,
}

impl HooksSpec {
    /// The hooks of one point.
    pub fn at(&self, point: HookPoint) -> &[HookSpec] {
        match point {
            HookPoint::PreRollout => &self.pre_rollout,
            HookPoint::PrePromotion => &self.pre_promotion,
            HookPoint::PostPromotion => &self.post_promotion,
            HookPoint::OnRollback => &self.on_rollback,
        }
    }
}

/// One webhook: cutover POSTs a JSON description of the rollout to `url`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookSpec {
    /// Where to POST: an http(s) URL, or, for a URL that carries a credential (a key in
    /// its query), a reference to one (`{valueFrom: {file: PATH}}`, `{valueFrom: {env:
    /// NAME}}`) that the controller reads at each call.
    pub url: SecretValue,
    /// How long one attempt may take.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts after the first when the hook times out or answers 5xx.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Extra request headers. A credential is best given by reference, read by the
    /// controller at each call and never stored: `{valueFrom: {file: /run/secrets/t}}` or
    /// `{valueFrom: {env: NAME}}`; an inline value is stored with the release.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretValue>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_retries() -> u32 {
    2
}

/// The points of a rollout where hooks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookPoint {
    /// Before the candidate is deployed.
    PreRollout,
    /// The gate before promotion.
    PrePromotion,
    /// After promotion.
    PostPromotion,
    /// After a rollback.
    OnRollback,
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookPoint::PreRollout => "preRollout",
            HookPoint::PrePromotion => "prePromotion",
            HookPoint::PostPromotion => "postPromotion",
            HookPoint::OnRollback => "onRollback",
        })
    }
}
