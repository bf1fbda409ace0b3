//! Living with Compose: the labels a candidate carries, and what they make Compose do.
//!
//! Compose (1.29 and v2 alike) finds a service's containers by the labels
//! `com.docker.compose.project`, `com.docker.compose.service` and
//! `com.docker.compose.oneoff=False`, and on `up` recreates a container whose
//! `com.docker.compose.config-hash` differs from the hash it computes from the compose file
//! (the image's ID is part of it). A candidate carries all of the stable container's
//! Compose labels, the config hash unchanged, and a `container-number` above every number
//! the service has. So after a promotion:
//!
//! - `docker-compose up -d` with the compose file and `.env` unchanged finds the promoted
//!   containers up to date: it neither restarts them nor starts the old version again;
//! - `docker-compose down` removes them with the rest of the project;
//! - once the user writes the new tag into the compose file or `.env`, the next `up -d`
//!   recreates them once, on the same new image.
//!
//! cutover's own labels ([`RELEASE`], [`VERSION`], [`CONTROLLER`]) say which release and
//! version a container belongs to, so a restarted controller finds the candidates it had
//! created and cleans up after a crash.

use serde_json::{Map, Value};

/// The Compose project of a container.
pub const PROJECT: &str = "com.docker.compose.project";
/// The Compose service of a container.
pub const SERVICE: &str = "com.docker.compose.service";
/// The container's number within its Compose service (`shop_web_2` is 2).
pub const NUMBER: &str = "com.docker.compose.container-number";
/// A Swarm task's service: such a container belongs to the Swarm backend.
pub const SWARM_SERVICE: &str = "com.docker.swarm.service.name";

/// The release a container cutover created belongs to.
pub const RELEASE: &str = "dev.cutover.release";
/// The version it runs.
pub const VERSION: &str = "dev.cutover.version";
/// The controller (`serve --name`) that created it.
pub const CONTROLLER: &str = "dev.cutover.controller";

/// Whose candidate a container is.
pub struct Owner<'a> {
    /// The release.
    pub release: &'a str,
    /// The candidate's version.
    pub version: &'a str,
    /// The controller's name.
    pub controller: &'a str,
}

/// The candidate's labels: the stable container's, less those its old image set (the new
/// image brings its own), with the Compose number `number` (when the stable container is a
/// Compose service's) and the owner's labels.
pub fn candidate_labels(
    stable: &Value,
    old_image_labels: &Value,
    number: u64,
    owner: &Owner<'_>,
) -> Map<String, Value> {
    let mut labels: Map<String, Value> = stable["Config"]["Labels"]
        .as_object()
        .map(|labels| {
            labels
                .iter()
                .filter(|(key, value)| old_image_labels.get(key.as_str()) != Some(*value))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect()
        })
        .unwrap_or_default();
    if labels.contains_key(SERVICE) {
        labels.insert(NUMBER.into(), number.to_string().into());
    }
    labels.insert(RELEASE.into(), owner.release.into());
    labels.insert(VERSION.into(), owner.version.into());
    labels.insert(CONTROLLER.into(), owner.controller.into());
    labels
}

