//! The local backend's state store: one JSON file per release in a directory, replaced
//! atomically (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a controller killed at any instruction leaves either the old state or
//! the new one, never half of either.
//!
//! Every stored state carries a version that increases by one per write. A write names the
//! version it read (`expected`); if another writer got there first, the write fails with
//! [`StateError::Conflict`] instead of overwriting, the same optimistic concurrency the
//! Swarm (service version index) and Kubernetes (resourceVersion) stores give. Writers of
//! one release in one process are serialised; two controllers must not share one directory (the
//! controller takes a lock on it). Each write records its writer (this `StateDir`'s
//! [`writer_id`](crate::writer_id)), so a write sent again after an error is answered as the
//! replay it is, and [`fence`](StateDir::fence) cuts off a writer the way every backend's
//! `recover` does ([`revision::decide`](crate::revision::decide)).
//!
//! The states hold release files, and release files may hold credentials (inline hook
//! headers, say): directories are made 0700 and files 0600, and a directory an older
//! version left open is closed again when it is opened. [`create_private_file`] writes the
//! other files of a state directory (tokens, the directory's id) the same atomic way.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::revision::{Decision, Held, Request, decide, fenced};

/// A stored state and its version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Increases by one with every write, from 1.
    pub version: u64,
    /// The state as the rollout serialised it.
    pub state: serde_json::Value,
}

/// A stored state as the file holds it: [`Stored`] and who wrote it (absent in files an
/// older version wrote, which therefore never count as a replay).
#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u64,
    state: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<String>,
}

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The release name cannot be a file name.
    #[error("'{0}' is not a release name (lowercase letters, digits and '-', at most 63)")]
    Name(String),
    /// Someone else wrote since the state was read.
    #[error(
        "the state of '{release}' changed: expected version {expected:?}, found {found:?}; read it again"
    )]
    Conflict {
        /// The release.
        release: String,
        /// The version the writer read.
        expected: Option<u64>,
        /// The version stored now.
        found: Option<u64>,
    },
    /// The file is not a stored state.
    #[error(
        "the state file {path} is corrupt; move it away (the release then starts from scratch) or restore it from a backup, then restart the controller"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file is larger than any state this controller writes: not read at all.
    #[error(
        "the state file {path} is larger than {limit} bytes, more than any state cutover writes; move it away (the release then starts from scratch) or restore it from a backup, then restart the controller"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most a state file may hold.
        limit: u64,
    },
    /// The file system failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The largest state file read back. A record is a release file (held to the loader's
/// budget), 200 history lines, 20 earlier rollouts and an analysis's progress (held to its
/// own bucket budget, some 50 KB): far below this, so only a damaged or planted file
/// reaches it.
pub const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// A directory of release states.
pub struct StateDir {
    root: PathBuf,
    /// Who this store's writes come from: one name per `StateDir` opened.
    writer: String,
    /// One writer per release at a time; different releases write (and fsync) in parallel.
    writers: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A state as text, for the replay check.
fn text_of(state: &serde_json::Value, path: &Path) -> Result<String, StateError> {
    serde_json::to_string(state).map_err(|source| StateError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Release names become file names: only what `cutover lint` accepts as a name.
fn checked(release: &str) -> Result<&str, StateError> {
    let valid = !release.is_empty()
        && release.len() <= 63
        && release
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !release.starts_with('-');
    if valid {
        Ok(release)
    } else {
        Err(StateError::Name(release.to_string()))
    }
}

/// The mode of every directory of a state directory: its owner's alone.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// The mode of every file of a state directory.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, and makes `dir` itself 0700 (also when it
/// already existed, so a directory an older version made 0755 is closed).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, PRIVATE_DIR_MODE);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != PRIVATE_DIR_MODE {
            fs::set_permissions(dir, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?;
        }
    }
    Ok(())
}

/// Opens `path` for writing as a new 0600 file, replacing a leftover of an interrupted write.
fn create_private_temp(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, PRIVATE_FILE_MODE);
    let file = options.open(path)?;
    // A leftover made by an older version keeps its mode through `open`: close it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
    }
    Ok(file)
}

