//! The local backend through the `Backend` contract's checks
//! (`cutover_backend::conformance`), with real processes: `python3 -m http.server` for both
//! versions, each check in a state directory of its own.

use std::path::PathBuf;
use std::sync::Arc;

use cutover_backend::conformance::Harness;
use cutover_backend::local::process;
use cutover_backend::{Backend, BoxFuture, LocalBackend};
use cutover_core::load::{Format, Source, load_release};
use cutover_core::spec::Release;

/// One check's state directory and release.
struct Local {
    root: PathBuf,
    release: Release,
    first: LocalBackend,
}

const SERVES: &str = r#"[python3, -m, http.server, "{{port}}", --bind, 127.0.0.1]"#;

fn release(name: &str) -> Release {
    let text = format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {{name: {name}}}\nspec:\n  backend:\n    local:\n      stable: {{command: {SERVES}}}\n      candidate: {{command: {SERVES}}}\n  replicas: 2\n  port: 8080\n  strategy: {{canary: {{steps: [{{setWeight: 50}}]}}}}\n"
    );
    let source = Source {
        name: "release.yaml",
        text: &text,
        format: Format::Yaml,
    };
    match load_release(source, &Default::default()) {
        Ok((release, _)) => release,
        Err(d) => panic!("{d:?}"),
    }
}

async fn local(check: &'static str) -> Option<Arc<dyn Harness>> {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing");
        eprintln!("SKIPPED: the local backend's conformance needs python3");
        return None;
    }
    let root = std::env::temp_dir().join(format!("cutover-conf-{check}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let first = LocalBackend::open(&root).expect("the state directory opens");
    let name = check.replace('_', "-");
    let name = &name[..name.len().min(40)];
    Some(Arc::new(Local {
        release: release(name.trim_end_matches('-')),
        root,
        first,
    }))
}

impl Harness for Local {
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>> {
        Box::pin(async move {
            let backend: Arc<dyn Backend> =
                Arc::new(LocalBackend::open(&self.root).expect("the state directory opens"));
            backend
        })
    }

    fn release(&self) -> &Release {
        &self.release
    }

    fn workloads(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            // Instance tags are `<directory id>/<release>/<set>/<n>`: one set per workload.
            let mut sets: Vec<String> = self
                .first
                .instances(&self.release.metadata.name)
                .await
                .into_iter()
                .filter_map(|(_, tag)| tag.split('/').nth(2).map(str::to_string))
                .collect();
            sets.sort();
            sets.dedup();
            sets.len()
        })
    }

    fn break_platform(&self) -> BoxFuture<'_, bool> {
        // The slot records' directory becomes a file: every read and write of a record
        // fails with an I/O error.
        Box::pin(async move {
            let slots = self.root.join("slots");
            std::fs::rename(&slots, self.root.join("slots.away")).expect("moved away");
            std::fs::write(&slots, b"").expect("a file in its place");
            true
        })
    }

    fn mend(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let slots = self.root.join("slots");
            std::fs::remove_file(&slots).expect("the file removed");
            std::fs::rename(self.root.join("slots.away"), &slots).expect("moved back");
        })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for (pid, tag) in self.first.instances(&self.release.metadata.name).await {
                process::terminate(pid, &tag).await;
            }
            let _ = std::fs::remove_dir_all(&self.root);
        })
    }
}

cutover_backend::conformance_suite!(local);
