//! The Deployment controller, without ReplicaSets: it creates and deletes pods directly and
//! keeps the Deployment's status.
//!
//! Pods are named `<deployment>-<template hash>-<suffix>`, labelled with the template's
//! labels plus `pod-template-hash`, and owned by the Deployment. A new template gets all its
//! pods at once (full surge); old pods are deleted as new ones become ready, so ready pods
//! never drop below `spec.replicas` during a rollout.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::{CONTROLLER_MANAGER, pod_ready};
use crate::managed::Operation;
use crate::ops;
use crate::resources::{DEPLOYMENTS, PODS};
use crate::store::Store;
use crate::util;

/// What the controller remembers per Deployment (by uid): when it last made progress.
#[derive(Debug, Default)]
pub(crate) struct DeploymentController {
    progress: HashMap<String, Progress>,
}

#[derive(Debug)]
struct Progress {
    /// The counts and template last seen; a change is progress.
    snapshot: Value,
    at: Instant,
    wall: SystemTime,
}

impl DeploymentController {
    /// One pass over every Deployment.
    pub(crate) fn reconcile(&mut self, store: &mut Store) {
        let deployments: Vec<Value> = store
            .list(&DEPLOYMENTS, None)
            .into_iter()
            .cloned()
            .collect();
        let live: Vec<&str> = deployments
            .iter()
            .filter_map(|d| util::str_at(d, "/metadata/uid"))
            .collect();
        self.progress.retain(|uid, _| live.contains(&uid.as_str()));
        for deployment in &deployments {
            self.sync(store, deployment);
        }
    }

    fn sync(&mut self, store: &mut Store, deployment: &Value) {
        let (Some(ns), Some(_), Some(uid)) = (
            util::str_at(deployment, "/metadata/namespace"),
            util::str_at(deployment, "/metadata/name"),
            util::str_at(deployment, "/metadata/uid"),
        ) else {
            return;
        };
        let replicas = deployment
            .pointer("/spec/replicas")
            .and_then(Value::as_u64)
            .unwrap_or(1) as usize;
        let template = deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or(json!({}));
        let hash = util::template_hash(&template);

        let owned = |store: &Store| -> (Vec<Value>, Vec<Value>) {
            store
                .list(&PODS, Some(ns))
                .into_iter()
                .filter(|p| ops::owned_by(p, uid))
                .cloned()
                .partition(|p| {
                    util::str_at(p, "/metadata/labels/pod-template-hash") == Some(hash.as_str())
                })
        };
        let (new, _) = owned(store);
        if new.len() < replicas {
            for _ in new.len()..replicas {
                create_pod(store, deployment, &template, &hash);
            }
        } else if new.len() > replicas {
            delete_some(store, ns, new, replicas);
        }
        let (new, old) = owned(store);
        let new_ready = new.iter().filter(|p| pod_ready(p)).count();
        delete_some(store, ns, old, replicas.saturating_sub(new_ready));

        let (new, old) = owned(store);
        self.write_status(store, deployment, replicas, &hash, &new, &old);
    }

