//! The proxy route of one release, built from the state machine's `Route` and the slots as
//! the backend reports them: a pure function, so that what a driver hands the route
//! publisher depends on nothing but its inputs.

use cutover_backend::SlotView;
use cutover_core::rollout::Route;
use cutover_core::spec::Release;
use cutover_proxy::config::{RouteConfig, VersionConfig};

/// The proxy's route for `release` now: stable always; the candidate while it exists and
/// has endpoints, with the machine's weight, header rules and mirroring when `open` (the
/// driver's say: during steps and promotion, unless a guardrail cut it off), else with no
/// traffic at all.
pub fn release_route(
    release: &Release,
    route: &Route,
    open: bool,
    stable: &SlotView,
    candidate: Option<&SlotView>,
) -> RouteConfig {
    let candidate = candidate.filter(|c| !c.endpoints.is_empty());
    let open = open && candidate.is_some();
    let mut match_rules = Vec::new();
    if open {
        match_rules.extend(release.spec.traffic.match_rules.iter().cloned());
        match_rules.extend(route.header_route.iter().cloned());
    }
    RouteConfig {
        release: release.metadata.name.clone(),
        host: release.spec.traffic.host.clone(),
        path_prefix: release.spec.traffic.path_prefix.clone(),
        stable: VersionConfig {
            name: stable.version.clone(),
            endpoints: stable.endpoints.clone(),
        },
        candidate: candidate.map(|c| VersionConfig {
            name: c.version.clone(),
            endpoints: c.endpoints.clone(),
        }),
        weight: if open { route.candidate_weight } else { 0 },
        match_rules,
        sticky: release.spec.traffic.sticky.clone(),
        mirror_percent: if open { route.mirror_percent } else { 0 },
        guardrails: release.spec.guardrails.clone(),
    }
}
