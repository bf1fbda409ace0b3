//! HTTP load through a proxy, counted by the version that answered (demo-app's
//! `x-demo-version` header).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers counted by the version that gave them.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// version -> (answered, failed)
    pub by_version: BTreeMap<String, (u64, u64)>,
    /// Requests that got no answer from any version (the proxy's own errors, resets).
    pub unanswered: u64,
}

impl Counts {
    /// Failed requests of the given versions plus unanswered ones.
    pub fn failures_except(&self, bad: &[&str]) -> u64 {
        self.unanswered
            + self
                .by_version
                .iter()
                .filter(|(v, _)| !bad.contains(&v.as_str()))
                .map(|(_, (_, f))| f)
                .sum::<u64>()
    }

    /// Answers given by `version`, failed or not.
    pub fn answered(&self, version: &str) -> u64 {
        self.by_version.get(version).map_or(0, |(n, _)| *n)
    }

    /// Counts one request: the version that answered it and whether the answer was a
    /// failure (not 2xx), or `None` if no version answered.
    fn record(&mut self, answer: Option<(String, bool)>) {
        match answer {
            Some((version, failed)) => {
                let entry = self.by_version.entry(version).or_default();
                entry.0 += 1;
                entry.1 += u64::from(failed);
            }
            None => self.unanswered += 1,
        }
    }
}

/// Steady HTTP load through the proxy until dropped.
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `rate` requests per second to `proxy`.
    pub fn start(proxy: SocketAddr, rate: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let (s, c) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(generate(proxy, rate, s, c));
        });
        Load {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().expect("counts").clone()
    }

    /// Stops and returns the final counts.
    pub fn finish(mut self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.counts()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn generate(proxy: SocketAddr, rate: u32, stop: Arc<AtomicBool>, counts: Arc<Mutex<Counts>>) {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let (client, counts) = (client.clone(), counts.clone());
        tasks.spawn(async move {
            let uri: http::Uri = format!("http://{proxy}/").parse().expect("uri");
            let answer = client.get(uri).await;
            let outcome = match answer {
                Ok(response) => {
                    let failed = !response.status().is_success();
                    let version = response
                        .headers()
                        .get("x-demo-version")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let _ = response.into_body().collect().await;
                    version.map(|v| (v, failed))
                }
                Err(_) => None,
            };
            counts.lock().expect("counts").record(outcome);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Sends `n` requests one after another, each on a connection of its own, and counts
/// answers by version.
pub fn sample(proxy: SocketAddr, n: usize) -> Counts {
    let mut counts = Counts::default();
    for _ in 0..n {
        let answer = crate::net::get(proxy, "/", None).and_then(|answer| {
            let version = answer.header("x-demo-version")?.to_string();
            Some((version, !(200..300).contains(&answer.status)))
        });
        counts.record(answer);
    }
    counts
}
