//! The proxy's configuration file (`cutover proxy --config FILE`) and the route table's
//! wire form (the admin API's `GET`/`PUT /routes` body).

use std::net::SocketAddr;
use std::path::PathBuf;

use cutover_core::Duration;
use cutover_core::spec::{GuardrailSpec, MatchRule, StickyKey};
use serde::{Deserialize, Serialize};

/// Everything `cutover proxy` needs to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where client traffic arrives.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener: route table, health, metrics, events.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The initial route table. The controller (or `PUT /routes`) replaces it later.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Size and count limits.
    #[serde(default)]
    pub limits: Limits,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Passive health checking of endpoints.
    #[serde(default)]
    pub health: PassiveHealth,
    /// Worker threads; absent: one per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// How much history the rolling windows keep for the builtin metric provider and the
    /// guardrails.
    #[serde(default = "default_window")]
    pub metrics_window: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}

/// A listener for client traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind.
    pub address: SocketAddr,
    /// Serve TLS (HTTP/1.1 and HTTP/2 by ALPN) with this certificate and key. Absent:
    /// plain HTTP/1.1, and HTTP/2 with prior knowledge (h2c).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// Certificate and key, PEM files (a Docker secret mounts them under `/run/secrets/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The admin listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to bind; loopback by default, so only this host can change routes.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// A file holding the bearer token every write must carry (say
    /// `/run/secrets/cutover-token`). Absent: writes are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: default_admin_address(),
            token_file: None,
        }
    }
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9901))
}

/// Limits that protect the proxy and the upstreams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes; larger: 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body in bytes; larger: 413. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Most client connections open at once; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: None,
            max_connections: default_max_connections(),
        }
    }
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_connections() -> usize {
    50_000
}

/// Timeouts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeouts {
    /// Connecting to an upstream; past it the endpoint counts as failed (502, retried).
    #[serde(default = "default_connect")]
    pub connect: Duration,
    /// From the request to the upstream's response head; past it: 504.
    #[serde(default = "default_request")]
    pub request: Duration,
    /// Idle pooled upstream connections are closed after this.
    #[serde(default = "default_idle")]
    pub upstream_idle: Duration,
    /// On shutdown, in-flight requests and tunnels get this long to finish.
    #[serde(default = "default_grace")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect(),
            request: default_request(),
            upstream_idle: default_idle(),
            shutdown_grace: default_grace(),
        }
    }
}

fn default_connect() -> Duration {
    Duration::from_secs(2)
}

fn default_request() -> Duration {
    Duration::from_secs(30)
}

fn default_idle() -> Duration {
    Duration::from_secs(90)
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}

/// Passive health: endpoints that keep failing are set aside for a while.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassiveHealth {
    /// Consecutive failures (refused, reset, timed out) that eject an endpoint.
    #[serde(default = "default_failures")]
    pub consecutive_failures: u32,
    /// How long an ejected endpoint stays out (doubling on each ejection in a row, at
    /// most 8×).
    #[serde(default = "default_ejection")]
    pub ejection: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            consecutive_failures: default_failures(),
            ejection: default_ejection(),
        }
    }
}

fn default_failures() -> u32 {
    5
}

fn default_ejection() -> Duration {
    Duration::from_secs(10)
}

/// One release's route: which requests, which two versions, how they share traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// The release's name: the `release` label on every metric.
    pub release: String,
    /// Requests whose `Host` (without port) is this. Absent: any host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Requests whose path starts with this. Absent: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The serving version.
    pub stable: VersionConfig,
    /// The version being rolled out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<VersionConfig>,
    /// Percentage of weighted traffic to the candidate, 0 to 100.
    #[serde(default)]
    pub weight: u8,
    /// Requests matching any rule go to the candidate (see `MatchRule` for `always`/`never`).
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_rules: Vec<MatchRule>,
    /// Keep each user on one version as the weight rises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickyKey>,
    /// Percentage of stable-bound requests copied to the candidate, answers discarded.
    #[serde(default)]
    pub mirror_percent: u8,
    /// Hard limits on the candidate, checked by the proxy itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<GuardrailSpec>,
}

/// One version of a release: a name and where its instances listen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionConfig {
    /// The version's name: the `version` label on every metric.
    pub name: String,
    /// `host:port` of each instance.
    pub endpoints: Vec<String>,
}

/// The body of `GET`/`PUT /routes`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableConfig {
    /// Every route; the first whose host and path prefix match a request takes it, longest
    /// path prefix first.
    pub routes: Vec<RouteConfig>,
}
