//! The compare-and-swap decision every backend makes for a state write, written once:
//! [`decide`] takes what the store holds (as read for the write) and the write asked for,
//! and says whether to write, to answer a replay, or to refuse; [`fenced`] is the revision
//! a `recover` writes to fence off a controller that is not dead after all. And
//! [`target_of`]: whether a release names the backend asked to run it.
//!
//! Pure: the backends read their store (a file, service labels, annotations), ask here,
//! and apply the answer in their own compare-and-swap (a rename under a lock, an update
//! naming the version index read, a replace naming the `resourceVersion` read).
//!
//! Why a write names its writer: a write whose reply was lost is sent again, and the
//! store recognises it because it already holds that revision with that text. But a
//! controller taking a release over fences it by writing the same text one revision up,
//! and a dead controller's next write (the same text, expecting the old revision) must not
//! pass for a replay of that. So a replay is recognised only from the writer that made it.

use cutover_core::spec::{Backend as BackendSpec, Release};

use crate::backend::BackendError;

/// The state a store holds, as read for a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held<'a> {
    /// The stored revision; `None` when nothing is stored.
    pub revision: Option<u64>,
    /// The stored state's text.
    pub text: Option<&'a str>,
    /// Who wrote it (see [`writer_id`](crate::writer_id)); `None` for a state written by a
    /// version that did not record its writer, or moved without one.
    pub writer: Option<&'a str>,
}

/// A state write as the controller asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The revision the writer read (`None`: it read nothing stored).
    pub expected: Option<u64>,
    /// The state's text.
    pub text: &'a str,
    /// Who writes.
    pub writer: &'a str,
}

impl Request<'_> {
    /// The revision this write makes: one past the one it read, from 1.
    pub fn revision(&self) -> u64 {
        self.expected.unwrap_or(0) + 1
    }
}

/// What to do with a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store the text at this revision, naming the writer.
    Write {
        /// The new revision.
        revision: u64,
    },
    /// The store already holds this very write by this writer (a reply was lost): write
    /// nothing, answer with its revision.
    Replay {
        /// The revision it holds.
        revision: u64,
    },
    /// Someone else wrote since the writer read (another controller, or a `recover` that
    /// fenced this writer off): refuse with [`BackendError::Conflict`].
    Conflict,
}

/// Decides a state write against what the store holds. A replay is checked first (the
/// held revision is then one past `expected`, which would otherwise be a conflict).
pub fn decide(held: Held<'_>, write: Request<'_>) -> Decision {
    let revision = write.revision();
    if held.revision == Some(revision)
        && held.text == Some(write.text)
        && held.writer == Some(write.writer)
    {
        return Decision::Replay { revision };
    }
    if held.revision == write.expected {
        Decision::Write { revision }
    } else {
        Decision::Conflict
    }
}

/// The revision `recover` writes the held state at, naming itself the writer, so that a
/// write another controller still has in flight (expecting the held revision) is refused
/// and not taken for a replay; `None` when nothing is stored (nothing to fence).
pub fn fenced(held: Option<u64>) -> Option<u64> {
    held.map(|revision| revision + 1)
}

