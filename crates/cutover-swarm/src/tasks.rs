//! Reading a service's tasks: is it ready, has it failed, and where do its tasks listen.
//!
//! Swarm reports a task `running` only once its container started and, where the image or
//! the service has a healthcheck, passed it; so "every wanted task is running" is the
//! readiness rule. A task the engine *rejects* (most often `No such image`) fails the
//! candidate at once with the engine's message; tasks that start and exit count as a crash
//! loop at [`CRASH_LOOP`] failures.
//!
//! bollard's `Task` type has no `NetworksAttachments`, so task addresses come from the
//! network's verbose inspection (`Services.<name>.Tasks[].EndpointIP`), matched to the
//! running tasks by the container name Swarm gives them (`<service>.<slot>.<task id>`).

use std::collections::HashMap;

use bollard::models::{ServiceInfo, Task, TaskState};

/// Exits of a candidate's tasks that make it failed rather than still starting.
pub const CRASH_LOOP: usize = 3;

/// Where a service's deployment stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Fewer tasks run than wanted. `message` is the engine's latest word on a task that
    /// is not running yet (`preparing`, `no suitable node ...`).
    Starting {
        /// Tasks running.
        running: usize,
        /// Tasks wanted.
        wanted: usize,
        /// The engine's status message, if any.
        message: Option<String>,
    },
    /// Every wanted task runs: their IDs.
    Running(Vec<String>),
    /// It will not start: the engine's error.
    Failed(String),
}

/// Judges a service's tasks. `wanted` is the replica count, `None` for a global service
/// (then every task Swarm scheduled must run, and at least one).
pub fn assess(tasks: &[Task], wanted: Option<usize>) -> Progress {
    let mut failed = Vec::new();
    let mut running = Vec::new();
    let mut scheduled = 0;
    let mut message = None;
    for task in tasks {
        let status = task.status.as_ref();
        let state = status.and_then(|s| s.state);
        let why = || {
            status
                .and_then(|s| s.err.clone().or_else(|| s.message.clone()))
                .unwrap_or_else(|| "no reason given".into())
        };
        match state {
            Some(TaskState::REJECTED) => {
                return Progress::Failed(format!("a task was rejected: {}", why()));
            }
            Some(TaskState::FAILED) => failed.push(why()),
            _ => {}
        }
        if task.desired_state != Some(TaskState::RUNNING) {
            continue;
        }
        scheduled += 1;
        if state == Some(TaskState::RUNNING) {
            if let Some(id) = &task.id {
                running.push(id.clone());
            }
        } else if let Some(text) = status.and_then(|s| s.err.clone().or(s.message.clone())) {
            message = Some(text);
        }
    }
    if failed.len() >= CRASH_LOOP {
        let last = failed.last().cloned().unwrap_or_default();
        return Progress::Failed(format!(
            "{} tasks failed (a crash loop); the last: {last}",
            failed.len()
        ));
    }
    let wanted = wanted.unwrap_or(scheduled.max(1));
    if running.len() >= wanted {
        running.sort();
        Progress::Running(running)
    } else {
        Progress::Starting {
            running: running.len(),
            wanted,
            message,
        }
    }
}

/// `ip:port` of each task in `task_ids` that has an address on the network, from the
/// `Services` map of a verbose network inspection.
pub fn endpoints(
    network_services: &HashMap<String, serde_json::Value>,
    service_name: &str,
    task_ids: &[String],
    port: u16,
) -> Vec<String> {
    let Some(info) = network_services
        .get(service_name)
        .and_then(|value| serde_json::from_value::<ServiceInfo>(value.clone()).ok())
    else {
        return Vec::new();
    };
    let mut found: Vec<String> = info
        .tasks
        .unwrap_or_default()
        .into_iter()
        .filter(|task| {
            task.name.as_deref().is_some_and(|name| {
                name.rsplit_once('.')
                    .is_some_and(|(_, id)| task_ids.iter().any(|t| t == id))
            })
        })
        .filter_map(|task| task.endpoint_ip)
        .filter_map(|ip| {
            // Swarm may report the address with its prefix length.
            let ip = ip.split('/').next()?.to_string();
            (!ip.is_empty()).then(|| format!("{ip}:{port}"))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use bollard::models::TaskStatus;
    use serde_json::json;

    use super::*;

    fn task(id: &str, state: TaskState, desired: TaskState, err: Option<&str>) -> Task {
        Task {
            id: Some(id.into()),
            desired_state: Some(desired),
            status: Some(TaskStatus {
                state: Some(state),
                err: err.map(String::from),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_when_every_wanted_task_runs() {
        let tasks = [
            task("b", TaskState::RUNNING, TaskState::RUNNING, None),
            task("a", TaskState::RUNNING, TaskState::RUNNING, None),
        ];
        assert_eq!(
            assess(&tasks, Some(2)),
            Progress::Running(vec!["a".into(), "b".into()])
        );
        assert!(matches!(
            assess(&tasks[..1], Some(2)),
            Progress::Starting {
                running: 1,
                wanted: 2,
                ..
            }
        ));
    }

    #[test]
    fn a_rejected_task_fails_at_once_with_the_engines_words() {
        let tasks = [task(
            "a",
            TaskState::REJECTED,
            TaskState::SHUTDOWN,
            Some("No such image: shop/web:nope"),
        )];
        assert_eq!(
            assess(&tasks, Some(1)),
            Progress::Failed("a task was rejected: No such image: shop/web:nope".into())
        );
    }

    #[test]
    fn exits_are_a_crash_loop_only_from_the_third() {
        let exit = |id| {
            task(
                id,
                TaskState::FAILED,
                TaskState::SHUTDOWN,
                Some("task: non-zero exit (1)"),
            )
        };
        let starting = task("d", TaskState::STARTING, TaskState::RUNNING, None);
        assert!(matches!(
            assess(&[exit("a"), exit("b"), starting.clone()], Some(1)),
            Progress::Starting { .. }
        ));
        let verdict = assess(&[exit("a"), exit("b"), exit("c"), starting], Some(1));
        assert!(
            matches!(&verdict, Progress::Failed(m) if m.contains("non-zero exit (1)")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_global_service_needs_every_scheduled_task() {
        let tasks = [
            task("a", TaskState::RUNNING, TaskState::RUNNING, None),
            task("b", TaskState::PREPARING, TaskState::RUNNING, None),
        ];
        assert!(matches!(assess(&tasks, None), Progress::Starting { .. }));
        assert!(matches!(assess(&[], None), Progress::Starting { .. }));
    }

    #[test]
    fn endpoints_are_the_running_tasks_addresses() {
        let services = HashMap::from([(
            "web-green".to_string(),
            json!({
                "VIP": "<nil>",
                "Ports": [],
                "LocalLBIndex": 257,
                "Tasks": [
                    {"Name": "web-green.1.aaa", "EndpointID": "e1", "EndpointIP": "10.0.1.7", "Info": {}},
                    {"Name": "web-green.2.bbb", "EndpointID": "e2", "EndpointIP": "10.0.1.5/24", "Info": {}},
                    {"Name": "web-green.2.old", "EndpointID": "e3", "EndpointIP": "10.0.1.9", "Info": {}}
                ]
            }),
        )]);
        assert_eq!(
            endpoints(&services, "web-green", &["aaa".into(), "bbb".into()], 8080),
            vec!["10.0.1.5:8080".to_string(), "10.0.1.7:8080".to_string()]
        );
        assert!(endpoints(&services, "web", &["aaa".into()], 8080).is_empty());
    }
}
