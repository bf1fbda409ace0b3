//! The route table: an immutable snapshot swapped atomically as a whole.
//!
//! A request reads the current snapshot once (an `ArcSwap` load) and keeps it, so a table
//! change never blocks or fails an in-flight request and takes effect for the next one.
//! Endpoints and counters outlive snapshots: a new table reuses the `Endpoint` and
//! `VersionStats` of the same address and version, so health state, in-flight counts and
//! metrics carry across changes.
//!
//! The registry forgets what no route uses any more: a version or endpoint absent from
//! the current table for `limits.forgetUnroutedAfter`, and held by no request in flight
//! (nor an older snapshot one still reads), is dropped with its counters and pooled
//! connections. The grace lets the final counts be scraped and read once; a version that
//! comes back later starts from zero, which Prometheus reads as a counter reset.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cutover_core::Backoff;
use cutover_core::spec::{GuardrailSpec, StickyKey};
use http::HeaderMap;

use crate::config::{RouteConfig, RouteTableConfig, VersionConfig};
use crate::metrics::VersionStats;

/// Why a route table was refused.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A route is malformed.
    #[error("route '{release}': {problem}")]
    Route {
        /// The route's release.
        release: String,
        /// What is wrong.
        problem: String,
    },
}

/// How much longer than the first an ejection in a row can last.
const MAX_EJECTION_FACTOR: u64 = 8;

/// One upstream instance.
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// `http://host:port`, the prefix of every upstream URI.
    pub base: String,
    consecutive_failures: AtomicU32,
    ejections_in_row: AtomicU32,
    /// Milliseconds on the proxy's clock until which the endpoint is ejected.
    ejected_until: AtomicU64,
    /// Each worker's requests in flight to this endpoint and its idle connections to it.
    /// Power of two choices weighs the worker's own requests in flight (as nginx's
    /// `least_conn` does without a shared zone), so no worker writes a count another one
    /// reads on every request.
    pub(crate) local: crate::upstream::PerWorkerEndpoint,
}

impl Endpoint {
    fn new(authority: &str) -> Endpoint {
        Endpoint {
            authority: authority.to_string(),
            base: format!("http://{authority}"),
            consecutive_failures: AtomicU32::new(0),
            ejections_in_row: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            local: crate::upstream::PerWorkerEndpoint::default(),
        }
    }

    /// Whether passive health checking has set this endpoint aside at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// Requests this thread's worker has in flight to this endpoint.
    pub fn in_flight(&self) -> usize {
        self.local.in_flight().load(Ordering::Relaxed)
    }

    /// Marks a request started; the guard marks it finished when dropped. The guard
    /// borrows the endpoint rather than holding a clone of its `Arc`: the reference count
    /// is written by every worker, the worker's own count only by it.
    pub fn begin(&self) -> InFlight<'_> {
        let count = self.local.in_flight();
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }

    /// Records a success: the failure streak ends.
    pub fn succeeded(&self) {
        // Loads first: the common case (no streak) writes nothing shared.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejections_in_row.load(Ordering::Relaxed) != 0 {
            self.ejections_in_row.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failure; after `limit` in a row the endpoint is ejected for `ejection_ms`,
    /// doubled for each ejection in a row (at most 8×). Returns whether it was ejected now.
    pub fn failed(&self, now_ms: u64, limit: u32, ejection_ms: u64) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < limit.max(1) {
            return false;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        let streak = self
            .ejections_in_row
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let ejection = cutover_core::Duration::from_millis(ejection_ms);
        let backoff = Backoff::new(ejection, ejection.saturating_mul(MAX_EJECTION_FACTOR));
        self.ejected_until.store(
            now_ms.saturating_add(backoff.delay_after(streak).as_millis()),
            Ordering::Relaxed,
        );
        true
    }
}

/// Keeps an endpoint's in-flight count for as long as it lives. It holds the count it
/// raised, so it lowers that one even if dropped on another thread.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One version of a release in a snapshot.
pub struct Version {
    /// The version's name.
    pub name: String,
    /// Its instances.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Its counters.
    pub stats: Arc<VersionStats>,
}

