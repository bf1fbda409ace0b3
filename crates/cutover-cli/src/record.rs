//! `cutover record`: a live proxy's evidence of one release (request and error counts and
//! latency buckets, per second and version) written down in the recording format that
//! `cutover analyze` reads ([`cutover_core::recording`]), so a decision can be replayed
//! exactly, and release settings tried on real traffic before a release depends on them.
//!
//! The evidence comes from the proxy's admin listener (`GET /evidence`), which keeps the
//! last `metricsWindow` seconds. `--for` keeps polling and gathers a longer span, second by
//! second.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use cutover_core::judge::Evidence;
use cutover_core::recording::{self, FORMAT, Side};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::exit;
use crate::failure::{Failure, Outcome};

/// The largest answer read from the admin listener.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// How long one request to the admin listener may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to record.
pub struct RecordArgs<'a> {
    /// The proxy's admin listener, e.g. `http://127.0.0.1:9901`.
    pub proxy: &'a str,
    /// The release.
    pub release: &'a str,
    /// The candidate version's name, as the proxy labels it.
    pub candidate: &'a str,
    /// The stable version's name.
    pub stable: &'a str,
    /// How many past seconds to ask for each time.
    pub seconds: u64,
    /// Keep polling this long, gathering every second seen.
    pub follow: Option<Duration>,
    /// Where to write the recording; standard output when absent.
    pub output: Option<&'a Path>,
}

/// One second as the admin listener serves it.
#[derive(Deserialize)]
struct ServedSecond {
    second: u64,
    #[serde(flatten)]
    evidence: Evidence,
}

#[derive(Serialize)]
struct Row {
    time: f64,
    version: &'static str,
    requests: f64,
    errors: f64,
    le: Vec<(serde_json::Value, f64)>,
}

#[derive(Serialize)]
struct Document<'a> {
    recording: &'static str,
    release: &'a str,
    seconds: Vec<Row>,
}

/// Records, writes the recording, and returns the exit code.
pub fn run(args: &RecordArgs<'_>) -> Outcome {
    let seconds = crate::runtime()?
        .block_on(gather(args))
        .map_err(|message| Failure::error(exit::UNAVAILABLE, message))?;
    let document = Document {
        recording: FORMAT,
        release: args.release,
        seconds: seconds
            .into_iter()
            .map(|((second, side), evidence)| Row {
                // A second is written by its end, as windows end at the measurement.
                time: second as f64 + 1.0,
                version: side.as_str(),
                requests: evidence.requests,
                errors: evidence.errors,
                le: recording::cumulative_bounds(&evidence.latency)
                    .into_iter()
                    .map(|(bound, count)| {
                        let bound = if bound.is_finite() {
                            serde_json::json!(bound)
                        } else {
                            serde_json::json!("+Inf")
                        };
                        (bound, count)
                    })
                    .collect(),
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&document).map_err(|e| {
        Failure::error(
            exit::UNAVAILABLE,
            format!("cannot write the recording: {e}"),
        )
    })? + "\n";
    let rows = document.seconds.len();
    match args.output {
        Some(path) => {
            std::fs::write(path, text).map_err(|e| {
                Failure::error(
                    exit::INVALID_INPUT,
                    format!("cannot write {}: {e}", path.display()),
                )
            })?;
            eprintln!(
                "recorded {rows} version-seconds of release {} into {}",
                args.release,
                path.display()
            );
        }
        None => crate::emit(&text),
    }
    Ok(exit::OK)
}

/// Asks the proxy for both versions' seconds, once or until `follow` has passed.
async fn gather(args: &RecordArgs<'_>) -> Result<BTreeMap<(u64, Side), Evidence>, String> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut seconds = BTreeMap::new();
    let deadline = args.follow.map(|d| tokio::time::Instant::now() + d);
    let pause = Duration::from_secs((args.seconds / 2).clamp(1, 10));
    loop {
        for (side, version) in [
            (Side::Candidate, args.candidate),
            (Side::Stable, args.stable),
        ] {
            for served in fetch(&client, args, version).await? {
                seconds.insert((served.second, side), served.evidence);
            }
        }
        match deadline {
            Some(deadline) if tokio::time::Instant::now() + pause <= deadline => {
                tokio::time::sleep(pause).await;
            }
            _ => return Ok(seconds),
        }
    }
}

async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    args: &RecordArgs<'_>,
    version: &str,
) -> Result<Vec<ServedSecond>, String> {
    let url = format!(
        "{}/evidence?release={}&version={}&seconds={}",
        args.proxy.trim_end_matches('/'),
        args.release,
        version,
        args.seconds
    );
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("'{url}' is not a URL: {e}; give --proxy as http://HOST:PORT"))?;
    let request = http::Request::get(uri)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| format!("the proxy at {} did not answer within 10s", args.proxy))?
        .map_err(|e| {
            format!(
                "the proxy's admin listener at {} cannot be reached: {}; is the proxy (or cutover serve) running, and is this its --admin address?",
                args.proxy,
                cutover_core::error_chain(&e)
            )
        })?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the proxy's answer: {e}"))?
        .to_bytes();
    if status == http::StatusCode::NOT_FOUND {
        // Never routed (yet): no seconds for this version.
        return Ok(Vec::new());
    }
    if !status.is_success() {
        return Err(format!(
            "the proxy answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the proxy's evidence is not readable: {e}"))
}
