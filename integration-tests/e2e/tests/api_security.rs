//! The controller's API as a hostile client, a careless operator and an edge proxy meet
//! it: slow and silent connections, the connection cap, empty token files, the edge
//! token's scope, and HTTPS with a private CA.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cutover_test_kit::tls::Certificate;
use cutover_test_kit::{Scratch, Serve, cutover_bin, free_port, http_get, mode, wait_healthz};

/// Sends `request` on a new connection and reads the answer to its end.
fn exchange(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("sends");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// `POST path` with `token` (if any) and a body; the status code.
fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> u16 {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let answer = exchange(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// How long until the server closes `stream` (reads 0 bytes or fails), at most `limit`.
fn closed_within(mut stream: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            // An answer (a 408, say) before the close is fine; keep reading.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None;
            }
            Err(_) => return Some(started.elapsed()),
        }
        if started.elapsed() > limit {
            return None;
        }
    }
}

fn read_token(serve: &Serve, name: &str) -> String {
    std::fs::read_to_string(serve.scratch.path.join("state").join(name))
        .expect("token file")
        .trim()
        .to_string()
}

#[test]
fn connections_that_send_one_byte_or_nothing_are_closed_and_requests_still_served() {
    let serve = Serve::start(
        "slowloris",
        &["--api-header-timeout", "1s", "--api-max-connections", "4"],
    );
    let silent = TcpStream::connect(("127.0.0.1", serve.api)).expect("connects");
    let mut one_byte = TcpStream::connect(("127.0.0.1", serve.api)).expect("connects");
    one_byte.write_all(b"P").expect("sends");
    let mut half_head = TcpStream::connect(("127.0.0.1", serve.api)).expect("connects");
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("sends");
    // The fourth and last slot: a normal request is served while the three hang.
    assert_eq!(
        http_get(serve.api, "/healthz").as_deref(),
        Some("ok\n"),
        "a normal request is served"
    );
    let half_head_thread = std::thread::spawn(move || {
        // It keeps trickling bytes: the deadline is for the whole head, not per byte.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(300));
            if half_head.write_all(b"X-Slow: 1\r\n").is_err() {
                break;
            }
        }
        closed_within(half_head, Duration::from_secs(5))
    });
    for (what, stream) in [("silent", silent), ("one byte", one_byte)] {
        let closed = closed_within(stream, Duration::from_secs(5));
        assert!(
            closed.is_some_and(|d| d < Duration::from_secs(3)),
            "the {what} connection was not closed within the timeout: {closed:?}"
        );
    }
    let closed = half_head_thread.join().expect("thread");
    assert!(
        closed.is_some(),
        "a head trickled byte by byte is cut at the deadline"
    );
    // An idle keep-alive connection is closed as well, after its answer.
    let mut keep_alive = TcpStream::connect(("127.0.0.1", serve.api)).expect("connects");
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("sends");
    let closed = closed_within(keep_alive, Duration::from_secs(5));
    assert!(
        closed.is_some_and(|d| d < Duration::from_secs(3)),
        "idle keep-alive: {closed:?}"
    );
}

