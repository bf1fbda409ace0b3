//! Checks of notification subscriptions (`spec.notifications`, and the controller's
//! defaults file): credentials by reference only, a signing secret only for the webhook,
//! triggers named once each, template placeholders that exist, a timeout above zero.

use std::collections::BTreeSet;

use super::{Checker, Locator, secret_source};
use crate::Duration;
use crate::diagnostic::{Code, Diagnostic, FieldPath};
use crate::spec::NotificationSpec;

/// Checks one list of subscriptions where it stands: `spec.notifications` of a release,
/// or `notifications` of the controller's defaults file.
pub fn notifications(
    list: &[NotificationSpec],
    path: &FieldPath,
    at: &Locator<'_>,
) -> Vec<Diagnostic> {
    let mut c = Checker {
        at,
        out: Vec::new(),
    };
    for (i, n) in list.iter().enumerate() {
        notification(&mut c, &path.index(i), n);
    }
    c.finish()
}

/// A subscription: its URL and secret by reference, triggers named once each, a secret
/// only where it is used, a template whose placeholders exist.
pub(super) fn notification(c: &mut Checker<'_, '_>, path: &FieldPath, n: &NotificationSpec) {
    use crate::spec::{NotificationService, TEMPLATE_FIELDS, template_placeholders};
    for (field, value) in [("url", Some(&n.url)), ("secret", n.secret.as_ref())] {
        let Some(value) = value else { continue };
        match value.reference() {
            Some(source) => secret_source(c, &path.key(field).key("valueFrom"), source),
            None => {
                c.error(
                    Code::InlineCredential,
                    path.key(field),
                    format!(
                        "a notification's {field} is a credential and cannot be written inline"
                    ),
                )
                .hint = Some(format!(
                    "put it in a file the controller reads: {field}: {{valueFrom: {{file: /run/secrets/NAME}}}}"
                ));
            }
        }
    }
    if n.secret.is_some() && n.service != NotificationService::Webhook {
        c.error(
            Code::Ignored,
            path.key("secret"),
            format!(
                "{} does not take a signing secret; only webhook bodies are signed",
                n.service
            ),
        )
        .hint = Some("remove secret, or use service: webhook".into());
    }
    if n.triggers.is_empty() {
        c.error(
            Code::MissingField,
            path.key("triggers"),
            "a notification needs at least one trigger",
        )
        .hint = Some(format!(
            "name the events to hear about, e.g. [{}]",
            "pausedForPerson, analysisInconclusive, rolledBack"
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, trigger) in n.triggers.iter().enumerate() {
        if !seen.insert(*trigger) {
            c.error(
                Code::DuplicateName,
                path.key("triggers").index(i),
                format!("trigger '{trigger}' is named twice"),
            );
        }
    }
    if let Some(template) = &n.template {
        match template_placeholders(template) {
            Err(at) => {
                c.error(
                    Code::InvalidValue,
                    path.key("template"),
                    format!("the '{{{{' at byte {at} of the template is never closed"),
                )
                .hint = Some("close it with '}}'".into());
            }
            Ok(names) => {
                for name in names {
                    if !TEMPLATE_FIELDS.contains(&name) {
                        let d = c.error(
                            Code::InvalidValue,
                            path.key("template"),
                            format!("the template names '{{{{{name}}}}}', which is not a field"),
                        );
                        d.hint = crate::diagnostic::did_you_mean(name, TEMPLATE_FIELDS)
                            .or_else(|| Some(format!("fields: {}", TEMPLATE_FIELDS.join(", "))));
                    }
                }
            }
        }
    }
    if n.timeout == Duration::ZERO {
        c.error(
            Code::OutOfRange,
            path.key("timeout"),
            "timeout must be longer than 0s",
        );
    }
}
