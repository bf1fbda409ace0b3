//! The labels cutover writes on the services it manages, and how the slots are read back
//! from them.
//!
//! The names are in the project's one domain, `cutover.dev`, written as Docker's
//! documented reverse-DNS convention asks: `dev.cutover.<name>`. Versions before this one
//! wrote `io.cutover.<name>`; those names are still read (see [`read`]), and a service
//! carrying them is moved to the new names in the first label update cutover makes on it
//! (see [`upgrade`]), in that one update, so a service never holds two states that
//! disagree.
//!
//! Every service of a release carries `dev.cutover.release` and a *role* (`stable` or
//! `candidate`) with an *epoch*: the adopted service has epoch 0, and each candidate gets
//! the stable epoch plus one. Promotion is one label change on the candidate (its role
//! becomes `stable`), so it is atomic: the stable slot is the `stable` service with the
//! highest epoch, and any other `stable` service is the previous one, waiting for its
//! scale-down. A crash between any two calls leaves a set of labels that still reads as
//! one consistent assignment of slots.

use cutover_backend::Slot;
use serde_json::{Map, Value};

/// The prefix of every label cutover writes: the `cutover.dev` domain in reverse-DNS form.
pub const PREFIX: &str = "dev.cutover.";
/// The prefix older versions wrote: read, and replaced by [`PREFIX`] on the next write.
pub const LEGACY_PREFIX: &str = "io.cutover.";

/// The release a service belongs to.
pub const RELEASE: &str = "dev.cutover.release";
/// The name of the controller that drives the release (`cutover serve --name`): several
/// controllers can share a Swarm, each resuming only its own releases.
pub const CONTROLLER: &str = "dev.cutover.controller";
/// `stable` or `candidate`.
pub const ROLE: &str = "dev.cutover.role";
/// Orders stable services: the highest is the stable slot.
pub const EPOCH: &str = "dev.cutover.epoch";
/// The version's name, as the proxy's metrics label it.
pub const VERSION: &str = "dev.cutover.version";
/// The service the release adopted first; candidates are named after it.
pub const BASE: &str = "dev.cutover.base";
/// The port the service's tasks listen on.
pub const PORT: &str = "dev.cutover.port";
/// The overlay network on which the proxy reaches the tasks.
pub const NETWORK: &str = "dev.cutover.network";
/// The controller's rollout state (JSON), on the service that holds it.
pub const STATE: &str = "dev.cutover.state";
/// The revision of [`STATE`]: increases by one with every write.
pub const REVISION: &str = "dev.cutover.revision";
/// Which controller process wrote [`STATE`] last, so that a write sent again after a lost
/// reply is told from another process's write of the same text (a takeover's fence).
pub const WRITER: &str = "dev.cutover.writer";
/// Written on every service of a release by a controller that takes it over
/// (milliseconds since the epoch): the write moves each service's version index on, so a
/// write a dead controller still had in flight, made against the index before, is refused.
pub const FENCE: &str = "dev.cutover.fence";

/// Every label of a service cutover owns (in the new domain): the ones [`upgrade`] moves.
pub const ALL: [&str; 12] = [
    RELEASE, CONTROLLER, ROLE, EPOCH, VERSION, BASE, PORT, NETWORK, STATE, REVISION, WRITER, FENCE,
];

/// The name an older version gave the label `key` (`dev.cutover.role` → `io.cutover.role`).
pub fn legacy(key: &str) -> String {
    match key.strip_prefix(PREFIX) {
        Some(name) => format!("{LEGACY_PREFIX}{name}"),
        None => key.to_string(),
    }
}

/// The value of label `key` in `labels`, under its new name or else its old one: a
/// service an older version labelled reads as one labelled now.
pub fn read<'a>(labels: &'a Value, key: &str) -> Option<&'a str> {
    labels[key]
        .as_str()
        .or_else(|| labels[legacy(key).as_str()].as_str())
}

/// Moves every label of cutover's under its old name (see [`LEGACY_PREFIX`]) to its new
/// one, in `labels` as they will be written back. Where both names are present the new
/// one wins (it is what [`read`] returns) and the old one is dropped, so after the write a
/// service carries only new names and the state it holds is the one that was read.
/// Returns whether anything moved.
pub fn upgrade(labels: &mut Map<String, Value>) -> bool {
    let mut moved = false;
    for key in ALL {
        if let Some(old) = labels.remove(&legacy(key)) {
            moved = true;
            if !labels.contains_key(key) {
                labels.insert(key.to_string(), old);
            }
        }
    }
    moved
}