#[test]
fn the_connection_cap_holds_new_clients_until_a_slot_frees() {
    let serve = Serve::start(
        "cap",
        &["--api-header-timeout", "2s", "--api-max-connections", "2"],
    );
    let hogs: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", serve.api)).expect("connects"))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Both slots are taken: the next request waits (in the kernel's queue) until the
    // header timeout frees one, then is served.
    let started = Instant::now();
    let answer = http_get(serve.api, "/healthz");
    let waited = started.elapsed();
    assert_eq!(answer.as_deref(), Some("ok\n"));
    assert!(
        waited >= Duration::from_millis(1200),
        "served at once despite the cap: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop(hogs);
}

#[test]
fn the_edge_token_reports_guardrail_trips_and_is_refused_on_every_write() {
    let mut serve = Serve::start("edge", &[]);
    serve.owns("edge-x");
    let write = read_token(&serve, "token");
    let edge = read_token(&serve, "edge-token");
    assert_ne!(write, edge);
    #[cfg(unix)]
    {
        let state = serve.scratch.path.join("state");
        assert_eq!(mode(&state), 0o700, "the state directory");
        assert_eq!(mode(&state.join("token")), 0o600, "the write token");
        assert_eq!(mode(&state.join("edge-token")), 0o600, "the edge token");
    }
    let release = cutover_test_kit::release(
        "edge-x",
        ("v1", &[]),
        ("v2", &[]),
        "  strategy: {canary: {steps: [{setWeight: 50}, {pause: {}}]}}\n",
    );
    let release = release.as_str();
    let writes = [
        "/v1/releases",
        "/v1/releases/edge-x/promote",
        "/v1/releases/edge-x/promote?full=true",
        "/v1/releases/edge-x/abort",
        "/v1/releases/edge-x/pause",
        "/v1/releases/edge-x/resume",
        "/v1/releases/edge-x/retry",
    ];
    for path in writes {
        assert_eq!(post(serve.api, path, Some(&edge), release), 403, "{path}");
        assert_eq!(post(serve.api, path, None, release), 401, "{path}");
        assert_eq!(post(serve.api, path, Some("wrong"), release), 401, "{path}");
    }
    let trip = r#"{"version": "v2", "guardrail": "g", "detail": "d"}"#;
    // Past the token check: the release is unknown, so 404, not 401 or 403.
    assert_eq!(
        post(serve.api, "/v1/releases/nope/guardrail", Some(&edge), trip),
        404
    );
    assert_eq!(
        post(serve.api, "/v1/releases/nope/guardrail", Some(&write), trip),
        404
    );
    assert_eq!(
        post(serve.api, "/v1/releases/nope/guardrail", None, trip),
        401
    );
    // Routes are read without a token.
    let routes = exchange(
        serve.api,
        "GET /v1/routes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(routes.starts_with("HTTP/1.1 200"), "{routes}");
    // The write token still writes: the release is taken.
    assert_eq!(post(serve.api, "/v1/releases", Some(&write), release), 201);
    // And the edge token's trip report on a known release is accepted.
    assert_eq!(
        post(
            serve.api,
            "/v1/releases/edge-x/guardrail",
            Some(&edge),
            trip
        ),
        202
    );
}

/// `cutover ARGS` with only `env` in its environment.
fn cutover(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(cutover_bin())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("cutover runs")
}

#[test]
fn an_empty_or_blank_token_is_refused_by_serve_the_cli_and_the_edge_proxy() {
    let scratch = Scratch::new("empty-token");
    let blank = scratch.path.join("blank");
    std::fs::write(&blank, " \n\t\n").expect("written");
    let blank = blank.to_str().expect("path");
    // The controller.
    let state = scratch.path.join("state");
    let api = format!("127.0.0.1:{}", free_port());
    for flag in ["--token-file", "--edge-token-file"] {
        let output = cutover(
            &[
                "serve",
                "--no-proxy",
                "--state-dir",
                state.to_str().expect("path"),
                "--api",
                &api,
                flag,
                blank,
            ],
            &[],
        );
        assert_ne!(output.status.code(), Some(0), "{flag}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("is empty"), "{flag}: {stderr}");
    }
    // The CLI, from a file and from the environment.
    let controller = format!("http://{api}");
    let output = cutover(
        &["list"],
        &[
            ("CUTOVER_CONTROLLER", &controller),
            ("CUTOVER_TOKEN_FILE", blank),
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("is empty"));
    let output = cutover(
        &["list"],
        &[("CUTOVER_CONTROLLER", &controller), ("CUTOVER_TOKEN", "  ")],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    // The edge proxy.
    let config = scratch.path.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - address: 127.0.0.1:{}\nadmin:\n  address: 127.0.0.1:{}\n",
            free_port(),
            free_port()
        ),
    )
    .expect("proxy config");
    let output = cutover(
        &[
            "proxy",
            "--config",
            config.to_str().expect("path"),
            "--routes-from",
            &controller,
            "--token-file",
            blank,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("is empty"));
}

/// A self-signed certificate for 127.0.0.1 and localhost: `(cert.pem, key.pem)` in `dir`.
fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = Certificate::self_signed(&["127.0.0.1", "localhost"]).write(dir);
    (
        cert.to_str().expect("path").to_string(),
        key.to_str().expect("path").to_string(),
    )
}

#[test]
fn the_cli_reaches_an_https_controller_trusting_a_private_ca_file() {
    let certs = Scratch::new("tls-certs");
    let (cert, key) = self_signed(&certs.path);
    let serve = Serve::start_with(
        "127.0.0.1",
        "tls",
        &["--tls-cert", &cert, "--tls-key", &key],
        &[],
        false,
    );
    let https = format!("https://127.0.0.1:{}", serve.api);
    let token = serve.scratch.path.join("state").join("token");
    let token = token.to_str().expect("path");
    let list = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["list", "--output", "json"];
        args.extend_from_slice(extra);
        let mut all = vec![
            ("CUTOVER_CONTROLLER", https.as_str()),
            ("CUTOVER_TOKEN_FILE", token),
        ];
        all.extend_from_slice(env);
        cutover(&args, &all)
    };
    let started = Instant::now();
    let mut output = list(&["--ca-file", &cert], &[]);
    while output.status.code() != Some(0) && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
        output = list(&["--ca-file", &cert], &[]);
    }
    assert_eq!(output.status.code(), Some(0), "{output:?}\n{}", serve.log());
    assert!(
        serve
            .log()
            .contains(&format!("API on https://127.0.0.1:{}", serve.api))
    );
    // The CA file from the environment works the same.
    let output = list(&[], &[("CUTOVER_CA_FILE", &cert)]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // Without it, the self-signed certificate is not trusted: unreachable (exit 4).
    let output = list(
        &[],
        &[("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")],
    );
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("certificate"), "{stderr}");
    // Plain HTTP to the TLS port gets no answer cutover can use.
    let output = cutover(
        &["list"],
        &[
            (
                "CUTOVER_CONTROLLER",
                &format!("http://127.0.0.1:{}", serve.api),
            ),
            ("CUTOVER_TOKEN_FILE", token),
        ],
    );
    assert_eq!(output.status.code(), Some(4), "{output:?}");
}

#[test]
fn a_request_head_over_64_kib_is_refused_with_431() {
    let serve = Serve::start("big-head", &[]);
    let big = "a".repeat(70 * 1024);
    let answer = exchange(
        serve.api,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");
    let fits = "a".repeat(60 * 1024);
    let answer = exchange(
        serve.api,
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
}

/// The CPU time (user + system, in clock ticks) process `pid` has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name (which is in parentheses and may hold spaces).
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn accept_errors_pause_the_listener_instead_of_spinning() {
    let scratch = Scratch::new("accept-backoff");
    let api = free_port();
    let log = std::fs::File::create(scratch.path.join("serve.log")).expect("log");
    // So few descriptors that accepting runs out of them.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" \"$@\"")
        .arg(cutover_bin())
        .args(["serve", "--no-proxy", "--api", &format!("127.0.0.1:{api}")])
        .arg("--state-dir")
        .arg(scratch.path.join("state"))
        .env("CUTOVER_LOG", "warn")
        .stderr(log)
        .spawn()
        .expect("serve starts");
    wait_healthz(api);
    let held: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", api)).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_ticks(child.id());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(child.id()) - before;
    let log = std::fs::read_to_string(scratch.path.join("serve.log")).unwrap_or_default();
    drop(held);
    // Once descriptors are free again, requests are served.
    let started = Instant::now();
    let mut answer = http_get(api, "/healthz");
    while answer.is_none() && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
        answer = http_get(api, "/healthz");
    }
    let _ = child.kill();
    let _ = child.wait();
    // A loop retrying without pause burns a core: about 200 ticks in 2 s.
    assert!(used < 40, "{used} ticks of CPU in 2 s while accept failed");
    assert!(
        log.contains("the API cannot accept a connection; pausing"),
        "the failures are logged: {log}"
    );
    assert_eq!(answer.as_deref(), Some("ok\n"), "served again");
}

#[test]
fn a_pulling_proxy_takes_its_routes_over_https_with_a_ca_file_and_the_edge_token() {
    let certs = Scratch::new("tls-pull-certs");
    let (cert, key) = self_signed(&certs.path);
    let mut serve = Serve::start_with(
        "127.0.0.1",
        "tls-pull",
        &["--no-proxy", "--tls-cert", &cert, "--tls-key", &key],
        &[],
        false,
    );
    serve.owns("e2e-tls-pull");
    let https = format!("https://127.0.0.1:{}", serve.api);
    let state = serve.scratch.path.join("state");
    let token = state.join("token");
    let token = token.to_str().expect("path");
    let cli = |args: &[&str]| {
        cutover(
            args,
            &[
                ("CUTOVER_CONTROLLER", https.as_str()),
                ("CUTOVER_TOKEN_FILE", token),
                ("CUTOVER_CA_FILE", cert.as_str()),
            ],
        )
    };
    let started = Instant::now();
    while cli(&["list"]).status.code() != Some(0) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin = free_port();
    let config = serve.scratch.path.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - address: 127.0.0.1:{}\nadmin:\n  address: 127.0.0.1:{admin}\n",
            free_port()
        ),
    )
    .expect("proxy config");
    let mut proxy = Command::new(cutover_bin())
        .args(["proxy", "--config", config.to_str().expect("path")])
        .args(["--routes-from", &https, "--ca-file", &cert, "--token-file"])
        .arg(state.join("edge-token"))
        .env_clear()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cutover proxy");
    let file = serve.release_file(
        "e2e-tls-pull",
        &cutover_test_kit::release(
            "e2e-tls-pull",
            ("v1", &[]),
            ("v2", &[]),
            "  strategy: {canary: {steps: [{setWeight: 50}, {pause: {}}]}}\n",
        ),
    );
    let run = cli(&["run", file.to_str().expect("path")]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    // The proxy, reading the controller over HTTPS, gets the release's route.
    let started = Instant::now();
    loop {
        let routes = http_get(admin, "/routes").unwrap_or_default();
        if routes.contains("e2e-tls-pull") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the proxy never got the route: {routes}\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
}

#[test]
fn a_body_sent_slowly_is_answered_408_at_the_deadline() {
    let serve = Serve::start("slow-body", &["--api-body-timeout", "1s"]);
    let token = read_token(&serve, "token");
    let mut stream = TcpStream::connect(("127.0.0.1", serve.api)).expect("connects");
    stream
        .write_all(
            format!(
                "POST /v1/releases HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 100\r\n\r\napi"
            )
            .as_bytes(),
        )
        .expect("sends");
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).expect("an answer");
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}
