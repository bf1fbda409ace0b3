//! Configurations for an in-process `cutover_proxy::Proxy` on loopback: the listener and
//! admin API on ephemeral ports, default limits, and routes over given upstreams.

use std::net::SocketAddr;

use cutover_proxy::config::{
    AdminConfig, Limits, ListenerConfig, PassiveHealth, ProxyConfig, RouteConfig, Timeouts,
    VersionConfig,
};

/// A proxy config listening (and serving its admin API) on ephemeral loopback ports, with
/// the default limits, timeouts and passive health, and a metrics window of 60 s.
pub fn config(routes: Vec<RouteConfig>) -> ProxyConfig {
    ProxyConfig {
        listeners: vec![ListenerConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
        }],
        admin: AdminConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            token_file: None,
        },
        routes,
        limits: Limits::default(),
        timeouts: Timeouts::default(),
        health: PassiveHealth::default(),
        workers: None,
        metrics_window: cutover_core::Duration::from_secs(60),
    }
}

/// A route of `release` sending `weight` percent to a candidate `v2` at `candidate` (when
/// there is one) and the rest to a stable `v1` at `stable`; no rules, stickiness, mirroring
/// or guardrails.
pub fn route(
    release: &str,
    stable: SocketAddr,
    candidate: Option<SocketAddr>,
    weight: u8,
) -> RouteConfig {
    RouteConfig {
        release: release.to_string(),
        host: None,
        path_prefix: None,
        stable: VersionConfig {
            name: "v1".into(),
            endpoints: vec![stable.to_string()],
        },
        candidate: candidate.map(|c| VersionConfig {
            name: "v2".into(),
            endpoints: vec![c.to_string()],
        }),
        weight,
        match_rules: Vec::new(),
        sticky: None,
        mirror_percent: 0,
        guardrails: Vec::new(),
    }
}
