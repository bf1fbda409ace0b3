//! The web dashboard in a real browser: Debian's Chromium, headless, driven over
//! WebDriver (`cutover_test_kit::browser`), against a real `cutover serve` with a release
//! held for a person under load through its proxy. The page shows the weights, the share
//! of traffic each version got and the analysis; Promote, confirmed, moves the release to
//! "promoted" on the page through the event stream, without a reload; a wrong token is
//! refused with a message; a read-only dashboard has no write control; no console errors.
//!
//! With `CUTOVER_SCREENSHOTS=1`, the test saves the screenshots in docs/dashboard/.

use std::path::PathBuf;
use std::time::Duration;

use cutover_test_kit::browser::Browser;
use cutover_test_kit::{Load, Serve, http_get, release};
use serde_json::{Value, json};

/// Half the traffic to the candidate, an analysis of its error rate by the proxy's own
/// counters, then a pause that only a person ends.
const HELD_FOR_A_PERSON: &str = "  strategy:
    progressDeadline: 5m
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 50
        - analysis: {}
        - pause: {}
  analysis:
    metrics:
      - name: error-rate
        provider:
          builtin: error_rate
        max: 0.1
        interval: 1s
        count: 2
        maxCount: 40
        minRequests: 5
  guardrails:
    - name: candidate-5xx
      metric: error_rate
      max: 0.5
      window: 5s
      minRequests: 10
";

/// Where screenshots go, when they are asked for (`CUTOVER_SCREENSHOTS=1`): never in CI
/// runs, which must not dirty the tree.
fn screenshots() -> Option<PathBuf> {
    (std::env::var("CUTOVER_SCREENSHOTS").as_deref() == Ok("1")).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/dashboard");
        std::fs::create_dir_all(&dir).expect("docs/dashboard");
        dir
    })
}

/// Starts a controller with `extra` flags and the held release submitted, routed and
/// waiting for a person after a passed analysis, under `rate` requests per second.
fn held_release(label: &str, name: &str, extra: &[&str], rate: u32) -> (Serve, Option<Load>) {
    let mut serve = Serve::start(label, extra);
    serve.owns(name);
    let file = serve.release_file(
        name,
        &release(name, ("v1", &[]), ("v2", &[]), HELD_FOR_A_PERSON),
    );
    let submitted = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    serve.wait_routed(name);
    let load = (rate > 0).then(|| Load::start(serve.proxy(), rate));
    serve.wait_for(name, Duration::from_secs(60), |s| {
        s["waitingForPerson"] == true && s["analysis"]["verdict"] == "success"
    });
    (serve, load)
}

