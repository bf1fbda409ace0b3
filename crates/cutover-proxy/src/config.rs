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

/// The longest `metricsWindow`: each version keeps one slot of about 300 bytes per second
/// of window, so an hour costs about 1 MB per version.
pub const MAX_METRICS_WINDOW: Duration = Duration::from_secs(3600);

/// Why a proxy configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `metricsWindow` is longer than [`MAX_METRICS_WINDOW`].
    #[error(
        "metricsWindow {window} is longer than the {max} the proxy keeps (hint: the builtin \
         provider and the guardrails only read windows up to this length)"
    )]
    MetricsWindowTooLong {
        /// The configured window.
        window: Duration,
        /// The cap.
        max: Duration,
    },
    /// A limit or timeout that must be positive is zero.
    #[error("{field} must be greater than zero")]
    Zero {
        /// The field, as written in the file.
        field: &'static str,
    },
    /// A `trustedProxies` entry is not a CIDR.
    #[error(
        "limits.trustedProxies: '{entry}' is not an address or CIDR (hint: 10.0.0.0/8 or ::1/128)"
    )]
    TrustedProxy {
        /// The entry.
        entry: String,
    },
}

impl ProxyConfig {
    /// Checks what serde cannot: the `metricsWindow` cap, positive listener limits and
    /// timeouts, `trustedProxies` CIDRs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.metrics_window > MAX_METRICS_WINDOW {
            return Err(ConfigError::MetricsWindowTooLong {
                window: self.metrics_window,
                max: MAX_METRICS_WINDOW,
            });
        }
        // Only fields added with the listener limits are checked for zero: the older ones
        // keep their meaning (`maxConnections: 0` acts as 1, `maxHeaderBytes` is raised
        // to 8192, `request: 0s` times out at once), so existing files start as before.
        if self.limits.admin_max_connections == 0 {
            return Err(ConfigError::Zero {
                field: "limits.adminMaxConnections",
            });
        }
        let t = &self.timeouts;
        let durations = [
            ("timeouts.tlsHandshake", t.tls_handshake),
            ("timeouts.headerRead", t.header_read),
            ("timeouts.keepAliveIdle", t.keep_alive_idle),
            (
                "timeouts.http2KeepAliveInterval",
                t.http2_keep_alive_interval,
            ),
            ("timeouts.http2KeepAliveTimeout", t.http2_keep_alive_timeout),
            ("timeouts.clientBodyIdle", t.client_body_idle),
            ("timeouts.tunnelIdle", t.tunnel_idle),
        ];
        if let Some((field, _)) = durations.iter().find(|(_, d)| d.as_millis() == 0) {
            return Err(ConfigError::Zero { field });
        }
        for entry in &self.limits.trusted_proxies {
            if crate::forward::Cidr::parse(entry).is_none() {
                return Err(ConfigError::TrustedProxy {
                    entry: entry.clone(),
                });
            }
        }
        Ok(())
    }
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
///
/// The admin listener's limits and the trusted proxies live here too, so that the
/// configuration's top-level shape stays what it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes; larger: 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body in bytes; larger: 413. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Most client connections open at once, upgraded tunnels (WebSocket) included; more
    /// wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most mirrored copies in flight at once; a copy beyond it is dropped (and counted
    /// in `cutover_mirror_dropped_total`) rather than queued, so a slow candidate cannot
    /// make mirroring pile up memory.
    #[serde(default = "default_max_mirror_in_flight")]
    pub max_mirror_in_flight: usize,
    /// Most connections the admin listener holds open at once.
    #[serde(default = "default_admin_max_connections")]
    pub admin_max_connections: usize,
    /// Largest admin request body (a `PUT /routes` table) in bytes; larger: 413.
    #[serde(default = "default_admin_max_body_bytes")]
    pub admin_max_body_bytes: usize,
    /// Peers (CIDRs such as `10.0.0.0/8` or `::1/128`, or single addresses) whose
    /// `X-Forwarded-For` and `Forwarded` headers are kept and appended to. From any other
    /// peer those headers are replaced: a client cannot forge the address the upstream
    /// sees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// How long a version or endpoint that no route uses any more stays known (its
    /// counters exported, its window readable) before it is forgotten. A version still
    /// serving a request is kept until the request ends.
    #[serde(default = "default_forget_unrouted_after")]
    pub forget_unrouted_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: None,
            max_connections: default_max_connections(),
            max_mirror_in_flight: default_max_mirror_in_flight(),
            admin_max_connections: default_admin_max_connections(),
            admin_max_body_bytes: default_admin_max_body_bytes(),
            trusted_proxies: Vec::new(),
            forget_unrouted_after: default_forget_unrouted_after(),
        }
    }
}

