//! [`EndpointCache`]: the EndpointSlices of this controller's Services, watched, so that
//! the proxy's endpoints follow pods Kubernetes starts, replaces or marks unready without
//! an API call per refresh.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::keys;

/// The watched slices. Cheap to clone.
#[derive(Clone)]
pub struct EndpointCache {
    /// One store per key domain: slices of Services labelled under the new keys, and of
    /// those an older version labelled (see [`keys::LEGACY_PREFIX`]), until they are applied
    /// again. A label selector cannot say "either key", so there are two watches.
    stores: [Store<EndpointSlice>; 2],
}

impl EndpointCache {
    /// Starts watching the slices labelled with `controller` in `namespace`, under either
    /// key domain. Each watch lists again when the server says its resource version is too old (410 Gone) and
    /// retries with back-off while the server is away; the cache keeps its last contents
    /// meanwhile.
    pub fn start(client: Client, namespace: &str, controller: &str) -> EndpointCache {
        let stores = [keys::Domain::Current, keys::Domain::Legacy].map(|domain| {
            let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
            let selector = format!("{}={controller}", domain.key(keys::CONTROLLER));
            let config = watcher::Config::default().labels(&selector);
            let (store, writer) = reflector::store();
            let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
            tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    if let Err(e) = event {
                        tracing::warn!(error = %e, "EndpointSlice watch: retrying");
                    }
                }
            });
            store
        });
        EndpointCache { stores }
    }

    /// Waits up to `limit` for the first complete list; `false` if it has not come.
    pub async fn ready(&self, limit: Duration) -> bool {
        let [current, legacy] = &self.stores;
        tokio::time::timeout(limit, async {
            current.wait_until_ready().await.is_ok() && legacy.wait_until_ready().await.is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// `host:port` of every ready endpoint of `deployment`'s slot Service, sorted. With
    /// the Service's `uid`, only its own slices count: those of a Service of the same
    /// name deleted a moment ago, awaiting garbage collection, hold addresses of pods
    /// that are gone.
    pub fn endpoints(&self, deployment: &str, port: u16, uid: Option<&str>) -> Vec<String> {
        let service = keys::service_name(deployment);
        // A slice whose Service was just relabelled can sit in both stores for a moment.
        let mut slices: Vec<_> = self.stores.iter().flat_map(Store::state).collect();
        slices.sort_by(|a, b| a.metadata.uid.cmp(&b.metadata.uid));
        slices.dedup_by(|a, b| a.metadata.uid.is_some() && a.metadata.uid == b.metadata.uid);
        ready_endpoints(
            slices
                .iter()
                .map(|s| s.as_ref())
                .filter(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("kubernetes.io/service-name"))
                        == Some(&service)
                })
                .filter(|s| {
                    uid.is_none_or(|uid| {
                        s.metadata
                            .owner_references
                            .iter()
                            .flatten()
                            .any(|o| o.uid == uid)
                    })
                }),
            port,
        )
    }
}

/// The ready addresses of `slices`, with the slice's `http` port (or its first, or
/// `port`), deduplicated and sorted.
pub fn ready_endpoints<'a>(
    slices: impl Iterator<Item = &'a EndpointSlice>,
    port: u16,
) -> Vec<String> {
    let mut endpoints = Vec::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let slice_port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("http"))
            .or_else(|| ports.first())
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(port);
        for endpoint in &slice.endpoints {
            // A missing `ready` means ready (the API's convention); a terminating
            // endpoint is never ready.
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true)
                && !conditions.and_then(|c| c.terminating).unwrap_or(false);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                endpoints.push(if address.contains(':') {
                    format!("[{address}]:{slice_port}")
                } else {
                    format!("{address}:{slice_port}")
                });
            }
        }
    }
    endpoints.sort();
    endpoints.dedup();
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_endpoints_with_the_slice_port() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "cutover-web-x1",
                          "labels": { "kubernetes.io/service-name": "cutover-web" } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": [
                { "addresses": ["10.0.0.2"], "conditions": { "ready": true } },
                { "addresses": ["10.0.0.1"] },
                { "addresses": ["10.0.0.3"], "conditions": { "ready": false } },
                { "addresses": ["10.0.0.4"], "conditions": { "ready": true, "terminating": true } },
            ],
        }))
        .expect("a slice");
        assert_eq!(
            ready_endpoints([&slice].into_iter(), 9000),
            ["10.0.0.1:8080", "10.0.0.2:8080"]
        );
        let v6: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "s" },
            "addressType": "IPv6",
            "endpoints": [{ "addresses": ["fd00::1"] }],
        }))
        .expect("a slice");
        assert_eq!(ready_endpoints([&v6].into_iter(), 9000), ["[fd00::1]:9000"]);
    }
}
