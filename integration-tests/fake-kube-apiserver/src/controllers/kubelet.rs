//! The kubelet: runs each pod's containers as real processes and reports their state in the
//! pod's status.
//!
//! Each pod gets an IP `127.X.Y.Z` (the whole of 127/8 is loopback on Linux). A container's
//! process is `Config::images[image]` with `{{ip}}` and `{{port}}` substituted, the
//! container's `env` values added, in its own process group, its output kept as the pod's log.
//! Readiness comes from the readinessProbe (`httpGet` or `tcpSocket`, every 200 ms), or without
//! one from a TCP connect to the first containerPort. A process that exits is restarted after
//! a back-off (CrashLoopBackOff); an unknown image never starts (ErrImagePull, then
//! ImagePullBackOff).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch as signal;

use super::kill_group;
use crate::resources::PODS;
use crate::util::{self, go_duration};
use crate::{PodProcess, Shared, ops};

/// How often readiness is probed.
const PROBE_PERIOD: Duration = Duration::from_millis(200);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The longest crash-loop back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The field manager of status writes.
const KUBELET: &str = "kubelet";

static NEXT_PROCESS: AtomicU64 = AtomicU64::new(1);

/// The pods this kubelet runs, by uid, each with the switch that stops it.
pub(crate) struct Kubelet {
    shared: Arc<Shared>,
    pods: HashMap<String, signal::Sender<bool>>,
}

impl Kubelet {
    pub(crate) fn new(shared: Arc<Shared>) -> Kubelet {
        Kubelet {
            shared,
            pods: HashMap::new(),
        }
    }

    /// Starts pods that appeared and stops pods that are gone.
    pub(crate) fn sync(&mut self) {
        let pods: Vec<Value> = self
            .shared
            .store()
            .list(&PODS, None)
            .into_iter()
            .cloned()
            .collect();
        let mut live = HashSet::new();
        for pod in pods {
            let Some(uid) = util::str_at(&pod, "/metadata/uid").map(str::to_string) else {
                continue;
            };
            live.insert(uid.clone());
            if !self.pods.contains_key(&uid) {
                let (stop, stopped) = signal::channel(false);
                tokio::spawn(run_pod(self.shared.clone(), pod, stopped));
                self.pods.insert(uid, stop);
            }
        }
        self.pods.retain(|uid, stop| {
            let keep = live.contains(uid);
            if !keep {
                stop.send_replace(true);
            }
            keep
        });
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        for stop in self.pods.values() {
            stop.send_replace(true);
        }
    }
}

/// One running pod.
struct PodRun {
    shared: Arc<Shared>,
    namespace: String,
    name: String,
    uid: String,
    ip: String,
    start_time: String,
    state: Mutex<PodState>,
}

struct PodState {
    containers: Vec<ContainerState>,
    ready: bool,
    ready_since: String,
}

struct ContainerState {
    name: String,
    image: String,
    ready: bool,
    started: bool,
    ever_started: bool,
    restart_count: u64,
    state: Value,
    last_state: Value,
    container_id: Option<String>,
}

impl PodRun {
    fn update(&self, index: usize, change: impl FnOnce(&mut ContainerState)) {
        {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(container) = state.containers.get_mut(index) {
                change(container);
            }
        }
        self.publish();
    }

    /// Writes the pod's status from the containers' states (if the pod still exists).
    fn publish(&self) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all_ready = state.containers.iter().all(|c| c.ready);
        if all_ready != state.ready {
            state.ready = all_ready;
            state.ready_since = util::now_rfc3339();
        }
        let phase = if state.containers.iter().all(|c| c.ever_started) {
            "Running"
        } else {
            "Pending"
        };
        let ready = if state.ready { "True" } else { "False" };
        let condition = |kind: &str, status: &str, since: &str| json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
        let statuses: Vec<Value> = state
            .containers
            .iter()
            .map(|c| {
                let mut status = json!({
                    "name": c.name,
                    "image": c.image,
                    "imageID": "",
                    "ready": c.ready,
                    "started": c.started,
                    "restartCount": c.restart_count,
                    "state": c.state,
                    "lastState": c.last_state,
                });
                if let (Some(id), Some(map)) = (&c.container_id, status.as_object_mut()) {
                    map.insert("containerID".into(), json!(id));
                }
                status
            })
            .collect();
        let status = json!({
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", "True", &self.start_time),
                condition("Initialized", "True", &self.start_time),
                condition("Ready", ready, &state.ready_since),
                condition("ContainersReady", ready, &state.ready_since),
                condition("PodScheduled", "True", &self.start_time),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "qosClass": "BestEffort",
            "containerStatuses": statuses,
        });
        let mut store = self.shared.store();
        let same_pod = store
            .get(&PODS, &self.namespace, &self.name)
            .is_some_and(|p| util::str_at(p, "/metadata/uid") == Some(self.uid.as_str()));
        if same_pod {
            let _ = ops::update(
                &mut store,
                &PODS,
                &self.namespace,
                &self.name,
                json!({"status": status}),
                KUBELET,
                true,
            );
        }
    }
}

