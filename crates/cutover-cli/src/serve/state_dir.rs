//! The state directory `serve` claims: created with what it created noted (and removed
//! again if the start fails), locked against a second controller, and its lock file naming
//! the process that holds it.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::*;

/// Locks the state directory (creating it, and noting what was created, once the
/// addresses are known to be free) and writes this process into its lock file.
pub(super) fn claim_state_dir(
    args: &ServeArgs,
    state_dir: &Path,
) -> Result<(CreatedDir, File), Failure> {
    let fail = |message: String| Failure::error(exit::UNAVAILABLE, message);
    // Two controllers on one directory would overwrite each other's decisions. A directory
    // that exists is locked first, so that a second `serve` names the first rather than
    // the ports they both want.
    let early_lock = if state_dir.is_dir() {
        Some(lock(state_dir).map_err(fail)?)
    } else {
        None
    };
    // Nothing is created before the addresses are known to be free.
    addresses_free(args).map_err(fail)?;
    let created = CreatedDir::before_creating(state_dir);
    cutover_backend::create_private_dir(state_dir).map_err(|e| {
        fail(format!(
            "cannot create the state directory {}: {e}",
            state_dir.display()
        ))
    })?;
    let mut lock_file = early_lock
        .map_or_else(|| lock(state_dir), Ok)
        .map_err(fail)?;
    note_holder(&mut lock_file, None);
    Ok((created, lock_file))
}

/// The directories a start is about to create (the state directory and any missing
/// parent), removed again if the start fails: a failed `serve` leaves nothing behind. A
/// directory that existed before is never removed, nor is a parent that someone else put
/// something into meanwhile: only the state directory is removed with what is in it, each
/// parent only if empty, walking upward.
pub(super) struct CreatedDir {
    /// From the state directory up to the outermost one that was missing; empty if the
    /// state directory existed.
    missing: Vec<PathBuf>,
}

impl CreatedDir {
    /// Notes the missing directories on the way to `dir`, before it is created.
    pub(super) fn before_creating(dir: &Path) -> CreatedDir {
        let mut missing = Vec::new();
        let mut current = Some(dir);
        while let Some(path) = current {
            if path.as_os_str().is_empty() || path.exists() {
                break;
            }
            missing.push(path.to_path_buf());
            current = path.parent();
        }
        CreatedDir { missing }
    }

    /// The start went through: keep what was created.
    pub(super) fn keep(&mut self) {
        self.missing.clear();
    }
}

impl Drop for CreatedDir {
    fn drop(&mut self) {
        let mut missing = std::mem::take(&mut self.missing).into_iter();
        let Some(state_dir) = missing.next() else {
            return;
        };
        if let Err(e) = std::fs::remove_dir_all(&state_dir) {
            eprintln!(
                "warning: cannot remove {} after the failed start: {e}",
                state_dir.display()
            );
            return;
        }
        // A parent that is not empty now holds someone else's files: it stays, and so
        // does every directory above it.
        for parent in missing {
            if std::fs::remove_dir(&parent).is_err() {
                break;
            }
        }
    }
}

/// Writes who holds the lock into the lock file (`pid=...`, then `api=...` once the API
/// listens), so that a second `serve` on the directory can name it. Best effort: the
/// lock is what keeps a second controller out, the text only explains.
pub(super) fn note_holder(file: &mut File, api: Option<&str>) {
    use std::io::{Seek, Write};
    let mut text = format!("pid={}\n", std::process::id());
    if let Some(api) = api {
        text.push_str(&format!("api={api}\n"));
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()));
    if let Err(e) = written {
        tracing::debug!("cannot note the holder in the lock file: {e}");
    }
}

/// Who holds a lock file, from what [`note_holder`] wrote: `pid 123, API on http://...`.
pub(super) fn holder(path: &Path) -> Option<String> {
    let mut text = String::new();
    File::open(path)
        .ok()?
        .take(1024)
        .read_to_string(&mut text)
        .ok()?;
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let pid = value("pid")?;
    Some(match value("api") {
        Some(api) => format!("pid {pid}, API on {api}"),
        None => format!("pid {pid}"),
    })
}

/// Takes an exclusive lock on `<dir>/.lock` for the life of the process.
pub(super) fn lock(dir: &Path) -> Result<File, String> {
    let path = dir.join(".lock");
    let mut options = OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another controller ({}) uses the state directory {} (it holds {}); stop it, or give this one another --state-dir",
            holder(&path).unwrap_or_else(|| "its pid unknown".to_string()),
            dir.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_start_removes_its_state_dir_and_only_the_parents_still_empty() {
        let root = std::env::temp_dir().join(format!("cutover-created-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("root");
        let state_dir = root.join("a").join("b").join("state");
        let created = CreatedDir::before_creating(&state_dir);
        std::fs::create_dir_all(&state_dir).expect("made");
        std::fs::write(state_dir.join("token"), "t").expect("token");
        // Someone else made a directory of their own in `a` meanwhile.
        std::fs::create_dir(root.join("a").join("theirs")).expect("theirs");
        drop(created);
        assert!(!state_dir.exists(), "the state directory is removed");
        assert!(
            !root.join("a").join("b").exists(),
            "an empty parent is removed"
        );
        assert!(
            root.join("a").join("theirs").is_dir(),
            "a parent someone else used stays, with what they put in it"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
