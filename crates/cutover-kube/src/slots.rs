//! [`Slots`]: which Deployment plays which slot of a release, as the anchor's
//! `cutover.dev/slots` annotation records it.
//!
//! One annotation on one object, written with compare-and-swap on the object's
//! `resourceVersion`: a promotion (candidate → stable, stable → previous) is a single write,
//! so a controller killed anywhere reads back one whole assignment.

use cutover_backend::Slot;
use serde::{Deserialize, Serialize};

/// One slot's Deployment and the version it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotEntry {
    /// The Deployment's name, in the release's namespace.
    pub deployment: String,
    /// The version's name.
    pub version: String,
}

/// A release's slots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    /// The port the service listens on (the release's `spec.port`): where the proxy
    /// sends requests, on every endpoint of every slot.
    #[serde(default)]
    pub port: u16,
    /// What serves now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<SlotEntry>,
    /// The version being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<SlotEntry>,
    /// The former stable one, until its scale-down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<SlotEntry>,
}

impl Slots {
    /// The entry of `slot`.
    pub fn get(&self, slot: Slot) -> Option<&SlotEntry> {
        match slot {
            Slot::Stable => self.stable.as_ref(),
            Slot::Candidate => self.candidate.as_ref(),
            Slot::Previous => self.previous.as_ref(),
        }
    }

    /// The entry of `slot`, to change or clear.
    pub fn get_mut(&mut self, slot: Slot) -> &mut Option<SlotEntry> {
        match slot {
            Slot::Stable => &mut self.stable,
            Slot::Candidate => &mut self.candidate,
            Slot::Previous => &mut self.previous,
        }
    }

    /// Whether any slot other than `slot` runs on `deployment`.
    pub fn used_elsewhere(&self, slot: Slot, deployment: &str) -> bool {
        [Slot::Stable, Slot::Candidate, Slot::Previous]
            .into_iter()
            .filter(|s| *s != slot)
            .filter_map(|s| self.get(s))
            .any(|e| e.deployment == deployment)
    }

    /// The promotion: the candidate becomes stable, the stable one previous. `false` when
    /// there is no candidate (promoted already).
    pub fn promote(&mut self) -> bool {
        let Some(candidate) = self.candidate.take() else {
            return false;
        };
        self.previous = self.stable.replace(candidate);
        true
    }

    /// Reads the annotation's text.
    pub fn parse(text: &str) -> Result<Slots, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The annotation's text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(d: &str, v: &str) -> Option<SlotEntry> {
        Some(SlotEntry {
            deployment: d.into(),
            version: v.into(),
        })
    }

    #[test]
    fn promotion_swaps_roles_once() {
        let mut slots = Slots {
            port: 8080,
            stable: entry("web", "v1"),
            candidate: entry("web-green", "v2"),
            previous: None,
        };
        assert!(slots.promote());
        assert_eq!(slots.stable, entry("web-green", "v2"));
        assert_eq!(slots.previous, entry("web", "v1"));
        assert_eq!(slots.candidate, None);
        let again = slots.clone();
        assert!(!slots.promote());
        assert_eq!(slots, again);
        assert_eq!(Slots::parse(&slots.to_text()).ok(), Some(slots));
    }
}