impl Version {
    /// Picks an endpoint by power of two choices on this worker's requests in flight
    /// ([`Endpoint::in_flight`]), skipping ejected ones. `None` if every endpoint is
    /// ejected (or there are none).
    pub fn pick(
        &self,
        now_ms: u64,
        random: u64,
        exclude: Option<&Arc<Endpoint>>,
    ) -> Option<&Arc<Endpoint>> {
        self.pick_index(now_ms, random, exclude)
            .map(|i| &self.endpoints[i])
    }

    /// [`Version::pick`], as the endpoint's place in [`Version::endpoints`]: a request
    /// keeps the place, not a clone of the endpoint's `Arc`, whose count every worker
    /// writes.
    pub fn pick_index(
        &self,
        now_ms: u64,
        random: u64,
        exclude: Option<&Arc<Endpoint>>,
    ) -> Option<usize> {
        let usable = |i: usize| {
            let e = &self.endpoints[i];
            !e.is_ejected(now_ms) && exclude.is_none_or(|x| !Arc::ptr_eq(x, e))
        };
        match self.endpoints.len() {
            0 => None,
            1 => usable(0).then_some(0),
            n => {
                let a = (random % n as u64) as usize;
                let b = ((random >> 32) % n as u64) as usize;
                match (usable(a), usable(b)) {
                    (true, true) => Some(
                        if self.endpoints[b].in_flight() < self.endpoints[a].in_flight() {
                            b
                        } else {
                            a
                        },
                    ),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => (0..n).find(|&i| usable(i)),
                }
            }
        }
    }
}

/// One release's route in a snapshot, compiled from its [`RouteConfig`]: versions with
/// their endpoints and counters, match rules and guardrails ready to use. (Named apart from
/// `cutover_core::rollout::Route`, the route a rollout step asks for.)
pub struct CompiledRoute {
    /// The route as configured (the admin API returns it).
    pub config: RouteConfig,
    /// The serving version.
    pub stable: Version,
    /// The version being rolled out.
    pub candidate: Option<Version>,
    /// Compiled match rules.
    pub rules: Vec<Rule>,
    /// Candidate share in basis points (weight × 100).
    pub weight_bp: u32,
    /// Mirrored share in basis points.
    pub mirror_bp: u32,
    /// Where each worker is in its sequences of decisions (see [`CompiledRoute::bucket`]).
    sequences: crate::workers::PerWorker<Sequences>,
}

/// One worker's place in a route's low-discrepancy sequences. Each worker keeps its own:
/// one shared by the workers would be written by all of them on every request. Each
/// worker's decisions stay within a few requests of the weight, so their sum stays within
/// a few requests per worker (where one shared sequence stays within a few in all).
struct Sequences {
    /// Spreads weighted decisions evenly (a Weyl sequence).
    weight: AtomicU64,
    /// The same for mirroring decisions, kept apart so that mirroring does not skew the
    /// weighted split.
    mirror: AtomicU64,
}

/// Which version serves a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The stable version.
    Stable,
    /// The candidate.
    Candidate,
}

/// A compiled match rule.
pub struct Rule {
    source: RuleSource,
    matcher: Matcher,
}

enum RuleSource {
    Header(http::HeaderName),
    Cookie(String),
}

enum Matcher {
    /// `always` → candidate, `never` → stable, anything else → no decision.
    AlwaysNever,
    Exact(String),
    Regex(regex::Regex),
}

