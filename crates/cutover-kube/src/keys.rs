//! The labels and annotations cutover writes on Kubernetes objects, and the names of the
//! objects it creates.
//!
//! Every key is in the project's one domain, the CRD group's: `cutover.dev/<name>`.
//! Versions before this one wrote `cutover.io/<name>`; those keys are still read (see
//! [`read`]), so a release an older controller started is found and carried on. The anchor
//! moves to the new keys in the first write cutover makes on it, labels and annotations in
//! that one update (see [`upgrade`]), so it never holds two states that disagree. A
//! Deployment's selector cannot change: a colour Deployment an older version created keeps
//! the old keys in its selector and pod template (see [`Domain::of_selector`]) for as long
//! as it lives; the ones created now use the new keys.

use std::collections::BTreeMap;

/// Label: the controller (`cutover serve --name`) that manages an object. A controller
/// touches only objects carrying its own name.
pub const CONTROLLER: &str = "cutover.dev/controller";
/// Label: the release an object belongs to.
pub const RELEASE: &str = "cutover.dev/release";
/// Label on the Deployment the release file names: it anchors the release. It carries the
/// slot assignment and the rollout state (see [`SLOTS`], [`STATE`]) and is never deleted,
/// only scaled down, so the release's record outlives every promotion.
pub const ANCHOR: &str = "cutover.dev/anchor";
/// Label on the Deployments cutover creates and their pods: `green` or `blue`. Part of
/// their selector, so two colours never select each other's pods.
pub const COLOUR: &str = "cutover.dev/colour";
/// Label on the headless Services cutover creates, naming the Deployment whose pods they
/// select; their EndpointSlices inherit it.
pub const DEPLOYMENT: &str = "cutover.dev/deployment";
/// Annotation on a Deployment cutover created: the version it runs.
pub const VERSION: &str = "cutover.dev/version";
/// Annotation on the anchor: which Deployment plays which slot (JSON, [`crate::slots::Slots`]).
pub const SLOTS: &str = "cutover.dev/slots";
/// Annotation on the anchor: the controller's rollout state (JSON).
pub const STATE: &str = "cutover.dev/state";
/// Annotation on the anchor: the state's revision, increased by one with every write.
pub const REVISION: &str = "cutover.dev/revision";
/// Annotation on the anchor: which controller process wrote the state last, so that a
/// write sent again after a lost reply is told from another process's write of the same
/// text.
pub const WRITER: &str = "cutover.dev/writer";

/// The prefix of every key cutover writes: the CRD group's domain.
pub const PREFIX: &str = "cutover.dev/";
/// The prefix older versions wrote: read, and replaced by [`PREFIX`] where an object can
/// change (everywhere but a Deployment's selector and pod template).
pub const LEGACY_PREFIX: &str = "cutover.io/";

/// Every label and annotation key cutover writes (in the new domain): the ones [`upgrade`]
/// moves.
pub const ALL: [&str; 10] = [
    CONTROLLER, RELEASE, ANCHOR, COLOUR, DEPLOYMENT, VERSION, SLOTS, STATE, REVISION, WRITER,
];

/// The domain the keys of a Deployment's selector are in: chosen once, when the Deployment
/// is created, since the selector cannot change afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// `cutover.dev/`: everything created now.
    Current,
    /// `cutover.io/`: a colour Deployment an older version created.
    Legacy,
}

impl Domain {
    /// `key` (one of the constants above) in this domain.
    pub fn key(self, key: &str) -> String {
        match self {
            Domain::Current => key.to_string(),
            Domain::Legacy => legacy(key),
        }
    }

    /// The domain of an existing Deployment's selector (`spec.selector.matchLabels` as the
    /// server gives it): legacy if it selects by the old colour key.
    pub fn of_selector(match_labels: &serde_json::Value) -> Domain {
        if match_labels.get(legacy(COLOUR)).is_some() {
            Domain::Legacy
        } else {
            Domain::Current
        }
    }
}

/// The name an older version gave `key` (`cutover.dev/state` → `cutover.io/state`).
pub fn legacy(key: &str) -> String {
    match key.strip_prefix(PREFIX) {
        Some(name) => format!("{LEGACY_PREFIX}{name}"),
        None => key.to_string(),
    }
}

/// The value of `key` in `map` (labels or annotations), under its new name or else its old
/// one: an object an older version wrote reads as one written now.
pub fn read<'a>(map: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    map.get(key)
        .or_else(|| map.get(&legacy(key)))
        .map(String::as_str)
}

