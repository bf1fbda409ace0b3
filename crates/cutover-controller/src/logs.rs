//! `GET /v1/releases/{name}/logs`: the output of a release's instances, for a backend that
//! writes it to files (the local backend), so `cutover logs` works against a controller on
//! another host too.
//!
//! Bounded on every side: at most [`MAX_TAIL_LINES`] lines from each instance, read from
//! at most its last [`MAX_TAIL_BYTES`]; a followed log is polled every [`FOLLOW_POLL`],
//! takes at most [`MAX_FOLLOW_CHUNK`] of each file per poll, and ends after
//! [`MAX_FOLLOW`] (the client starts it again) or when the client goes away. Each
//! followed log holds one of the API's connections for that long, so at most
//! [`ApiLimits::max_follows`] are open at once, [`ApiLimits::max_follows_per_release`] of
//! one release ([`FollowLimits`]); beyond them a follow is answered 429.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use cutover_backend::{LogFile, Slot};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::Controller;
use crate::api::{
    ApiBody, ApiLimits, controller_error, error, full, query_flag, query_value, streamed,
};

/// Lines from each instance when the request names no `tail`.
pub const DEFAULT_TAIL_LINES: usize = 100;

/// The most lines taken from each instance.
pub const MAX_TAIL_LINES: usize = 10_000;

/// The most bytes read from the end of each file for its tail.
pub const MAX_TAIL_BYTES: u64 = 1024 * 1024;

/// How often a followed log looks for new output.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The most bytes taken from one file at one poll of a followed log.
pub const MAX_FOLLOW_CHUNK: u64 = 256 * 1024;

/// How long one followed log stays open.
pub const MAX_FOLLOW: Duration = Duration::from_secs(3600);

/// The followed logs open now, in all and per release, against the API's limits: a
/// follow holds a connection for up to [`MAX_FOLLOW`], so without a bound a few clients
/// could take every connection the API serves.
pub(crate) struct FollowLimits {
    total: usize,
    per_release: usize,
    open: Arc<Mutex<BTreeMap<String, usize>>>,
}

/// One open follow; its slot is given back when it is dropped (the stream ended, the
/// client went away, or [`MAX_FOLLOW`] passed).
pub(crate) struct FollowPermit {
    release: String,
    open: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl FollowLimits {
    /// The limits of `limits`, nothing open yet.
    pub(crate) fn new(limits: &ApiLimits) -> FollowLimits {
        FollowLimits {
            total: limits.max_follows,
            per_release: limits.max_follows_per_release,
            open: Arc::default(),
        }
    }

    /// A slot for one more follow of `release`, or the refusal saying how many are
    /// open against which limit.
    pub(crate) fn open(&self, release: &str) -> Result<FollowPermit, String> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let in_all: usize = open.values().sum();
        let of_release = open.get(release).copied().unwrap_or(0);
        if of_release >= self.per_release {
            return Err(format!(
                "{of_release} followed logs of '{release}' are open, the limit per release is {}; close one (or read without --follow)",
                self.per_release
            ));
        }
        if in_all >= self.total {
            return Err(format!(
                "{in_all} followed logs are open, the limit is {} in all; close one (or read without --follow)",
                self.total
            ));
        }
        *open.entry(release.to_string()).or_default() += 1;
        Ok(FollowPermit {
            release: release.to_string(),
            open: self.open.clone(),
        })
    }
}

impl Drop for FollowPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.release) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.release);
            }
        }
    }
}

/// Which instances a request asks for: `slot=stable|candidate|previous` and `version=V`
/// narrow it down; none means every instance of every slot.
struct Selection {
    slot: Option<Slot>,
    version: Option<String>,
}

impl Selection {
    fn parse(req: &Request<Incoming>) -> Result<Selection, String> {
        let slot = match query_value(req, "slot") {
            None => None,
            Some("stable") => Some(Slot::Stable),
            Some("candidate") => Some(Slot::Candidate),
            Some("previous") => Some(Slot::Previous),
            Some(other) => {
                return Err(format!(
                    "no slot '{other}': use stable, candidate or previous"
                ));
            }
        };
        // Sent as is: a version name needs no encoding, so anything else names none.
        let version = query_value(req, "version");
        if let Some(version) = version
            && !cutover_core::validate::is_version_name(version)
        {
            return Err(format!(
                "'{version}' is not a version name: versions are letters, digits, '_', '.' and '-', sent unencoded"
            ));
        }
        Ok(Selection {
            slot,
            version: version.map(str::to_string),
        })
    }

