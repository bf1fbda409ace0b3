//! The candidate container's create body, cloned from the stable container's inspect.
//!
//! `docker inspect` shows a container's configuration merged with its image's: the image's
//! `ENV`, `CMD`, `ENTRYPOINT`, `WORKDIR`, `USER`, `HEALTHCHECK`, `STOPSIGNAL` and labels
//! appear as if the user had set them. Copied as they are onto the new image, they would
//! override what the new image says (its `ENV APP_VERSION=v2`, its new command). So what
//! the old image itself sets is subtracted first, and only what the user set on the
//! container (in the compose file, with `docker run`) is carried over: environment, mounts
//! and volumes (secret files included: Compose mounts them as bind files), networks,
//! healthcheck, restart policy, resources, user, entrypoint and command, labels. What
//! changes:
//!
//! - the image;
//! - published ports are dropped (`PortBindings`, `PublishAllPorts`): the stable container
//!   holds them, and the proxy is the entry point;
//! - network aliases, fixed addresses and MAC addresses are dropped: Compose gives every
//!   container the service's name as an alias, and a candidate answering to it would take
//!   requests around the proxy's weights;
//! - the host name (the old container's ID) and legacy links are dropped;
//! - labels: see [`crate::compose`].

use serde_json::{Map, Value};

/// Why a container cannot be cloned.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloneError {
    /// The inspect lacks a part every container has.
    #[error("the inspect of container '{container}' has no {part}")]
    Missing {
        /// The container.
        container: String,
        /// The missing part.
        part: &'static str,
    },
    /// The container shares another's or the host's network stack: it has no address of
    /// its own for the proxy.
    #[error(
        "container '{container}' uses network mode '{mode}': the docker backend needs containers on a network of their own (bridge or a Compose network)"
    )]
    NetworkMode {
        /// The container.
        container: String,
        /// Its `HostConfig.NetworkMode`.
        mode: String,
    },
}

/// The candidate: the body of `POST /containers/create` and the networks to connect it
/// to once created (the API before 1.44 attaches only one network at creation).
#[derive(Debug, PartialEq)]
pub struct Candidate {
    /// The create body.
    pub body: Value,
    /// Further networks with their endpoint settings, for `POST /networks/{id}/connect`.
    pub more_networks: Vec<(String, Value)>,
}

