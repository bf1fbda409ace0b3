//! Whether a Deployment's rollout is done, under way or hopeless, from what the API server
//! reports: the Deployment's status and its pods' container states.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;

/// Container waiting reasons that mean the image cannot be had: the pod will not start.
const CANNOT_PULL: [&str; 4] = [
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];
/// Container waiting reasons that mean the pod spec cannot run as written.
const CANNOT_CREATE: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// Restarts after which a crash-looping container fails the rollout.
pub const CRASH_LOOP_RESTARTS: i32 = 3;

/// Where a Deployment's rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every wanted replica is updated and available.
    Complete {
        /// How many.
        replicas: usize,
    },
    /// Still starting; the message says what is awaited.
    Starting(String),
    /// It will not become ready: Kubernetes' own reason.
    Failed(String),
}

/// Judges `deployment` and its `pods`.
pub fn assess(deployment: &Deployment, pods: &[Pod]) -> Progress {
    let name = deployment.metadata.name.as_deref().unwrap_or("?");
    // Pods on their way out (say, of a candidate of the same colour deleted a moment ago)
    // say nothing about this one.
    if let Some(reason) = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find_map(pod_failure)
    {
        return Progress::Failed(reason);
    }
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let Some(status) = &deployment.status else {
        return Progress::Starting(format!("Deployment '{name}' has no status yet"));
    };
    // A status the Deployment controller wrote for an older spec (its conditions too) is
    // not about this one.
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Progress::Starting(format!(
            "Deployment '{name}': waiting for the controller to see generation {generation}"
        ));
    }
    if let Some(c) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Progress::Failed(format!(
            "Deployment '{name}': ProgressDeadlineExceeded: {}",
            c.message.as_deref().unwrap_or("the rollout timed out")
        ));
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated >= wanted && available >= wanted && total <= wanted {
        return Progress::Complete {
            replicas: usize::try_from(wanted).unwrap_or(0),
        };
    }
    Progress::Starting(format!(
        "Deployment '{name}': {available} of {wanted} available, {updated} updated"
    ))
}

/// Why a pod cannot start, if it cannot.
fn pod_failure(pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.as_ref()?;
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let Some(waiting) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.as_deref().unwrap_or("");
        let hopeless = CANNOT_PULL.contains(&reason)
            || CANNOT_CREATE.contains(&reason)
            || (reason == "CrashLoopBackOff" && c.restart_count >= CRASH_LOOP_RESTARTS);
        if hopeless {
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        " (last exit code {}{})",
                        t.exit_code,
                        t.reason
                            .as_deref()
                            .map(|r| format!(", {r}"))
                            .unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            return Some(format!(
                "pod {name}: container {}: {reason}: {}{last}",
                c.name,
                waiting.message.as_deref().unwrap_or("")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-green", "generation": 2 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
            "status": status,
        }))
        .expect("a deployment")
    }

    fn pod(container_status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "web-green-abc-x1" },
            "status": { "containerStatuses": [container_status] },
        }))
        .expect("a pod")
    }

    #[test]
    fn complete_only_when_the_current_generation_is_available() {
        let done = deployment(serde_json::json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
        }));
        assert_eq!(assess(&done, &[]), Progress::Complete { replicas: 2 });
        let stale = deployment(serde_json::json!({
            "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
        }));
        assert!(matches!(assess(&stale, &[]), Progress::Starting(_)));
        let half = deployment(serde_json::json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1,
        }));
        assert!(matches!(assess(&half, &[]), Progress::Starting(m) if m.contains("1 of 2")));
    }

    #[test]
    fn kubernetes_reasons_fail_the_rollout() {
        let starting = deployment(serde_json::json!({ "observedGeneration": 2 }));
        let pull = pod(serde_json::json!({
            "name": "app", "image": "shop/web:v9", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff",
                                    "message": "Back-off pulling image \"shop/web:v9\"" } },
        }));
        assert_eq!(
            assess(&starting, &[pull]),
            Progress::Failed(
                "pod web-green-abc-x1: container app: ImagePullBackOff: Back-off pulling image \"shop/web:v9\""
                    .into()
            )
        );
        let crash = |restarts: i32| {
            pod(serde_json::json!({
                "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": restarts,
                "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 10s" } },
                "lastState": { "terminated": { "exitCode": 3, "reason": "Error" } },
            }))
        };
        assert!(matches!(
            assess(&starting, &[crash(1)]),
            Progress::Starting(_)
        ));
        assert!(matches!(
            assess(&starting, &[crash(3)]),
            Progress::Failed(m) if m.contains("CrashLoopBackOff") && m.contains("exit code 3")
        ));
        let deadline = deployment(serde_json::json!({
            "observedGeneration": 2,
            "conditions": [{ "type": "Progressing", "status": "False",
                             "reason": "ProgressDeadlineExceeded",
                             "message": "ReplicaSet \"web-green-abc\" has timed out progressing." }],
        }));
        assert!(matches!(
            assess(&deadline, &[]),
            Progress::Failed(m) if m.contains("ProgressDeadlineExceeded") && m.contains("timed out")
        ));
    }
}
