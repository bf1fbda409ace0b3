//! The objects cutover applies: a candidate Deployment cloned from the stable one, and a
//! headless Service per Deployment so that its pods get an EndpointSlice.
//!
//! Pure functions from the source Deployment's JSON (as the API server gave it, so no field
//! is lost in a typed round trip) to the JSON sent by server-side apply.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::keys;

/// What a candidate Deployment is made of.
pub struct CandidateOf<'a> {
    /// Its name (`<anchor>-green` or `-blue`).
    pub name: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The controller's name.
    pub controller: &'a str,
    /// The release's name.
    pub release: &'a str,
    /// The version's name.
    pub version: &'a str,
    /// The new image.
    pub image: &'a str,
    /// The port the service listens on: picks the container that gets the image.
    pub port: u16,
    /// Replicas, if the release sets them; otherwise the stable Deployment's.
    pub replicas: Option<u32>,
    /// The release file's `metadata.labels`, copied onto the Deployment.
    pub labels: &'a BTreeMap<String, String>,
    /// The domain of the keys in its selector and pod labels: [`keys::Domain::Current`]
    /// for a Deployment created now, and the one it was created with for a Deployment that
    /// exists (a selector cannot change). Its own labels and annotation are always current.
    pub selector_domain: keys::Domain,
}

/// Why a Deployment cannot be cloned or released.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The selector uses `matchExpressions`, which a Service selector cannot express.
    #[error(
        "Deployment '{0}' selects its pods with matchExpressions; cutover needs a selector of \
         matchLabels only (a Service selector, which gives the proxy its endpoints, can express \
         nothing else)"
    )]
    MatchExpressions(String),
    /// The selector is empty.
    #[error("Deployment '{0}' has no spec.selector.matchLabels")]
    NoSelector(String),
    /// No container to give the image.
    #[error("Deployment '{0}' has no containers in spec.template.spec.containers")]
    NoContainers(String),
    /// Several containers, none of which declares the release's port.
    #[error(
        "Deployment '{deployment}' has several containers and none declares containerPort \
         {port} (the release's spec.port), so cutover cannot tell which one gets the new \
         image: declare the port on the service's container"
    )]
    WhichContainer {
        /// The Deployment.
        deployment: String,
        /// The release's port.
        port: u16,
    },
}

/// The Deployment's `spec.selector.matchLabels`, checked to be the whole selector.
pub fn selector(deployment: &Value) -> Result<BTreeMap<String, String>, TemplateError> {
    let name = deployment["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let selector = &deployment["spec"]["selector"];
    if selector["matchExpressions"]
        .as_array()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(TemplateError::MatchExpressions(name));
    }
    let labels: BTreeMap<String, String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    if labels.is_empty() {
        return Err(TemplateError::NoSelector(name));
    }
    Ok(labels)
}

/// The index of the container that runs the service: the one exposing `port`, else the
/// first.
pub fn service_container(deployment: &Value, port: u16) -> Result<usize, TemplateError> {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            TemplateError::NoContainers(
                deployment["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })?;
    let exposing = containers.iter().position(|c| {
        c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["containerPort"].as_u64() == Some(u64::from(port)))
    });
    match exposing {
        Some(index) => Ok(index),
        None if containers.len() == 1 => Ok(0),
        // Guessing could put the new image into a sidecar.
        None => Err(TemplateError::WhichContainer {
            deployment: deployment["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            port,
        }),
    }
}

/// The image the service container of `deployment` runs.
pub fn image(deployment: &Value, port: u16) -> Option<String> {
    let index = service_container(deployment, port).ok()?;
    deployment["spec"]["template"]["spec"]["containers"][index]["image"]
        .as_str()
        .map(str::to_string)
}

impl CandidateOf<'_> {
    /// The candidate Deployment, cloned from `source` (the stable Deployment as read).
    ///
    /// The pod template is kept whole except for the service container's image and the
    /// pod labels: the source's selector keys are dropped and cutover's controller,
    /// release and colour labels added, and the new selector is exactly those three (two
    /// controllers sharing a namespace and a release name still select apart). So the source's selector
    /// (and any Service of the user's that uses it) never matches the candidate's pods:
    /// nothing reaches the candidate except through the proxy's weights.
    pub fn deployment(&self, source: &Value) -> Result<Value, TemplateError> {
        let source_selector = selector(source)?;
        let container = service_container(source, self.port)?;
        let colour = keys::colour_of(self.name);
        let mut template = source["spec"]["template"].clone();
        let mut pod_labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for key in source_selector.keys() {
            pod_labels.remove(key);
        }
        pod_labels.retain(|k, _| !keys::is_ours(k) && k != "pod-template-hash");
        let domain = self.selector_domain;
        let selected = json!({
            domain.key(keys::CONTROLLER): self.controller,
            domain.key(keys::RELEASE): self.release,
            domain.key(keys::COLOUR): colour,
        });
        if let Value::Object(selected) = &selected {
            pod_labels.extend(selected.clone());
        }
        template["metadata"]["labels"] = Value::Object(pod_labels);
        template["spec"]["containers"][container]["image"] = self.image.into();
        if let Some(metadata) = template["metadata"].as_object_mut() {
            metadata.remove("creationTimestamp");
        }

        let mut labels: Map<String, Value> = source["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        labels.retain(|k, _| !keys::is_ours(k) && !is_tracking_label(k));
        for (k, v) in self.labels {
            labels.insert(k.clone(), v.clone().into());
        }
        labels.insert(keys::CONTROLLER.into(), self.controller.into());
        labels.insert(keys::RELEASE.into(), self.release.into());
        labels.insert(keys::COLOUR.into(), colour.into());

        let replicas = self
            .replicas
            .map(u64::from)
            .or_else(|| source["spec"]["replicas"].as_u64())
            .unwrap_or(1);
        let mut spec = json!({
            "replicas": replicas,
            "selector": { "matchLabels": selected },
            "template": template,
        });
        for field in [
            "strategy",
            "minReadySeconds",
            "progressDeadlineSeconds",
            "revisionHistoryLimit",
        ] {
            if let Some(value) = source["spec"].get(field) {
                spec[field] = value.clone();
            }
        }
        Ok(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": { keys::VERSION: self.version },
            },
            "spec": spec,
        }))
    }
}

