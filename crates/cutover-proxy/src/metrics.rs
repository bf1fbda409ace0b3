//! What the proxy measures, per release and version: requests by status class, upstream
//! errors by kind, latency (an HDR histogram since start, and per-second rolling windows),
//! in-flight requests. Exported at `/metrics` and read in-process by the builtin metric
//! provider and the guardrails.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use cutover_core::exposition::{Labels, MetricType, write_family, write_histogram, write_sample};
use cutover_core::judge::evidence::latency_bucket;
use cutover_core::judge::{Evidence, Histogram as Buckets};
use serde::Serialize;

/// Upstream failures, by where they came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection could not be made (refused, unreachable, connect timeout).
    Connect,
    /// The upstream did not answer within the request timeout.
    Timeout,
    /// The connection broke while the request or response was under way.
    Reset,
}

impl UpstreamError {
    const ALL: [UpstreamError; 3] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Reset,
    ];

    /// The index of this kind in [`UpstreamError::ALL`].
    fn index(self) -> usize {
        match self {
            UpstreamError::Connect => 0,
            UpstreamError::Timeout => 1,
            UpstreamError::Reset => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Reset => "reset",
        }
    }
}

/// One second of traffic. Latencies are kept in the core's log-linear buckets
/// ([`latency_bucket`]: 64 per power of two, a bucket at most 1.6 % wide), sparsely: a
/// sorted list of (bucket, count) holding only the buckets that second's requests fell in.
/// A second costs 8 bytes per distinct bucket, so at most about 16 KB (1,984 buckets, when
/// requests spread over every latency from 1 µs to 19 h) and in practice a few hundred
/// bytes to 2 KB (latencies within a factor of ten span about 210 buckets).
#[derive(Clone)]
struct SecondCounts {
    second: u64,
    requests: u64,
    errors: u64,
    latency: Vec<(u16, u32)>,
}

impl SecondCounts {
    fn empty(second: u64) -> SecondCounts {
        SecondCounts {
            second,
            requests: 0,
            errors: 0,
            latency: Vec::new(),
        }
    }

    /// Adds another shard's counts of the same second.
    fn merge(&mut self, other: &SecondCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (bucket, count) in &other.latency {
            match self.latency.binary_search_by_key(bucket, |(b, _)| *b) {
                Ok(i) => self.latency[i].1 = self.latency[i].1.saturating_add(*count),
                Err(i) => self.latency.insert(i, (*bucket, *count)),
            }
        }
    }

    fn add_latency(&mut self, bucket: u16) {
        match self.latency.binary_search_by_key(&bucket, |(b, _)| *b) {
            Ok(i) => self.latency[i].1 = self.latency[i].1.saturating_add(1),
            Err(i) => self.latency.insert(i, (bucket, 1)),
        }
    }
}

/// One second of one version's traffic as evidence for the judge, as `GET /evidence`
/// serves it and `cutover record` writes it down.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondEvidence {
    /// The second, on the proxy's clock (seconds since it started).
    pub second: u64,
    /// The second's requests, errors and latency histogram.
    #[serde(flatten)]
    pub evidence: Evidence,
}

/// Numbers over a recent window, per version: what the builtin provider and the
/// guardrails judge.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowStats {
    /// The window's length in seconds.
    pub seconds: u64,
    /// Requests completed in the window.
    pub requests: u64,
    /// Of those, 5xx answers and upstream failures.
    pub errors: u64,
    /// `errors / requests`; `None` without requests (no data is not zero errors).
    pub error_rate: Option<f64>,
    /// Requests per second over the window.
    pub request_rate: f64,
    /// Latency quantiles in seconds; `None` without requests.
    pub latency_p50: Option<f64>,
    /// 90th percentile.
    pub latency_p90: Option<f64>,
    /// 95th percentile.
    pub latency_p95: Option<f64>,
    /// 99th percentile.
    pub latency_p99: Option<f64>,
}

/// Counters of one version of one release.
///
/// Every request is recorded in the shard of the thread that serves it (a worker's own,
/// see [`crate::workers::shard`]): atomics and a window that no other worker touches, so
/// the request path shares no lock and no contended cache line between workers. Readers
/// (scrape, windows, evidence, guardrails) sum the shards, so they see exact totals.
pub struct VersionStats {
    /// The release's name.
    pub release: String,
    /// The version's name.
    pub version: String,
    shards: Box<[Shard]>,
    window_len: u64,
    /// The second of the first request counted (`u64::MAX` before any): evidence never
    /// claims to cover seconds before it, when these counters did not exist (a proxy that
    /// restarted) or the version had no traffic, so a rate taken from it is not diluted.
    first_second: AtomicU64,
}

