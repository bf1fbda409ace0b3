//! [`writer_id`]: how a backend that keeps the rollout state next to the workload tells its
//! own writes from another controller process's.
//!
//! A state write whose reply was lost is sent again; the backend recognises it when the
//! store already holds that revision with that text. But a controller taking a release
//! over fences it by writing the same text one revision up, and a dead controller's next
//! write (the same text, expecting the old revision) must not pass for a replay of that.
//! So every write names its writer, and a replay is recognised only from the process that
//! wrote it.

/// A name for this process's writes that no other process has: its id and start time.
pub fn writer_id() -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{started:x}", std::process::id())
}
