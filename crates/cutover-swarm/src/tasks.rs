//! Reading a service's tasks: is it ready, has it failed, and where do its tasks listen.
//!
//! Swarm reports a task `running` only once its container started and, where the image or
//! the service has a healthcheck, passed it; so "every wanted task is running" is the
//! readiness rule. A task the engine *rejects* (most often `No such image`) fails the
//! candidate at once with the engine's message; tasks that start and exit count as a crash
//! loop at [`CRASH_LOOP`] failures.
//!
//! Tasks are read from the task list's JSON ([`crate::raw`]), not bollard's `Task`, which
//! has no `NetworksAttachments`: each task's addresses on its networks, kept by the
//! manager for every task of the cluster.

use serde::Deserialize;

/// Exits of a candidate's tasks that make it failed rather than still starting.
pub const CRASH_LOOP: usize = 3;

/// One task, as the task list gives it (the fields cutover reads).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskRecord {
    /// The task's ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// `running` for a task Swarm wants up; `shutdown` for replaced ones.
    #[serde(default)]
    pub desired_state: String,
    /// Where the task is.
    #[serde(default)]
    pub status: TaskStatusRecord,
    /// The task's addresses, per network.
    #[serde(default)]
    pub networks_attachments: Vec<Attachment>,
}

/// A task's state and the engine's words about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatusRecord {
    /// `pending`, `preparing`, `starting`, `running`, `failed`, `rejected`, ...
    #[serde(default)]
    pub state: String,
    /// What went wrong.
    #[serde(default)]
    pub err: Option<String>,
    /// What is happening.
    #[serde(default)]
    pub message: Option<String>,
}

/// A task's attachment to one network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    /// The network.
    #[serde(default)]
    pub network: AttachedNetwork,
    /// `10.0.1.5/24`-style addresses.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// The network of an [`Attachment`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    /// Its ID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Its spec (for the name).
    #[serde(default)]
    pub spec: NetworkName,
}

/// The name in a network's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkName {
    /// The network's name.
    #[serde(default)]
    pub name: String,
}

impl TaskRecord {
    fn wanted(&self) -> bool {
        self.desired_state == "running"
    }

    fn running(&self) -> bool {
        self.status.state == "running"
    }

    fn why(&self) -> String {
        self.status
            .err
            .clone()
            .or_else(|| self.status.message.clone())
            .unwrap_or_else(|| "no reason given".into())
    }
}

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
pub fn assess(tasks: &[TaskRecord], wanted: Option<usize>) -> Progress {
    let mut failed = Vec::new();
    let mut running = Vec::new();
    let mut scheduled = 0;
    let mut message = None;
    for task in tasks {
        match task.status.state.as_str() {
            "rejected" => return Progress::Failed(format!("a task was rejected: {}", task.why())),
            "failed" => failed.push(task.why()),
            _ => {}
        }
        if !task.wanted() {
            continue;
        }
        scheduled += 1;
        if task.running() {
            running.push(task.id.clone());
        } else if let Some(text) = task.status.err.clone().or(task.status.message.clone()) {
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

/// `ip:port` of every running task that Swarm wants up, on `network` (a name or an ID).
pub fn endpoints(tasks: &[TaskRecord], network: &str, port: u16) -> Vec<String> {
    let mut found: Vec<String> = tasks
        .iter()
        .filter(|task| task.wanted() && task.running())
        .flat_map(|task| &task.networks_attachments)
        .filter(|a| a.network.spec.name == network || a.network.id == network)
        .flat_map(|a| &a.addresses)
        .filter_map(|address| {
            let ip = address.split('/').next()?;
            (!ip.is_empty()).then(|| format!("{ip}:{port}"))
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task(id: &str, state: &str, desired: &str, err: Option<&str>) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            desired_state: desired.into(),
            status: TaskStatusRecord {
                state: state.into(),
                err: err.map(String::from),
                message: None,
            },
            networks_attachments: Vec::new(),
        }
    }

    #[test]
    fn ready_when_every_wanted_task_runs() {
        let tasks = [
            task("b", "running", "running", None),
            task("a", "running", "running", None),
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
            "rejected",
            "shutdown",
            Some("No such image: shop/web:nope"),
        )];
        assert_eq!(
            assess(&tasks, Some(1)),
            Progress::Failed("a task was rejected: No such image: shop/web:nope".into())
        );
    }

    #[test]
    fn exits_are_a_crash_loop_only_from_the_third() {
        let exit = |id| task(id, "failed", "shutdown", Some("task: non-zero exit (1)"));
        let starting = task("d", "starting", "running", None);
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
            task("a", "running", "running", None),
            task("b", "preparing", "running", None),
        ];
        assert!(matches!(assess(&tasks, None), Progress::Starting { .. }));
        assert!(matches!(assess(&[], None), Progress::Starting { .. }));
    }

    #[test]
    fn endpoints_are_the_running_tasks_addresses_on_the_network() {
        // The shape of `GET /tasks`, trimmed.
        let tasks: Vec<TaskRecord> = serde_json::from_value(json!([
            {"ID": "aaa", "DesiredState": "running", "Status": {"State": "running"},
             "NetworksAttachments": [
                {"Network": {"ID": "n1", "Spec": {"Name": "shop"}}, "Addresses": ["10.0.1.7/24"]},
                {"Network": {"ID": "n2", "Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.9/24"]}
             ]},
            {"ID": "bbb", "DesiredState": "running", "Status": {"State": "running"},
             "NetworksAttachments": [{"Network": {"ID": "n1", "Spec": {"Name": "shop"}}, "Addresses": ["10.0.1.5/24"]}]},
            {"ID": "old", "DesiredState": "shutdown", "Status": {"State": "running"},
             "NetworksAttachments": [{"Network": {"ID": "n1", "Spec": {"Name": "shop"}}, "Addresses": ["10.0.1.9/24"]}]},
            {"ID": "new", "DesiredState": "running", "Status": {"State": "starting"},
             "NetworksAttachments": [{"Network": {"ID": "n1", "Spec": {"Name": "shop"}}, "Addresses": ["10.0.1.11/24"]}]}
        ]))
        .expect("tasks");
        let want = vec!["10.0.1.5:8080".to_string(), "10.0.1.7:8080".to_string()];
        assert_eq!(endpoints(&tasks, "shop", 8080), want);
        assert_eq!(endpoints(&tasks, "n1", 8080), want);
        assert!(endpoints(&tasks, "other", 8080).is_empty());
    }
}