async fn run_pod(shared: Arc<Shared>, pod: Value, stopped: signal::Receiver<bool>) {
    let containers: Vec<Value> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ip = free_pod_ip(&shared, &containers);
    let now = util::now_rfc3339();
    let run = Arc::new(PodRun {
        namespace: util::str_at(&pod, "/metadata/namespace")
            .unwrap_or("")
            .to_string(),
        name: util::str_at(&pod, "/metadata/name")
            .unwrap_or("")
            .to_string(),
        uid: util::str_at(&pod, "/metadata/uid")
            .unwrap_or("")
            .to_string(),
        shared,
        ip,
        start_time: now.clone(),
        state: Mutex::new(PodState {
            containers: containers
                .iter()
                .map(|c| ContainerState {
                    name: util::str_at(c, "/name").unwrap_or("").to_string(),
                    image: util::str_at(c, "/image").unwrap_or("").to_string(),
                    ready: false,
                    started: false,
                    ever_started: false,
                    restart_count: 0,
                    state: json!({"waiting": {"reason": "ContainerCreating"}}),
                    last_state: json!({}),
                    container_id: None,
                })
                .collect(),
            ready: false,
            ready_since: now,
        }),
    });
    run.publish();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, container) in containers.into_iter().enumerate() {
        tasks.spawn(run_container(
            run.clone(),
            index,
            container,
            stopped.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits `delay`; true if the pod was stopped meanwhile.
async fn stopped_within(stopped: &mut signal::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = crate::util::until_set(stopped) => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

fn first_port(container: &Value) -> Option<u16> {
    container
        .pointer("/ports/0/containerPort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

async fn run_container(
    run: Arc<PodRun>,
    index: usize,
    container: Value,
    mut stopped: signal::Receiver<bool>,
) {
    let shared = run.shared.clone();
    let name = util::str_at(&container, "/name").unwrap_or("").to_string();
    let image = util::str_at(&container, "/image").unwrap_or("").to_string();
    let mut backoff = shared.config.crash_backoff;
    let cap = MAX_BACKOFF.max(backoff);
    let Some(template) = shared.config.images.get(&image).cloned() else {
        run.update(index, |c| {
            c.state = json!({"waiting": {
                "reason": "ErrImagePull",
                "message": format!("failed to pull and unpack image \"{image}\": not found (the fake kubelet only runs images listed in its Config::images)"),
            }});
        });
        if stopped_within(&mut stopped, backoff).await {
            return;
        }
        run.update(index, |c| {
            c.state = json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")}});
        });
        let _ = crate::util::until_set(&mut stopped).await;
        return;
    };
    let port = first_port(&container);
    let env: Vec<(String, String)> = container
        .get("env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e.get("name")?.as_str()?.to_string(),
                e.get("value")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ))
        })
        .collect();
    loop {
        let stop = *stopped.borrow();
        if stop {
            return;
        }
        let argv: Vec<String> = template
            .iter()
            .map(|arg| {
                arg.replace("{{ip}}", &run.ip).replace(
                    "{{port}}",
                    &port.map(|p| p.to_string()).unwrap_or_else(|| "0".into()),
                )
            })
            .collect();
        let started_at = util::now_rfc3339();
        let restarts = run
            .state
            .lock()
            .map(|s| {
                s.containers
                    .get(index)
                    .map(|c| c.restart_count)
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        let container_id = format!("fake://{}-{name}-{restarts}", run.uid);
        let (code, reason, message) = match spawn(&argv, &env) {
            Err(e) => (
                128,
                "StartError",
                Some(format!("failed to start {argv:?}: {e}")),
            ),
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                let id = NEXT_PROCESS.fetch_add(1, Ordering::Relaxed);
                shared.add_process(
                    id,
                    PodProcess {
                        namespace: run.namespace.clone(),
                        pod: run.name.clone(),
                        container: name.clone(),
                        pid,
                        ip: run.ip.clone(),
                    },
                );
                if let Some(out) = child.stdout.take() {
                    tokio::spawn(pump(run.clone(), out));
                }
                if let Some(err) = child.stderr.take() {
                    tokio::spawn(pump(run.clone(), err));
                }
                let id_for_status = container_id.clone();
                let started = started_at.clone();
                run.update(index, move |c| {
                    c.state = json!({"running": {"startedAt": started}});
                    c.started = true;
                    c.ever_started = true;
                    c.ready = false;
                    c.container_id = Some(id_for_status);
                });
                let mut ready = false;
                let exit = loop {
                    tokio::select! {
                        status = child.wait() => break status,
                        _ = crate::util::until_set(&mut stopped) => {
                            kill_group(pid);
                            let _ = child.wait().await;
                            shared.remove_process(id);
                            return;
                        }
                        _ = tokio::time::sleep(PROBE_PERIOD) => {
                            let now_ready = probe(&run.ip, &container).await;
                            if now_ready != ready {
                                ready = now_ready;
                                run.update(index, |c| c.ready = now_ready);
                            }
                        }
                    }
                };
                shared.remove_process(id);
                kill_group(pid);
                match exit {
                    Ok(status) => {
                        let code = exit_code(&status);
                        (code, if code == 0 { "Completed" } else { "Error" }, None)
                    }
                    Err(e) => (128, "Error", Some(e.to_string())),
                }
            }
        };
        let finished_at = util::now_rfc3339();
        let wait_message = format!(
            "back-off {} restarting failed container={name} pod={}",
            go_duration(backoff),
            run.name
        );
        run.update(index, |c| {
            let mut terminated = json!({
                "exitCode": code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": finished_at,
                "containerID": container_id,
            });
            if let (Some(message), Some(map)) = (&message, terminated.as_object_mut()) {
                map.insert("message".into(), json!(message));
            }
            c.last_state = json!({"terminated": terminated});
            c.state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": wait_message}});
            c.restart_count += 1;
            c.ready = false;
            c.started = false;
        });
        if stopped_within(&mut stopped, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(cap);
    }
}

fn spawn(argv: &[String], env: &[(String, String)]) -> std::io::Result<tokio::process::Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("the image's argv template is empty"))?;
    tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

fn exit_code(status: &std::process::ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => i64::from(code),
        (None, Some(signal)) => 128 + i64::from(signal),
        (None, None) => 128,
    }
}

/// Copies a process's output into the pod's log.
async fn pump(run: Arc<PodRun>, stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        run.shared
            .append_log(&run.namespace, &run.name, &format!("{line}\n"));
    }
}

/// A port given as a number, a numeric string or a container port name.
fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok();
    }
    let text = port.as_str()?;
    if let Ok(n) = text.parse::<u16>() {
        return Some(n);
    }
    container
        .get("ports")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(text))?
        .get("containerPort")?
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
}