fn no_console_errors(browser: &Browser) {
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

#[test]
fn a_held_release_is_shown_with_its_traffic_and_analysis_and_promoted_from_the_page() {
    let Some(browser) = Browser::start(1280, 1400) else {
        return;
    };
    let (serve, load) = held_release(
        "dashboard",
        "dash-held",
        &["--dashboard-base-path", "/cutover"],
        60,
    );
    // A few seconds of traffic at 50% for the share and the charts.
    std::thread::sleep(Duration::from_secs(3));
    let dashboard = format!("http://127.0.0.1:{}/cutover/", serve.api);
    browser.navigate(&dashboard);

    // The list: the release, its phase, weight, and the "needs attention" mark.
    let long = Duration::from_secs(15);
    let (_, row) = browser.wait_text("tr[data-release='dash-held']", long, |t| {
        t.contains("needs attention")
    });
    assert!(
        row.contains("step") && row.contains("50%") && row.contains("v1") && row.contains("v2"),
        "{row}"
    );
    // The filter keeps it (it waits for a person); a search for something else hides it.
    browser.click(&browser.wait_find("#attention", long));
    browser.wait_find("tr[data-release='dash-held']", long);
    let search = browser.wait_find("#search", long);
    browser.type_text(&search, "no-such-release");
    browser.wait_text("#list-note", long, |t| t.contains("0 of 1"));
    browser.execute(
        "const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'));",
        json!([]),
    );
    browser.wait_find("tr[data-release='dash-held']", long);
    if let Some(dir) = screenshots() {
        browser.screenshot(&dir.join("list.png"));
    }

    // The release page: the weight set, each version's share of the traffic, the
    // analysis with its verdict and numbers, the current step, the guardrail.
    browser.click(&browser.wait_find("tr[data-release='dash-held'] a", long));
    browser.wait_text("#phase", long, |t| t == "step");
    browser.wait_text("#weight-set", long, |t| t.starts_with("50%"));
    for version in ["v1", "v2"] {
        let (_, share) =
            browser.wait_text(&format!("tr[data-version='{version}'] .share"), long, |t| {
                t.ends_with('%')
            });
        let share: f64 = share.trim_end_matches('%').parse().expect("a percentage");
        assert!(
            (25.0..=75.0).contains(&share),
            "{version} got {share}% of the traffic at weight 50"
        );
        browser.wait_text(
            &format!("tr[data-version='{version}'] .weight-set"),
            long,
            |t| t == "50%",
        );
    }
    browser.wait_text("tr[data-metric='error-rate'] .verdict", long, |t| {
        t == "success"
    });
    browser.wait_text("tr[data-metric='error-rate'] .last-value", long, |t| {
        t == "0"
    });
    browser.wait_text("#analysis-verdict", long, |t| t == "success");
    browser.wait_text("#steps li.current", long, |t| t.contains("pause"));
    browser.wait_text("#guardrail-table", long, |t| t.contains("candidate-5xx"));
    assert_eq!(browser.count("#charts svg polyline.candidate"), 3);
    if let Some(dir) = screenshots() {
        browser.screenshot(&dir.join("release.png"));
    }

    // A mark on the page: it must survive to the end, so nothing reloads the page.
    browser.execute("window.cutoverTestMark = 'same page';", json!([]));

    // A wrong token: refused, said on the page, and the release is not moved.
    browser.click(&browser.wait_find("#action-promote", long));
    browser.wait_text("#confirm-text", long, |t| {
        t.contains("v2 becomes stable and takes all traffic")
    });
    browser.type_text(&browser.wait_find("#token-input", long), "not-the-token");
    browser.click(&browser.wait_find("#confirm-ok", long));
    browser.wait_text("#message", long, |t| {
        t.contains("refused the token") && t.contains("wrong bearer token")
    });
    let status = serve.status("dash-held").expect("status");
    assert_eq!(status["phase"], "step", "{status}");
    // The refusal is a 401 the page handled: the console may say the request failed,
    // which is the browser's own line for any 4xx; nothing else.
    let errors: Vec<String> = browser
        .console_errors()
        .into_iter()
        .filter(|e| !e.contains("401 (Unauthorized)"))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // The right token, asked for again: promoted, and the page follows through the
    // event stream.
    let token = std::fs::read_to_string(serve.scratch.path.join("state").join("token"))
        .expect("the token file");
    browser.click(&browser.wait_find("#action-promote", long));
    let input = browser.wait_find("#token-input", long);
    browser.type_text(&input, token.trim());
    browser.click(&browser.wait_find("#confirm-ok", long));
    browser.wait_text("#phase", Duration::from_secs(30), |t| t == "promoted");
    browser.wait_text("#outcome", Duration::from_secs(30), |t| t == "promoted");
    browser.wait_text("#live", long, |t| t.contains("finished"));
    let mark = browser.execute("return window.cutoverTestMark || null;", json!([]));
    assert_eq!(mark, json!("same page"), "the page was reloaded");
    // The token is in this tab's sessionStorage, and no cookie was ever set.
    let kept = browser.execute(
        "return [sessionStorage.getItem('cutover-token'), document.cookie];",
        json!([]),
    );
    assert_eq!(kept, json!([token.trim(), ""]));
    no_console_errors(&browser);
    let counts = load.map(Load::finish).expect("load");
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
}

#[test]
fn a_read_only_dashboard_has_no_write_control_and_a_narrow_screen_is_usable() {
    let Some(browser) = Browser::start_phone(390, 844) else {
        return;
    };
    let (serve, _load) = held_release("dashboard-ro", "dash-ro", &["--dashboard-read-only"], 20);
    browser.navigate(&format!(
        "http://127.0.0.1:{}/#/releases/dash-ro",
        serve.api
    ));
    browser.wait_text("#phase", Duration::from_secs(15), |t| t == "step");
    browser.wait_text("#mode", Duration::from_secs(5), |t| t == "read-only");
    browser.wait_text("#analysis-verdict", Duration::from_secs(15), |t| {
        t == "success"
    });
    for write_control in [
        "#actions",
        "button[id^='action-']",
        "dialog",
        "input[type='password']",
    ] {
        assert_eq!(
            browser.count(write_control),
            0,
            "{write_control} is on the page"
        );
    }
    // At phone width nothing makes the page scroll sideways: wide tables scroll in
    // their own card.
    let overflow = browser.execute(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        json!([]),
    );
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page is wider than the screen by {overflow} px"
    );
    if let Some(dir) = screenshots() {
        browser.screenshot(&dir.join("release-phone-read-only.png"));
    }
    // The API still takes writes with the token, from the CLI.
    let promoted = serve.cli(&["promote", "dash-ro"]);
    assert_eq!(promoted.status.code(), Some(0), "{promoted:?}");
    browser.wait_text("#phase", Duration::from_secs(30), |t| t == "promoted");
    no_console_errors(&browser);
}