impl Rule {
    /// The rule's decision for these headers, if it makes one.
    fn decide(&self, headers: &HeaderMap) -> Option<Pick> {
        let value = match &self.source {
            RuleSource::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            RuleSource::Cookie(name) => cookie(headers, name).map(str::to_string),
        }?;
        match &self.matcher {
            Matcher::AlwaysNever => match value.trim() {
                v if v.eq_ignore_ascii_case("always") => Some(Pick::Candidate),
                v if v.eq_ignore_ascii_case("never") => Some(Pick::Stable),
                _ => None,
            },
            Matcher::Exact(expected) => (value == *expected).then_some(Pick::Candidate),
            Matcher::Regex(re) => re.is_match(&value).then_some(Pick::Candidate),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The sticky bucket (0..10,000) of a key: FNV-1a then a mixing step, so the same key
/// lands in the same bucket on every proxy and across restarts.
pub fn sticky_bucket(key: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % 10_000) as u32
}

impl CompiledRoute {
    /// Decides the version for a request: match rules first, then the sticky key, then
    /// the weight. Without a candidate everything goes to stable.
    pub fn choose(&self, headers: &HeaderMap, client_ip: Option<std::net::IpAddr>) -> Pick {
        if self.candidate.is_none() {
            return Pick::Stable;
        }
        for rule in &self.rules {
            if let Some(pick) = rule.decide(headers) {
                return pick;
            }
        }
        if let Some(sticky) = &self.config.sticky {
            let key: Option<Vec<u8>> = match sticky {
                StickyKey::Cookie(name) => cookie(headers, name).map(|v| v.as_bytes().to_vec()),
                StickyKey::Header(name) => {
                    headers.get(name.as_str()).map(|v| v.as_bytes().to_vec())
                }
                StickyKey::ClientIp => client_ip.map(|ip| ip.to_string().into_bytes()),
            };
            if let Some(key) = key {
                return if sticky_bucket(&key) < self.weight_bp {
                    Pick::Candidate
                } else {
                    Pick::Stable
                };
            }
        }
        if self.bucket() < self.weight_bp {
            Pick::Candidate
        } else {
            Pick::Stable
        }
    }

    /// Whether this stable-bound request should also be copied to the candidate.
    pub fn mirror(&self) -> bool {
        self.candidate.is_some()
            && self.mirror_bp > 0
            && bucket(&self.sequences.mine().mirror) < self.mirror_bp
    }

    /// The next bucket of this worker's low-discrepancy sequence: a worker's consecutive
    /// requests spread evenly over 0..10,000, so 100,000 requests at 90/10 land within a few
    /// requests of the weights, where a random draw would wander by hundreds.
    fn bucket(&self) -> u32 {
        bucket(&self.sequences.mine().weight)
    }

    /// The version for `pick` (the candidate falls back to stable when absent).
    pub fn version(&self, pick: Pick) -> &Version {
        match pick {
            Pick::Candidate => self.candidate.as_ref().unwrap_or(&self.stable),
            Pick::Stable => &self.stable,
        }
    }

    /// The guardrails of this route.
    pub fn guardrails(&self) -> &[GuardrailSpec] {
        &self.config.guardrails
    }
}

/// A route table snapshot.
pub struct RouteTable {
    /// Routes, most specific first (longest path prefix, host before any host).
    pub routes: Vec<Arc<CompiledRoute>>,
    /// Increases with every table published.
    pub generation: u64,
}

impl RouteTable {
    /// The route for a request's host (without port) and path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<CompiledRoute>> {
        self.routes.iter().find(|r| {
            r.config
                .host
                .as_deref()
                .is_none_or(|h| host.is_some_and(|host| host.eq_ignore_ascii_case(h)))
                && under_prefix(path, r.config.path_prefix.as_deref().unwrap_or("/"))
        })
    }

    /// The table as configured.
    pub fn to_config(&self) -> RouteTableConfig {
        let mut routes: Vec<RouteConfig> = self.routes.iter().map(|r| r.config.clone()).collect();
        routes.sort_by(|a, b| a.release.cmp(&b.release));
        RouteTableConfig { routes }
    }
}

/// Something the registry knows, and since when (milliseconds on the proxy's clock) no
/// route has used it.
struct Known<T> {
    value: Arc<T>,
    unrouted_since: Option<u64>,
}

impl<T> Known<T> {
    fn new(value: T) -> Known<T> {
        Known {
            value: Arc::new(value),
            unrouted_since: None,
        }
    }

    /// Whether to forget this now: unused by the table for `grace_ms`, and held by
    /// nothing but the registry. Marks it unused from `now_ms` if it was not.
    fn forgettable(&mut self, in_table: bool, now_ms: u64, grace_ms: u64) -> bool {
        if in_table {
            self.unrouted_since = None;
            return false;
        }
        let since = *self.unrouted_since.get_or_insert(now_ms);
        now_ms.saturating_sub(since) >= grace_ms && Arc::strong_count(&self.value) == 1
    }
}

/// Endpoints and counters shared across snapshots.
pub struct Registry {
    endpoints: Mutex<HashMap<String, Known<Endpoint>>>,
    stats: Mutex<HashMap<(String, String), Known<VersionStats>>>,
    window_seconds: u64,
}

impl Registry {
    /// A registry whose counters keep `window_seconds` of rolling history.
    pub fn new(window_seconds: u64) -> Registry {
        Registry {
            endpoints: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            window_seconds,
        }
    }