/// A service's part in a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serves, or served until a promotion (then it is the previous slot).
    Stable,
    /// The version being rolled out.
    Candidate,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Candidate => "candidate",
        }
    }
}

/// One service of a release, as its labels describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Managed {
    /// The service's ID.
    pub id: String,
    /// The service's name.
    pub name: String,
    /// Stable or candidate.
    pub role: Role,
    /// See the module documentation.
    pub epoch: u64,
    /// The version's name.
    pub version: String,
    /// The name candidates are derived from.
    pub base: String,
    /// The tasks' port.
    pub port: u16,
    /// The overlay network of the endpoints.
    pub network: String,
    /// The stored rollout state and its revision, if this service holds one.
    pub state: Option<(u64, String)>,
    /// Which process wrote the state (see [`WRITER`]).
    pub writer: Option<String>,
}

impl Managed {
    /// Reads a service as the API gives it (`GET /services`); `None` if it is not managed
    /// by cutover (or its labels were edited into something unreadable, which is then
    /// left alone). A revision that is not a number reads as 0, so the service stays
    /// managed and the state in it is still found.
    pub fn from_service(service: &Value) -> Option<Managed> {
        let spec = &service["Spec"];
        let label = |key: &str| read(&spec["Labels"], key);
        let role = match label(ROLE)? {
            "stable" => Role::Stable,
            "candidate" => Role::Candidate,
            _ => return None,
        };
        let state = label(STATE).map(|state| {
            let revision = label(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
            (revision, state.to_string())
        });
        Some(Managed {
            id: service["ID"].as_str()?.to_string(),
            name: spec["Name"].as_str()?.to_string(),
            role,
            epoch: label(EPOCH)?.parse().ok()?,
            version: label(VERSION)?.to_string(),
            base: label(BASE)?.to_string(),
            port: label(PORT)?.parse().ok()?,
            network: label(NETWORK)?.to_string(),
            state,
            writer: label(WRITER).map(str::to_string),
        })
    }

    /// This service's stored revision (`None` if it holds no state).
    pub fn revision(&self) -> Option<u64> {
        self.state.as_ref().map(|(revision, _)| *revision)
    }
}

/// The labels that make `release`'s slot out of a service.
pub struct SlotLabels<'a> {
    /// The controller's name.
    pub controller: &'a str,
    /// The release.
    pub release: &'a str,
    /// Stable or candidate.
    pub role: Role,
    /// See the module documentation.
    pub epoch: u64,
    /// The version's name.
    pub version: &'a str,
    /// The name candidates are derived from.
    pub base: &'a str,
    /// The tasks' port.
    pub port: u16,
    /// The overlay network of the endpoints.
    pub network: &'a str,
}

impl SlotLabels<'_> {
    /// Writes the labels into `labels`, replacing cutover's earlier ones (and dropping a
    /// stored state, which stays with the service that holds it).
    /// Labels an older version wrote are replaced too (see [`upgrade`]).
    pub fn apply(&self, labels: &mut Map<String, Value>) {
        upgrade(labels);
        labels.remove(STATE);
        labels.remove(REVISION);
        labels.remove(WRITER);
        labels.insert(CONTROLLER.into(), self.controller.into());
        labels.insert(RELEASE.into(), self.release.into());
        labels.insert(ROLE.into(), self.role.as_str().into());
        labels.insert(EPOCH.into(), self.epoch.to_string().into());
        labels.insert(VERSION.into(), self.version.into());
        labels.insert(BASE.into(), self.base.into());
        labels.insert(PORT.into(), self.port.to_string().into());
        labels.insert(NETWORK.into(), self.network.into());
    }
}

/// A release's services, sorted into slots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    /// The `stable` service with the highest epoch.
    pub stable: Option<Managed>,
    /// The candidate (the newest, if a crash left two).
    pub candidate: Option<Managed>,
    /// Every other service of the release: former stable ones waiting for their
    /// scale-down, and stray candidates.
    pub previous: Vec<Managed>,
}

