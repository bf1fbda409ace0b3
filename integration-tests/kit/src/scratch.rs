//! Scratch directories and the processes of the local backend a test leaves running.

use std::path::{Path, PathBuf};

use crate::net::free_port;

/// A directory removed (with every process of its releases) when dropped.
pub struct Scratch {
    /// The directory, under the system's temporary directory.
    pub path: PathBuf,
    releases: Vec<String>,
}

impl Scratch {
    /// A fresh directory whose name carries `label`, the process and a free port.
    pub fn new(label: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "cutover-e2e-{label}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Scratch {
            path,
            releases: Vec::new(),
        }
    }

    /// Stops the instances of `release` when this directory goes.
    pub fn own(&mut self, release: &str) {
        self.releases.push(release.to_string());
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.releases.is_empty() {
            stop_instances(&self.releases);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Stops every process the local backend started for these releases (they outlive the
/// controller by design).
pub fn stop_instances(releases: &[String]) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        for release in releases {
            for (pid, tag) in instances(release) {
                cutover_backend::local::process::terminate(pid, &tag).await;
            }
        }
    });
}

/// Running instances of a release (from any state directory: release names are unique
/// across the tests), as `(pid, tag)`.
pub fn instances(release: &str) -> Vec<(u32, String)> {
    cutover_backend::local::process::find_tagged("")
        .into_iter()
        .filter(|(_, tag)| tag.split('/').nth(1) == Some(release))
        .collect()
}

/// The permission bits of a file (`0o600`, say).
#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

/// A path in the scratch area that names nothing yet.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
