//! The candidate's service spec, cloned from the stable one.
//!
//! Everything users set up with Compose or `docker service create` stays true for the new
//! version: environment, secrets, configs, mounts, networks, placement, resources,
//! healthcheck, restart and update policies, labels. Three things change:
//!
//! - the image;
//! - the replica count (`spec.replicas` of the release; a global service stays global);
//! - published ports are dropped: the stable service keeps its published ports, and a
//!   second service cannot publish the same ones. cutover's proxy reaches the candidate
//!   on the overlay network, so nothing is lost.

use bollard::models::{ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated};

use crate::labels::SlotLabels;

/// What makes the candidate differ from the stable service.
pub struct CandidateOf<'a> {
    /// The new service's name.
    pub name: &'a str,
    /// The new version's image.
    pub image: &'a str,
    /// Replicas (ignored for a global service).
    pub replicas: u32,
    /// cutover's labels for the candidate.
    pub labels: SlotLabels<'a>,
}

impl CandidateOf<'_> {
    /// The candidate's spec: `stable` with the changes above.
    pub fn spec(&self, stable: &ServiceSpec) -> ServiceSpec {
        let mut spec = stable.clone();
        spec.name = Some(self.name.to_string());
        let mut labels = spec.labels.take().unwrap_or_default();
        self.labels.apply(&mut labels);
        spec.labels = Some(labels);
        let template = spec.task_template.get_or_insert_with(Default::default);
        let container = template.container_spec.get_or_insert_with(Default::default);
        container.image = Some(self.image.to_string());
        let global = spec.mode.as_ref().is_some_and(|m| m.global.is_some());
        if !global {
            spec.mode = Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::from(self.replicas)),
                }),
                ..Default::default()
            });
        }
        if let Some(endpoint) = spec.endpoint_spec.as_mut() {
            endpoint.ports = None;
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{
        EndpointPortConfig, EndpointSpec, Mount, NetworkAttachmentConfig, TaskSpec,
        TaskSpecContainerSpec, TaskSpecContainerSpecSecrets,
    };

    use super::*;
    use crate::labels::{self, Role};

    fn stable() -> ServiceSpec {
        ServiceSpec {
            name: Some("web".into()),
            labels: Some(HashMap::from([
                ("com.docker.stack.namespace".to_string(), "shop".to_string()),
                (labels::STATE.to_string(), "{}".to_string()),
            ])),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some("shop/web:v1@sha256:abc".into()),
                    env: Some(vec!["MODE=prod".into()]),
                    mounts: Some(vec![Mount {
                        target: Some("/data".into()),
                        source: Some("web-data".into()),
                        ..Default::default()
                    }]),
                    secrets: Some(vec![TaskSpecContainerSpecSecrets {
                        secret_id: Some("s1".into()),
                        secret_name: Some("db-password".into()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some("net-id".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(4) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                ports: Some(vec![EndpointPortConfig {
                    target_port: Some(8080),
                    published_port: Some(80),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn candidate() -> CandidateOf<'static> {
        CandidateOf {
            name: "web-green",
            image: "shop/web:v2",
            replicas: 2,
            labels: SlotLabels {
                controller: "cutover",
                release: "web",
                role: Role::Candidate,
                epoch: 1,
                version: "v2",
                base: "web",
                port: 8080,
                network: "net",
            },
        }
    }

    #[test]
    fn only_the_image_replicas_ports_and_cutover_labels_change() {
        let stable = stable();
        let spec = candidate().spec(&stable);
        assert_eq!(spec.name.as_deref(), Some("web-green"));
        let container = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .cloned()
            .unwrap_or_default();
        assert_eq!(container.image.as_deref(), Some("shop/web:v2"));
        let stable_container = stable
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .cloned()
            .unwrap_or_default();
        assert_eq!(container.env, stable_container.env);
        assert_eq!(container.mounts, stable_container.mounts);
        assert_eq!(container.secrets, stable_container.secrets);
        assert_eq!(
            spec.task_template.as_ref().and_then(|t| t.networks.clone()),
            stable
                .task_template
                .as_ref()
                .and_then(|t| t.networks.clone())
        );
        assert_eq!(
            spec.mode
                .and_then(|m| m.replicated)
                .and_then(|r| r.replicas),
            Some(2)
        );
        assert_eq!(spec.endpoint_spec.and_then(|e| e.ports), None);
        let labels = spec.labels.unwrap_or_default();
        assert_eq!(
            labels.get("com.docker.stack.namespace").map(String::as_str),
            Some("shop")
        );
        assert_eq!(labels.get(labels::STATE), None);
        assert_eq!(
            labels.get(labels::ROLE).map(String::as_str),
            Some("candidate")
        );
    }

    #[test]
    fn a_global_service_stays_global() {
        let mut stable = stable();
        stable.mode = Some(ServiceSpecMode {
            global: Some(HashMap::new()),
            ..Default::default()
        });
        let spec = candidate().spec(&stable);
        let mode = spec.mode.unwrap_or_default();
        assert!(mode.global.is_some());
        assert!(mode.replicated.is_none());
    }
}
