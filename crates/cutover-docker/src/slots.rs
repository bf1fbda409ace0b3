//! Which containers play which slot of a release, kept in the state directory.
//!
//! Docker cannot add a label to a running container, and the adopted containers must stay
//! untouched, so the roles are written down here rather than on the containers: one JSON
//! file per release (`<state-dir>/docker/slots/<release>.json`), replaced atomically and
//! compare-and-swap through [`StateDir`], changed only under the release's lock.

use std::sync::Arc;

use cutover_backend::{BackendError, Slot, StateDir};
use cutover_core::spec::DockerTarget;
use serde::{Deserialize, Serialize};

/// A set of containers running one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// The version's name.
    pub version: String,
    /// The containers' IDs.
    pub containers: Vec<String>,
    /// Whether cutover created them (a candidate once); adopted containers are never given
    /// to the engine's `v=true` removal of anonymous volumes.
    #[serde(default)]
    pub created: bool,
}

/// The candidate being deployed: its version and the numbers its containers get.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Planned {
    /// The version's name.
    pub version: String,
    /// The first container number (names `<release>-<version>-<n>`, Compose's number).
    pub first: u64,
    /// How many containers.
    pub count: u64,
}

impl Planned {
    /// The candidate's container numbers.
    pub fn numbers(&self) -> impl Iterator<Item = u64> + use<> {
        self.first..self.first + self.count
    }
}

/// The roles of a release's containers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// What serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Group>,
    /// The candidate planned or running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Planned>,
    /// The former stable containers after a promotion, until retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Group>,
    /// The highest container number given out so far.
    #[serde(default)]
    pub last_number: u64,
    /// The network on which the proxy reaches the containers.
    #[serde(default)]
    pub network: String,
    /// The port the containers listen on.
    #[serde(default)]
    pub port: u16,
    /// What the release named as its containers, to find the stable ones again when
    /// Compose has replaced them (a `docker-compose up -d` after the tag in `.env` changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<DockerTarget>,
}

impl Record {
    /// The group that plays `slot`, for the stable and previous slots.
    pub fn group(&self, slot: Slot) -> Option<&Group> {
        match slot {
            Slot::Stable => self.stable.as_ref(),
            Slot::Previous => self.previous.as_ref(),
            Slot::Candidate => None,
        }
    }

    /// Whether `id` is one of the stable or previous containers.
    pub fn holds(&self, id: &str) -> bool {
        [&self.stable, &self.previous]
            .into_iter()
            .flatten()
            .any(|g| g.containers.iter().any(|c| c == id))
    }
}

/// The records of every release, on disk.
#[derive(Clone)]
pub struct Records {
    dir: Arc<StateDir>,
}

impl Records {
    /// The records in `dir`.
    pub fn new(dir: StateDir) -> Records {
        Records { dir: Arc::new(dir) }
    }

    /// `release`'s record (empty when none) and its revision.
    pub async fn load(&self, release: &str) -> Result<(Record, Option<u64>), BackendError> {
        let dir = self.dir.clone();
        let name = release.to_string();
        let stored = tokio::task::spawn_blocking(move || dir.load(&name))
            .await
            .map_err(|e| {
                BackendError::Unavailable(format!("the slot record read failed: {e}"))
            })??;
        match stored {
            None => Ok((Record::default(), None)),
            Some(stored) => {
                let record = serde_json::from_value(stored.state).map_err(|e| {
                    BackendError::Invalid(format!(
                        "the slot record {} cannot be read ({e}); remove it to adopt the containers afresh",
                        self.dir.path_of(release).display()
                    ))
                })?;
                Ok((record, Some(stored.version)))
            }
        }
    }

    /// Writes `record` over the revision `expected` read; the new revision.
    pub async fn store(
        &self,
        release: &str,
        record: &Record,
        expected: Option<u64>,
    ) -> Result<Option<u64>, BackendError> {
        let value = serde_json::to_value(record)
            .map_err(|e| BackendError::Invalid(format!("the slot record is not JSON: {e}")))?;
        let dir = self.dir.clone();
        let name = release.to_string();
        let revision = tokio::task::spawn_blocking(move || dir.store(&name, &value, expected))
            .await
            .map_err(|e| {
                BackendError::Unavailable(format!("the slot record write failed: {e}"))
            })??;
        Ok(Some(revision))
    }

    /// Forgets `release`.
    pub async fn remove(&self, release: &str) -> Result<(), BackendError> {
        let dir = self.dir.clone();
        let name = release.to_string();
        tokio::task::spawn_blocking(move || dir.remove(&name))
            .await
            .map_err(|e| {
                BackendError::Unavailable(format!("the slot record removal failed: {e}"))
            })??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_knows_its_containers() {
        let record = Record {
            stable: Some(Group {
                version: "v1".into(),
                containers: vec!["a".into()],
                created: false,
            }),
            candidate: Some(Planned {
                version: "v2".into(),
                first: 3,
                count: 2,
            }),
            previous: None,
            last_number: 4,
            network: "shop_default".into(),
            port: 8080,
            target: None,
        };
        assert!(record.holds("a"));
        assert!(!record.holds("b"));
        assert_eq!(
            record
                .candidate
                .as_ref()
                .map(|p| p.numbers().collect::<Vec<_>>()),
            Some(vec![3, 4])
        );
        let text = serde_json::to_string(&record).expect("json");
        assert_eq!(serde_json::from_str::<Record>(&text).ok(), Some(record));
    }
}
