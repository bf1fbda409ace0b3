//! What a notification says: the event's fields ([`Notice`]), the text a template makes
//! of them, and the body each service expects. Pure: no I/O, no clock.

use cutover_core::spec::{NotificationService, Trigger};
use serde::Serialize;
use serde_json::{Value, json};

/// One event of one release, with the fields templates and payloads show.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// The release.
    pub release: String,
    /// What happened.
    pub trigger: Trigger,
    /// When, in milliseconds since the Unix epoch.
    pub at: u64,
    /// The version serving before the rollout.
    pub stable: String,
    /// The version being rolled out.
    pub candidate: String,
    /// The candidate's share of weighted traffic, in percent.
    pub weight: u8,
    /// The plan step (from 0) it happened at, if at one.
    pub step: Option<usize>,
    /// The number of plan steps.
    pub steps: usize,
    /// The rollout's phase after the event (`step`, `rollingBack`, `promoted`, ...).
    pub phase: String,
    /// Why, in words (an analysis's detail, a rollback's reason).
    pub reason: String,
}

impl Notice {
    /// The event in a sentence, without the release's name: `{{message}}`.
    pub fn sentence(&self) -> String {
        let step = self.step.map(|s| s.to_string()).unwrap_or_default();
        let (candidate, stable) = (&self.candidate, &self.stable);
        match self.trigger {
            Trigger::RolloutStarted => format!("rollout of {candidate} over {stable} started"),
            Trigger::StepCompleted => format!(
                "step {step} of {} completed, {candidate} at {}%",
                self.steps, self.weight
            ),
            Trigger::PausedForPerson => {
                format!(
                    "{candidate} at {}% waits for a person to promote or abort",
                    self.weight
                )
            }
            Trigger::AnalysisInconclusive => {
                format!("the analysis of {candidate} was inconclusive: it waits for a person")
            }
            Trigger::AnalysisFailed => {
                format!("the analysis of {candidate} failed: rolling back to {stable}")
            }
            Trigger::AnalysisError => format!(
                "the analysis of {candidate} could not be measured: rolling back to {stable}"
            ),
            Trigger::GuardrailTripped => {
                format!("a guardrail cut {candidate} off: rolling back to {stable}")
            }
            Trigger::Promoted => format!("{candidate} promoted: it is the stable version"),
            Trigger::RolledBack => format!("rolled back: all traffic on {stable}"),
            Trigger::Aborted => format!("rollout of {candidate} aborted: rolling back to {stable}"),
            Trigger::ProgressDeadlineExceeded => {
                format!("{candidate} passed its progress deadline: rolling back to {stable}")
            }
        }
    }

    /// The value of a template field, `None` for a name that is not one (the loader
    /// refuses those, so a defaults file cannot bring one either).
    fn field(&self, name: &str) -> Option<String> {
        Some(match name {
            "release" => self.release.clone(),
            "trigger" => self.trigger.name().to_string(),
            "stable" => self.stable.clone(),
            "candidate" => self.candidate.clone(),
            "weight" => self.weight.to_string(),
            "step" => self
                .step
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            "reason" => self.reason.clone(),
            "phase" => self.phase.clone(),
            "message" => self.sentence(),
            _ => return None,
        })
    }

    /// The text of the notification: `template` with its fields filled in, or the
    /// default `[{{release}}] {{message}}` with the reason after it when there is one.
    pub fn text(&self, template: Option<&str>) -> String {
        match template {
            Some(template) => render(template, |name| self.field(name)),
            None if self.reason.is_empty() || self.trigger == Trigger::RolloutStarted => {
                format!("[{}] {}", self.release, self.sentence())
            }
            None => format!("[{}] {} ({})", self.release, self.sentence(), self.reason),
        }
    }
}

/// `template` with each `{{name}}` replaced by `field(name)`; an unknown name or an
/// unclosed `{{` is left as written.
fn render(template: &str, field: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        match after.find("}}") {
            Some(close) => {
                match field(after[..close].trim()) {
                    Some(value) => out.push_str(&value),
                    None => out.push_str(&rest[open..open + 2 + close + 2]),
                }
                rest = &after[close + 2..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The JSON body `service` expects for `notice`, carrying `text`.
pub fn payload(service: NotificationService, notice: &Notice, text: &str) -> Value {
    match service {
        NotificationService::Webhook => webhook(notice, text),
        NotificationService::Slack => slack(notice, text),
        NotificationService::Teams => teams(notice, text),
        NotificationService::Discord => discord(notice, text),
        NotificationService::GoogleChat => json!({ "text": text }),
    }
}

/// The generic webhook's document: every field, and the text.
fn webhook(notice: &Notice, text: &str) -> Value {
    json!({
        "release": notice.release,
        "trigger": notice.trigger,
        "at": notice.at,
        "stable": notice.stable,
        "candidate": notice.candidate,
        "weight": notice.weight,
        "step": notice.step,
        "steps": notice.steps,
        "phase": notice.phase,
        "reason": notice.reason,
        "text": text,
    })
}

/// Slack's `mrkdwn` treats `&`, `<` and `>` as markup: escaped so a reason cannot make a
/// link or a mention.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn facts(notice: &Notice) -> Vec<(&'static str, String)> {
    let mut facts = vec![
        ("Release", notice.release.clone()),
        ("Event", notice.trigger.name().to_string()),
        ("Stable", notice.stable.clone()),
        ("Candidate", notice.candidate.clone()),
        ("Weight", format!("{}%", notice.weight)),
    ];
    if let Some(step) = notice.step {
        facts.push(("Step", format!("{step} of {}", notice.steps)));
    }
    facts
}

/// A Slack incoming webhook's message: `text` (the notification's fallback) and a
/// section block with the fields.
fn slack(notice: &Notice, text: &str) -> Value {
    let text = slack_escape(text);
    let fields: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(k, v)| json!({ "type": "mrkdwn", "text": format!("*{k}*\n{}", slack_escape(&v)) }))
        .collect();
    json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            { "type": "section", "fields": fields },
        ],
    })
}

