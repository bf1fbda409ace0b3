//! The simulated control plane: a Deployment controller, an EndpointSlice controller and a
//! kubelet, run in one loop woken by every write and by a short tick (for time-based
//! conditions).

mod deployment;
mod endpointslice;
mod kubelet;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::Shared;

/// How often the controllers look even when nothing was written.
const TICK: Duration = Duration::from_millis(200);

/// Field manager names the simulated components write with.
pub(crate) const CONTROLLER_MANAGER: &str = "kube-controller-manager";

/// Starts the controllers on the runtime; they run until it shuts down.
pub(crate) fn spawn(shared: Arc<Shared>, runtime: &tokio::runtime::Handle) {
    runtime.spawn(run(shared));
}

async fn run(shared: Arc<Shared>) {
    let mut changes = shared.changes.clone();
    let mut deployments = deployment::DeploymentController::default();
    let mut kubelet = kubelet::Kubelet::new(shared.clone());
    loop {
        changes.borrow_and_update();
        {
            let mut store = shared.store();
            deployments.reconcile(&mut store);
            endpointslice::reconcile(&mut store);
        }
        kubelet.sync();
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // Let a burst of writes settle before looking again.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Whether a pod's `Ready` condition is `True`.
pub(crate) fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// SIGKILL to a process group (each pod process leads its own).
pub(crate) fn kill_group(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}
