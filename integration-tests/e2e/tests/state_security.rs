//! What a controller keeps and shows: secrets given by reference reach the hook and the
//! metric but no file of the state directory, no API answer and no log line; the state
//! directory is its owner's alone; a corrupt state or slots file quarantines its release
//! and every other release resumes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_test_kit::{Serve, http_get, mode, release};
use serde_json::Value;

/// A tiny HTTP server on loopback: records every request's head and answers 200 with
/// `{"value": 0}` (a hook's success and a web metric's passing value at once).
struct Recorder {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                seen.lock()
                    .expect("heads")
                    .push(String::from_utf8_lossy(&head).into_owned());
                let body = r#"{"value": 0}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Recorder { port, heads }
    }

    /// The recorded heads whose request line starts with `prefix`.
    fn heads(&self, prefix: &str) -> Vec<String> {
        self.heads
            .lock()
            .expect("heads")
            .iter()
            .filter(|h| h.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path);
        }
    }
    out
}

/// The planted secrets: one in a file, one in the controller's environment.
const FILE_SECRET: &str = "planted-file-secret-7f3a9c";
const ENV_SECRET: &str = "planted-env-secret-51d0be";
/// A key in the query of a hook URL given by reference.
const URL_SECRET: &str = "planted-url-key-9e4411";
/// An inline credential in a hook URL's userinfo: stored (0600), never shown.
const URL_PASSWORD: &str = "url-password-c0ffee";

#[test]
fn secrets_by_reference_reach_hook_and_metric_and_no_file_answer_or_log() {
    let recorder = Recorder::start();
    let secrets = cutover_test_kit::Scratch::new("secret-files");
    let secret_file = secrets.path.join("hook-token");
    std::fs::write(&secret_file, format!("{FILE_SECRET}\n")).expect("secret written");
    let url_file = secrets.path.join("hook-url");
    let mut serve = Serve::start_with(
        "127.0.0.1",
        "secrets",
        &[],
        &[("CUTOVER_TEST_PLANTED", ENV_SECRET.to_string())],
        true,
    );
    serve.owns("e2e-secrets");
    let port = recorder.port;
    // Nothing listens there: the postPromotion hook fails, and its failure is logged.
    let closed = cutover_test_kit::free_port();
    std::fs::write(
        &url_file,
        format!("http://127.0.0.1:{port}/hook?token={URL_SECRET}\n"),
    )
    .expect("url written");
    let url_file = url_file.display();
    let file = secret_file.display();
    let sections = format!(
        "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 50
        - analysis: {{}}
  hooks:
    preRollout:
      - url: {{valueFrom: {{file: {url_file}}}}}
        headers:
          Authorization: {{valueFrom: {{file: {file}}}}}
          X-Env-Secret: {{valueFrom: {{env: CUTOVER_TEST_PLANTED}}}}
    postPromotion:
      - url: http://ci:{URL_PASSWORD}@127.0.0.1:{closed}/gone?api_key={URL_PASSWORD}
        retries: 0
        timeout: 1s
  analysis:
    metrics:
      - name: web-errors
        provider:
          web:
            url: http://127.0.0.1:{port}/metric/{{{{version}}}}
            jsonPointer: /value
            headers:
              X-Api-Key: {{valueFrom: {{file: {file}}}}}
              X-Env-Secret: {{valueFrom: {{env: CUTOVER_TEST_PLANTED}}}}
        max: 0.5
        interval: 1s
        count: 2
"
    );
    let path = serve.release_file(
        "e2e-secrets",
        &release("e2e-secrets", ("v1", &[]), ("v2", &[]), &sections),
    );
    let path = path.to_str().expect("path");
    // lint: references raise nothing; the inline URL credentials are warned about.
    let lint = serve.cli(&["lint", path]);
    let lint_text = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert_eq!(lint.status.code(), Some(0), "{lint:?}");
    assert!(
        lint_text.contains("user:password@ part is written inline")
            && lint_text.contains("2 warnings"),
        "{lint_text}"
    );
    assert!(!lint_text.contains(FILE_SECRET) && !lint_text.contains(URL_SECRET));

    let run = serve.cli(&["run", path, "--wait", "--timeout", "90s"]);
    assert_eq!(run.status.code(), Some(0), "{run:?}\n{}", serve.log());
    let started = std::time::Instant::now();
    while !serve.log().contains("hook failed") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the failing hook is logged: {}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = serve.log();
    let failed = log
        .lines()
        .find(|l| l.contains("hook failed"))
        .unwrap_or_default();
    assert!(failed.contains("<redacted>@127.0.0.1"), "{failed}");

    // The hook and the metric got the secrets, read at use.
    let hooks = recorder.heads(&format!("POST /hook?token={URL_SECRET} "));
    assert!(
        !hooks.is_empty(),
        "the hook was called at the URL read from the file"
    );
    let hook = hooks[0].to_lowercase();
    assert!(
        hook.contains(&format!("authorization: {FILE_SECRET}")),
        "{hook}"
    );
    assert!(
        hook.contains(&format!("x-env-secret: {ENV_SECRET}")),
        "{hook}"
    );
    let metrics = recorder.heads("GET /metric/");
    assert!(metrics.len() >= 2, "the metric was measured: {metrics:?}");
    for head in &metrics {
        let head = head.to_lowercase();
        assert!(
            head.contains(&format!("x-api-key: {FILE_SECRET}")),
            "{head}"
        );
        assert!(
            head.contains(&format!("x-env-secret: {ENV_SECRET}")),
            "{head}"
        );
    }

    // Nowhere else: every file of the state directory, the API's answers, the
    // controller's log and the CLI's output.
    let mut places: Vec<(String, String)> = Vec::new();
    let state = serve.scratch.path.join("state");
    for path in files(&state) {
        if path.is_file() {
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).expect("readable")).into_owned();
            places.push((path.display().to_string(), text));
        }
    }
    assert!(
        places
            .iter()
            .any(|(p, _)| p.ends_with("releases/e2e-secrets.json")),
        "the state file is among them: {:?}",
        places.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for api_path in [
        "/v1/releases",
        "/v1/releases/e2e-secrets",
        "/v1/releases/e2e-secrets/history",
    ] {
        let answer = http_get(serve.api, api_path).expect("answers");
        places.push((format!("GET {api_path}"), answer));
    }
    for args in [
        vec!["status", "e2e-secrets"],
        vec!["history", "e2e-secrets"],
        vec!["list", "--output", "json"],
    ] {
        let output = serve.cli(&args);
        places.push((
            format!("cutover {}", args.join(" ")),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        ));
    }
    places.push(("run output".into(), format!("{run:?}")));
    places.push(("controller log".into(), serve.log()));
    for (place, text) in &places {
        for secret in [FILE_SECRET, ENV_SECRET, URL_SECRET] {
            assert!(
                !text.contains(secret),
                "{place} holds the planted secret {secret}"
            );
        }
        if !place.contains("/releases/") {
            // The inline URL password is stored in the 0600 state file, and only there.
            assert!(
                !text.contains(URL_PASSWORD),
                "{place} shows the URL's password"
            );
        }
    }
    let stored = places
        .iter()
        .find(|(p, _)| p.ends_with("releases/e2e-secrets.json"))
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    assert!(
        stored.contains("valueFrom"),
        "the reference is what is stored"
    );

    // Every directory 0700 and every file 0600.
    #[cfg(unix)]
    {
        assert_eq!(mode(&state), 0o700);
        for path in files(&state) {
            let expected = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&path), expected, "{}", path.display());
        }
    }
}