    fn write_status(
        &mut self,
        store: &mut Store,
        deployment: &Value,
        replicas: usize,
        hash: &str,
        new: &[Value],
        old: &[Value],
    ) {
        let (Some(ns), Some(name), Some(uid)) = (
            util::str_at(deployment, "/metadata/namespace"),
            util::str_at(deployment, "/metadata/name"),
            util::str_at(deployment, "/metadata/uid"),
        ) else {
            return;
        };
        let total = new.len() + old.len();
        let updated = new.len();
        let ready = new.iter().chain(old).filter(|p| pod_ready(p)).count();
        let available = ready;
        let generation = deployment
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let snapshot = json!([hash, generation, total, updated, ready, available]);
        let now = Instant::now();
        let progress = self
            .progress
            .entry(uid.to_string())
            .or_insert_with(|| Progress {
                snapshot: Value::Null,
                at: now,
                wall: SystemTime::now(),
            });
        if progress.snapshot != snapshot {
            progress.snapshot = snapshot;
            progress.at = now;
            progress.wall = SystemTime::now();
        }
        let deadline = deployment
            .pointer("/spec/progressDeadlineSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(600);
        let rs = format!("{name}-{hash}");
        let complete = updated == replicas && total == replicas && available >= replicas;
        let (progressing, reason, message) = if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs}\" has successfully progressed."),
            )
        } else if now.duration_since(progress.at).as_secs() >= deadline {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs}\" has timed out progressing."),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs}\" is progressing."),
            )
        };
        let (is_available, available_reason, available_message) = if available >= replicas {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        let old_conditions = deployment
            .pointer("/status/conditions")
            .and_then(Value::as_array);
        let progress_time = util::rfc3339(progress.wall);
        let conditions = vec![
            condition(
                old_conditions,
                "Available",
                is_available,
                available_reason,
                available_message,
                None,
            ),
            condition(
                old_conditions,
                "Progressing",
                progressing,
                reason,
                &message,
                Some(&progress_time),
            ),
        ];
        let mut status = Map::new();
        status.insert("observedGeneration".into(), generation);
        for (key, value) in [
            ("replicas", total),
            ("updatedReplicas", updated),
            ("readyReplicas", ready),
            ("availableReplicas", available),
            ("unavailableReplicas", replicas.saturating_sub(available)),
        ] {
            if value > 0 {
                status.insert(key.into(), json!(value));
            }
        }
        status.insert("conditions".into(), Value::Array(conditions));
        let _ = ops::update(
            store,
            &DEPLOYMENTS,
            ns,
            name,
            json!({"status": status}),
            CONTROLLER_MANAGER,
            true,
        );
    }
}

/// A condition, keeping its lastTransitionTime while its status stays and its lastUpdateTime
/// while nothing about it changes (`update_time` overrides the latter).
fn condition(
    old: Option<&Vec<Value>>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    update_time: Option<&str>,
) -> Value {
    let previous = old
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind));
    let now = util::now_rfc3339();
    let same_status =
        previous.is_some_and(|p| p.get("status").and_then(Value::as_str) == Some(status));
    let unchanged = same_status
        && previous.is_some_and(|p| {
            p.get("reason").and_then(Value::as_str) == Some(reason)
                && p.get("message").and_then(Value::as_str) == Some(message)
        });
    let transition = match previous {
        Some(p) if same_status => p.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
        _ => json!(now),
    };
    let update = match (update_time, previous) {
        (Some(t), _) => json!(t),
        (None, Some(p)) if unchanged => p.get("lastUpdateTime").cloned().unwrap_or(json!(now)),
        _ => json!(now),
    };
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
    })
}

fn create_pod(store: &mut Store, deployment: &Value, template: &Value, hash: &str) {
    let (Some(ns), Some(name), Some(uid)) = (
        util::str_at(deployment, "/metadata/namespace"),
        util::str_at(deployment, "/metadata/name"),
        util::str_at(deployment, "/metadata/uid"),
    ) else {
        return;
    };
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert("pod-template-hash".into(), json!(hash));
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if let Some(map) = spec.as_object_mut() {
        map.insert("nodeName".into(), json!("fake-node"));
        map.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
    }
    let mut metadata = json!({
        "name": format!("{name}-{hash}-{}", store.rng.suffix(5)),
        "generateName": format!("{name}-{hash}-"),
        "namespace": ns,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        }],
    });
    if let (Some(annotations), Some(map)) = (
        template.pointer("/metadata/annotations"),
        metadata.as_object_mut(),
    ) {
        map.insert("annotations".into(), annotations.clone());
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec});
    if let Err(e) = ops::create(store, &PODS, ns, pod, CONTROLLER_MANAGER, Operation::Update) {
        tracing::warn!("fake deployment controller: cannot create a pod for {ns}/{name}: {e}");
    }
}

/// Deletes pods until `keep` are left: not-ready ones first, then the newest.
fn delete_some(store: &mut Store, ns: &str, mut pods: Vec<Value>, keep: usize) {
    if pods.len() <= keep {
        return;
    }
    pods.sort_by_key(|p| {
        (
            pod_ready(p),
            std::cmp::Reverse(
                util::str_at(p, "/metadata/creationTimestamp")
                    .unwrap_or("")
                    .to_string(),
            ),
        )
    });
    let excess = pods.len() - keep;
    for pod in pods.iter().take(excess) {
        if let Some(name) = util::str_at(pod, "/metadata/name") {
            let _ = ops::delete(store, &PODS, ns, name, false);
        }
    }
}