    /// Every version's counters, for `/metrics`, sorted by release and version.
    pub fn all_stats(&self) -> Vec<Arc<VersionStats>> {
        let mut all: Vec<Arc<VersionStats>> = self
            .stats
            .lock()
            .map(|m| m.values().map(|k| k.value.clone()).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| (&a.release, &a.version).cmp(&(&b.release, &b.version)));
        all
    }

    /// Every endpoint known (routed to now, or within the grace).
    pub(crate) fn endpoints(&self) -> Vec<Arc<Endpoint>> {
        self.endpoints
            .lock()
            .map(|m| m.values().map(|k| k.value.clone()).collect())
            .unwrap_or_default()
    }

    /// Forgets the versions and endpoints that `table` does not use, once they have been
    /// unused for `grace_ms` and nothing else holds them (a request in flight keeps its
    /// version and endpoint). Called every second.
    pub fn forget_unrouted(&self, table: &RouteTable, now_ms: u64, grace_ms: u64) {
        let mut versions = std::collections::HashSet::new();
        let mut endpoints = std::collections::HashSet::new();
        for route in &table.routes {
            for version in std::iter::once(&route.stable).chain(route.candidate.as_ref()) {
                versions.insert(Arc::as_ptr(&version.stats));
                endpoints.extend(version.endpoints.iter().map(Arc::as_ptr));
            }
        }
        if let Ok(mut map) = self.stats.lock() {
            map.retain(|_, known| {
                let used = versions.contains(&Arc::as_ptr(&known.value));
                !known.forgettable(used, now_ms, grace_ms)
            });
        }
        if let Ok(mut map) = self.endpoints.lock() {
            map.retain(|_, known| {
                let used = endpoints.contains(&Arc::as_ptr(&known.value));
                !known.forgettable(used, now_ms, grace_ms)
            });
        }
    }

    /// The counters of one version, if it was ever routed.
    pub fn stats(&self, release: &str, version: &str) -> Option<Arc<VersionStats>> {
        self.stats
            .lock()
            .ok()?
            .get(&(release.to_string(), version.to_string()))
            .map(|k| k.value.clone())
    }

    fn endpoint(&self, authority: &str) -> Arc<Endpoint> {
        let Ok(mut map) = self.endpoints.lock() else {
            return Arc::new(Endpoint::new(authority));
        };
        map.entry(authority.to_string())
            .or_insert_with(|| Known::new(Endpoint::new(authority)))
            .value
            .clone()
    }

    fn version_stats(&self, release: &str, version: &str) -> Arc<VersionStats> {
        let Ok(mut map) = self.stats.lock() else {
            return Arc::new(VersionStats::new(release, version, self.window_seconds));
        };
        map.entry((release.to_string(), version.to_string()))
            .or_insert_with(|| Known::new(VersionStats::new(release, version, self.window_seconds)))
            .value
            .clone()
    }