fn default_max_mirror_in_flight() -> usize {
    64
}

fn default_admin_max_connections() -> usize {
    64
}

fn default_admin_max_body_bytes() -> usize {
    4 * 1024 * 1024
}

fn default_forget_unrouted_after() -> Duration {
    Duration::from_secs(120)
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
    /// A TLS client must finish its handshake within this.
    #[serde(default = "default_tls_handshake")]
    pub tls_handshake: Duration,
    /// From accepting a connection (or the end of its TLS handshake) to its first
    /// complete request head: covers the HTTP/1-or-HTTP/2 detection, and slow or silent
    /// clients ("slowloris"). Also the longest an HTTP/1 request head may take to arrive.
    /// Applies to the admin listener too.
    #[serde(default = "default_header_read")]
    pub header_read: Duration,
    /// A connection with no request under way is closed after this: HTTP/1 keep-alive
    /// and idle HTTP/2 connections. Applies to the admin listener too.
    #[serde(default = "default_keep_alive_idle")]
    pub keep_alive_idle: Duration,
    /// HTTP/2: send a PING when the connection has been quiet this long.
    #[serde(default = "default_http2_keep_alive_interval")]
    pub http2_keep_alive_interval: Duration,
    /// HTTP/2: close the connection if a PING is not acknowledged within this.
    #[serde(default = "default_http2_keep_alive_timeout")]
    pub http2_keep_alive_timeout: Duration,
    /// The longest pause in a client's request body. Past it the request is answered 408
    /// and counted as a client error, never against the upstream.
    #[serde(default = "default_client_body_idle")]
    pub client_body_idle: Duration,
    /// An upgraded connection (WebSocket) with no bytes either way for this long is
    /// closed.
    #[serde(default = "default_tunnel_idle")]
    pub tunnel_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect(),
            request: default_request(),
            upstream_idle: default_idle(),
            shutdown_grace: default_grace(),
            tls_handshake: default_tls_handshake(),
            header_read: default_header_read(),
            keep_alive_idle: default_keep_alive_idle(),
            http2_keep_alive_interval: default_http2_keep_alive_interval(),
            http2_keep_alive_timeout: default_http2_keep_alive_timeout(),
            client_body_idle: default_client_body_idle(),
            tunnel_idle: default_tunnel_idle(),
        }
    }
}

fn default_tls_handshake() -> Duration {
    Duration::from_secs(10)
}

fn default_header_read() -> Duration {
    Duration::from_secs(10)
}

fn default_keep_alive_idle() -> Duration {
    Duration::from_secs(60)
}

fn default_http2_keep_alive_interval() -> Duration {
    Duration::from_secs(20)
}

fn default_http2_keep_alive_timeout() -> Duration {
    Duration::from_secs(20)
}

fn default_client_body_idle() -> Duration {
    Duration::from_secs(30)
}

fn default_tunnel_idle() -> Duration {
    Duration::from_secs(300)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> ProxyConfig {
        ProxyConfig {
            listeners: Vec::new(),
            admin: AdminConfig::default(),
            routes: Vec::new(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            health: PassiveHealth::default(),
            workers: None,
            metrics_window: default_window(),
        }
    }

    #[test]
    fn defaults_pass_and_files_from_before_the_listener_limits_keep_their_meaning() {
        assert!(minimal().validate().is_ok());
        let mut old = minimal();
        old.limits.max_connections = 0;
        old.limits.max_header_bytes = 0;
        old.timeouts.request = Duration::ZERO;
        assert!(old.validate().is_ok(), "older fields are not newly refused");
    }

    #[test]
    fn zero_listener_timeouts_long_windows_and_bad_cidrs_are_refused() {
        let mut c = minimal();
        c.timeouts.header_read = Duration::ZERO;
        let e = c.validate().expect_err("zero header timeout");
        assert_eq!(
            e.to_string(),
            "timeouts.headerRead must be greater than zero"
        );
        let mut c = minimal();
        c.limits.admin_max_connections = 0;
        assert!(c.validate().is_err());
        let mut c = minimal();
        c.metrics_window = Duration::from_secs(3601);
        assert!(
            c.validate()
                .expect_err("too long")
                .to_string()
                .starts_with("metricsWindow ")
        );
        let mut c = minimal();
        c.limits.trusted_proxies = vec!["10.0.0.0/8".into(), "10.0.0.300".into()];
        assert!(
            c.validate()
                .expect_err("bad cidr")
                .to_string()
                .contains("'10.0.0.300'")
        );
    }
}