/// The highest Compose container number among `containers` (each a list entry or an
/// inspect), 0 when none has one.
pub fn highest_number(containers: &[Value]) -> u64 {
    containers
        .iter()
        .filter_map(|c| {
            let labels = if c["Labels"].is_object() {
                &c["Labels"]
            } else {
                &c["Config"]["Labels"]
            };
            labels[NUMBER].as_str()?.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// A label of a container list entry or inspect.
pub fn label<'a>(container: &'a Value, key: &str) -> Option<&'a str> {
    container["Labels"][key]
        .as_str()
        .or_else(|| container["Config"]["Labels"][key].as_str())
}

/// Whether `container` may be taken for the stable containers of `release` at `version`
/// when Compose has replaced them: one cutover did not make (Compose's own), or one it made
/// for this release at that version; never another release's, nor an older or newer
/// version of this one.
pub fn may_serve_as(container: &Value, release: &str, version: &str) -> bool {
    match label(container, RELEASE) {
        None => true,
        Some(owner) => owner == release && label(container, VERSION) == Some(version),
    }
}

/// Of the containers a release's first rollout would adopt, those it may: never another
/// release's candidates or promoted containers (they inherit the Compose service label and
/// the user's labels), and this release's own only when nothing else answers (its promoted
/// containers, adopted again after its record was lost).
pub fn adoptable(chosen: Vec<Value>, release: &str) -> Vec<Value> {
    let (made_here, users): (Vec<Value>, Vec<Value>) = chosen
        .into_iter()
        .filter(|c| label(c, RELEASE).is_none_or(|owner| owner == release))
        .partition(|c| label(c, RELEASE).is_some());
    if users.is_empty() { made_here } else { users }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stable() -> Value {
        json!({"Config": {"Labels": {
            PROJECT: "shop",
            SERVICE: "web",
            NUMBER: "1",
            "com.docker.compose.oneoff": "False",
            "com.docker.compose.config-hash": "9f2c",
            "com.docker.compose.version": "1.29.2",
            "traefik.enable": "true",
            "org.opencontainers.image.version": "v1"
        }}})
    }

    fn owner() -> Owner<'static> {
        Owner {
            release: "web",
            version: "v2",
            controller: "cutover",
        }
    }

    #[test]
    fn a_candidate_is_one_more_container_of_the_compose_service_with_the_same_hash() {
        let image = json!({"org.opencontainers.image.version": "v1"});
        let labels = candidate_labels(&stable(), &image, 3, &owner());
        assert_eq!(labels[PROJECT], "shop");
        assert_eq!(labels[SERVICE], "web");
        assert_eq!(labels["com.docker.compose.oneoff"], "False");
        // Unchanged: Compose compares it with the compose file's to decide on a recreate.
        assert_eq!(labels["com.docker.compose.config-hash"], "9f2c");
        assert_eq!(labels[NUMBER], "3");
        assert_eq!(labels["traefik.enable"], "true");
        assert_eq!(labels[RELEASE], "web");
        assert_eq!(labels[VERSION], "v2");
        assert_eq!(labels[CONTROLLER], "cutover");
        // The old image's label is the new image's business.
        assert!(!labels.contains_key("org.opencontainers.image.version"));
    }

    #[test]
    fn a_container_outside_compose_gets_no_compose_number() {
        let plain = json!({"Config": {"Labels": {"app": "web"}}});
        let labels = candidate_labels(&plain, &Value::Null, 7, &owner());
        assert!(!labels.contains_key(NUMBER), "{labels:?}");
        assert_eq!(labels["app"], "web");
    }

    #[test]
    fn numbers_continue_above_the_highest() {
        let listed = vec![
            json!({"Labels": {NUMBER: "2"}}),
            json!({"Config": {"Labels": {NUMBER: "5"}}}),
            json!({"Labels": {"app": "web"}}),
            json!({"Labels": {NUMBER: "x"}}),
        ];
        assert_eq!(highest_number(&listed), 5);
        assert_eq!(highest_number(&[]), 0);
        assert_eq!(label(&listed[1], NUMBER), Some("5"));
    }

    fn labelled(name: &str, labels: Value) -> Value {
        json!({"Name": format!("/{name}"), "Config": {"Labels": labels}})
    }

    #[test]
    fn adoption_takes_the_users_containers_and_never_another_releases() {
        let users = labelled("shop_web_1", json!({SERVICE: "web"}));
        let other = labelled(
            "api-v2-1",
            json!({SERVICE: "web", RELEASE: "api", VERSION: "v2"}),
        );
        let own = labelled(
            "web-v2-3",
            json!({SERVICE: "web", RELEASE: "web", VERSION: "v2"}),
        );
        let names = |chosen: Vec<Value>| -> Vec<String> {
            chosen.iter().map(crate::clone::name_of).collect()
        };
        assert_eq!(
            names(adoptable(
                vec![users.clone(), other.clone(), own.clone()],
                "web"
            )),
            ["shop_web_1"]
        );
        assert_eq!(
            names(adoptable(vec![other.clone(), own.clone()], "web")),
            ["web-v2-3"]
        );
        assert!(adoptable(vec![other], "web").is_empty());
    }

    #[test]
    fn only_compose_s_own_or_this_versions_containers_replace_the_stable_ones() {
        let compose_made = labelled("shop_web_1", json!({SERVICE: "web"}));
        let promoted = labelled("web-v2-3", json!({RELEASE: "web", VERSION: "v2"}));
        let older = labelled("web-v1-1", json!({RELEASE: "web", VERSION: "v1"}));
        let other = labelled("api-v2-1", json!({RELEASE: "api", VERSION: "v2"}));
        assert!(may_serve_as(&compose_made, "web", "v2"));
        assert!(may_serve_as(&promoted, "web", "v2"));
        assert!(!may_serve_as(&older, "web", "v2"));
        assert!(!may_serve_as(&other, "web", "v2"));
    }
}