/// A release of `name` from version `from` to `to` that promotes at once.
fn quick(name: &str, from: &str, to: &str) -> String {
    release(
        name,
        (from, &[]),
        (to, &[]),
        "  strategy:\n    canary:\n      scaleDownDelay: 1s\n      steps:\n        - setWeight: 50\n",
    )
}

#[test]
fn a_corrupt_state_or_slots_file_quarantines_its_release_and_the_others_resume() {
    let mut serve = Serve::start("quarantine", &[]);
    let names = ["e2e-q-good", "e2e-q-state", "e2e-q-slots"];
    for name in names {
        serve.owns(name);
        let file = serve.release_file(name, &quick(name, "v1", "v2"));
        let run = serve.cli(&["run", file.to_str().expect("path")]);
        assert_eq!(run.status.code(), Some(0), "{run:?}");
    }
    for name in names {
        let status = serve.wait_done(name, Duration::from_secs(60));
        assert_eq!(status["outcome"], "promoted", "{status}");
    }
    serve.kill();
    let state = serve.scratch.path.join("state");
    let broken_state = state.join("releases").join("e2e-q-state.json");
    let broken_slots = state.join("slots").join("e2e-q-slots.json");
    std::fs::write(&broken_state, b"{\"version\": 3, \"sta").expect("corrupted");
    std::fs::write(&broken_slots, b"not json").expect("corrupted");
    serve.restart();

    // The good release resumes as before.
    let good = serve
        .status("e2e-q-good")
        .expect("the good release resumes");
    assert_eq!(good["outcome"], "promoted", "{good}");
    // The two others are quarantined, each naming its file and what to do.
    let list: Value =
        serde_json::from_str(&http_get(serve.api, "/v1/releases").expect("list")).expect("json");
    let quarantined = list["quarantined"].as_array().expect("a quarantined list");
    let reason = |name: &str| {
        quarantined
            .iter()
            .find(|q| q["name"] == name)
            .and_then(|q| q["reason"].as_str())
            .unwrap_or_else(|| panic!("{name} is not quarantined: {list}"))
            .to_string()
    };
    for (name, file) in [
        ("e2e-q-state", &broken_state),
        ("e2e-q-slots", &broken_slots),
    ] {
        let reason = reason(name);
        assert!(reason.contains(&file.display().to_string()), "{reason}");
        assert!(reason.contains("move it away"), "{reason}");
    }
    let log = serve.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("release quarantined"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&broken_slots.display().to_string())),
        "{lines:?}"
    );
    let names: Vec<&str> = list["releases"]
        .as_array()
        .expect("releases")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, vec!["e2e-q-good"], "{list}");
    // The CLI says so too.
    let status = serve.cli(&["status", "e2e-q-state"]);
    assert_eq!(status.status.code(), Some(2), "{status:?}");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("quarantined"), "{stderr}");
    let list = serve.cli(&["list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("e2e-q-slots") && l.contains("quarantined")),
        "{text}"
    );
    // Once the file is moved away, the release can be submitted again.
    std::fs::rename(&broken_state, state.join("e2e-q-state.json.broken")).expect("moved");
    let file = serve.release_file("e2e-q-state", &quick("e2e-q-state", "v2", "v3"));
    let run = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(run.status.code(), Some(0), "{run:?}\n{}", serve.log());
}
