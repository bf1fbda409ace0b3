//! `spec.notifications`: who is told what, and where, when a rollout does something a
//! person may need to know about. The same list is the controller-wide default
//! (`cutover serve --notifications FILE`) for releases that name none.
//!
//! Data only: the controller resolves the URL and the secret at each delivery, renders
//! the template and sends (`cutover_controller::notify`).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::spec::SecretValue;

/// One subscription: a service, where it is reached, and the triggers it hears about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationSpec {
    /// Which kind of receiver: its payload shape.
    pub service: NotificationService,
    /// Where to POST. A webhook URL is a credential (whoever holds it may post), so it is
    /// given by reference only: `{valueFrom: {file: /run/secrets/slack-url}}` (or `env`),
    /// read by the controller at each delivery and never stored or shown.
    pub url: SecretValue,
    /// `webhook` only: the HMAC-SHA256 key the body is signed with
    /// (`X-Cutover-Signature`), by reference like the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretValue>,
    /// The events this subscription hears about.
    pub triggers: Vec<Trigger>,
    /// The message text, with `{{release}}`, `{{trigger}}`, `{{stable}}`,
    /// `{{candidate}}`, `{{weight}}`, `{{step}}`, `{{reason}}`, `{{phase}}` and
    /// `{{message}}` filled in. Default: one line naming the release, the event and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// How long one delivery attempt may take.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
}

/// The controller's defaults file (`cutover serve --notifications FILE`): the
/// subscriptions of every release whose file names none.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationDefaults {
    /// The subscriptions, as in a release's `spec.notifications`.
    #[serde(default)]
    pub notifications: Vec<NotificationSpec>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The receivers cutover knows how to address.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum NotificationService {
    /// Any HTTP endpoint: a JSON document of the event, signed with HMAC-SHA256 when a
    /// `secret` is given.
    Webhook,
    /// A Slack incoming webhook (`{"text": ..}` with blocks).
    Slack,
    /// A Microsoft Teams workflow webhook (an Adaptive Card message).
    Teams,
    /// A Discord webhook (`{"content": ..}` with an embed).
    Discord,
    /// A Google Chat space webhook (`{"text": ..}`).
    GoogleChat,
}

impl NotificationService {
    /// Every service, in the order the docs list them.
    pub const ALL: [NotificationService; 5] = [
        NotificationService::Webhook,
        NotificationService::Slack,
        NotificationService::Teams,
        NotificationService::Discord,
        NotificationService::GoogleChat,
    ];

    /// The name written in release files and in the `service` label of
    /// `cutover_notifications_total`.
    pub fn name(self) -> &'static str {
        match self {
            NotificationService::Webhook => "webhook",
            NotificationService::Slack => "slack",
            NotificationService::Teams => "teams",
            NotificationService::Discord => "discord",
            NotificationService::GoogleChat => "googleChat",
        }
    }
}

impl fmt::Display for NotificationService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The rollout events a subscription can hear about.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    /// A rollout (or a retry of one) started.
    RolloutStarted,
    /// A step of the plan finished.
    StepCompleted,
    /// A step waits for `promote` (a pause without a duration).
    PausedForPerson,
    /// An analysis could show neither pass nor fail: the rollout waits for a person.
    AnalysisInconclusive,
    /// An analysis failed: the rollout rolls back.
    AnalysisFailed,
    /// An analysis could not be measured (its provider kept failing): the rollout rolls
    /// back.
    AnalysisError,
    /// The proxy tripped a guardrail: the rollout rolls back.
    GuardrailTripped,
    /// The candidate became the stable version.
    Promoted,
    /// A rollback finished: all traffic on stable, the candidate retired.
    RolledBack,
    /// A person aborted the rollout.
    Aborted,
    /// The progress deadline passed: the rollout rolls back.
    ProgressDeadlineExceeded,
}

impl Trigger {
    /// Every trigger, in the order a rollout may meet them.
    pub const ALL: [Trigger; 11] = [
        Trigger::RolloutStarted,
        Trigger::StepCompleted,
        Trigger::PausedForPerson,
        Trigger::AnalysisInconclusive,
        Trigger::AnalysisFailed,
        Trigger::AnalysisError,
        Trigger::GuardrailTripped,
        Trigger::Promoted,
        Trigger::RolledBack,
        Trigger::Aborted,
        Trigger::ProgressDeadlineExceeded,
    ];

    /// The name written in release files, payloads and the `trigger` metric label.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::RolloutStarted => "rolloutStarted",
            Trigger::StepCompleted => "stepCompleted",
            Trigger::PausedForPerson => "pausedForPerson",
            Trigger::AnalysisInconclusive => "analysisInconclusive",
            Trigger::AnalysisFailed => "analysisFailed",
            Trigger::AnalysisError => "analysisError",
            Trigger::GuardrailTripped => "guardrailTripped",
            Trigger::Promoted => "promoted",
            Trigger::RolledBack => "rolledBack",
            Trigger::Aborted => "aborted",
            Trigger::ProgressDeadlineExceeded => "progressDeadlineExceeded",
        }
    }

    /// Whether the event means something went wrong (messages show it as a warning).
    pub fn is_bad_news(self) -> bool {
        matches!(
            self,
            Trigger::AnalysisFailed
                | Trigger::AnalysisError
                | Trigger::GuardrailTripped
                | Trigger::RolledBack
                | Trigger::Aborted
                | Trigger::ProgressDeadlineExceeded
        )
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The placeholders a template may use.
pub const TEMPLATE_FIELDS: [&str; 9] = [
    "release",
    "trigger",
    "stable",
    "candidate",
    "weight",
    "step",
    "reason",
    "phase",
    "message",
];

/// The placeholders written in `template` (`{{ name }}`, spaces allowed), in order, or
/// the byte offset of a `{{` that is never closed.
pub fn template_placeholders(template: &str) -> Result<Vec<&str>, usize> {
    let mut found = Vec::new();
    let mut rest = template;
    let mut offset = 0;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            return Err(offset + open);
        };
        found.push(after[..close].trim());
        let consumed = open + 2 + close + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_read_with_spaces_and_an_unclosed_one_is_located() {
        assert_eq!(
            template_placeholders("{{release}} at {{ weight }}%").expect("closed"),
            vec!["release", "weight"]
        );
        assert_eq!(template_placeholders("ok {{release"), Err(3));
    }

    #[test]
    fn every_trigger_name_is_its_serde_name() {
        for trigger in Trigger::ALL {
            let json = serde_json::to_string(&trigger).expect("serializes");
            assert_eq!(json, format!("\"{}\"", trigger.name()));
        }
        for service in NotificationService::ALL {
            let json = serde_json::to_string(&service).expect("serializes");
            assert_eq!(json, format!("\"{}\"", service.name()));
        }
    }
}