    /// Compiles a table, reusing endpoints and counters that already exist.
    pub fn compile(
        &self,
        config: &RouteTableConfig,
        generation: u64,
    ) -> Result<RouteTable, TableError> {
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut seen = std::collections::HashSet::new();
        for route in &config.routes {
            let problem = |problem: String| TableError::Route {
                release: route.release.clone(),
                problem,
            };
            if !seen.insert(route.release.clone()) {
                return Err(problem("the release appears twice".into()));
            }
            if route.weight > 100 || route.mirror_percent > 100 {
                return Err(problem(
                    "weight and mirrorPercent are percentages from 0 to 100".into(),
                ));
            }
            if let Some(prefix) = &route.path_prefix
                && !prefix.starts_with('/')
            {
                return Err(problem(format!(
                    "path prefix '{prefix}' must start with '/'"
                )));
            }
            let version = |v: &VersionConfig| -> Result<Version, TableError> {
                for e in &v.endpoints {
                    let ok = e
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !ok {
                        return Err(problem(format!(
                            "endpoint '{e}' of version '{}' is not host:port",
                            v.name
                        )));
                    }
                }
                Ok(Version {
                    name: v.name.clone(),
                    endpoints: v.endpoints.iter().map(|e| self.endpoint(e)).collect(),
                    stats: self.version_stats(&route.release, &v.name),
                })
            };
            let mut rules = Vec::with_capacity(route.match_rules.len());
            for rule in &route.match_rules {
                let source = match (&rule.header, &rule.cookie) {
                    (Some(h), None) => RuleSource::Header(
                        http::HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| problem(format!("'{h}' is not a header name")))?,
                    ),
                    (None, Some(c)) => RuleSource::Cookie(c.clone()),
                    _ => {
                        return Err(problem(
                            "a match rule needs exactly one of header and cookie".into(),
                        ));
                    }
                };
                let matcher = match (&rule.exact, &rule.regex) {
                    (None, None) => Matcher::AlwaysNever,
                    (Some(v), None) => Matcher::Exact(v.clone()),
                    (None, Some(r)) => Matcher::Regex(
                        regex::Regex::new(r)
                            .map_err(|e| problem(format!("invalid regex '{r}': {e}")))?,
                    ),
                    (Some(_), Some(_)) => {
                        return Err(problem("'exact' and 'regex' cannot both be set".into()));
                    }
                };
                rules.push(Rule { source, matcher });
            }
            routes.push(Arc::new(CompiledRoute {
                stable: version(&route.stable)?,
                candidate: route.candidate.as_ref().map(version).transpose()?,
                rules,
                weight_bp: u32::from(route.weight) * 100,
                mirror_bp: u32::from(route.mirror_percent) * 100,
                sequences: {
                    let seed = seed(&route.release);
                    // Workers start at different places of the sequence, so that they do
                    // not all send their first requests of a new table the same way.
                    crate::workers::PerWorker::from_fn(|shard| {
                        // Any odd step would do: it only sets the workers apart.
                        let start = seed.wrapping_add(shard as u64 * 0x2545_F491);
                        Sequences {
                            weight: AtomicU64::new(start),
                            mirror: AtomicU64::new(start.rotate_left(32)),
                        }
                    })
                },
                config: route.clone(),
            }));
        }
        // Most specific first: a host before none, then the longest path prefix.
        routes.sort_by_key(|r| {
            (
                r.config.host.is_none(),
                std::cmp::Reverse(r.config.path_prefix.as_deref().unwrap_or("/").len()),
            )
        });
        Ok(RouteTable { routes, generation })
    }
}

/// The next bucket (0..10,000) of the low-discrepancy sequence kept in `counter`.
fn bucket(counter: &AtomicU64) -> u32 {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    let x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((u128::from(x) * 10_000) >> 64) as u32
}

/// Whether `path` lies under `prefix` on a segment boundary: `/api` takes `/api` and
/// `/api/users`, not `/apiary`.
fn under_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => {
            prefix.ends_with('/')
                || rest.is_empty()
                || rest.starts_with('/')
                || rest.starts_with('?')
        }
        None => false,
    }
}