impl Slots {
    /// Sorts `services` (all of one release) into slots.
    pub fn sort(mut services: Vec<Managed>) -> Slots {
        services.sort_by(|a, b| b.epoch.cmp(&a.epoch).then_with(|| a.name.cmp(&b.name)));
        let mut slots = Slots::default();
        for service in services {
            match service.role {
                Role::Stable if slots.stable.is_none() => slots.stable = Some(service),
                Role::Candidate
                    if slots.candidate.is_none()
                        && slots
                            .stable
                            .as_ref()
                            .is_none_or(|s| service.epoch > s.epoch) =>
                {
                    slots.candidate = Some(service)
                }
                _ => slots.previous.push(service),
            }
        }
        slots
    }

    /// The service playing `slot`: for `Previous`, the newest of them.
    pub fn get(&self, slot: Slot) -> Option<&Managed> {
        match slot {
            Slot::Stable => self.stable.as_ref(),
            Slot::Candidate => self.candidate.as_ref(),
            Slot::Previous => self.previous.first(),
        }
    }

    /// The service holding the newest stored state. On a tie (the state was just copied
    /// to the stable service from one being retired, whose removal may not have landed),
    /// the stable service: writes must never go to a service on its way out.
    pub fn state_holder(&self) -> Option<&Managed> {
        let stable = self.stable.as_ref().map(|s| s.id.as_str());
        self.all()
            .filter(|m| m.state.is_some())
            .max_by_key(|m| (m.revision(), Some(m.id.as_str()) == stable))
    }

    /// Every service of the release.
    pub fn all(&self) -> impl Iterator<Item = &Managed> {
        self.stable
            .iter()
            .chain(self.candidate.iter())
            .chain(self.previous.iter())
    }
}

