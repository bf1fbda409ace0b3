//! **TEST ONLY.** A fake Kubernetes API server for cutover's tests: real HTTP/1.1 on
//! `127.0.0.1`, serving the subset of the Kubernetes API a controller such as
//! `cutover-kube` uses, with simulated controllers and a kubelet that runs real processes as
//! pods. It is **not Kubernetes** and not a conformance target: it exists so tests can drive
//! the real `kube` client against something that answers like an API server.
//!
//! # What it implements
//!
//! - Resources: core/v1 `pods`, `services`, `configmaps`, `namespaces` (every namespace is
//!   implicitly present); apps/v1 `deployments` with the `status` and `scale` (autoscaling/v1
//!   `Scale`) subresources; discovery.k8s.io/v1 `endpointslices`; coordination.k8s.io/v1
//!   `leases`; apiextensions.k8s.io/v1 `customresourcedefinitions` (cluster-scoped, stored
//!   with an `Established` status, and otherwise inert). Plus `/version`, `/api`, `/apis`
//!   (and per group-version resource lists), `/healthz`, `/readyz`, `/livez`.
//! - One custom resource, cutover's `Release` (cutover.dev/v1 `releases`, namespaced, with the
//!   `status` subresource), with a custom resource's semantics: every verb below except
//!   strategic merge patch (415 UnsupportedMediaType, as for any custom resource), `generation`
//!   bumped only by changes outside `metadata` and `status`, writes to the main resource
//!   ignoring `status` (also on create) and writes to `/status` changing only `status`
//!   (without bumping `generation`), `kind: ReleaseList` lists, and discovery listing it.
//!   It is served unconditionally: there is no need to create its CustomResourceDefinition
//!   first (creating one is accepted and changes nothing).
//! - Verbs: get, list (label selectors `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`; field
//!   selectors on `metadata.name`/`metadata.namespace`), watch (newline-delimited JSON events,
//!   selector transitions as ADDED/DELETED, bookmarks, `timeoutSeconds`, 410 Expired for a
//!   compacted resourceVersion), create (`generateName`, AlreadyExists, name and Deployment
//!   validation), replace (resourceVersion preconditions), patch (JSON merge patch, strategic
//!   merge patch merging lists of maps by `name`, JSON patch, and a simplified server-side
//!   apply), delete (with garbage collection through `ownerReferences`).
//! - Metadata: uid, creationTimestamp, a global resourceVersion counter, generation (bumped on
//!   changes outside metadata and status), managedFields per manager (FieldsV1, simplified).
//! - A Deployment controller that creates pods directly (there are **no ReplicaSets**: pods
//!   are named `<deployment>-<template hash>-<suffix>` and owned by the Deployment), rolls to a
//!   new template by surging new pods and deleting old ones as new ones become ready, and keeps
//!   `status` (counts, `Available` and `Progressing` conditions, ProgressDeadlineExceeded).
//! - A kubelet that gives each pod an IP `127.X.Y.Z` and runs each container as a real process
//!   from [`Config::images`], with readiness from `httpGet`/`tcpSocket` probes (or a TCP
//!   connect to the first containerPort), ErrImagePull/ImagePullBackOff for unknown images and
//!   CrashLoopBackOff with restart counts for processes that exit.
//! - An EndpointSlice controller for Services with a selector, and clusterIP allocation.
//! - Fault injection ([`Fault`]), a request log ([`RequestRecord`]), watch expiry
//!   ([`FakeApiServer::expire_watches`]) and control-plane outages ([`FakeApiServer::stop`],
//!   [`FakeApiServer::restart`]).
//!
//! # What it does not do
//!
//! No authentication or authorization (any token is accepted; RBAC refusals are injected
//! with [`Fault::forbidden`]), no admission, no TLS, no HTTP/2, no protobuf, no ReplicaSets,
//! no scheduler or nodes (every pod runs on `fake-node`), no graceful deletion or finalizers
//! (objects go away at once), no `deletecollection`, no `dryRun`, no pagination (`limit` and
//! `continue` are ignored: lists are complete), no streaming lists (`sendInitialEvents`; the
//! `kube` watcher's default list-then-watch works), no aggregated discovery, no OpenAPI
//! schemas: server-side apply is simplified (lists of maps merge by `name`, every other list is
//! atomic, no unions), strategic merge patch knows no patch strategies beyond that, and
//! defaulting covers only a few fields. Custom resources are not validated: a real server
//! validates a `Release` against its CustomResourceDefinition's `openAPIV3Schema`, prunes
//! unknown fields and applies the schema's defaults; here any JSON object is stored as sent
//! (only the name is checked), server-side apply treats its lists as for built-in types
//! rather than by the schema's `x-kubernetes-list-type` (atomic unless declared), and no
//! other custom resource can be served, whatever CustomResourceDefinitions are created
//! (their schemas, versions, conversion and `additionalPrinterColumns` are ignored).
//! Deployment strategies other than a full surge are not modelled (`maxSurge`/
//! `maxUnavailable`, `Recreate`, `paused` and `minReadySeconds` are ignored). Container
//! `command`/`args`, resources, volumes and `valueFrom` environment variables are ignored:
//! what runs is the image's argv template.