/// One readiness check.
/// The next pod IP whose container ports nothing holds: a process left behind by a test
/// run that was killed (and so could not stop its pods) may still listen on an address
/// this server would hand out, and the pod would then crash-loop on a busy port.
fn free_pod_ip(shared: &Shared, containers: &[Value]) -> String {
    let ports: Vec<u16> = containers
        .iter()
        .filter_map(|c| c.pointer("/ports/0/containerPort")?.as_u64())
        .filter_map(|p| u16::try_from(p).ok())
        .collect();
    let mut ip = shared.store().allocate_pod_ip();
    for _ in 0..64 {
        let free = ports
            .iter()
            .all(|port| std::net::TcpListener::bind((ip.as_str(), *port)).is_ok());
        if free {
            break;
        }
        ip = shared.store().allocate_pod_ip();
    }
    ip
}

async fn probe(ip: &str, container: &Value) -> bool {
    let spec = container.get("readinessProbe");
    if let Some(http) = spec.and_then(|p| p.get("httpGet")) {
        let Some(port) = http.get("port").and_then(|p| resolve_port(container, p)) else {
            return false;
        };
        let host = http.get("host").and_then(Value::as_str).unwrap_or(ip);
        let path = http.get("path").and_then(Value::as_str).unwrap_or("/");
        return tokio::time::timeout(PROBE_TIMEOUT, http_get(host, port, path))
            .await
            .unwrap_or(false);
    }
    if let Some(tcp) = spec.and_then(|p| p.get("tcpSocket")) {
        let Some(port) = tcp.get("port").and_then(|p| resolve_port(container, p)) else {
            return false;
        };
        return connects(ip, port).await;
    }
    if spec.is_some_and(|p| p.get("exec").is_some() || p.get("grpc").is_some()) {
        // Not simulated: such a container is ready once it runs.
        return true;
    }
    match first_port(container) {
        Some(port) => connects(ip, port).await,
        None => true,
    }
}

async fn connects(ip: &str, port: u16) -> bool {
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect((ip, port))).await,
        Ok(Ok(_))
    )
}

/// `GET path` over HTTP/1.1; success is a status from 200 to 399, as for the kubelet.
async fn http_get(host: &str, port: u16, path: &str) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect((host, port)).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 32];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let text = String::from_utf8_lossy(&head[..read]);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (200..400).contains(&code))
}