/// The container's name without Docker's leading slash.
pub fn name_of(inspect: &Value) -> String {
    inspect["Name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// Keys of `Config` that describe the container, not the engine's bookkeeping; each is
/// carried over unless the old image set the same value.
const CONFIG_KEYS: &[&str] = &[
    "Domainname",
    "User",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Cmd",
    "Healthcheck",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "ExposedPorts",
];

/// The create body of a candidate of `stable` (a container's inspect) running `image`.
/// `old_image` is the `Config` of the image `stable` runs (`Null` when it is gone: then
/// everything is carried over); `labels` are the candidate's labels (see
/// [`crate::compose::candidate_labels`]).
pub fn candidate(
    stable: &Value,
    old_image: &Value,
    image: &str,
    labels: Map<String, Value>,
) -> Result<Candidate, CloneError> {
    let container = name_of(stable);
    let missing = |part| CloneError::Missing {
        container: container.clone(),
        part,
    };
    let config = stable["Config"]
        .as_object()
        .ok_or_else(|| missing("Config"))?;
    let host_config = stable["HostConfig"]
        .as_object()
        .ok_or_else(|| missing("HostConfig"))?;

    let mut body = Map::new();
    for key in CONFIG_KEYS {
        if let Some(value) = config.get(*key)
            && !value.is_null()
            && old_image.get(*key) != Some(value)
        {
            body.insert((*key).to_string(), value.clone());
        }
    }
    let image_env: Vec<&Value> = old_image["Env"]
        .as_array()
        .map(|env| env.iter().collect())
        .unwrap_or_default();
    let env: Vec<Value> = config
        .get("Env")
        .and_then(Value::as_array)
        .map(|env| {
            env.iter()
                .filter(|entry| !image_env.contains(entry))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    if !env.is_empty() {
        body.insert("Env".into(), Value::Array(env));
    }
    body.insert("Image".into(), image.into());
    body.insert("Labels".into(), Value::Object(labels));

    let mut host = host_config.clone();
    host.remove("PortBindings");
    host.insert("PublishAllPorts".into(), false.into());
    host.remove("Links");
    host.remove("ContainerIDFile");
    normalize_ulimits(&mut host);

    let mode = host
        .get("NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    if mode == "host" || mode == "none" || mode.starts_with("container:") {
        return Err(CloneError::NetworkMode { container, mode });
    }
    let networks = stable["NetworkSettings"]["Networks"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    // The network named by the mode attaches at creation; `default` is the bridge.
    let primary = if networks.contains_key(&mode) {
        mode.clone()
    } else if mode == "default" && networks.contains_key("bridge") {
        "bridge".to_string()
    } else {
        networks.keys().next().cloned().unwrap_or(mode.clone())
    };
    host.insert("NetworkMode".into(), primary.clone().into());
    body.insert("HostConfig".into(), Value::Object(host));

    let mut endpoints = Map::new();
    let mut more_networks = Vec::new();
    for (name, settings) in &networks {
        let endpoint = endpoint_settings(settings);
        if *name == primary {
            endpoints.insert(name.clone(), endpoint);
        } else {
            more_networks.push((name.clone(), endpoint));
        }
    }
    body.insert(
        "NetworkingConfig".into(),
        serde_json::json!({ "EndpointsConfig": endpoints }),
    );
    Ok(Candidate {
        body: Value::Object(body),
        more_networks,
    })
}

/// What a candidate keeps of the stable container's settings on one network: driver
/// options only; no alias, address, MAC or link of the old container.
fn endpoint_settings(settings: &Value) -> Value {
    let mut endpoint = Map::new();
    if let Some(options) = settings.get("DriverOpts").filter(|o| !o.is_null()) {
        endpoint.insert("DriverOpts".into(), options.clone());
    }
    Value::Object(endpoint)
}

/// The `stop` grace period of a container, in seconds: its `StopTimeout`, else Docker's
/// default of 10.
pub fn stop_timeout(inspect: &Value) -> u64 {
    inspect["Config"]["StopTimeout"].as_u64().unwrap_or(10)
}

/// Puts the stable container's ulimits in the form every engine's create accepts. Podman's
/// inspect names them as the kernel does (`RLIMIT_NOFILE`) but its create takes only
/// Docker's names (`nofile`), so copied verbatim they would refuse the candidate; Docker's
/// own names pass through unchanged.
fn normalize_ulimits(host: &mut Map<String, Value>) {
    let Some(Value::Array(ulimits)) = host.get_mut("Ulimits") else {
        return;
    };
    for ulimit in ulimits.iter_mut() {
        if let Some(name) = ulimit.get("Name").and_then(Value::as_str) {
            let upper = name.to_ascii_uppercase();
            let short = upper
                .strip_prefix("RLIMIT_")
                .unwrap_or(&upper)
                .to_ascii_lowercase();
            ulimit["Name"] = Value::String(short);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Compose 1.29 container of `web` as `docker inspect` shows it, running an image
    /// whose own config is [`old_image`].
    fn compose_container() -> Value {
        json!({
            "Id": "abc123",
            "Name": "/shop_web_1",
            "Image": "sha256:old",
            "Config": {
                "Hostname": "abc123",
                "User": "1000",
                "Env": ["APP_VERSION=v1", "PATH=/bin", "DATABASE_URL=postgres://db/shop"],
                "Cmd": ["serve", "--port", "8080"],
                "Entrypoint": ["/demo-app"],
                "Image": "localhost/cutover-demo:v1",
                "WorkingDir": "/",
                "Healthcheck": {"Test": ["CMD", "/demo-app", "health"], "Interval": 1000000000},
                "StopSignal": "SIGINT",
                "StopTimeout": 25,
                "Volumes": {"/cache": {}},
                "Labels": {"com.docker.compose.service": "web"}
            },
            "HostConfig": {
                "Binds": ["shop_data:/data:rw", "/srv/shop/secrets/token:/run/secrets/token:ro"],
                "NetworkMode": "shop_default",
                "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "PublishAllPorts": false,
                "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
                "Memory": 268435456,
                "NanoCpus": 500000000,
                "Links": ["/shop_db_1:/shop_web_1/db"]
            },
            "NetworkSettings": {
                "Networks": {
                    "shop_default": {
                        "Aliases": ["web", "abc123"],
                        "IPAddress": "172.20.0.3",
                        "IPAMConfig": {"IPv4Address": "172.20.0.3"},
                        "MacAddress": "02:42:ac:14:00:03",
                        "NetworkID": "n1"
                    },
                    "shop_back": {"Aliases": ["web"], "IPAddress": "172.21.0.3", "NetworkID": "n2"}
                }
            }
        })
    }

    fn old_image() -> Value {
        json!({
            "Env": ["APP_VERSION=v1", "PATH=/bin"],
            "Entrypoint": ["/demo-app"],
            "Cmd": ["serve"],
            "WorkingDir": "/",
            "StopSignal": null
        })
    }

    fn clone_of(stable: &Value) -> Candidate {
        let mut labels = Map::new();
        labels.insert("dev.cutover.version".into(), "v2".into());
        candidate(stable, &old_image(), "localhost/cutover-demo:v2", labels).expect("clones")
    }

    #[test]
    fn what_the_user_set_is_carried_over_with_the_new_image() {
        let c = clone_of(&compose_container());
        let body = &c.body;
        assert_eq!(body["Image"], "localhost/cutover-demo:v2");
        assert_eq!(body["Env"], json!(["DATABASE_URL=postgres://db/shop"]));
        assert_eq!(body["Cmd"], json!(["serve", "--port", "8080"]));
        assert_eq!(body["User"], "1000");
        assert_eq!(body["Healthcheck"]["Test"][2], "health");
        assert_eq!(body["StopSignal"], "SIGINT");
        assert_eq!(body["StopTimeout"], 25);
        assert_eq!(body["Volumes"], json!({"/cache": {}}));
        let host = &body["HostConfig"];
        assert_eq!(
            host["Binds"],
            json!([
                "shop_data:/data:rw",
                "/srv/shop/secrets/token:/run/secrets/token:ro"
            ])
        );
        assert_eq!(host["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(host["Memory"], 268435456);
        assert_eq!(host["NanoCpus"], 500000000);
        assert_eq!(body["Labels"], json!({"dev.cutover.version": "v2"}));
    }

    #[test]
    fn ulimits_named_as_podman_inspects_them_are_created_by_their_docker_names() {
        let mut stable = compose_container();
        stable["HostConfig"]["Ulimits"] = json!([
            {"Name": "RLIMIT_NOFILE", "Soft": 1024, "Hard": 4096},
            {"Name": "nproc", "Soft": 1024, "Hard": 1024}
        ]);
        let c = clone_of(&stable);
        assert_eq!(
            c.body["HostConfig"]["Ulimits"],
            json!([
                {"Name": "nofile", "Soft": 1024, "Hard": 4096},
                {"Name": "nproc", "Soft": 1024, "Hard": 1024}
            ])
        );
    }

    #[test]
    fn what_the_old_image_set_is_left_to_the_new_image() {
        let body = clone_of(&compose_container()).body;
        // The old image's ENV, ENTRYPOINT and WORKDIR would hide the new image's.
        let env = body["Env"].as_array().expect("env");
        assert!(!env.contains(&json!("APP_VERSION=v1")), "{env:?}");
        assert!(!env.contains(&json!("PATH=/bin")), "{env:?}");
        assert!(body.get("Entrypoint").is_none(), "{body}");
        assert!(body.get("WorkingDir").is_none(), "{body}");
        // The old container's host name is its ID: not the candidate's.
        assert!(body.get("Hostname").is_none(), "{body}");
    }

    #[test]
    fn nothing_reaches_the_candidate_around_the_proxy() {
        let c = clone_of(&compose_container());
        let host = &c.body["HostConfig"];
        assert!(host.get("PortBindings").is_none(), "{host}");
        assert_eq!(host["PublishAllPorts"], false);
        assert!(host.get("Links").is_none(), "{host}");
        assert_eq!(host["NetworkMode"], "shop_default");
        // The primary network at creation, the other one connected afterwards; neither
        // with the service's alias, the old address or MAC.
        assert_eq!(
            c.body["NetworkingConfig"],
            json!({"EndpointsConfig": {"shop_default": {}}})
        );
        assert_eq!(c.more_networks, vec![("shop_back".to_string(), json!({}))]);
    }

    #[test]
    fn without_the_old_image_everything_is_carried_over() {
        let mut labels = Map::new();
        labels.insert("a".into(), "b".into());
        let body = candidate(&compose_container(), &Value::Null, "img:v2", labels)
            .expect("clones")
            .body;
        assert_eq!(body["Entrypoint"], json!(["/demo-app"]));
        assert_eq!(body["Env"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_default_bridge_container_attaches_to_the_bridge() {
        let mut stable = compose_container();
        stable["HostConfig"]["NetworkMode"] = json!("default");
        stable["NetworkSettings"]["Networks"] = json!({"bridge": {"IPAddress": "172.17.0.2"}});
        let c = clone_of(&stable);
        assert_eq!(c.body["HostConfig"]["NetworkMode"], "bridge");
        assert!(c.more_networks.is_empty());
    }

    #[test]
    fn shared_network_stacks_are_refused() {
        for mode in ["host", "container:db", "none"] {
            let mut stable = compose_container();
            stable["HostConfig"]["NetworkMode"] = json!(mode);
            let error =
                candidate(&stable, &old_image(), "img:v2", Map::new()).expect_err("refused");
            assert!(
                error
                    .to_string()
                    .contains(&format!("network mode '{mode}'")),
                "{error}"
            );
        }
    }

    #[test]
    fn stop_grace_is_the_containers_own() {
        assert_eq!(stop_timeout(&compose_container()), 25);
        assert_eq!(stop_timeout(&json!({"Config": {}})), 10);
    }
}