mod apply;
mod controllers;
mod discovery;
mod fault;
mod fields;
mod http;
mod managed;
mod ops;
mod patch;
mod resources;
mod selector;
mod status;
mod store;
mod util;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

pub use fault::{Fault, RequestRecord};
pub use status::Status;

use crate::managed::Operation;
use crate::store::Store;

/// How the fake cluster behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Image reference -> argv template for the pod's process. In each argument `{{ip}}` is
    /// replaced by the pod IP and `{{port}}` by the container's first containerPort. Images
    /// not in the map fail to pull (ErrImagePull, then ImagePullBackOff).
    pub images: HashMap<String, Vec<String>>,
    /// How many watch events are kept; a watch from an older resourceVersion gets 410 Gone
    /// (an ERROR event with reason Expired). Default 1000.
    pub history: usize,
    /// The first crash-loop back-off, doubling per restart and capped at 5 s (the real
    /// kubelet starts at 10 s; tests need faster). Default 500 ms.
    pub crash_backoff: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            images: HashMap::new(),
            history: 1000,
            crash_backoff: Duration::from_millis(500),
        }
    }
}

/// A process the fake kubelet runs for a pod's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodProcess {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// The process id (also its process group id).
    pub pid: u32,
    /// The pod IP the process was started for.
    pub ip: String,
}

/// State shared by the HTTP server, the controllers and the [`FakeApiServer`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Config,
    store: Mutex<Store>,
    /// The latest resourceVersion, announced on every write.
    pub changes: tokio::sync::watch::Receiver<u64>,
    /// Bumped by [`FakeApiServer::expire_watches`].
    pub expire: tokio::sync::watch::Sender<u64>,
    faults: Mutex<Vec<Fault>>,
    requests: Mutex<Vec<RequestRecord>>,
    /// Running container processes, by an id unique per start.
    processes: Mutex<BTreeMap<u64, PodProcess>>,
    /// The tail of each pod's output, by (namespace, pod).
    logs: Mutex<HashMap<(String, String), String>>,
    /// The port the server listens on, for discovery documents.
    pub port: u16,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How much of a pod's output is kept.
const LOG_TAIL: usize = 64 * 1024;

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// The first fault matching the request, spending one of its uses.
    pub(crate) fn take_fault(
        &self,
        method: &::http::Method,
        resource: Option<&str>,
        name: Option<&str>,
    ) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let fault = faults
            .iter_mut()
            .find(|f| f.matches(method, resource, name))?;
        if fault.times != usize::MAX {
            fault.times -= 1;
        }
        let found = fault.clone();
        faults.retain(|f| f.times > 0);
        Some(found)
    }

    pub(crate) fn record(&self, record: RequestRecord) {
        lock(&self.requests).push(record);
    }

    pub(crate) fn add_process(&self, id: u64, process: PodProcess) {
        lock(&self.processes).insert(id, process);
    }

    pub(crate) fn remove_process(&self, id: u64) {
        lock(&self.processes).remove(&id);
    }

    pub(crate) fn append_log(&self, namespace: &str, pod: &str, text: &str) {
        let mut logs = lock(&self.logs);
        let log = logs
            .entry((namespace.to_string(), pod.to_string()))
            .or_default();
        log.push_str(text);
        if log.len() > LOG_TAIL {
            let mut cut = log.len() - LOG_TAIL;
            while !log.is_char_boundary(cut) {
                cut += 1;
            }
            log.drain(..cut);
        }
    }

    fn kill_all_processes(&self) {
        for process in lock(&self.processes).values() {
            controllers::kill_group(process.pid);
        }
    }
}

/// The listening half of the server, present between [`FakeApiServer::start`] or
/// [`FakeApiServer::restart`] and [`FakeApiServer::stop`].
#[derive(Debug)]
struct Listening {
    accept: tokio::task::AbortHandle,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Disconnects once the accept loop and every connection have ended.
    stopped: std::sync::mpsc::Receiver<()>,
}

