//! The local backend with real processes: `python3 -m http.server` as a service that
//! answers, `sh -c 'exit 3'` as one that crash-loops.

use std::path::PathBuf;
use std::time::Duration;

use cutover_backend::local::process;
use cutover_backend::{Backend, LocalBackend, Readiness, Slot};
use cutover_core::load::{Format, Source, load_release};
use cutover_core::spec::Release;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(label: &str) -> Dir {
    let path = std::env::temp_dir().join(format!("cutover-local-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    Dir(path)
}

fn release(name: &str, candidate: &str) -> Release {
    let text = format!(
        r#"apiVersion: cutover.dev/v1
kind: Release
metadata: {{name: {name}}}
spec:
  backend:
    local:
      stable:
        command: [python3, -m, http.server, "{{{{port}}}}", --bind, 127.0.0.1]
      candidate:
        command: {candidate}
  replicas: 2
  port: 8080
  strategy: {{canary: {{steps: [{{setWeight: 50}}]}}}}
"#
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

const SERVES: &str = r#"[python3, -m, http.server, "{{port}}", --bind, 127.0.0.1]"#;

fn python_missing() -> bool {
    let missing = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err();
    if missing {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing");
        eprintln!("SKIPPED: the local backend's process tests need python3");
    }
    missing
}

#[tokio::test]
async fn command_slots_start_become_ready_promote_and_retire_with_nothing_left() {
    if python_missing() {
        return;
    }
    let dir = dir("lifecycle");
    let backend = LocalBackend::open(&dir.0).expect("open");
    let release = release("lifecycle", SERVES);
    let stable = backend.stable(&release, "v1").await.expect("stable");
    assert_eq!(stable.version, "v1");
    assert_eq!(stable.endpoints.len(), 2, "replicas: 2");
    let ready = backend.deploy(&release, "v2").await.expect("deploy");
    let Readiness::Ready(candidate) = ready else {
        panic!("not ready: {ready:?}");
    };
    assert_eq!(candidate.endpoints.len(), 2);
    assert_eq!(backend.instances("lifecycle").await.len(), 4);
    // Deploying again finds the same instances.
    let again = backend.deploy(&release, "v2").await.expect("deploy again");
    assert_eq!(again, Readiness::Ready(candidate.clone()));
    assert_eq!(backend.instances("lifecycle").await.len(), 4);

    backend.promote("lifecycle").await.expect("promote");
    backend
        .promote("lifecycle")
        .await
        .expect("promote is idempotent");
    let now_stable = backend
        .endpoints("lifecycle", Slot::Stable)
        .await
        .expect("endpoints")
        .expect("a stable slot");
    assert_eq!(now_stable, candidate);
    backend
        .retire("lifecycle", Slot::Previous)
        .await
        .expect("retire");
    backend
        .retire("lifecycle", Slot::Previous)
        .await
        .expect("retire is idempotent");
    assert_eq!(
        backend.instances("lifecycle").await.len(),
        2,
        "only v2 runs"
    );
    backend
        .retire("lifecycle", Slot::Stable)
        .await
        .expect("retire");
    assert!(backend.instances("lifecycle").await.is_empty());
}

#[tokio::test]
async fn a_crash_looping_candidate_fails_with_its_log_and_is_retired_cleanly() {
    let dir = dir("crash");
    let backend = LocalBackend::open(&dir.0).expect("open");
    let release = release(
        "crash",
        r#"[sh, -c, "echo cannot open the database >&2; exit 3"]"#,
    );
    let readiness = tokio::time::timeout(Duration::from_secs(60), backend.deploy(&release, "v2"))
        .await
        .expect("decides within a minute")
        .expect("deploy");
    let Readiness::Failed { reason } = readiness else {
        panic!("a crash loop is not ready: {readiness:?}");
    };
    assert!(reason.contains("exited 3 times"), "{reason}");
    assert!(
        reason.contains("cannot open the database"),
        "the log tail: {reason}"
    );
    backend
        .retire("crash", Slot::Candidate)
        .await
        .expect("retire");
    assert!(backend.instances("crash").await.is_empty());

    let missing = release_with_program("crash", "/nonexistent/program");
    let readiness = backend.deploy(&missing, "v3").await.expect("deploy");
    let Readiness::Failed { reason } = readiness else {
        panic!("{readiness:?}");
    };
    assert!(reason.contains("cannot start"), "{reason}");
    backend
        .retire("crash", Slot::Candidate)
        .await
        .expect("retire");
}

fn release_with_program(name: &str, program: &str) -> Release {
    release(name, &format!("[{program}]"))
}

#[tokio::test]
async fn a_new_controller_adopts_running_instances_and_restarts_the_dead() {
    if python_missing() {
        return;
    }
    let dir = dir("adopt");
    let release = release("adopt", SERVES);
    // The first controller runs on a runtime of its own that then goes away entirely, as
    // a killed controller would: its instances keep running, unsupervised.
    let candidate = {
        let (path, release) = (dir.0.clone(), release.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let first = LocalBackend::open(&path).expect("open");
                first.stable(&release, "v1").await.expect("stable");
                match first.deploy(&release, "v2").await.expect("deploy") {
                    Readiness::Ready(view) => view,
                    other => panic!("{other:?}"),
                }
            })
        })
        .join()
        .expect("first controller")
    };
    let second = LocalBackend::open(&dir.0).expect("open again");
    let running = second.instances("adopt").await;
    assert_eq!(running.len(), 4);
    // One instance dies while no controller watches.
    let (pid, tag) = running[0].clone();
    process::terminate(pid, &tag).await;
    second.recover("adopt").await.expect("recover");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while second.instances("adopt").await.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead instance was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let survivors: Vec<u32> = second
        .instances("adopt")
        .await
        .iter()
        .map(|(p, _)| *p)
        .collect();
    for (pid, _) in &running[1..] {
        assert!(
            survivors.contains(pid),
            "running instances are adopted, not replaced"
        );
    }
    assert_eq!(
        second.deploy(&release, "v2").await.expect("deploy"),
        Readiness::Ready(candidate)
    );
    second
        .retire("adopt", Slot::Candidate)
        .await
        .expect("retire");
    second.retire("adopt", Slot::Stable).await.expect("retire");
    assert!(second.instances("adopt").await.is_empty());
}