/// Labels by which a GitOps or packaging tool claims an object as its own (Argo CD's
/// label tracking, Flux, Helm). A candidate carrying them would be claimed too, and
/// pruned as missing from Git, serving or not; cutover's Deployments are cutover's.
fn is_tracking_label(key: &str) -> bool {
    matches!(
        key,
        "app.kubernetes.io/instance"
            | "app.kubernetes.io/managed-by"
            | "argocd.argoproj.io/instance"
    ) || key.starts_with("kustomize.toolkit.fluxcd.io/")
        || key.starts_with("helm.toolkit.fluxcd.io/")
}

/// The headless Service selecting `deployment`'s pods (by its `selector`), so that the
/// EndpointSlice controller publishes their addresses. Its labels (and so its slices')
/// name the controller, the release and the Deployment. The Service of a Deployment an
/// older version made (its selector in the old key domain) keeps the old controller key
/// beside the new one: its slices then stay in the old domain's watch while they join the
/// new one, and are never out of both.
pub fn slot_service(
    deployment: &str,
    namespace: &str,
    controller: &str,
    release: &str,
    selector: &BTreeMap<String, String>,
    port: u16,
) -> Value {
    let mut labels = json!({
        keys::CONTROLLER: controller,
        keys::RELEASE: release,
        keys::DEPLOYMENT: deployment,
    });
    if selector.keys().any(|k| k.starts_with(keys::LEGACY_PREFIX)) {
        labels[keys::legacy(keys::CONTROLLER)] = json!(controller);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": keys::service_name(deployment),
            "namespace": namespace,
            "labels": labels,
        },
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": [{ "name": "http", "port": port, "targetPort": port, "protocol": "TCP" }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_of_an_old_selector_keeps_the_old_controller_key_beside_the_new() {
        let old: BTreeMap<String, String> =
            [("cutover.io/colour".to_string(), "green".to_string())].into();
        let service = slot_service("web-green", "shop", "ctl", "web", &old, 8080);
        let labels = &service["metadata"]["labels"];
        assert_eq!(labels["cutover.dev/controller"], "ctl", "{labels}");
        assert_eq!(labels["cutover.io/controller"], "ctl", "{labels}");
        let new: BTreeMap<String, String> =
            [("cutover.dev/colour".to_string(), "green".to_string())].into();
        let service = slot_service("web-green", "shop", "ctl", "web", &new, 8080);
        let labels = service["metadata"]["labels"].as_object().expect("labels");
        assert!(
            labels.keys().all(|k| !k.starts_with("cutover.io/")),
            "{labels:?}"
        );
    }

    fn web() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop",
                "labels": { "app": "web", "team": "a", "app.kubernetes.io/instance": "shop",
                            "kustomize.toolkit.fluxcd.io/name": "apps" },
                "resourceVersion": "12", "uid": "u1",
            },
            "spec": {
                "replicas": 3,
                "progressDeadlineSeconds": 120,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web", "tier": "front" },
                                  "annotations": { "prometheus.io/scrape": "true" } },
                    "spec": { "containers": [
                        { "name": "sidecar", "image": "envoy:1" },
                        { "name": "app", "image": "shop/web:v1",
                          "ports": [{ "containerPort": 8080 }],
                          "env": [{ "name": "MODE", "value": "prod" }],
                          "readinessProbe": { "httpGet": { "path": "/healthz", "port": 8080 } } },
                    ]},
                },
            },
            "status": { "replicas": 3 },
        })
    }

    fn candidate(replicas: Option<u32>) -> Value {
        candidate_in(replicas, keys::Domain::Current)
    }

    fn candidate_in(replicas: Option<u32>, selector_domain: keys::Domain) -> Value {
        let labels = BTreeMap::from([("owner".to_string(), "payments".to_string())]);
        CandidateOf {
            name: "web-green",
            namespace: "shop",
            controller: "cutover",
            release: "web",
            version: "v2",
            image: "shop/web:v2",
            port: 8080,
            replicas,
            labels: &labels,
            selector_domain,
        }
        .deployment(&web())
        .expect("clones")
    }

    #[test]
    fn the_candidate_keeps_the_template_and_changes_the_image_of_the_service_container() {
        let c = candidate(None);
        let containers = &c["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "envoy:1");
        assert_eq!(containers[1]["image"], "shop/web:v2");
        assert_eq!(
            containers[1]["env"],
            web()["spec"]["template"]["spec"]["containers"][1]["env"]
        );
        assert_eq!(
            containers[1]["readinessProbe"],
            web()["spec"]["template"]["spec"]["containers"][1]["readinessProbe"]
        );
        assert_eq!(
            c["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
            "true"
        );
        assert_eq!(c["spec"]["replicas"], 3);
        assert_eq!(c["spec"]["progressDeadlineSeconds"], 120);
        assert_eq!(c["metadata"]["annotations"][keys::VERSION], "v2");
        assert_eq!(c["metadata"]["labels"]["owner"], "payments");
        assert_eq!(c["metadata"]["labels"]["team"], "a");
        // Not claimed by the GitOps tool that owns the stable Deployment.
        assert!(
            c["metadata"]["labels"]
                .get("app.kubernetes.io/instance")
                .is_none()
        );
        assert!(
            c["metadata"]["labels"]
                .get("kustomize.toolkit.fluxcd.io/name")
                .is_none()
        );
        assert_eq!(c["metadata"]["labels"][keys::CONTROLLER], "cutover");
        assert!(c["metadata"].get("resourceVersion").is_none());
        assert!(c.get("status").is_none());
        assert_eq!(candidate(Some(1))["spec"]["replicas"], 1);
    }

    #[test]
    fn the_selectors_never_overlap() {
        let c = candidate(None);
        let pod_labels = c["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .expect("labels");
        // The stable selector (app=web) does not match the candidate's pods ...
        assert!(!pod_labels.contains_key("app"));
        assert_eq!(pod_labels["tier"], "front");
        // ... and the candidate's selector matches its own pods, not the stable ones.
        let selector = c["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("sel");
        for (k, v) in selector {
            assert_eq!(pod_labels.get(k), Some(v));
        }
        assert!(!selector.contains_key("app"));
        // A clone of the clone stays apart from both.
        let labels = BTreeMap::new();
        let blue = CandidateOf {
            name: "web-blue",
            namespace: "shop",
            controller: "cutover",
            release: "web",
            version: "v3",
            image: "shop/web:v3",
            port: 8080,
            replicas: None,
            labels: &labels,
            selector_domain: keys::Domain::Current,
        }
        .deployment(&c)
        .expect("clones");
        assert_eq!(
            blue["spec"]["template"]["metadata"]["labels"][keys::COLOUR],
            "blue"
        );
        assert_eq!(
            blue["spec"]["selector"]["matchLabels"][keys::COLOUR],
            "blue"
        );
    }

    #[test]
    fn selectors_cutover_cannot_express_are_refused() {
        let mut d = web();
        d["spec"]["selector"]["matchExpressions"] =
            json!([{ "key": "app", "operator": "In", "values": ["web"] }]);
        assert!(matches!(
            selector(&d),
            Err(TemplateError::MatchExpressions(_))
        ));
        d["spec"]["selector"] = json!({});
        assert!(matches!(selector(&d), Err(TemplateError::NoSelector(_))));
        assert_eq!(image(&web(), 8080).as_deref(), Some("shop/web:v1"));
        assert_eq!(image(&web(), 9999), None);
        assert!(matches!(
            service_container(&web(), 9999),
            Err(TemplateError::WhichContainer { port: 9999, .. })
        ));
    }

    #[test]
    fn a_candidate_an_older_version_created_keeps_its_selector_and_gets_new_labels() {
        let old = candidate_in(None, keys::Domain::Legacy);
        let selector = &old["spec"]["selector"]["matchLabels"];
        assert_eq!(selector["cutover.io/colour"], "green", "{selector}");
        assert_eq!(selector["cutover.io/release"], "web", "{selector}");
        assert!(selector.get(keys::COLOUR).is_none(), "{selector}");
        let pod_labels = &old["spec"]["template"]["metadata"]["labels"];
        assert_eq!(pod_labels["cutover.io/colour"], "green", "{pod_labels}");
        assert!(pod_labels.get(keys::COLOUR).is_none(), "{pod_labels}");
        let own = &old["metadata"]["labels"];
        assert_eq!(own[keys::COLOUR], "green", "{own}");
        assert!(own.get("cutover.io/colour").is_none(), "{own}");
        assert_eq!(old["metadata"]["annotations"][keys::VERSION], "v2");
    }
}
