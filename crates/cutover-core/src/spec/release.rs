use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AnalysisSpec, GuardrailSpec, HooksSpec, StrategySpec, TrafficSpec};

/// The `apiVersion` every document of format version 1 carries.
pub const API_VERSION: &str = "cutover.dev/v1";

/// A release: which service gets which new version, how traffic moves to it and how it is
/// judged. One document per file, in YAML or TOML.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "cutover Release")]
pub struct Release {
    /// Always `cutover.dev/v1` for this format version.
    pub api_version: String,
    /// Always `Release`.
    pub kind: String,
    /// The release's name and labels.
    pub metadata: Metadata,
    /// What to release and how.
    pub spec: ReleaseSpec,
}

/// A strategy preset: the strategy section of a release, kept in `strategies/` and picked by
/// name with `strategy: {use: NAME}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StrategyDocument {
    /// Always `cutover.dev/v1`.
    pub api_version: String,
    /// Always `Strategy`.
    pub kind: String,
    /// The preset's name (what `use:` refers to) and labels.
    pub metadata: Metadata,
    /// The strategy itself.
    pub spec: StrategySpec,
}

/// Names and labels, as in Kubernetes object metadata.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The release's name: the handle for `cutover status NAME`, `promote NAME`, and the
    /// `release` label on every metric. Lowercase letters, digits and `-`, at most 63 chars.
    pub name: String,
    /// Kubernetes: the namespace of a `Release` object. The controller reads it from the
    /// object itself; it is allowed here so that a manifest of a `Release` object lints as
    /// the release file it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels, copied onto the workloads cutover creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form notes for people, never interpreted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The body of a release.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Where the service runs and how its two slots (stable and candidate) are made.
    pub backend: Backend,
    /// The new version's image (Swarm and Kubernetes). The local backend takes its
    /// candidate from `backend.local.candidate` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The new version's name: the `version` label on the proxy's metrics and what
    /// `{{candidate}}` stands for in queries. Defaults to the image's tag, or (local
    /// backend) a short hash of the candidate's addresses or command. Written with an
    /// image tag's characters, `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, so any tag can name a
    /// version and no name needs quoting in a label, query or URL (checked by
    /// `validate::is_version_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The name of the version serving now, for a first release whose backend cannot tell
    /// (the local backend). Later releases take it from the version they promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_version: Option<String>,
    /// How many instances the new version runs. Default: as many as the stable version
    /// runs (Swarm, Kubernetes), or 1 (local backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// The port the service listens on inside its containers or processes.
    pub port: u16,
    /// How the proxy finds this service and which requests may go to the candidate.
    #[serde(default)]
    pub traffic: TrafficSpec,
    /// How traffic moves from stable to candidate.
    pub strategy: StrategySpec,
    /// The metrics that judge the candidate.
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Hard limits the proxy enforces by itself, tripping a rollback at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<GuardrailSpec>,
    /// Webhooks called at fixed points of the rollout.
    #[serde(default)]
    pub hooks: HooksSpec,
}

/// Where the service runs. Exactly one key: `local`, `swarm`, `kubernetes` or `docker`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Backend {
    /// Processes or addresses on hosts cutover does not orchestrate.
    Local(LocalTarget),
    /// A Docker Swarm service.
    Swarm(SwarmTarget),
    /// A Kubernetes Deployment.
    Kubernetes(KubernetesTarget),
    /// Containers on one Docker (or Podman) engine: a Compose service or containers
    /// chosen by name or label.
    Docker(DockerTarget),
}

impl Backend {
    /// The backend's key in the release file.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Local(_) => "local",
            Backend::Swarm(_) => "swarm",
            Backend::Kubernetes(_) => "kubernetes",
            Backend::Docker(_) => "docker",
        }
    }
}

/// The local backend's two slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalTarget {
    /// The version serving now.
    pub stable: LocalSlot,
    /// The new version.
    pub candidate: LocalSlot,
    /// The HTTP path probed on every instance until it answers 2xx: the slot is ready when
    /// all of them do.
    #[serde(default = "default_readiness_path")]
    pub readiness_path: String,
}

fn default_readiness_path() -> String {
    "/".to_string()
}

/// One local slot: fixed addresses, or a command cutover runs and supervises.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum LocalSlot {
    /// `host:port` addresses of instances started elsewhere.
    Addresses(Vec<String>),
    /// A command (program and arguments) cutover starts `replicas` times. `{{port}}` in an
    /// argument is replaced with the port cutover assigns to each instance.
    Command(Vec<String>),
}

/// A Docker Swarm service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SwarmTarget {
    /// The existing service that serves now (say, from `docker stack deploy`).
    pub service: String,
    /// The overlay network on which the proxy reaches the service's tasks.
    pub network: String,
}

/// Containers on one Docker engine that serve now, and how the proxy reaches them. The
/// stable containers are chosen by exactly one of: `service` (a Compose service, with its
/// `project`), `containers` (names or IDs) or `label`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerTarget {
    /// The Compose project of `service` (the `com.docker.compose.project` label). Needed
    /// only when several projects on the engine have a service of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// A Compose service (the `com.docker.compose.service` label): its running containers
    /// are the stable ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The stable containers by name or ID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<String>,
    /// The stable containers by label: `key` or `key=value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The network on which the proxy reaches the containers (the project's network when
    /// the proxy runs as a container beside them). Default: the stable container's only
    /// network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The HTTP path probed on each candidate container until it answers 2xx, when its
    /// image has no Docker healthcheck (with one, Docker's health status decides).
    #[serde(default = "default_readiness_path")]
    pub readiness_path: String,
}

/// A Kubernetes Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesTarget {
    /// The namespace of the Deployment.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The existing Deployment that serves now.
    pub deployment: String,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// The tag of an image reference, without its digest: `shop/web:v1@sha256:..` → `v1`;
/// `None` when the reference has no tag (`localhost:5000/web` names a registry port, not a
/// tag). What a version is called when the release file does not name it.
pub fn image_tag(image: &str) -> Option<&str> {
    let image = image.split('@').next()?;
    let (_, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !tag.is_empty()).then_some(tag)
}

#[cfg(test)]
mod image_tests {
    use super::image_tag;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("shop/web:v1"), Some("v1"));
        assert_eq!(image_tag("shop/web:v1@sha256:abcd"), Some("v1"));
        assert_eq!(image_tag("localhost:5000/web"), None);
        assert_eq!(image_tag("web"), None);
        assert_eq!(image_tag("web@sha256:abcd"), None);
    }
}
