//! The candidate's service spec, cloned from the stable one.
//!
//! The spec is copied as the API gave it (JSON, so nothing the engine knows is lost), and
//! everything users set up with Compose or `docker service create` stays true for the new
//! version: environment, secrets, configs, mounts, networks, placement, resources,
//! healthcheck, restart and update policies, labels. What changes:
//!
//! - the name, and cutover's labels;
//! - the image;
//! - the replica count, when the release sets `replicas` (a global service stays global);
//! - published ports are dropped: the stable service keeps its own while both run, and a
//!   second service cannot publish the same ones; cutover's proxy reaches the candidate on
//!   the overlay network;
//! - network aliases are dropped: `docker stack deploy` gives every task the service's
//!   short name as an alias, and a candidate answering to it would take requests that
//!   bypass the proxy's weights;
//! - `com.docker.stack.*` labels are dropped, so `docker stack deploy --prune` and
//!   `docker stack rm` do not remove a version cutover manages.

use serde_json::{Map, Value};

use crate::labels::SlotLabels;

/// What makes the candidate differ from the stable service.
pub struct CandidateOf<'a> {
    /// The new service's name.
    pub name: &'a str,
    /// The new version's image.
    pub image: &'a str,
    /// Replicas, if the release sets them (ignored for a global service).
    pub replicas: Option<u32>,
    /// cutover's labels for the candidate.
    pub labels: SlotLabels<'a>,
}

impl CandidateOf<'_> {
    /// The candidate's spec: `stable` (a service's `Spec`) with the changes above.
    pub fn spec(&self, stable: &Value) -> Value {
        let mut spec = stable.clone();
        let Some(object) = spec.as_object_mut() else {
            return spec;
        };
        object.insert("Name".into(), self.name.into());
        let labels = labels_of(object);
        labels.retain(|key, _| !key.starts_with("com.docker.stack."));
        self.labels.apply(labels);
        let template = child(object, "TaskTemplate");
        let container = child(template, "ContainerSpec");
        container.insert("Image".into(), self.image.into());
        if let Some(Value::Object(labels)) = container.get_mut("Labels") {
            labels.retain(|key, _| !key.starts_with("com.docker.stack."));
        }
        drop_aliases(template.get_mut("Networks"));
        drop_aliases(object.get_mut("Networks"));
        if let (Some(replicas), Some(Value::Object(mode))) = (self.replicas, object.get_mut("Mode"))
            && let Some(Value::Object(replicated)) = mode.get_mut("Replicated")
        {
            replicated.insert("Replicas".into(), replicas.into());
        }
        if let Some(Value::Object(endpoint)) = object.get_mut("EndpointSpec") {
            endpoint.remove("Ports");
        }
        spec
    }
}

/// The replica count of a service's spec; `None` for a global service.
pub fn replicas(spec: &Value) -> Option<u64> {
    match &spec["Mode"] {
        Value::Object(mode) if mode.contains_key("Global") => None,
        mode => Some(mode["Replicated"]["Replicas"].as_u64().unwrap_or(1)),
    }
}

/// A spec's `Labels`, created if missing.
pub fn labels_of(spec: &mut Map<String, Value>) -> &mut Map<String, Value> {
    child(spec, "Labels")
}

fn child<'a>(object: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = object
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

fn drop_aliases(networks: Option<&mut Value>) {
    if let Some(Value::Array(networks)) = networks {
        for network in networks.iter_mut().filter_map(Value::as_object_mut) {
            network.remove("Aliases");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::labels::{self, Role};

    /// A service's `Spec` as `docker stack deploy` leaves it (trimmed).
    fn stable() -> Value {
        json!({
            "Name": "shop_web",
            "Labels": {
                "com.docker.stack.namespace": "shop",
                "com.docker.stack.image": "shop/web:v1",
                "team": "payments",
                labels::STATE: "{}",
                labels::REVISION: "3"
            },
            "TaskTemplate": {
                "ContainerSpec": {
                    "Image": "shop/web:v1@sha256:abc",
                    "Labels": {"com.docker.stack.namespace": "shop"},
                    "Env": ["MODE=prod"],
                    "Healthcheck": {"Test": ["CMD", "/web", "--check"], "Interval": 1000000000},
                    "Mounts": [{"Type": "volume", "Source": "shop_data", "Target": "/data"}],
                    "Secrets": [{"SecretID": "s1", "SecretName": "db-password", "File": {"Name": "db-password"}}],
                    "SomeFieldOfANewerEngine": {"Kept": true}
                },
                "Resources": {"Limits": {"MemoryBytes": 268435456}},
                "Placement": {"Constraints": ["node.role==worker"]},
                "Networks": [{"Target": "net-id", "Aliases": ["web"]}]
            },
            "Mode": {"Replicated": {"Replicas": 4}},
            "EndpointSpec": {"Mode": "dnsrr", "Ports": [{"TargetPort": 8080, "PublishedPort": 80}]}
        })
    }

    fn candidate(replicas: Option<u32>) -> CandidateOf<'static> {
        CandidateOf {
            name: "shop_web-green",
            image: "shop/web:v2",
            replicas,
            labels: SlotLabels {
                controller: "cutover",
                release: "web",
                role: Role::Candidate,
                epoch: 1,
                version: "v2",
                base: "shop_web",
                port: 8080,
                network: "net",
            },
        }
    }

    #[test]
    fn everything_but_the_image_and_what_would_bypass_the_proxy_is_kept() {
        let stable = stable();
        let spec = candidate(None).spec(&stable);
        assert_eq!(spec["Name"], "shop_web-green");
        let mut expected = stable["TaskTemplate"].clone();
        expected["ContainerSpec"]["Image"] = "shop/web:v2".into();
        expected["ContainerSpec"]["Labels"] = json!({});
        expected["Networks"] = json!([{"Target": "net-id"}]);
        assert_eq!(spec["TaskTemplate"], expected);
        assert_eq!(spec["Mode"], stable["Mode"]);
        assert_eq!(replicas(&spec), Some(4));
        assert_eq!(spec["EndpointSpec"], json!({"Mode": "dnsrr"}));
        let labels = &spec["Labels"];
        assert_eq!(labels["team"], "payments");
        assert!(labels.get("com.docker.stack.namespace").is_none());
        assert!(labels.get(labels::STATE).is_none());
        assert_eq!(labels[labels::ROLE], "candidate");
    }

    #[test]
    fn replicas_change_only_when_the_release_sets_them() {
        assert_eq!(replicas(&candidate(Some(2)).spec(&stable())), Some(2));
    }

    #[test]
    fn a_global_service_stays_global() {
        let mut stable = stable();
        stable["Mode"] = json!({"Global": {}});
        let spec = candidate(Some(2)).spec(&stable);
        assert_eq!(spec["Mode"], json!({"Global": {}}));
        assert_eq!(replicas(&spec), None);
    }
}