    fn admits(&self, file: &LogFile) -> bool {
        self.slot.is_none_or(|s| s == file.slot)
            && self.version.as_deref().is_none_or(|v| v == file.version)
    }
}

/// The name of a slot as the API spells it.
fn slot_name(slot: Slot) -> &'static str {
    match slot {
        Slot::Stable => "stable",
        Slot::Candidate => "candidate",
        Slot::Previous => "previous",
    }
}

/// Serves the logs request; a follow takes a slot of `follows` for as long as it is open.
pub(crate) async fn serve(
    controller: &Controller,
    follows: &FollowLimits,
    name: &str,
    req: &Request<Incoming>,
) -> Response<ApiBody> {
    let selection = match Selection::parse(req) {
        Ok(selection) => selection,
        Err(message) => return error(StatusCode::BAD_REQUEST, "badRequest", message),
    };
    let tail = match query_value(req, "tail").map(str::parse::<usize>) {
        None => DEFAULT_TAIL_LINES,
        Some(Ok(n)) => n.min(MAX_TAIL_LINES),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "tail must be a number of lines",
            );
        }
    };
    let files = match controller.log_files(name).await {
        Ok(files) => files,
        Err(e) => return controller_error(&e),
    };
    let all: Vec<String> = files
        .iter()
        .map(|f| format!("{} ({})", f.version, slot_name(f.slot)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let chosen: Vec<LogFile> = files.into_iter().filter(|f| selection.admits(f)).collect();
    if chosen.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "notFound",
            if all.is_empty() {
                format!(
                    "release '{name}' has no instance cutover runs (its slots are addresses, or none is deployed)"
                )
            } else {
                format!(
                    "no instance of '{name}' matches; it runs {}",
                    all.join(", ")
                )
            },
        );
    }
    // A prefix per line once there is more than one instance, so lines can be told apart.
    let labelled = chosen.len() > 1;
    let sources: Vec<(String, PathBuf)> = chosen
        .into_iter()
        .map(|f| {
            let label = if labelled {
                format!("[{} {}#{}] ", f.version, slot_name(f.slot), f.instance)
            } else {
                String::new()
            };
            (label, f.path)
        })
        .collect();
    let permit = if query_flag(req, "follow") {
        match follows.open(name) {
            Ok(permit) => Some(permit),
            Err(message) => {
                return error(StatusCode::TOO_MANY_REQUESTS, "tooManyFollows", message);
            }
        }
    } else {
        None
    };
    let reading = sources.clone();
    let Ok(tails) = tokio::task::spawn_blocking(move || {
        reading
            .iter()
            .map(|(label, path)| tail_of(path, tail, label))
            .collect::<Vec<_>>()
    })
    .await
    else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the log reader failed",
        );
    };
    let Some(permit) = permit else {
        let body: String = tails.into_iter().map(|(text, _)| text).collect();
        return full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            body.into_bytes(),
        );
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let offsets: Vec<u64> = tails.iter().map(|(_, end)| *end).collect();
    let first: String = tails.into_iter().map(|(text, _)| text).collect();
    // The whole follow is bounded, a client that stops reading included (a send that
    // waits for room counts against it).
    tokio::spawn(async move {
        let _slot = permit;
        let _ =
            tokio::time::timeout(MAX_FOLLOW, follow_files(sources, offsets, first, sender)).await;
    });
    streamed(receiver, "text/plain; charset=utf-8")
}