/// Writes `contents` to `path` as a new 0600 file, atomically: a temporary file beside it,
/// fsynced, then linked to `path` (which fails if `path` exists) and the directory
/// fsynced. A reader never sees a half-written file, and two writers racing cannot both
/// win: `Ok(false)` says `path` already existed and was left as it was.
pub fn create_private_file(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the path names no file"))?
        .to_string_lossy()
        .into_owned();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = create_private_temp(&temp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    drop(file);
    let linked = written.and_then(|()| fs::hard_link(&temp, path));
    let _ = fs::remove_file(&temp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    File::open(&dir).and_then(|d| d.sync_all())?;
    Ok(true)
}

impl StateDir {
    /// Opens (creating if needed) the directory, 0700.
    pub fn open(root: impl Into<PathBuf>) -> Result<StateDir, StateError> {
        let root = root.into();
        create_private_dir(&root).map_err(io("create", &root))?;
        Ok(StateDir {
            root,
            writer: crate::writer_id(),
            writers: Mutex::new(HashMap::new()),
        })
    }

    /// The lock that serialises writes of `release`.
    fn writer(&self, release: &str) -> Arc<Mutex<()>> {
        self.writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(release.to_string())
            .or_default()
            .clone()
    }

    fn path(&self, release: &str) -> PathBuf {
        self.root.join(format!("{release}.json"))
    }

    /// The file that holds `release`'s state, for messages that tell an operator which
    /// file to look at.
    pub fn path_of(&self, release: &str) -> PathBuf {
        self.path(release)
    }

    /// The stored state of `release`, if any. A file larger than [`MAX_STATE_BYTES`] is
    /// refused unread ([`StateError::TooLarge`]), as a corrupt one is.
    pub fn load(&self, release: &str) -> Result<Option<Stored>, StateError> {
        Ok(self.read(release)?.map(|held| Stored {
            version: held.version,
            state: held.state,
        }))
    }

    /// The file of `release` as it is, with its writer.
    fn read(&self, release: &str) -> Result<Option<OnDisk>, StateError> {
        let path = self.path(checked(release)?);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let mut text = Vec::new();
        file.take(MAX_STATE_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(io("read", &path))?;
        if text.len() as u64 > MAX_STATE_BYTES {
            return Err(StateError::TooLarge {
                path,
                limit: MAX_STATE_BYTES,
            });
        }
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Stores `state` for `release` if the stored version is still `expected` (`None`: no
    /// state yet); returns the new version.
    pub fn store(
        &self,
        release: &str,
        state: &serde_json::Value,
        expected: Option<u64>,
    ) -> Result<u64, StateError> {
        let release = checked(release)?;
        let writer = self.writer(release);
        let _writer = writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = self.read(release)?;
        let held_text = match &held {
            Some(h) => Some(text_of(&h.state, &self.path(release))?),
            None => None,
        };
        let text = text_of(state, &self.path(release))?;
        let decision = decide(
            Held {
                revision: held.as_ref().map(|h| h.version),
                text: held_text.as_deref(),
                writer: held.as_ref().and_then(|h| h.writer.as_deref()),
            },
            Request {
                expected,
                text: &text,
                writer: &self.writer,
            },
        );
        match decision {
            Decision::Replay { revision } => Ok(revision),
            Decision::Conflict => Err(StateError::Conflict {
                release: release.to_string(),
                expected,
                found: held.map(|h| h.version),
            }),
            Decision::Write { revision } => {
                self.replace(release, revision, state.clone())?;
                Ok(revision)
            }
        }
    }

    /// Writes the stored state of `release` again one revision up in this store's name, so
    /// that another writer's next write (expecting the revision it read) is refused rather
    /// than taken for its replay; returns the new revision, `None` when nothing is stored.
    pub fn fence(&self, release: &str) -> Result<Option<u64>, StateError> {
        let release = checked(release)?;
        let writer = self.writer(release);
        let _writer = writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(held) = self.read(release)? else {
            return Ok(None);
        };
        let Some(revision) = fenced(Some(held.version)) else {
            return Ok(None);
        };
        self.replace(release, revision, held.state)?;
        Ok(Some(revision))
    }

    /// Replaces the file of `release` atomically with `state` at `revision`, naming this
    /// store the writer. Called with the release's writer lock held.
    fn replace(
        &self,
        release: &str,
        revision: u64,
        state: serde_json::Value,
    ) -> Result<(), StateError> {
        let stored = OnDisk {
            version: revision,
            state,
            writer: Some(self.writer.clone()),
        };
        let bytes = serde_json::to_vec_pretty(&stored).map_err(|source| StateError::Corrupt {
            path: self.path(release),
            source,
        })?;
        let path = self.path(release);
        let temp = self.root.join(format!(".{release}.json.tmp"));
        let mut file = create_private_temp(&temp).map_err(io("create", &temp))?;
        file.write_all(&bytes).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("sync", &temp))?;
        drop(file);
        fs::rename(&temp, &path).map_err(io("replace", &path))?;
        // The rename itself is durable only once the directory is.
        File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", &self.root))?;
        Ok(())
    }

    /// Removes the state of `release` (a finished rollout no longer resumed).
    pub fn remove(&self, release: &str) -> Result<(), StateError> {
        let path = self.path(checked(release)?);
        let writer = self.writer(release);
        let _writer = writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// Every release with a stored state, sorted: what a restarted controller resumes.
    pub fn releases(&self) -> Result<Vec<String>, StateError> {
        let mut names: Vec<String> = fs::read_dir(&self.root)
            .map_err(io("list", &self.root))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".json").map(str::to_string))
            .filter(|name| checked(name).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> (Dir, StateDir) {
        let path =
            std::env::temp_dir().join(format!("cutover-state-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        let store = StateDir::open(&path).expect("opens");
        (Dir(path), store)
    }

    #[test]
    fn states_round_trip_with_increasing_versions() {
        let (_d, store) = dir("round");
        assert_eq!(store.load("shop").expect("reads"), None);
        assert_eq!(
            store
                .store("shop", &serde_json::json!({"phase": "deploying"}), None)
                .expect("stores"),
            1
        );
        assert_eq!(
            store
                .store("shop", &serde_json::json!({"phase": "step"}), Some(1))
                .expect("stores"),
            2
        );
        let stored = store.load("shop").expect("reads").expect("present");
        assert_eq!(
            stored,
            Stored {
                version: 2,
                state: serde_json::json!({"phase": "step"})
            }
        );
        assert_eq!(store.releases().expect("lists"), vec!["shop".to_string()]);
        store.remove("shop").expect("removes");
        assert_eq!(store.load("shop").expect("reads"), None);
        store
            .remove("shop")
            .expect("removing what is gone succeeds");
    }

    #[test]
    fn a_stale_writer_gets_a_conflict_not_an_overwrite() {
        let (_d, store) = dir("conflict");
        store
            .store("shop", &serde_json::json!(1), None)
            .expect("stores");
        store
            .store("shop", &serde_json::json!(2), Some(1))
            .expect("stores");
        let err = store
            .store("shop", &serde_json::json!(3), Some(1))
            .expect_err("stale");
        assert!(
            matches!(
                err,
                StateError::Conflict {
                    expected: Some(1),
                    found: Some(2),
                    ..
                }
            ),
            "{err}"
        );
        assert!(matches!(
            store.store("shop", &serde_json::json!(3), None),
            Err(StateError::Conflict { .. })
        ));
        assert_eq!(
            store.load("shop").expect("reads").map(|s| s.state),
            Some(serde_json::json!(2))
        );
    }

    #[test]
    fn a_replay_is_answered_once_and_a_fenced_writer_is_refused() {
        let (d, mine) = dir("replay");
        let state = serde_json::json!({"step": 1});
        assert_eq!(mine.store("shop", &state, None).expect("stores"), 1);
        // The reply was lost; the same write again is answered, not refused.
        assert_eq!(mine.store("shop", &state, None).expect("a replay"), 1);
        // Another store over the directory (a new controller) fences the release.
        let theirs = StateDir::open(&d.0).expect("opens");
        assert_eq!(theirs.fence("shop").expect("fenced"), Some(2));
        assert_eq!(theirs.fence("none").expect("nothing stored"), None);
        // My next write, the same text expecting revision 1, is not my replay.
        assert!(matches!(
            mine.store("shop", &state, Some(1)),
            Err(StateError::Conflict { found: Some(2), .. })
        ));
        assert_eq!(theirs.store("shop", &state, Some(2)).expect("stores"), 3);
        // A file an older version wrote (no writer) is read, and never taken for a replay.
        fs::write(
            d.0.join("old.json"),
            br#"{"version": 4, "state": {"step": 1}}"#,
        )
        .expect("written");
        assert_eq!(mine.load("old").expect("reads").map(|s| s.version), Some(4));
        assert!(matches!(
            mine.store("old", &state, Some(3)),
            Err(StateError::Conflict { .. })
        ));
    }

    #[test]
    fn a_write_interrupted_before_the_rename_leaves_the_old_state() {
        let (d, store) = dir("crash");
        store
            .store("shop", &serde_json::json!({"step": 3}), None)
            .expect("stores");
        // What a controller killed mid-write leaves: a half-written temporary file.
        fs::write(d.0.join(".shop.json.tmp"), b"{\"version\": 2, \"sta").expect("written");
        let stored = store.load("shop").expect("reads").expect("present");
        assert_eq!(stored.state, serde_json::json!({"step": 3}));
        assert_eq!(
            store.releases().expect("lists"),
            vec!["shop".to_string()],
            "temporary files are not releases"
        );
        assert_eq!(
            store
                .store("shop", &serde_json::json!({"step": 4}), Some(1))
                .expect("stores"),
            2
        );
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).expect("exists").permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn states_are_private_to_their_owner_even_in_a_directory_left_open() {
        use std::os::unix::fs::PermissionsExt;
        let (d, store) = dir("modes");
        store
            .store("shop", &serde_json::json!({"secret": "inline"}), None)
            .expect("stores");
        assert_eq!(mode(&d.0), 0o700);
        assert_eq!(mode(&d.0.join("shop.json")), 0o600);
        // What an older version left: a 0755 directory and a 0644 state.
        fs::set_permissions(&d.0, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::set_permissions(d.0.join("shop.json"), fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let store = StateDir::open(&d.0).expect("opens");
        assert_eq!(mode(&d.0), 0o700);
        store
            .store("shop", &serde_json::json!({"secret": "inline"}), Some(1))
            .expect("stores");
        assert_eq!(mode(&d.0.join("shop.json")), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_private_file_is_created_once_with_mode_0600_and_never_replaced() {
        let (d, _store) = dir("private");
        let path = d.0.join("token");
        assert!(create_private_file(&path, b"first\n").expect("creates"));
        assert!(!create_private_file(&path, b"second\n").expect("sees it"));
        assert_eq!(fs::read(&path).expect("reads"), b"first\n");
        assert_eq!(mode(&path), 0o600);
        let leftovers: Vec<_> = fs::read_dir(&d.0)
            .expect("lists")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn names_that_are_not_release_names_are_refused_and_corruption_reported() {
        let (d, store) = dir("names");
        for bad in ["../etc/passwd", "Shop", "", "a/b", "-x"] {
            assert!(matches!(store.load(bad), Err(StateError::Name(_))), "{bad}");
        }
        fs::write(d.0.join("broken.json"), b"not json").expect("written");
        assert!(matches!(
            store.load("broken"),
            Err(StateError::Corrupt { .. })
        ));
        // A file beyond any state's size is not read into memory at all.
        let huge = File::create(d.0.join("huge.json")).expect("created");
        huge.set_len(MAX_STATE_BYTES + 1).expect("sized");
        assert!(matches!(
            store.load("huge"),
            Err(StateError::TooLarge { .. })
        ));
    }
}