/// The part of `release` for the backend `wanted` (say `BackendSpec::Swarm`), or why this
/// backend cannot run it: the release names another. `drives` is this backend in an
/// operator's words ("Docker Swarm").
pub fn target_of<'r, T>(
    release: &'r Release,
    drives: &str,
    wanted: impl FnOnce(&'r BackendSpec) -> Option<&'r T>,
) -> Result<&'r T, BackendError> {
    let spec = &release.spec.backend;
    wanted(spec).ok_or_else(|| {
        BackendError::Invalid(format!(
            "release '{}' names the {} backend; this controller drives {drives}",
            release.metadata.name,
            spec.name()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "me";
    const OTHER: &str = "other";

    fn held<'a>(revision: Option<u64>, text: &'a str, writer: Option<&'a str>) -> Held<'a> {
        Held {
            revision,
            text: revision.map(|_| text),
            writer,
        }
    }

    fn write<'a>(expected: Option<u64>, text: &'a str) -> Request<'a> {
        Request {
            expected,
            text,
            writer: ME,
        }
    }

    /// (held revision, held text, held writer, expected revision, text asked, decision).
    type Case = (
        Option<u64>,
        &'static str,
        Option<&'static str>,
        Option<u64>,
        &'static str,
        Decision,
    );

    /// The whole table: (held revision, held text, held writer, expected, text) → decision.
    #[test]
    fn the_decision_table() {
        use Decision::{Conflict, Replay, Write};
        let cases: &[Case] = &[
            // Nothing stored: a first write goes through, one expecting a state conflicts.
            (None, "", None, None, "a", Write { revision: 1 }),
            (None, "", None, Some(1), "a", Conflict),
            // The revision read is the one held: write one up.
            (Some(1), "a", Some(ME), Some(1), "b", Write { revision: 2 }),
            (
                Some(1),
                "a",
                Some(OTHER),
                Some(1),
                "b",
                Write { revision: 2 },
            ),
            (Some(0), "a", None, Some(0), "b", Write { revision: 1 }),
            // A first write when something is stored: conflict.
            (Some(1), "a", Some(OTHER), None, "b", Conflict),
            // My own write, sent again after its reply was lost: a replay.
            (Some(1), "a", Some(ME), None, "a", Replay { revision: 1 }),
            (Some(3), "b", Some(ME), Some(2), "b", Replay { revision: 3 }),
            // The same revision and text by another writer (a fence): not a replay.
            (Some(3), "b", Some(OTHER), Some(2), "b", Conflict),
            // ... nor by a writer that is not recorded.
            (Some(3), "b", None, Some(2), "b", Conflict),
            // The revision I would make, with other text: someone else wrote it.
            (Some(3), "c", Some(ME), Some(2), "b", Conflict),
            // A stale revision: conflict, whoever wrote.
            (Some(5), "b", Some(ME), Some(2), "b", Conflict),
            (Some(5), "b", Some(OTHER), Some(4), "c", Conflict),
            // A writer ahead of the store (a state restored from a backup): conflict.
            (Some(1), "a", Some(ME), Some(4), "a", Conflict),
        ];
        for &(revision, text, writer, expected, asked, want) in cases {
            assert_eq!(
                decide(held(revision, text, writer), write(expected, asked)),
                want,
                "held {revision:?} {text:?} by {writer:?}; write {asked:?} expecting {expected:?}"
            );
        }
    }

    #[test]
    fn a_fence_goes_one_revision_up_and_a_fenced_writer_is_refused() {
        assert_eq!(fenced(None), None);
        assert_eq!(fenced(Some(0)), Some(1));
        let fence = fenced(Some(4)).expect("a revision");
        assert_eq!(fence, 5);
        // The fence rewrote my text at 5 in its own name: my next write (expecting 4, the
        // revision I read) is refused, not taken for my replay.
        let after = held(Some(fence), "s", Some(OTHER));
        assert_eq!(decide(after, write(Some(4), "s")), Decision::Conflict);
        assert_eq!(
            decide(
                after,
                Request {
                    writer: OTHER,
                    ..write(Some(5), "t")
                }
            ),
            Decision::Write { revision: 6 }
        );
    }

    #[test]
    fn a_release_for_another_backend_is_named_in_the_refusal() {
        let text = "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {name: shop}\nspec:\n  backend:\n    swarm: {service: web, network: shop}\n  image: demo:v2\n  port: 8080\n  strategy: {canary: {steps: [{setWeight: 50}]}}\n";
        let source = cutover_core::load::Source {
            name: "shop.yaml",
            text,
            format: cutover_core::load::Format::Yaml,
        };
        let release = match cutover_core::load::load_release(source, &Default::default()) {
            Ok((release, _)) => release,
            Err(d) => panic!("{d:?}"),
        };
        let swarm = target_of(&release, "Docker Swarm", |b| match b {
            BackendSpec::Swarm(t) => Some(t),
            _ => None,
        });
        assert_eq!(swarm.expect("a swarm release").service, "web");
        let err = target_of(&release, "the local backend", |b| match b {
            BackendSpec::Local(t) => Some(t),
            _ => None,
        })
        .expect_err("not local");
        assert!(!err.is_retryable());
        assert_eq!(
            err.to_string(),
            "release 'shop' names the swarm backend; this controller drives the local backend"
        );
    }
}