/// The last `lines` lines of `path` (read from at most its last [`MAX_TAIL_BYTES`]), each
/// prefixed with `label`, and the file's length: where following starts. A file not
/// written yet is empty.
fn tail_of(path: &Path, lines: usize, label: &str) -> (String, u64) {
    let Ok(mut file) = File::open(path) else {
        return (String::new(), 0);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(MAX_TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return (String::new(), 0);
    }
    let mut bytes = Vec::new();
    let _ = file.take(len - start).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let mut all: Vec<&str> = text.lines().collect();
    // A read that started mid-file begins mid-line.
    if start > 0 && !all.is_empty() {
        all.remove(0);
    }
    let kept = &all[all.len().saturating_sub(lines)..];
    let out = kept
        .iter()
        .map(|line| format!("{label}{line}\n"))
        .collect::<String>();
    (out, start + bytes.len() as u64)
}

/// New output of `path` since `offset`: whole lines (at most [`MAX_FOLLOW_CHUNK`]) and
/// the new offset. A file that shrank was started afresh: read from its beginning.
fn read_new(path: &Path, offset: u64) -> (Vec<u8>, u64) {
    let Ok(mut file) = File::open(path) else {
        return (Vec::new(), offset);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = if len < offset { 0 } else { offset };
    if len == offset || file.seek(SeekFrom::Start(offset)).is_err() {
        return (Vec::new(), offset);
    }
    let mut bytes = Vec::new();
    let _ = file
        .take((len - offset).min(MAX_FOLLOW_CHUNK))
        .read_to_end(&mut bytes);
    // Only whole lines, unless one line alone fills the chunk (it is cut there).
    let consumed = match bytes.iter().rposition(|b| *b == b'\n') {
        Some(end) => {
            bytes.truncate(end + 1);
            bytes.len()
        }
        None if (bytes.len() as u64) < MAX_FOLLOW_CHUNK => {
            bytes.clear();
            0
        }
        None => {
            let taken = bytes.len();
            bytes.push(b'\n');
            taken
        }
    };
    (bytes, offset + consumed as u64)
}

/// Sends `first`, then every new line of each source until the client goes away (the
/// caller bounds it by [`MAX_FOLLOW`]).
async fn follow_files(
    sources: Vec<(String, PathBuf)>,
    mut offsets: Vec<u64>,
    first: String,
    sender: mpsc::Sender<Bytes>,
) {
    if !first.is_empty() && sender.send(Bytes::from(first)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = sender.closed() => return,
        }
        let reading = sources.clone();
        let at = offsets.clone();
        let Ok(news) = tokio::task::spawn_blocking(move || {
            reading
                .iter()
                .zip(at)
                .map(|((label, path), offset)| {
                    let (bytes, next) = read_new(path, offset);
                    let text = String::from_utf8_lossy(&bytes)
                        .lines()
                        .map(|line| format!("{label}{line}\n"))
                        .collect::<String>();
                    (text, next)
                })
                .collect::<Vec<_>>()
        })
        .await
        else {
            return;
        };
        for (i, (text, next)) in news.into_iter().enumerate() {
            offsets[i] = next;
            if !text.is_empty() && sender.send(Bytes::from(text)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cutover-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("made");
        dir
    }

    #[test]
    fn follows_beyond_the_limits_are_refused_and_a_closed_one_frees_its_slot() {
        let limits = FollowLimits::new(&ApiLimits {
            max_follows: 3,
            max_follows_per_release: 2,
            ..ApiLimits::default()
        });
        let a1 = limits.open("a").expect("first of a");
        let _a2 = limits.open("a").expect("second of a");
        let refused = limits.open("a").err().expect("third of a refused");
        assert!(refused.contains("2 followed logs of 'a'"), "{refused}");
        assert!(refused.contains("limit per release is 2"), "{refused}");
        let _b1 = limits.open("b").expect("first of b");
        let refused = limits.open("c").err().expect("fourth in all refused");
        assert!(refused.contains("3 followed logs are open"), "{refused}");
        assert!(refused.contains("limit is 3 in all"), "{refused}");
        drop(a1);
        let _a3 = limits.open("a").expect("a slot freed");
    }

    #[test]
    fn a_tail_takes_the_last_lines_and_following_takes_only_whole_new_lines() {
        let dir = scratch("tail");
        let path = dir.join("a.log");
        std::fs::write(&path, "one\ntwo\nthree\n").expect("written");
        let (text, end) = tail_of(&path, 2, "[x] ");
        assert_eq!(text, "[x] two\n[x] three\n");
        assert_eq!(end, 14);
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        file.write_all(b"four\nfiv").expect("append");
        let (new, next) = read_new(&path, end);
        assert_eq!(new, b"four\n", "a partial line waits for its end");
        assert_eq!(next, 19);
        file.write_all(b"e\n").expect("append");
        let (new, _) = read_new(&path, next);
        assert_eq!(new, b"five\n");
        // A file started afresh (shorter than the offset) is read from the start.
        std::fs::write(&path, "new\n").expect("rewritten");
        assert_eq!(read_new(&path, 21).0, b"new\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