/// The name of the candidate of epoch `epoch`: the base name and a colour that alternates,
/// so a candidate never takes the name of the stable service it will replace.
pub fn candidate_name(base: &str, epoch: u64) -> String {
    let colour = if epoch % 2 == 1 { "green" } else { "blue" };
    format!("{base}-{colour}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed(name: &str, role: Role, epoch: u64) -> Managed {
        Managed {
            id: format!("id-{name}"),
            name: name.into(),
            role,
            epoch,
            version: format!("v{epoch}"),
            base: "web".into(),
            port: 8080,
            network: "net".into(),
            state: None,
            writer: None,
        }
    }

    #[test]
    fn the_highest_stable_epoch_is_the_stable_slot() {
        let slots = Slots::sort(vec![
            managed("web", Role::Stable, 0),
            managed("web-green", Role::Stable, 1),
        ]);
        assert_eq!(
            slots.stable.as_ref().map(|m| m.name.as_str()),
            Some("web-green")
        );
        assert_eq!(slots.candidate, None);
        assert_eq!(
            slots.get(Slot::Previous).map(|m| m.name.as_str()),
            Some("web")
        );
    }

    #[test]
    fn a_candidate_older_than_the_stable_slot_is_a_stray() {
        // A promotion happened; a candidate of an earlier epoch was left by a crash.
        let slots = Slots::sort(vec![
            managed("web-green", Role::Stable, 1),
            managed("web-x", Role::Candidate, 1),
            managed("web-blue", Role::Candidate, 2),
        ]);
        assert_eq!(
            slots.candidate.as_ref().map(|m| m.name.as_str()),
            Some("web-blue")
        );
        assert_eq!(slots.previous.len(), 1);
    }

    #[test]
    fn the_state_holder_has_the_highest_revision() {
        let mut a = managed("web", Role::Stable, 0);
        a.state = Some((4, "{}".into()));
        let mut b = managed("web-green", Role::Stable, 1);
        b.state = Some((5, "{}".into()));
        let slots = Slots::sort(vec![a, b]);
        assert_eq!(
            slots.state_holder().map(|m| m.name.as_str()),
            Some("web-green")
        );
    }

    #[test]
    fn services_read_back_from_the_api() {
        let service = serde_json::json!({
            "ID": "s1",
            "Version": {"Index": 42},
            "Spec": {"Name": "web", "Labels": {
                RELEASE: "shop", ROLE: "stable", EPOCH: "0", VERSION: "v1", BASE: "web",
                PORT: "8080", NETWORK: "net", STATE: "{}", REVISION: "x"
            }}
        });
        let managed = Managed::from_service(&service).expect("managed");
        assert_eq!(managed.revision(), Some(0));
        let mut plain = service.clone();
        plain["Spec"]["Labels"] = serde_json::json!({"team": "shop"});
        assert_eq!(Managed::from_service(&plain), None);
    }

    #[test]
    fn a_tie_goes_to_the_stable_service() {
        let mut previous = managed("web", Role::Stable, 0);
        previous.state = Some((7, "{}".into()));
        let mut stable = managed("web-green", Role::Stable, 1);
        stable.state = Some((7, "{}".into()));
        let slots = Slots::sort(vec![stable, previous]);
        assert_eq!(
            slots.state_holder().map(|m| m.name.as_str()),
            Some("web-green")
        );
    }

    #[test]
    fn colours_alternate() {
        assert_eq!(candidate_name("web", 1), "web-green");
        assert_eq!(candidate_name("web", 2), "web-blue");
        assert_eq!(candidate_name("web", 3), "web-green");
    }

    fn candidate_labels() -> SlotLabels<'static> {
        SlotLabels {
            controller: "cutover",
            release: "web",
            role: Role::Candidate,
            epoch: 1,
            version: "v2",
            base: "web",
            port: 8080,
            network: "net",
        }
    }

    #[test]
    fn applying_labels_drops_a_copied_state() {
        let mut labels = serde_json::Map::new();
        labels.insert(STATE.into(), "{}".into());
        labels.insert(REVISION.into(), "3".into());
        labels.insert("team".into(), "shop".into());
        candidate_labels().apply(&mut labels);
        assert!(!labels.contains_key(STATE));
        assert_eq!(labels["team"], "shop");
        assert_eq!(labels[ROLE], "candidate");
    }

    #[test]
    fn a_service_labelled_by_an_older_version_reads_the_same() {
        let service = serde_json::json!({
            "ID": "s1",
            "Spec": {"Name": "web", "Labels": {
                "io.cutover.release": "shop", "io.cutover.role": "stable",
                "io.cutover.epoch": "0", "io.cutover.version": "v1", "io.cutover.base": "web",
                "io.cutover.port": "8080", "io.cutover.network": "net",
                "io.cutover.state": "{\"step\":1}", "io.cutover.revision": "4",
                "io.cutover.writer": "old"
            }}
        });
        let managed = Managed::from_service(&service).expect("managed");
        assert_eq!(managed.role, Role::Stable);
        assert_eq!(managed.state, Some((4, "{\"step\":1}".to_string())));
        assert_eq!(managed.writer.as_deref(), Some("old"));
        assert_eq!(read(&service["Spec"]["Labels"], RELEASE), Some("shop"));
        assert_eq!(legacy(STATE), "io.cutover.state");
    }

    #[test]
    fn the_new_name_wins_when_a_service_carries_both() {
        let labels = serde_json::json!({
            "io.cutover.state": "old", "dev.cutover.state": "new"
        });
        assert_eq!(read(&labels, STATE), Some("new"));
        let Value::Object(mut labels) = labels else {
            unreachable!("an object")
        };
        assert!(upgrade(&mut labels));
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[STATE], "new");
    }

    #[test]
    fn upgrading_moves_every_old_name_and_leaves_other_labels() {
        let mut labels = Map::new();
        for key in ALL {
            labels.insert(legacy(key), key.into());
        }
        labels.insert("io.cutover.test".into(), "t".into());
        labels.insert("team".into(), "shop".into());
        assert!(upgrade(&mut labels));
        for key in ALL {
            assert_eq!(labels[key], key, "{key}");
            assert!(!labels.contains_key(&legacy(key)), "{key}");
        }
        assert_eq!(labels["io.cutover.test"], "t");
        assert_eq!(labels["team"], "shop");
        assert!(!upgrade(&mut labels), "nothing left to move");
    }

    #[test]
    fn a_candidate_cloned_from_an_old_service_carries_only_new_names() {
        let mut labels = Map::new();
        for key in ALL {
            labels.insert(legacy(key), "old".into());
        }
        candidate_labels().apply(&mut labels);
        assert!(labels.keys().all(|k| k.starts_with(PREFIX)), "{labels:?}");
        assert!(!labels.contains_key(STATE));
        assert_eq!(labels[ROLE], "candidate");
    }
}