/// A Teams workflow webhook ("Post to a channel when a webhook request is received")
/// takes a message whose attachment is an Adaptive Card.
fn teams(notice: &Notice, text: &str) -> Value {
    let facts: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(k, v)| json!({ "title": k, "value": v }))
        .collect();
    let color = if notice.trigger.is_bad_news() {
        "Attention"
    } else {
        "Good"
    };
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": format!("{}: {}", notice.release, notice.trigger.name()),
                        "weight": "Bolder",
                        "size": "Medium",
                        "color": color,
                        "wrap": true,
                    },
                    { "type": "TextBlock", "text": text, "wrap": true },
                    { "type": "FactSet", "facts": facts },
                ],
            },
        }],
    })
}

/// A Discord webhook's message: `content` and an embed with the fields; mentions in the
/// text are never resolved (`allowed_mentions`), so a reason cannot ping `@everyone`.
fn discord(notice: &Notice, text: &str) -> Value {
    let fields: Vec<Value> = facts(notice)
        .into_iter()
        .map(|(k, v)| json!({ "name": k, "value": v, "inline": true }))
        .collect();
    let color = if notice.trigger.is_bad_news() {
        0x00d7_3a4a
    } else {
        0x002d_a44e
    };
    json!({
        "content": text,
        "embeds": [{
            "title": format!("{}: {}", notice.release, notice.trigger.name()),
            "description": notice.reason,
            "color": color,
            "fields": fields,
        }],
        "allowed_mentions": { "parse": [] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn notice(trigger: Trigger) -> Notice {
        Notice {
            release: "shop".into(),
            trigger,
            at: 1_700_000_000_000,
            stable: "v1".into(),
            candidate: "v2".into(),
            weight: 20,
            step: Some(2),
            steps: 5,
            phase: "step".into(),
            reason: "error-rate 0.31 > 0.05".into(),
        }
    }

    #[test]
    fn a_template_gets_every_field_and_leaves_unknown_names_as_written() {
        let n = notice(Trigger::AnalysisFailed);
        let text = n.text(Some(
            "{{release}} {{ trigger }} {{stable}}->{{candidate}} {{weight}}% step {{step}} {{phase}}: {{reason}} | {{nope}} {{",
        ));
        assert_eq!(
            text,
            "shop analysisFailed v1->v2 20% step 2 step: error-rate 0.31 > 0.05 | {{nope}} {{"
        );
        assert_eq!(
            n.text(None),
            "[shop] the analysis of v2 failed: rolling back to v1 (error-rate 0.31 > 0.05)"
        );
    }

    #[test]
    fn the_webhook_document_carries_every_field() {
        let n = notice(Trigger::PausedForPerson);
        let body = payload(NotificationService::Webhook, &n, "hi");
        assert_eq!(body["release"], "shop");
        assert_eq!(body["trigger"], "pausedForPerson");
        assert_eq!(body["stable"], "v1");
        assert_eq!(body["candidate"], "v2");
        assert_eq!(body["weight"], 20);
        assert_eq!(body["step"], 2);
        assert_eq!(body["steps"], 5);
        assert_eq!(body["at"], 1_700_000_000_000_u64);
        assert_eq!(body["text"], "hi");
    }

    #[test]
    fn slack_gets_text_and_blocks_with_markup_escaped() {
        let n = Notice {
            reason: "<!channel> & more".into(),
            ..notice(Trigger::RolledBack)
        };
        let text = n.text(Some("{{reason}}"));
        let body = payload(NotificationService::Slack, &n, &text);
        assert_eq!(body["text"], "&lt;!channel&gt; &amp; more");
        assert_eq!(body["blocks"][0]["type"], "section");
        assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
        assert_eq!(body["blocks"][1]["fields"][0]["text"], "*Release*\nshop");
    }

    #[test]
    fn teams_gets_an_adaptive_card_in_a_message() {
        let n = notice(Trigger::GuardrailTripped);
        let body = payload(NotificationService::Teams, &n, "cut off");
        assert_eq!(body["type"], "message");
        let attachment = &body["attachments"][0];
        assert_eq!(
            attachment["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        let card = &attachment["content"];
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["version"], "1.4");
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(card["body"][1]["text"], "cut off");
        assert_eq!(card["body"][2]["type"], "FactSet");
        assert_eq!(card["body"][2]["facts"][0]["title"], "Release");
    }

    #[test]
    fn discord_gets_content_an_embed_and_no_mentions() {
        let n = notice(Trigger::Promoted);
        let body = payload(NotificationService::Discord, &n, "@everyone promoted");
        assert_eq!(body["content"], "@everyone promoted");
        assert_eq!(body["embeds"][0]["title"], "shop: promoted");
        assert_eq!(body["embeds"][0]["color"], 0x002d_a44e);
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn google_chat_gets_text_only() {
        let n = notice(Trigger::RolloutStarted);
        let body = payload(NotificationService::GoogleChat, &n, "started");
        assert_eq!(body, json!({ "text": "started" }));
    }
}
