//! The EndpointSlice controller: one slice per Service with a selector, listing the pods the
//! selector matches that have an IP.

use serde_json::{Map, Value, json};

use super::{CONTROLLER_MANAGER, pod_ready};
use crate::managed::Operation;
use crate::ops;
use crate::resources::{ENDPOINTSLICES, PODS, SERVICES};
use crate::selector::LabelSelector;
use crate::store::Store;
use crate::util;

const SERVICE_NAME: &str = "kubernetes.io/service-name";
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER: &str = "endpointslice-controller.k8s.io";

/// One pass over every Service.
pub(crate) fn reconcile(store: &mut Store) {
    let services: Vec<Value> = store.list(&SERVICES, None).into_iter().cloned().collect();
    for service in &services {
        sync(store, service);
    }
}

fn sync(store: &mut Store, service: &Value) {
    let (Some(ns), Some(name), Some(uid)) = (
        util::str_at(service, "/metadata/namespace"),
        util::str_at(service, "/metadata/name"),
        util::str_at(service, "/metadata/uid"),
    ) else {
        return;
    };
    let Some(selector) = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
    else {
        return;
    };
    let selector = LabelSelector::from_map(selector);
    let pods: Vec<Value> = store
        .list(&PODS, Some(ns))
        .into_iter()
        .filter(|p| selector.matches_object(p))
        .cloned()
        .collect();
    let endpoints: Vec<Value> = pods
        .iter()
        .filter_map(|pod| {
            let ip = util::str_at(pod, "/status/podIP").filter(|ip| !ip.is_empty())?;
            let ready = pod_ready(pod);
            Some(json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": "fake-node",
                "targetRef": {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": util::str_at(pod, "/metadata/name"),
                    "uid": util::str_at(pod, "/metadata/uid"),
                },
            }))
        })
        .collect();
    let ports: Vec<Value> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|port| {
            let number = target_port(port, &pods)?;
            Some(json!({
                "name": port.get("name").and_then(Value::as_str).unwrap_or(""),
                "protocol": port.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
                "port": number,
            }))
        })
        .collect();
    let mut labels: Map<String, Value> = service
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(SERVICE_NAME.into(), json!(name));
    labels.insert(MANAGED_BY.into(), json!(CONTROLLER));

    let mut slices: Vec<Value> = store
        .list(&ENDPOINTSLICES, Some(ns))
        .into_iter()
        .filter(|s| {
            util::str_at(
                s,
                &format!("/metadata/labels/{}", SERVICE_NAME.replace('/', "~1")),
            ) == Some(name)
                && ops::owned_by(s, uid)
        })
        .cloned()
        .collect();
    let Some(mut slice) = (!slices.is_empty()).then(|| slices.remove(0)) else {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-{}", store.rng.suffix(5)),
                "generateName": format!("{name}-"),
                "namespace": ns,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "v1",
                    "kind": "Service",
                    "name": name,
                    "uid": uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        });
        if let Err(e) = ops::create(
            store,
            &ENDPOINTSLICES,
            ns,
            slice,
            CONTROLLER_MANAGER,
            Operation::Update,
        ) {
            tracing::warn!(
                "fake endpointslice controller: cannot create a slice for {ns}/{name}: {e}"
            );
        }
        return;
    };
    for extra in slices {
        if let Some(extra_name) = util::str_at(&extra, "/metadata/name") {
            let _ = ops::delete(store, &ENDPOINTSLICES, ns, extra_name, false);
        }
    }
    let Some(slice_name) = util::str_at(&slice, "/metadata/name").map(str::to_string) else {
        return;
    };
    if let Some(map) = slice.as_object_mut() {
        map.insert("endpoints".into(), Value::Array(endpoints));
        map.insert("ports".into(), Value::Array(ports));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("labels".into(), Value::Object(labels));
        }
    }
    // A write that changes nothing is a no-op in `ops::update`.
    let _ = ops::update(
        store,
        &ENDPOINTSLICES,
        ns,
        &slice_name,
        slice,
        CONTROLLER_MANAGER,
        false,
    );
}

/// The port number a Service port sends to: `targetPort` as a number, or as a name resolved
/// through the first selected pod with a container port of that name; `port` without one.
fn target_port(port: &Value, pods: &[Value]) -> Option<u64> {
    match port.get("targetPort") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(text)) => text.parse::<u64>().ok().or_else(|| {
            pods.iter().find_map(|pod| {
                pod.pointer("/spec/containers")?
                    .as_array()?
                    .iter()
                    .filter_map(|c| c.get("ports")?.as_array())
                    .flatten()
                    .find(|p| p.get("name").and_then(Value::as_str) == Some(text.as_str()))?
                    .get("containerPort")?
                    .as_u64()
            })
        }),
        _ => port.get("port").and_then(Value::as_u64),
    }
}