/// One thread's share of a version's counters. Aligned to two cache lines so that two
/// workers' shards never share one.
#[repr(align(128))]
struct Shard {
    by_class: [AtomicU64; 5],
    upstream_errors: [AtomicU64; 3],
    /// Started here minus ended here: a request may end on another thread of a
    /// multi-thread runtime, so one shard can be negative; the sum is the gauge.
    in_flight: AtomicI64,
    /// Requests ended by the client's own fault (malformed or stalled body, gone
    /// mid-request): kept apart from the version's requests and errors.
    client_errors: AtomicU64,
    /// Latencies by exported bucket: `latency[i]` counts those in
    /// (`LATENCY_BUCKETS[i-1]`, `LATENCY_BUCKETS[i]`], the last those above every bound.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the latencies, in microseconds.
    latency_sum_micros: AtomicU64,
    window: Mutex<VecDeque<SecondCounts>>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            by_class: Default::default(),
            upstream_errors: Default::default(),
            in_flight: AtomicI64::new(0),
            client_errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_micros: AtomicU64::new(0),
            window: Mutex::new(VecDeque::new()),
        }
    }
}

impl VersionStats {
    /// Counters for `release`/`version`, keeping `window_len` seconds of history.
    pub fn new(release: &str, version: &str, window_len: u64) -> VersionStats {
        VersionStats {
            release: release.to_string(),
            version: version.to_string(),
            shards: (0..crate::workers::SHARDS).map(|_| Shard::new()).collect(),
            first_second: AtomicU64::new(u64::MAX),
            window_len: window_len.max(1),
        }
    }

    /// This thread's shard.
    fn mine(&self) -> &Shard {
        &self.shards[crate::workers::shard() % self.shards.len()]
    }

