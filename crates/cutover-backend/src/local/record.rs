//! The local backend's record: which workload plays which slot ([`Slots`]), kept in the
//! state directory's `slots/` with the same compare-and-swap as the rollout state, how a
//! new deployment's record is made, and the directory's identity.

use super::*;

/// Which workload plays which role for one release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Slots {
    pub(super) stable: Option<SlotRecord>,
    pub(super) candidate: Option<SlotRecord>,
    pub(super) previous: Option<SlotRecord>,
}

impl Slots {
    pub(super) fn get(&self, slot: Slot) -> Option<&SlotRecord> {
        match slot {
            Slot::Stable => self.stable.as_ref(),
            Slot::Candidate => self.candidate.as_ref(),
            Slot::Previous => self.previous.as_ref(),
        }
    }

    pub(super) fn take(&mut self, slot: Slot) -> Option<SlotRecord> {
        match slot {
            Slot::Stable => self.stable.take(),
            Slot::Candidate => self.candidate.take(),
            Slot::Previous => self.previous.take(),
        }
    }

    pub(super) fn sets(&self) -> impl Iterator<Item = &str> {
        [&self.stable, &self.candidate, &self.previous]
            .into_iter()
            .flatten()
            .map(|r| r.set.as_str())
    }
}

/// One slot's workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SlotRecord {
    pub(super) version: String,
    /// Unique per deployment: the middle part of its instances' tags.
    pub(super) set: String,
    pub(super) readiness_path: String,
    pub(super) workload: Workload,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Workload {
    Addresses(Vec<String>),
    Command { argv: Vec<String>, ports: Vec<u16> },
}

impl SlotRecord {
    pub(super) fn endpoints(&self) -> Vec<String> {
        match &self.workload {
            Workload::Addresses(addresses) => addresses.clone(),
            Workload::Command { ports, .. } => ports
                .iter()
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, *port)).to_string())
                .collect(),
        }
    }

    pub(super) fn view(&self) -> SlotView {
        SlotView {
            version: self.version.clone(),
            endpoints: self.endpoints(),
        }
    }
}

impl LocalBackend {
    pub(super) fn load_slots(&self, release: &str) -> Result<(Slots, Option<u64>), BackendError> {
        match self.slots.load(release).map_err(state_error)? {
            None => Ok((Slots::default(), None)),
            Some(stored) => {
                let slots = serde_json::from_value(stored.state).map_err(|e| {
                    BackendError::Invalid(format!(
                        "the slot record {} of '{release}' cannot be read: {e}; move it away (cutover then starts the release's slots afresh) or restore it, then restart the controller",
                        self.slots.path_of(release).display()
                    ))
                })?;
                Ok((slots, Some(stored.version)))
            }
        }
    }

    /// Writes the slot record (two fsyncs, off the async workers).
    pub(super) async fn store_slots(
        &self,
        release: &str,
        slots: &Slots,
        revision: Option<u64>,
    ) -> Result<Option<u64>, BackendError> {
        let value = serde_json::to_value(slots)
            .map_err(|e| BackendError::Unavailable(format!("cannot encode slots: {e}")))?;
        let store = self.slots.clone();
        let release = release.to_string();
        let stored = tokio::task::spawn_blocking(move || store.store(&release, &value, revision))
            .await
            .map_err(|e| BackendError::Unavailable(format!("the state writer failed: {e}")))?
            .map_err(state_error)?;
        Ok(Some(stored))
    }

    /// Makes a record for a new deployment of `definition`; command slots get their ports.
    pub(super) fn new_record(
        release: &str,
        version: &str,
        definition: &LocalSlot,
        replicas: u32,
        readiness_path: &str,
    ) -> Result<SlotRecord, BackendError> {
        let workload = match definition {
            LocalSlot::Addresses(addresses) => {
                if addresses.is_empty() {
                    return Err(BackendError::Invalid(format!(
                        "release '{release}': a local slot needs at least one address"
                    )));
                }
                Workload::Addresses(addresses.clone())
            }
            LocalSlot::Command(argv) => {
                if argv.is_empty() {
                    return Err(BackendError::Invalid(format!(
                        "release '{release}': a local command slot needs a program"
                    )));
                }
                let ports = (0..replicas.max(1))
                    .map(|_| free_port())
                    .collect::<Result<_, _>>()?;
                Workload::Command {
                    argv: argv.clone(),
                    ports,
                }
            }
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let set = format!("{}-{:x}", sanitize(version), nanos & 0xffff_ffff_ffff);
        Ok(SlotRecord {
            version: version.to_string(),
            set,
            readiness_path: readiness_path.to_string(),
            workload,
        })
    }
}

/// This state directory's identity: a random id written once to `<root>/id`.
///
/// A missing file gets a new id, written atomically; any other read error is an error:
/// a new identity would orphan every instance the directory's old id tagged.
pub(super) fn directory_id(root: &Path) -> Result<String, BackendError> {
    let path = root.join("id");
    create_private_dir(root)
        .map_err(|e| BackendError::Unavailable(format!("cannot create {}: {e}", root.display())))?;
    for _ in 0..2 {
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
            Ok(_) => {
                return Err(BackendError::Invalid(format!(
                    "the state directory's id file {} is empty; restore it, or remove it if no instance of this directory runs any more",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::Unavailable(format!(
                    "cannot read the state directory's id file {}: {e}",
                    path.display()
                )));
            }
        }
        let mut bytes = [0u8; 6];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(|e| BackendError::Unavailable(format!("cannot read random bytes: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // `false`: another process created it in between; read that one.
        if create_private_file(&path, format!("{id}\n").as_bytes()).map_err(|e| {
            BackendError::Unavailable(format!("cannot write {}: {e}", path.display()))
        })? {
            return Ok(id);
        }
    }
    Err(BackendError::Unavailable(format!(
        "the id file {} keeps changing",
        path.display()
    )))
}

/// A state store error as the controller should see it: a corrupt file is `Invalid`
/// (retrying will not mend it; the controller quarantines that release), naming the file
/// and what to do.
pub(super) fn state_error(e: StateError) -> BackendError {
    match e {
        corrupt @ (StateError::Corrupt { .. } | StateError::TooLarge { .. }) => {
            BackendError::Invalid(cutover_core::error_chain(&corrupt))
        }
        other => other.into(),
    }
}

pub(super) fn free_port() -> Result<u16, BackendError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BackendError::Unavailable(format!("cannot find a free port: {e}")))
}

/// Keeps a version name usable in tags and file names.
pub(super) fn sanitize(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("cutover-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn an_unreadable_id_file_is_an_error_not_a_new_identity() {
        let root = scratch("id-unreadable");
        // A directory where the id file should be: reading it fails with an error other
        // than "not found".
        std::fs::create_dir_all(root.join("id")).expect("made");
        let err = directory_id(&root).expect_err("an unreadable id is an error");
        assert!(
            err.to_string()
                .contains("cannot read the state directory's id file"),
            "{err}"
        );
        assert!(root.join("id").is_dir(), "nothing replaced it");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_id_is_written_once_privately_and_read_back() {
        let root = scratch("id-once");
        let id = directory_id(&root).expect("a new id");
        assert_eq!(directory_id(&root).expect("read back"), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode(&root.join("id")), 0o600);
            assert_eq!(mode(&root), 0o700);
        }
        std::fs::write(root.join("id"), " \n").expect("emptied");
        assert!(matches!(directory_id(&root), Err(BackendError::Invalid(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}