/// [`read`] on labels or annotations as JSON (`metadata.labels` of a raw object).
pub fn read_json<'a>(map: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    map[key]
        .as_str()
        .or_else(|| map[legacy(key).as_str()].as_str())
}

/// Moves every key of cutover's under its old name to its new one, in `map` as it will be
/// written back. Where both are present the new one wins (it is what [`read`] returns) and
/// the old one is dropped. Returns whether anything moved.
pub fn upgrade(map: &mut BTreeMap<String, String>) -> bool {
    let mut moved = false;
    for key in ALL {
        if let Some(old) = map.remove(&legacy(key)) {
            moved = true;
            map.entry(key.to_string()).or_insert(old);
        }
    }
    moved
}

/// The field manager of every server-side apply cutover makes.
pub const FIELD_MANAGER: &str = "cutover";

/// The colour a candidate gets next to a stable Deployment named `stable`, whose release's
/// anchor is `base`: `green` unless the stable one is green.
pub fn candidate_name(base: &str, stable: &str) -> String {
    if stable == format!("{base}-green") {
        format!("{base}-blue")
    } else {
        format!("{base}-green")
    }
}

/// The colour in a Deployment name cutover made (`web-green` → `green`).
pub fn colour_of(name: &str) -> &str {
    name.rsplit('-').next().unwrap_or(name)
}

/// The headless Service that gives `deployment`'s pods an EndpointSlice.
pub fn service_name(deployment: &str) -> String {
    format!("cutover-{deployment}")
}

/// Whether `key` is a label or annotation cutover owns (and so never copies), in either
/// domain.
pub fn is_ours(key: &str) -> bool {
    key.starts_with(PREFIX) || key.starts_with(LEGACY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_alternate() {
        assert_eq!(candidate_name("web", "web"), "web-green");
        assert_eq!(candidate_name("web", "web-green"), "web-blue");
        assert_eq!(candidate_name("web", "web-blue"), "web-green");
        assert_eq!(colour_of("my-web-blue"), "blue");
        assert_eq!(service_name("web-blue"), "cutover-web-blue");
    }

    #[test]
    fn old_keys_read_as_new_ones_and_the_new_one_wins() {
        let mut map = BTreeMap::new();
        map.insert("cutover.io/state".to_string(), "old".to_string());
        map.insert("cutover.io/revision".to_string(), "3".to_string());
        assert_eq!(read(&map, STATE), Some("old"));
        assert_eq!(read(&map, REVISION), Some("3"));
        map.insert(STATE.to_string(), "new".to_string());
        assert_eq!(read(&map, STATE), Some("new"));
        let json = serde_json::json!({"cutover.io/release": "web", "cutover.dev/colour": "blue"});
        assert_eq!(read_json(&json, RELEASE), Some("web"));
        assert_eq!(read_json(&json, COLOUR), Some("blue"));
        assert_eq!(read_json(&json, ANCHOR), None);
    }

    #[test]
    fn upgrading_moves_every_old_key_and_keeps_the_rest() {
        let mut map = BTreeMap::new();
        for key in ALL {
            map.insert(legacy(key), key.to_string());
        }
        map.insert(legacy(STATE), "stale".to_string());
        map.insert(STATE.to_string(), "current".to_string());
        map.insert("app".to_string(), "web".to_string());
        assert!(upgrade(&mut map));
        assert!(map.keys().all(|k| !k.starts_with(LEGACY_PREFIX)), "{map:?}");
        assert_eq!(map[STATE], "current");
        assert_eq!(map[SLOTS], SLOTS);
        assert_eq!(map["app"], "web");
        assert!(!upgrade(&mut map), "nothing left to move");
    }

    #[test]
    fn both_domains_are_ours_and_a_selector_keeps_its_own() {
        assert!(is_ours("cutover.io/colour"));
        assert!(is_ours("cutover.dev/colour"));
        assert!(!is_ours("app.kubernetes.io/name"));
        let old = serde_json::json!({"cutover.io/colour": "green", "cutover.io/release": "web"});
        assert_eq!(Domain::of_selector(&old), Domain::Legacy);
        assert_eq!(Domain::Legacy.key(COLOUR), "cutover.io/colour");
        let new = serde_json::json!({COLOUR: "green"});
        assert_eq!(Domain::of_selector(&new), Domain::Current);
        assert_eq!(Domain::Current.key(COLOUR), COLOUR);
    }
}