/// `GET path` with an optional bearer token: the status code and body.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .expect("sent");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

#[test]
fn with_a_read_token_reads_need_it_and_the_page_and_the_route_table_stay_open() {
    // `serve` makes the file, with a random token, as it does the write token's.
    let read_file = std::env::temp_dir().join(format!(
        "cutover-e2e-read-token-{}-{}",
        std::process::id(),
        cutover_test_kit::free_port()
    ));
    let mut serve = Serve::start(
        "dashboard-read-token",
        &["--read-token-file", read_file.to_str().expect("path")],
    );
    let reader = std::fs::read_to_string(&read_file).expect("the read token file");
    let _ = std::fs::remove_file(&read_file);
    let reader = reader.trim();
    assert_eq!(reader.len(), 48, "a random token: {reader}");
    serve.owns("dash-rt");
    let file = serve.release_file(
        "dash-rt",
        &release("dash-rt", ("v1", &[]), ("v2", &[]), HELD_FOR_A_PERSON),
    );
    // The CLI holds the write token, which reads too.
    let submitted = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    let write =
        std::fs::read_to_string(serve.scratch.path.join("state").join("token")).expect("token");
    for path in [
        "/v1/releases",
        "/v1/releases/dash-rt",
        "/v1/releases/dash-rt/history",
        "/v1/releases/dash-rt/traffic",
    ] {
        let (code, body) = get(serve.api, path, None);
        assert_eq!(code, 401, "{path} without a token: {body}");
        assert!(body.contains("--read-token-file"), "{body}");
        assert_eq!(get(serve.api, path, Some("wrong")).0, 401, "{path}");
        assert_eq!(
            get(serve.api, path, Some(reader)).0,
            200,
            "{path} with the read token"
        );
        assert_eq!(get(serve.api, path, Some(write.trim())).0, 200, "{path}");
    }
    // The read token writes nothing, and reads no instance output.
    let (code, body) = get(serve.api, "/v1/releases/dash-rt/logs", Some(reader));
    assert_eq!(code, 403, "{body}");
    // The page, the route table (pulling proxies) and /metrics (Prometheus) stay open;
    // the page says reads need a token.
    let page = http_get(serve.api, "/").expect("the page");
    assert!(page.contains("&quot;readsNeedToken&quot;:true"), "{page}");
    assert!(http_get(serve.api, "/v1/routes").is_some());
    assert!(http_get(serve.api, "/metrics").is_some());
    let aborted = serve.cli(&["abort", "dash-rt", "--timeout", "30s"]);
    assert_eq!(aborted.status.code(), Some(0), "{aborted:?}");
    let _: Value =
        serde_json::from_str(&get(serve.api, "/v1/releases/dash-rt", Some(write.trim())).1)
            .expect("json");
}