fn seed(release: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    release.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(weight: u8, extra: impl FnOnce(&mut RouteConfig)) -> RouteTable {
        let mut route = RouteConfig {
            release: "shop".into(),
            host: None,
            path_prefix: None,
            stable: VersionConfig {
                name: "v1".into(),
                endpoints: vec!["127.0.0.1:1".into()],
            },
            candidate: Some(VersionConfig {
                name: "v2".into(),
                endpoints: vec!["127.0.0.1:2".into()],
            }),
            weight,
            match_rules: Vec::new(),
            sticky: None,
            mirror_percent: 0,
            guardrails: Vec::new(),
        };
        extra(&mut route);
        Registry::new(60)
            .compile(
                &RouteTableConfig {
                    routes: vec![route],
                },
                1,
            )
            .expect("valid")
    }

    #[test]
    fn weighted_decisions_are_exact_to_a_few_requests() {
        let t = table(10, |_| {});
        let route = &t.routes[0];
        let candidate = (0..100_000)
            .filter(|_| route.choose(&HeaderMap::new(), None) == Pick::Candidate)
            .count();
        assert!((9_950..=10_050).contains(&candidate), "{candidate}");
    }

    /// Each worker keeps its own place in the route's sequence, so the split holds per
    /// worker and in sum however the requests fall on the workers.
    #[test]
    fn weighted_decisions_stay_exact_when_workers_share_the_requests() {
        let t = table(10, |_| {});
        let route = &t.routes[0];
        let mut served = [0usize; 3];
        let mut candidate = [0usize; 3];
        let mut random = 0x9E37_79B9_u64;
        for _ in 0..100_000 {
            // An uneven, irregular spread: about two thirds on worker 1.
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let worker = if random.is_multiple_of(3) { 2 } else { 1 };
            let pick = crate::workers::as_worker(worker, || route.choose(&HeaderMap::new(), None));
            served[worker] += 1;
            candidate[worker] += usize::from(pick == Pick::Candidate);
        }
        for worker in [1, 2] {
            let expected = served[worker] / 10;
            assert!(
                candidate[worker].abs_diff(expected) <= 5,
                "worker {worker}: {} of {}",
                candidate[worker],
                served[worker]
            );
        }
        let total = candidate[1] + candidate[2];
        assert!((9_990..=10_010).contains(&total), "{total}");
    }

    /// Power of two choices weighs a worker's own requests in flight: a worker's count is
    /// written by that worker only, and what another worker has in flight does not show.
    #[test]
    fn each_worker_weighs_its_own_requests_in_flight() {
        let version = Version {
            name: "v1".into(),
            endpoints: vec![
                Arc::new(Endpoint::new("127.0.0.1:1")),
                Arc::new(Endpoint::new("127.0.0.1:2")),
            ],
            stats: Arc::new(VersionStats::new("shop", "v1", 60)),
        };
        let (a, b) = (&version.endpoints[0], &version.endpoints[1]);
        // A draw of endpoint 0 and endpoint 1 (the low and the high half of `random`).
        let both = 1u64 << 32;
        let held = crate::workers::as_worker(1, || {
            let held = [a.begin(), a.begin()];
            assert_eq!(a.in_flight(), 2);
            assert_eq!(
                version.pick_index(0, both, None),
                Some(1),
                "worker 1 avoids its busy one"
            );
            held
        });
        crate::workers::as_worker(2, || {
            assert_eq!(a.in_flight(), 0, "worker 1's requests do not show");
            let _held = b.begin();
            assert_eq!(
                version.pick_index(0, both, None),
                Some(0),
                "worker 2 avoids its own"
            );
        });
        // Dropped on another thread's shard, a guard still lowers the count it raised.
        crate::workers::as_worker(2, || drop(held));
        for worker in [1, 2] {
            crate::workers::as_worker(worker, || {
                assert_eq!((a.in_flight(), b.in_flight()), (0, 0), "worker {worker}");
            });
        }
    }

    #[test]
    fn a_pick_skips_ejected_and_excluded_endpoints() {
        let version = Version {
            name: "v1".into(),
            endpoints: (1..=3)
                .map(|port| Arc::new(Endpoint::new(&format!("127.0.0.1:{port}"))))
                .collect(),
            stats: Arc::new(VersionStats::new("shop", "v1", 60)),
        };
        // Both draws on endpoint 0; it is ejected, then so is endpoint 1.
        assert!(version.endpoints[0].failed(0, 1, 1_000));
        assert_eq!(
            version.pick_index(0, 0, None),
            Some(1),
            "the first usable one"
        );
        assert!(version.endpoints[1].failed(0, 1, 1_000));
        assert_eq!(version.pick_index(0, 0, None), Some(2));
        assert_eq!(
            version.pick_index(0, 0, Some(&version.endpoints[2])),
            None,
            "every endpoint ejected or excluded"
        );
        assert_eq!(
            version.pick_index(1_000, 0, None),
            Some(0),
            "the ejection ended"
        );
        let pick = version.pick(1_000, 0, None).expect("an endpoint");
        assert!(
            Arc::ptr_eq(pick, &version.endpoints[0]),
            "pick is pick_index's endpoint"
        );
        let single = Version {
            name: "v2".into(),
            endpoints: vec![Arc::new(Endpoint::new("127.0.0.1:4"))],
            stats: Arc::new(VersionStats::new("shop", "v2", 60)),
        };
        assert_eq!(single.pick_index(0, 7, None), Some(0));
        assert_eq!(single.pick_index(0, 7, Some(&single.endpoints[0])), None);
    }

    #[test]
    fn sticky_users_only_move_from_stable_to_candidate_as_weight_rises() {
        let mut last: Vec<Pick> = vec![Pick::Stable; 2_000];
        for weight in 0..=100 {
            let t = table(weight, |r| {
                r.sticky = Some(StickyKey::Cookie("session".into()))
            });
            for (user, previous) in last.iter_mut().enumerate() {
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::COOKIE,
                    format!("a=b; session=user-{user}").parse().expect("valid"),
                );
                let pick = t.routes[0].choose(&headers, None);
                assert!(
                    !(*previous == Pick::Candidate && pick == Pick::Stable),
                    "user {user} moved back at weight {weight}"
                );
                *previous = pick;
            }
        }
        assert!(last.iter().all(|p| *p == Pick::Candidate));
    }

    #[test]
    fn mirroring_does_not_skew_the_weighted_split() {
        let t = table(50, |r| r.mirror_percent = 10);
        let route = &t.routes[0];
        let (mut candidate, mut mirrored) = (0, 0);
        for _ in 0..10_000 {
            if route.choose(&HeaderMap::new(), None) == Pick::Candidate {
                candidate += 1;
            } else if route.mirror() {
                mirrored += 1;
            }
        }
        assert!((4_950..=5_050).contains(&candidate), "{candidate}");
        assert!(
            (450..=550).contains(&mirrored),
            "{mirrored} of ~5,000 stable requests mirrored"
        );
    }

    #[test]
    fn rules_come_before_sticky_and_weight() {
        let t = table(0, |r| {
            r.match_rules = vec![
                cutover_core::spec::MatchRule {
                    header: Some("X-Canary".into()),
                    ..Default::default()
                },
                cutover_core::spec::MatchRule {
                    cookie: Some("beta".into()),
                    regex: Some("^yes".into()),
                    ..Default::default()
                },
            ];
        });
        let route = &t.routes[0];
        let mut h = HeaderMap::new();
        h.insert("x-canary", "always".parse().expect("valid"));
        assert_eq!(route.choose(&h, None), Pick::Candidate);
        h.insert("x-canary", "never".parse().expect("valid"));
        h.insert(
            http::header::COOKIE,
            "beta=yes-please".parse().expect("valid"),
        );
        assert_eq!(
            route.choose(&h, None),
            Pick::Stable,
            "the first rule that decides wins"
        );
        h.remove("x-canary");
        assert_eq!(route.choose(&h, None), Pick::Candidate);
        assert_eq!(route.choose(&HeaderMap::new(), None), Pick::Stable);
    }

    #[test]
    fn passive_health_ejects_after_a_streak_and_backs_off() {
        let e = Endpoint::new("127.0.0.1:1");
        for _ in 0..4 {
            assert!(!e.failed(0, 5, 1000));
        }
        assert!(e.failed(0, 5, 1000));
        assert!(e.is_ejected(999) && !e.is_ejected(1000));
        for _ in 0..5 {
            e.failed(1000, 5, 1000);
        }
        assert!(
            e.is_ejected(2999),
            "the second ejection in a row lasts twice as long"
        );
        for _ in 0..5 * 8 {
            e.failed(3000, 5, 1000);
        }
        assert!(
            e.is_ejected(10_999) && !e.is_ejected(11_000),
            "ejections in a row stop doubling at 8×"
        );
        e.succeeded();
        assert_eq!(e.ejections_in_row.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn find_prefers_host_then_longest_prefix() {
        let config = RouteTableConfig {
            routes: ["/", "/api", "/api/v2"]
                .iter()
                .enumerate()
                .map(|(i, p)| RouteConfig {
                    release: format!("r{i}"),
                    host: (i == 0).then(|| "shop.example".to_string()),
                    path_prefix: Some(p.to_string()),
                    stable: VersionConfig {
                        name: "v1".into(),
                        endpoints: vec!["127.0.0.1:1".into()],
                    },
                    candidate: None,
                    weight: 0,
                    match_rules: Vec::new(),
                    sticky: None,
                    mirror_percent: 0,
                    guardrails: Vec::new(),
                })
                .collect(),
        };
        let t = Registry::new(60).compile(&config, 1).expect("valid");
        let release = |host, path| t.find(host, path).map(|r| r.config.release.clone());
        assert_eq!(
            release(Some("shop.example"), "/api/v2/x"),
            Some("r0".into())
        );
        assert_eq!(release(None, "/api/v2/x"), Some("r2".into()));
        assert_eq!(release(None, "/api/x"), Some("r1".into()));
        assert_eq!(release(None, "/other"), None);
        assert_eq!(
            release(None, "/apiary"),
            None,
            "prefixes match whole segments"
        );
        assert_eq!(release(None, "/api"), Some("r1".into()));
    }
}
