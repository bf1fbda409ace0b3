//! Supervised instances of a command slot: spawned in their own process group with a tag
//! in their environment, restarted when they exit, logged to a file, stopped on retire.
//!
//! The tag (`CUTOVER_INSTANCE=<directory id>/<release>/<set>/<n>`) is what lets a controller that was
//! killed find its instances again: they keep running (their own process group, so a
//! signal to the controller's group spares them) and a new controller adopts them by
//! scanning `/proc/*/environ`, or stops the ones no record claims.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_core::Backoff;
use rustix::process::{Pid, Signal};
use tokio::sync::watch;

/// The environment variable holding an instance's tag.
pub const TAG_VAR: &str = "CUTOVER_INSTANCE";

/// How long a stopped instance gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The wait before a crashed instance is started again: 250 ms, doubling with each crash
/// in a row, at most 10 s.
const RESTART_BACKOFF: Backoff = Backoff::new(
    cutover_core::Duration::from_millis(250),
    cutover_core::Duration::from_secs(10),
);

/// What one instance is told: its command line, port and tag.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// The program and its arguments, `{{port}}` already replaced.
    pub argv: Vec<String>,
    /// The port the instance must listen on (also in `PORT`).
    pub port: u16,
    /// `<directory id>/<release>/<set>/<n>`.
    pub tag: String,
    /// Where stdout and stderr go.
    pub log: PathBuf,
}

/// What the supervisor knows about its instance, shared with the backend.
#[derive(Clone, Debug, Default)]
pub struct InstanceHealth {
    /// The process id while running.
    pub pid: Option<u32>,
    /// How many times the instance exited and was started again.
    pub restarts: u32,
    /// Why the instance cannot be started at all (say, the program does not exist).
    pub fatal: Option<String>,
    /// How the last run ended.
    pub last_exit: Option<String>,
}

/// A running supervisor; dropping it does not stop the instance, [`Supervisor::stop`] does.
pub struct Supervisor {
    stop: watch::Sender<bool>,
    health: Arc<Mutex<InstanceHealth>>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Supervises `spec`: adopts the running process `adopt` if given, else starts one.
    pub fn start(spec: InstanceSpec, adopt: Option<u32>) -> Supervisor {
        let (stop, stopped) = watch::channel(false);
        let health = Arc::new(Mutex::new(InstanceHealth {
            pid: adopt,
            ..InstanceHealth::default()
        }));
        let task = tokio::spawn(supervise(spec, adopt, stopped, health.clone()));
        Supervisor { stop, health, task }
    }

    /// A copy of what the supervisor knows now.
    pub fn health(&self) -> InstanceHealth {
        self.health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Stops the instance (SIGTERM to its process group, SIGKILL after a grace period)
    /// and waits until it is gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn set_health(health: &Mutex<InstanceHealth>, f: impl FnOnce(&mut InstanceHealth)) {
    f(&mut health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner));
}

async fn supervise(
    spec: InstanceSpec,
    mut adopted: Option<u32>,
    mut stopped: watch::Receiver<bool>,
    health: Arc<Mutex<InstanceHealth>>,
) {
    let mut backoff = RESTART_BACKOFF;
    loop {
        let exit = if let Some(pid) = adopted.take() {
            // Not our child: watch it until it is gone.
            tokio::select! {
                _ = watch_foreign(pid, &spec.tag) => "exited".to_string(),
                _ = until_stopped(&mut stopped) => {
                    terminate(pid, &spec.tag).await;
                    return;
                }
            }
        } else {
            let mut child = match spawn(&spec) {
                Ok(child) => child,
                Err(e) => {
                    let message = format!("cannot start `{}`: {e}", spec.argv.join(" "));
                    tracing::warn!(tag = %spec.tag, "{message}");
                    set_health(&health, |h| h.fatal = Some(message));
                    return;
                }
            };
            let pid = child.id();
            set_health(&health, |h| h.pid = pid);
            tokio::select! {
                status = child.wait() => match status {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("cannot be waited for: {e}"),
                },
                _ = until_stopped(&mut stopped) => {
                    if let Some(pid) = pid {
                        signal_group(pid, Signal::TERM);
                    }
                    if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                        if let Some(pid) = pid {
                            signal_group(pid, Signal::KILL);
                        }
                        let _ = child.wait().await;
                    }
                    return;
                }
            }
        };
        if *stopped.borrow() {
            return;
        }
        tracing::warn!(tag = %spec.tag, %exit, "instance exited; starting it again");
        append_log(
            &spec.log,
            &format!("cutover: instance {exit}; restarting\n"),
        );
        set_health(&health, |h| {
            h.pid = None;
            h.restarts += 1;
            h.last_exit = Some(exit);
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay().into()) => {}
            _ = until_stopped(&mut stopped) => return,
        }
    }
}

/// Resolves once a stop is asked for. A supervisor whose owner is gone (a controller
/// shutting down) never stops its instance: the next controller adopts it.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn spawn(spec: &InstanceSpec) -> std::io::Result<tokio::process::Child> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("the command is empty"))?;
    // Logs are the owner's alone, like the rest of the state directory: an instance may
    // print what it was given.
    if let Some(dir) = spec.log.parent() {
        if let Some(logs) = dir.parent() {
            crate::state_dir::create_private_dir(logs)?;
        }
        crate::state_dir::create_private_dir(dir)?;
    }
    let log = private_append(&spec.log)?;
    tokio::process::Command::new(program)
        .args(args)
        .env(TAG_VAR, &spec.tag)
        .env("PORT", spec.port.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own group: a Ctrl-C or a kill of the controller's group spares it, and a
        // stop reaches whatever it started itself.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

fn append_log(log: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut file) = private_append(log) {
        let _ = file.write_all(line.as_bytes());
    }
}

/// Opens a log for appending, creating it 0600.
fn private_append(log: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, crate::state_dir::PRIVATE_FILE_MODE);
    options.open(log)
}

/// The last `lines` lines of a log, for failure messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn signal_group(pid: u32, signal: Signal) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        // ESRCH (already gone) is what we want anyway.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Whether process `pid` is alive and still carries `tag` (not a reused pid).
pub fn is_tagged(pid: u32, tag: &str) -> bool {
    read_tag(pid).is_some_and(|t| t == tag)
}

fn read_tag(pid: u32) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{TAG_VAR}=");
    environ
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .find_map(|entry| entry.strip_prefix(&prefix).map(str::to_string))
}

/// Every live process whose tag starts with `prefix`, as (pid, tag). Processes in other
/// users' namespaces that cannot be read are skipped.
pub fn find_tagged(prefix: &str) -> Vec<(u32, String)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter_map(|pid| {
            let tag = read_tag(pid)?;
            // A process group leader only: children the instance started inherit the
            // variable but are stopped with their group.
            let leader = rustix::process::getpgid(Pid::from_raw(i32::try_from(pid).ok()?))
                .ok()
                .is_some_and(|g| g.as_raw_nonzero().get() as u32 == pid);
            (leader && tag.starts_with(prefix)).then_some((pid, tag))
        })
        .collect()
}

async fn watch_foreign(pid: u32, tag: &str) {
    while is_tagged(pid, tag) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Stops a process this controller did not start (found by its tag).
pub async fn terminate(pid: u32, tag: &str) {
    if !is_tagged(pid, tag) {
        return;
    }
    signal_group(pid, Signal::TERM);
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while is_tagged(pid, tag) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if is_tagged(pid, tag) {
        signal_group(pid, Signal::KILL);
        while is_tagged(pid, tag) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