    /// The sum of one counter over every shard.
    fn total(&self, counter: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|shard| counter(shard).load(Ordering::Relaxed))
            .sum()
    }

    /// A request started.
    pub fn start(&self) {
        self.mine().in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request ended with `status` (or an upstream error, which counts as 5xx) after
    /// `elapsed`, at `second` on the proxy's clock.
    pub fn finish(
        &self,
        status: Option<u16>,
        upstream_error: Option<UpstreamError>,
        elapsed: Duration,
        second: u64,
    ) {
        let shard = self.mine();
        shard.in_flight.fetch_sub(1, Ordering::Relaxed);
        let class = status.map_or(4, |s| usize::from((s / 100).clamp(1, 5)) - 1);
        shard.by_class[class].fetch_add(1, Ordering::Relaxed);
        if let Some(kind) = upstream_error {
            shard.upstream_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let bucket = LATENCY_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        shard.latency[bucket].fetch_add(1, Ordering::Relaxed);
        shard
            .latency_sum_micros
            .fetch_add(micros, Ordering::Relaxed);
        let error = class == 4;
        self.count_in_window(shard, second, error, Some(latency_bucket(micros)));
    }

    /// A request that started ended by the client's fault (a malformed, stalled or
    /// aborted body, or a client gone mid-request): it leaves the in-flight gauge and is
    /// counted in `cutover_client_errors_total`, never in the version's requests, errors
    /// or windows, so no client can make a version look failing.
    pub fn client_error(&self) {
        let shard = self.mine();
        shard.in_flight.fetch_sub(1, Ordering::Relaxed);
        shard.client_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests ended by the client's fault since start (see [`VersionStats::client_error`]).
    pub fn client_errors(&self) -> u64 {
        self.total(|s| &s.client_errors)
    }

    /// A request meant for this version that it could not take (every endpoint ejected):
    /// counted as a 5xx and a connect failure, with no latency, so the error rate and the
    /// guardrails see a version that is down.
    pub fn unavailable(&self, second: u64) {
        let shard = self.mine();
        shard.by_class[4].fetch_add(1, Ordering::Relaxed);
        shard.upstream_errors[UpstreamError::Connect.index()].fetch_add(1, Ordering::Relaxed);
        self.count_in_window(shard, second, true, None);
    }

    /// Counts one request in the second `second` of `shard`'s window, starting new counts
    /// (and dropping those past the window) when the second has moved on. A request
    /// finishing just after its second rolled over lands in the latest counts.
    fn count_in_window(&self, shard: &Shard, second: u64, error: bool, latency: Option<u16>) {
        let Ok(mut window) = shard.window.lock() else {
            return;
        };
        if window.back().is_none_or(|s| s.second < second) {
            self.first_second.fetch_min(second, Ordering::Relaxed);
            window.push_back(SecondCounts::empty(second));
            while window
                .front()
                .is_some_and(|s| s.second + self.window_len < second)
            {
                window.pop_front();
            }
        }
        if let Some(counts) = window.back_mut() {
            counts.requests += 1;
            counts.errors += u64::from(error);
            if let Some(bucket) = latency {
                counts.add_latency(bucket);
            }
        }
    }

    /// Every shard's window merged second by second, oldest first, over the seconds from
    /// `seconds` before `now_second` to `now_second`, both included: the widest span any
    /// reader takes (a window ends with `now_second`, evidence just before it). Only
    /// those seconds are copied: merging all of `metricsWindow` for a one-second
    /// guardrail would cost most of a guardrail check.
    fn merged_window(&self, seconds: u64, now_second: u64) -> VecDeque<SecondCounts> {
        let from = now_second.saturating_sub(seconds);
        let mut merged = std::collections::BTreeMap::<u64, SecondCounts>::new();
        for shard in self.shards.iter() {
            let Ok(window) = shard.window.lock() else {
                continue;
            };
            // Oldest first: the seconds before `from` are skipped from the front.
            let start = window.partition_point(|counts| counts.second < from);
            for counts in window.range(start..).take_while(|c| c.second <= now_second) {
                match merged.entry(counts.second) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(counts.clone());
                    }
                    std::collections::btree_map::Entry::Occupied(mut slot) => {
                        slot.get_mut().merge(counts);
                    }
                }
            }
        }
        merged.into_values().collect()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> i64 {
        self.shards
            .iter()
            .map(|shard| shard.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Requests completed since start, by status class (`1xx` .. `5xx`, upstream errors in 5xx).
    pub fn requests_by_class(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.total(|s| &s.by_class[i]))
    }

    /// The last `seconds` seconds up to `now_second` (inclusive), at most the window kept.
    pub fn window(&self, seconds: u64, now_second: u64) -> WindowStats {
        let seconds = seconds.clamp(1, self.window_len);
        stats_of(
            &self.merged_window(seconds, now_second),
            seconds,
            now_second,
        )
    }

    /// One value per second over the last `seconds` up to `now_second`, oldest first, for
    /// seconds that saw requests: the samples a statistical test compares.
    pub fn series(&self, seconds: u64, now_second: u64) -> Vec<WindowStats> {
        let seconds = seconds.clamp(1, self.window_len);
        let window = self.merged_window(seconds, now_second);
        window
            .iter()
            .filter(|s| s.second + seconds > now_second && s.second <= now_second && s.requests > 0)
            .map(|counts| {
                let mut single = VecDeque::with_capacity(1);
                single.push_back(counts.clone());
                stats_of(&single, 1, counts.second)
            })
            .collect()
    }

    /// Every second of the last `seconds` up to `now_second` that saw requests, oldest
    /// first, each with how many seconds before `now_second` it was: what a dashboard
    /// draws (a chart needs to know where the quiet seconds are, which
    /// [`series`](Self::series) leaves out).
    pub fn series_by_second(&self, seconds: u64, now_second: u64) -> Vec<(u64, WindowStats)> {
        let seconds = seconds.clamp(1, self.window_len);
        self.merged_window(seconds, now_second)
            .iter()
            .filter(|s| s.second + seconds > now_second && s.second <= now_second && s.requests > 0)
            .map(|counts| {
                let mut single = VecDeque::with_capacity(1);
                single.push_back(counts.clone());
                (
                    now_second - counts.second,
                    stats_of(&single, 1, counts.second),
                )
            })
            .collect()
    }

    /// The evidence of the `seconds` whole seconds before `now_second` (the second under
    /// way is left out, so windows taken one after another never count a second twice).
    pub fn evidence(&self, seconds: u64, now_second: u64) -> Evidence {
        let seconds = seconds.clamp(1, self.window_len);
        let counted = now_second.saturating_sub(self.first_second.load(Ordering::Relaxed));
        let covered = seconds.min(counted.max(1));
        let window = self.merged_window(seconds, now_second);
        let mut evidence = Evidence {
            seconds: covered as f64,
            ..Evidence::default()
        };
        let mut latency = std::collections::BTreeMap::<u16, f64>::new();
        for counts in window
            .iter()
            .filter(|s| s.second < now_second && s.second + seconds >= now_second)
        {
            evidence.requests += counts.requests as f64;
            evidence.errors += counts.errors as f64;
            for (bucket, count) in &counts.latency {
                *latency.entry(*bucket).or_default() += f64::from(*count);
            }
        }
        evidence.latency = Buckets::from_log_linear(latency);
        evidence
    }

    /// Second by second, the evidence of the `seconds` whole seconds before `now_second`,
    /// seconds without requests left out: what `cutover record` captures.
    pub fn evidence_by_second(&self, seconds: u64, now_second: u64) -> Vec<SecondEvidence> {
        let seconds = seconds.clamp(1, self.window_len);
        let window = self.merged_window(seconds, now_second);
        window
            .iter()
            .filter(|s| s.second < now_second && s.second + seconds >= now_second && s.requests > 0)
            .map(|counts| SecondEvidence {
                second: counts.second,
                evidence: Evidence {
                    requests: counts.requests as f64,
                    errors: counts.errors as f64,
                    latency: Buckets::from_log_linear(
                        counts.latency.iter().map(|(b, c)| (*b, f64::from(*c))),
                    ),
                    seconds: 1.0,
                },
            })
            .collect()
    }

    /// Appends this version's series in the Prometheus text format.
    pub fn export(&self, out: &mut String) {
        let labels = Labels::new()
            .with("release", &self.release)
            .with("version", &self.version);
        for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
            write_sample(
                out,
                "cutover_requests_total",
                &labels.clone().with("code_class", class),
                self.total(|s| &s.by_class[i]),
            );
        }
        for kind in UpstreamError::ALL {
            write_sample(
                out,
                "cutover_upstream_errors_total",
                &labels.clone().with("kind", kind.label()),
                self.total(|s| &s.upstream_errors[kind.index()]),
            );
        }
        write_sample(out, "cutover_requests_in_flight", &labels, self.in_flight());
        write_sample(
            out,
            "cutover_client_errors_total",
            &labels,
            self.client_errors(),
        );
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS.iter().enumerate().map(|(i, bound)| {
            cumulative += self.total(|s| &s.latency[i]);
            (*bound, cumulative)
        });
        let buckets: Vec<(f64, u64)> = buckets.collect();
        let count = cumulative + self.total(|s| &s.latency[LATENCY_BUCKETS.len()]);
        let sum = self.total(|s| &s.latency_sum_micros) as f64 / 1e6;
        write_histogram(
            out,
            "cutover_request_duration_seconds",
            &labels,
            buckets,
            sum,
            count,
        );
    }
}

/// A bucket bound of [`LATENCY_BUCKETS`] in microseconds.
const fn bound_micros(bound: f64) -> u64 {
    (bound * 1e6).round() as u64
}

/// [`LATENCY_BUCKETS`] in microseconds, worked out at compile time: each request finds
/// its bucket among them, and rounding each bound again as it searched cost about 200
/// instructions per request.
const LATENCY_BOUNDS_MICROS: [u64; LATENCY_BUCKETS.len()] = {
    let mut micros = [0; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < micros.len() {
        micros[i] = bound_micros(LATENCY_BUCKETS[i]);
        i += 1;
    }
    micros
};

/// Sums the counts of the `seconds` up to `now_second` into window statistics.
fn stats_of(window: &VecDeque<SecondCounts>, seconds: u64, now_second: u64) -> WindowStats {
    let mut stats = WindowStats {
        seconds,
        ..WindowStats::default()
    };
    let mut latency = std::collections::BTreeMap::<u16, f64>::new();
    for counts in window
        .iter()
        .filter(|s| s.second + seconds > now_second && s.second <= now_second)
    {
        stats.requests += counts.requests;
        stats.errors += counts.errors;
        for (bucket, count) in &counts.latency {
            *latency.entry(*bucket).or_default() += f64::from(*count);
        }
    }
    stats.request_rate = stats.requests as f64 / seconds as f64;
    if stats.requests > 0 {
        stats.error_rate = Some(stats.errors as f64 / stats.requests as f64);
    }
    let latency = Buckets::from_log_linear(latency);
    stats.latency_p50 = latency.quantile(0.50);
    stats.latency_p90 = latency.quantile(0.90);
    stats.latency_p95 = latency.quantile(0.95);
    stats.latency_p99 = latency.quantile(0.99);
    stats
}

/// The `le` bounds of the exported latency histogram, in seconds: ten per decade (each
/// about 26 % above the last) from 0.5 ms to 50 s, the resolution at which Prometheus's copy
/// of the proxy's latencies can be judged (`proxyMetric`). The bounds of the old
/// fourteen-bucket layout (0.0005, 0.001, 0.0025, ... 10) are all among them, so queries
/// written against those keep working.
const LATENCY_BUCKETS: [f64; 51] = [
    0.0005, 0.00063, 0.0008, 0.001, 0.00125, 0.0016, 0.002, 0.0025, 0.0032, 0.004, 0.005, 0.0063,
    0.008, 0.01, 0.0125, 0.016, 0.02, 0.025, 0.032, 0.04, 0.05, 0.063, 0.08, 0.1, 0.125, 0.16, 0.2,
    0.25, 0.32, 0.4, 0.5, 0.63, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0, 10.0, 12.5,
    16.0, 20.0, 25.0, 32.0, 40.0, 50.0,
];

/// The `# HELP`/`# TYPE` preamble of the proxy's series.
pub fn export_preamble(out: &mut String) {
    let families = [
        (
            "cutover_requests_total",
            "Requests completed, by release, version and status class (upstream failures count as 5xx).",
            MetricType::Counter,
        ),
        (
            "cutover_upstream_errors_total",
            "Upstream failures by kind.",
            MetricType::Counter,
        ),
        (
            "cutover_requests_in_flight",
            "Requests being proxied now.",
            MetricType::Gauge,
        ),
        (
            "cutover_client_errors_total",
            "Requests ended by the client (malformed, stalled or aborted body); not counted against the version.",
            MetricType::Counter,
        ),
        (
            "cutover_request_duration_seconds",
            "Time from the request to the upstream's response head.",
            MetricType::Histogram,
        ),
    ];
    for (name, help, kind) in families {
        write_family(out, name, help, kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each latency lands in the first bucket whose bound it does not exceed (Prometheus'
    /// `le`), by the bounds worked out at compile time, and one past every bound in the
    /// last.
    #[test]
    fn a_latency_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        assert_eq!(LATENCY_BOUNDS_MICROS[0], 500);
        assert_eq!(LATENCY_BOUNDS_MICROS[1], 630);
        assert_eq!(LATENCY_BOUNDS_MICROS[LATENCY_BUCKETS.len() - 1], 50_000_000);
        let bucket_of = |micros: u64| {
            let stats = VersionStats::new("shop", "v2", 60);
            stats.start();
            stats.finish(Some(200), None, Duration::from_micros(micros), 1);
            let shard = stats.mine();
            (0..=LATENCY_BUCKETS.len())
                .find(|&i| shard.latency[i].load(Ordering::Relaxed) == 1)
                .expect("counted")
        };
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let micros = bound_micros(*bound);
            assert_eq!(bucket_of(micros), i, "at {bound} s");
            assert_eq!(bucket_of(micros + 1), i + 1, "just past {bound} s");
        }
        assert_eq!(bucket_of(0), 0, "no latency counts as 1 µs");
    }

    #[test]
    fn windows_count_only_recent_seconds_and_no_data_is_none() {
        let stats = VersionStats::new("shop", "v2", 60);
        assert_eq!(stats.window(10, 100).error_rate, None);
        for second in [80, 95, 99, 100] {
            stats.start();
            stats.finish(Some(200), None, Duration::from_millis(3), second);
        }
        stats.start();
        stats.finish(
            None,
            Some(UpstreamError::Connect),
            Duration::from_millis(1),
            100,
        );
        let w = stats.window(10, 100);
        assert_eq!((w.requests, w.errors), (4, 1));
        assert_eq!(w.error_rate, Some(0.25));
        let p50 = w.latency_p50.expect("data");
        assert!((0.002..0.004).contains(&p50), "{p50}");
        assert_eq!(stats.requests_by_class(), [0, 4, 0, 0, 1]);
        assert_eq!(stats.in_flight(), 0);
    }

    #[test]
    fn the_series_by_second_says_how_long_ago_each_busy_second_was_and_skips_quiet_ones() {
        let stats = VersionStats::new("shop", "v2", 60);
        // Seconds come in order, as the proxy's clock gives them.
        for (second, status) in [
            (70, 200),
            (95, 200),
            (95, 200),
            (98, 200),
            (98, 503),
            (100, 200),
        ] {
            stats.start();
            stats.finish(Some(status), None, Duration::from_millis(2), second);
        }
        let series = stats.series_by_second(10, 100);
        let seen: Vec<(u64, u64, u64)> = series
            .iter()
            .map(|(ago, w)| (*ago, w.requests, w.errors))
            .collect();
        // Oldest first; second 70 is outside the window; 96, 97 and 99 saw nothing.
        assert_eq!(seen, [(5, 2, 0), (2, 2, 1), (0, 1, 0)]);
        assert!(series.iter().all(|(_, w)| w.latency_p99.is_some()));
    }

    #[test]
    fn evidence_covers_whole_seconds_before_now_and_sees_a_five_percent_shift() {
        let stats = VersionStats::new("shop", "v2", 60);
        for (second, millis, status) in [
            (98, 100, 200),
            (99, 100, 200),
            (99, 105, 200),
            (99, 1, 502),
            (100, 200, 200),
        ] {
            stats.start();
            stats.finish(Some(status), None, Duration::from_millis(millis), second);
        }
        // At second 100: the seconds 98 and 99, not the one under way.
        let e = stats.evidence(2, 100);
        assert_eq!((e.requests, e.errors, e.seconds), (4.0, 1.0, 2.0));
        // The next window, taken a second later, starts where this one ended.
        assert_eq!(stats.evidence(1, 101).requests, 1.0);
        // 100 ms and 105 ms land in different buckets.
        let bins = e.latency.bins();
        let fast = bins
            .iter()
            .find(|b| b.lower <= 0.1 && 0.1 < b.upper)
            .expect("100 ms");
        assert!(fast.upper <= 0.105, "{fast:?}");
        assert_eq!(e.latency.total(), 4.0);
        let by_second = stats.evidence_by_second(3, 100);
        assert_eq!(
            by_second
                .iter()
                .map(|s| (s.second, s.evidence.requests))
                .collect::<Vec<_>>(),
            [(98, 1.0), (99, 3.0)]
        );
    }

    #[test]
    fn evidence_claims_no_seconds_before_its_first_request() {
        // A proxy that restarted at second 100: a read of the last 60 s covers 10.
        let stats = VersionStats::new("shop", "v2", 300);
        for second in 100..110 {
            stats.start();
            stats.finish(Some(200), None, Duration::from_millis(5), second);
        }
        let e = stats.evidence(60, 110);
        assert_eq!((e.requests, e.seconds), (10.0, 10.0));
        assert_eq!(e.rate(), Some(1.0));
        assert_eq!(stats.evidence(5, 110).seconds, 5.0);
        assert_eq!(
            VersionStats::new("shop", "v3", 300)
                .evidence(60, 110)
                .seconds,
            1.0
        );
    }

    #[test]
    fn export_is_prometheus_text() {
        let stats = VersionStats::new("shop", "v\"2", 60);
        stats.start();
        stats.finish(Some(503), None, Duration::from_millis(20), 1);
        let mut out = String::new();
        stats.export(&mut out);
        assert!(
            out.contains(
                "cutover_requests_total{release=\"shop\",version=\"v\\\"2\",code_class=\"5xx\"} 1"
            ),
            "{out}"
        );
        assert!(out.contains("cutover_request_duration_seconds_bucket{release=\"shop\",version=\"v\\\"2\",le=\"0.025\"} 1"), "{out}");
        assert!(
            out.contains(
                "cutover_request_duration_seconds_count{release=\"shop\",version=\"v\\\"2\"} 1"
            ),
            "{out}"
        );
    }
}