/// A running fake API server. It owns a dedicated thread with its own tokio runtime, so it
/// works from synchronous and asynchronous tests alike. Dropping it shuts everything down and
/// kills every pod process (SIGKILL to each process group).
#[derive(Debug)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    listening: Mutex<Option<Listening>>,
    close: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApiServer {
    /// Starts the server on an ephemeral port of 127.0.0.1, with its controllers.
    pub fn start(config: Config) -> std::io::Result<FakeApiServer> {
        let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
        let port = listener.local_addr()?.port();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("fake-kube-apiserver".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fake-kube-apiserver-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
                let _ = ready_tx.send(Ok((runtime.handle().clone(), close_tx)));
                runtime.block_on(async {
                    let _ = close_rx.await;
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })?;
        let (runtime, close) = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the fake API server's runtime thread died"))??;
        let (changes_tx, changes_rx) = tokio::sync::watch::channel(1);
        let (expire, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(config.history, changes_tx)),
            config,
            changes: changes_rx,
            expire,
            faults: Mutex::new(Vec::new()),
            requests: Mutex::new(Vec::new()),
            processes: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(HashMap::new()),
            port,
        });
        let listening = http::serve(shared.clone(), listener, &runtime)?;
        controllers::spawn(shared.clone(), &runtime);
        Ok(FakeApiServer {
            shared,
            runtime,
            listening: Mutex::new(Some(listening)),
            close: Some(close),
            thread: Some(thread),
        })
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.shared.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Writes a kubeconfig (YAML) with one cluster (this server), one user with a dummy
    /// token and one current context using `namespace`; it loads with
    /// `kube::Config::from_kubeconfig` or through the `KUBECONFIG` variable.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) -> std::io::Result<()> {
        let quote = |s: &str| Value::String(s.to_string()).to_string();
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {}\ncurrent-context: fake\npreferences: {{}}\n",
            quote(&self.url()),
            quote(namespace)
        );
        std::fs::write(path, text)
    }

    /// Creates an object as a client POST would, with field manager `unknown`: the resource
    /// comes from `apiVersion` and `kind`, the namespace from `metadata.namespace`
    /// (`default` if missing).
    pub fn create(&self, object: Value) -> Result<Value, Status> {
        self.create_as(object, "unknown")
    }

    /// [`create`](Self::create) with a field manager.
    pub fn create_as(&self, object: Value, field_manager: &str) -> Result<Value, Status> {
        let rt = ops::type_of(&object)?;
        let namespace = if rt.namespaced {
            util::str_at(&object, "/metadata/namespace")
                .filter(|ns| !ns.is_empty())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        ops::create(
            &mut self.shared.store(),
            rt,
            &namespace,
            object,
            field_manager,
            Operation::Update,
        )
    }

    /// One object by plural resource name (`deployments`), namespace and name. Cluster-scoped
    /// resources ignore the namespace.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = resources::by_plural(resource)?;
        let namespace = if rt.namespaced { namespace } else { "" };
        self.shared.store().get(rt, namespace, name).cloned()
    }

    /// The objects of a resource in a namespace, ordered by name.
    pub fn list(&self, resource: &str, namespace: &str) -> Vec<Value> {
        let Some(rt) = resources::by_plural(resource) else {
            return Vec::new();
        };
        let namespace = rt.namespaced.then_some(namespace);
        self.shared
            .store()
            .list(rt, namespace)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Deletes an object (and what it owns) as a client DELETE would.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> Result<Value, Status> {
        let rt = resources::by_plural(resource).ok_or_else(Status::no_route)?;
        let namespace = if rt.namespaced { namespace } else { "" };
        ops::delete(&mut self.shared.store(), rt, namespace, name, false)
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv()
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// Makes matching requests fail (see [`Fault`]). Faults are tried in the order injected.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared.faults).push(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every open watch gets an ERROR event with a 410 Status (reason `Expired`) and is
    /// closed; the history is compacted, so resuming from an older resourceVersion gets 410
    /// too and a client must list again.
    pub fn expire_watches(&self) {
        self.shared.store().compact();
        self.shared.expire.send_modify(|n| *n += 1);
    }

    /// The API server goes away: the listener is closed and open connections and watches are
    /// dropped. Objects, controllers and pod processes keep running, as in a control-plane
    /// outage. Returns once nothing listens or serves any more.
    pub fn stop(&self) {
        let Some(listening) = lock(&self.listening).take() else {
            return;
        };
        listening.shutdown.send_replace(true);
        listening.accept.abort();
        let _ = listening.stopped.recv_timeout(Duration::from_secs(5));
    }

    /// Listens again on the same port, with the same state. Does nothing if listening.
    /// A failure to bind (for the port was taken meanwhile) is logged; use
    /// [`try_restart`](Self::try_restart) to see it.
    pub fn restart(&self) {
        if let Err(e) = self.try_restart() {
            tracing::error!(
                "fake-kube-apiserver: cannot listen again on port {}: {e}",
                self.shared.port
            );
        }
    }

    /// [`restart`](Self::restart), reporting a failure to bind.
    pub fn try_restart(&self) -> std::io::Result<()> {
        let mut listening = lock(&self.listening);
        if listening.is_some() {
            return Ok(());
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.shared.port));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match std::net::TcpListener::bind(addr) {
                Ok(listener) => break listener,
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        *listening = Some(http::serve(self.shared.clone(), listener, &self.runtime)?);
        Ok(())
    }

    /// The processes the kubelet runs now.
    pub fn processes(&self) -> Vec<PodProcess> {
        lock(&self.shared.processes).values().cloned().collect()
    }

    /// The tail (64 KiB) of a pod's stdout and stderr, if it ever ran.
    pub fn pod_log(&self, namespace: &str, pod: &str) -> Option<String> {
        lock(&self.shared.logs)
            .get(&(namespace.to_string(), pod.to_string()))
            .cloned()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
        self.shared.kill_all_processes();
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.kill_all_processes();
    }
}
