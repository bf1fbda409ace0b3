//! The decisions a release's driver makes on its own, apart from the rollout state
//! machine: whether it acts at all (held still by a submission, stopped by another
//! writer), whether a guardrail trip keeps the candidate cut off, which slot operations
//! are under way and whether an endpoint refresh may be taken or used, when to refresh,
//! how long to wait before persisting again, and when a finished rollout is counted.
//!
//! Sans I/O, in quinn-proto's manner: the driver hands in what happened (with the time,
//! when it matters) and gets back what to do; nothing here reads a clock, spawns a task or
//! calls a backend, so every rule is a unit test.

use std::collections::BTreeMap;

use cutover_core::Backoff;
use cutover_core::rollout::{Command, CommandRejected, Phase, Timestamp};

/// The wait between attempts to persist the state: 100 ms, doubling to at most 5 s.
const PERSIST_BACKOFF: Backoff = Backoff::new(
    cutover_core::Duration::from_millis(100),
    cutover_core::Duration::from_secs(5),
);

/// A slot operation the driver dispatched: the backend changes the slots while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotOperation {
    /// The candidate is being created.
    Deploy,
    /// The candidate is being made stable.
    Promote,
    /// A slot is being removed.
    Retire,
}

/// One dispatched slot operation, named so that its acknowledgement can be told from a
/// stale one (a deploy cancelled by a retirement still reports if it had finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SlotOpId(u64);

/// What to do with a command.
#[derive(Debug, PartialEq, Eq)]
pub enum CommandGate {
    /// Hand it to the state machine.
    Pass,
    /// Answer it with this refusal; the machine never sees it.
    Refuse(CommandRejected),
}

/// What to do after a persist failed.
#[derive(Debug, PartialEq, Eq)]
pub enum PersistFailure {
    /// Another writer owns the state: stop driving the release.
    Stop,
    /// Try again after this long.
    RetryAfter(std::time::Duration),
}

/// The driver's own state and rules. See the module documentation.
#[derive(Debug)]
pub struct DriverState {
    /// Set when the proxy tripped a guardrail and the machine rolled back because of it:
    /// the candidate gets no traffic from any route built afterwards.
    tripped: bool,
    /// Another writer took the state over: the driver no longer acts.
    stopped: bool,
    /// A submission of a new rollout holds the driver still.
    frozen: bool,
    /// Bumped whenever a slot operation starts or ends: endpoint refreshes read before
    /// the last bump are stale.
    slot_epoch: u64,
    /// Slot operations dispatched and not yet acknowledged: while any is, a refresh could
    /// read the slots half-changed, so none is taken.
    in_flight: BTreeMap<SlotOpId, SlotOperation>,
    next_op: u64,
    /// When the endpoints are next read again.
    refresh_at: Timestamp,
    /// How often the endpoints are read.
    refresh_every: std::time::Duration,
    /// The wait before the next persist attempt.
    persist_backoff: Backoff,
    /// Whether the finished rollout was counted in the metrics already.
    finished_counted: bool,
}

impl DriverState {
    /// A driver's state at its start, at `now`; `done` if its rollout is finished (a
    /// finished rollout resumed after a restart is not counted twice).
    pub fn new(now: Timestamp, refresh_every: std::time::Duration, done: bool) -> DriverState {
        DriverState {
            tripped: false,
            stopped: false,
            frozen: false,
            slot_epoch: 0,
            in_flight: BTreeMap::new(),
            next_op: 0,
            refresh_at: after(now, refresh_every),
            refresh_every,
            persist_backoff: PERSIST_BACKOFF,
            finished_counted: done,
        }
    }

    /// Whether the driver carries out actions now: not while held still, and never again
    /// once another writer took the release over.
    pub fn acts(&self) -> bool {
        !self.stopped && !self.frozen
    }

    /// Whether another writer took the release over.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// A submission holds the driver still.
    pub fn freeze(&mut self) {
        self.frozen = true;
    }

    /// The submission failed: the driver acts again.
    pub fn thaw(&mut self) {
        self.frozen = false;
    }

    /// Whether a command goes to the state machine, or is refused here because the
    /// driver is held still or stopped.
    pub fn gate_command(&self, command: Command) -> CommandGate {
        if self.frozen {
            return CommandGate::Refuse(CommandRejected {
                command,
                phase: "being replaced by a new rollout of the release".into(),
                expected: "send the command to the new rollout",
            });
        }
        if self.stopped {
            return CommandGate::Refuse(CommandRejected {
                command,
                phase: "driven by another controller".into(),
                expected: "send the command to the controller that owns it",
            });
        }
        CommandGate::Pass
    }

    /// The machine took `command`: returns whether the guardrail cut must be cleared (a
    /// retry starts the rollout over, with the candidate back in the routes).
    pub fn command_accepted(&mut self, command: Command) -> bool {
        if command == Command::Retry {
            self.tripped = false;
            return true;
        }
        false
    }

    /// Whether a guardrail trip on `version` is for the state machine: only on this
    /// rollout's candidate, and only while the rollout is under way.
    pub fn trip_applies(&self, version: &str, candidate: &str, done: bool) -> bool {
        version == candidate && !done
    }

    /// The machine handled a trip and is now in `phase`: once it rolls back, every route
    /// built from here on keeps the candidate cut off.
    pub fn trip_handled(&mut self, phase: &Phase) {
        if matches!(phase, Phase::RollingBack { .. }) {
            self.tripped = true;
        }
    }

    /// Whether the candidate may get traffic in `phase`: during the steps and while it is
    /// promoted, unless a guardrail cut it off.
    pub fn candidate_open(&self, phase: &Phase) -> bool {
        !self.tripped && matches!(phase, Phase::Step { .. } | Phase::Promoting { .. })
    }

    /// A slot operation is dispatched: returns its name, for its acknowledgement.
    pub fn begin(&mut self, operation: SlotOperation) -> SlotOpId {
        self.slot_epoch += 1;
        self.next_op += 1;
        let id = SlotOpId(self.next_op);
        self.in_flight.insert(id, operation);
        id
    }

    /// The deploy under way, if any, is cancelled (the candidate is being retired): it is
    /// no longer waited for, and its acknowledgement, if one comes, is stale.
    pub fn cancel_deploy(&mut self) {
        self.in_flight
            .retain(|_, operation| *operation != SlotOperation::Deploy);
    }

    /// Operation `id` reported (whatever its outcome): returns whether it was still
    /// awaited. The slots may have changed either way, so refreshes read before now are
    /// stale.
    pub fn acknowledged(&mut self, id: SlotOpId) -> bool {
        self.slot_epoch += 1;
        self.in_flight.remove(&id).is_some()
    }

    /// Slot operations under way.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The epoch a refresh started now is read in.
    pub fn slot_epoch(&self) -> u64 {
        self.slot_epoch
    }

    /// Whether endpoints read in `epoch` (`None`: from the operation that changed the
    /// slots, always current) may be used: not if a slot operation started or ended since,
    /// nor while one is under way.
    pub fn endpoints_current(&self, epoch: Option<u64>) -> bool {
        epoch.is_none_or(|e| e == self.slot_epoch && self.in_flight.is_empty())
    }

    /// When the driver next wakes for a refresh, seen at `now`. A wall clock stepped back (by NTP, say) is met by moving the refresh back too:
    /// it is never further off than a period from `now`.
    pub fn refresh_at(&mut self, now: Timestamp) -> Timestamp {
        self.refresh_at = self.refresh_at.min(after(now, self.refresh_every));
        self.refresh_at
    }

    /// The driver woke at `now`: returns whether to read the endpoints now. A refresh is
    /// due every `refresh_every`, and skipped while a slot operation is under way (the
    /// next one is due a period later either way).
    pub fn refresh_due(&mut self, now: Timestamp) -> bool {
        if now < self.refresh_at {
            return false;
        }
        self.refresh_at = after(now, self.refresh_every);
        self.in_flight.is_empty()
    }

    /// A persist succeeded: the next failure waits the shortest time again.
    pub fn persisted(&mut self) {
        self.persist_backoff.reset();
    }

    /// A persist failed; `conflict` if another writer changed the state.
    pub fn persist_failed(&mut self, conflict: bool) -> PersistFailure {
        if conflict {
            self.stopped = true;
            self.persist_backoff.reset();
            return PersistFailure::Stop;
        }
        PersistFailure::RetryAfter(self.persist_backoff.next_delay().into())
    }

    /// The status was published with the rollout `done` or not: returns whether to count
    /// it as finished now (once per finish; a retry makes it count again at its end).
    pub fn finish_to_count(&mut self, done: bool) -> bool {
        if !done {
            self.finished_counted = false;
            return false;
        }
        !std::mem::replace(&mut self.finished_counted, true)
    }
}

/// `now` plus `period`, in the machine's milliseconds.
fn after(now: Timestamp, period: std::time::Duration) -> Timestamp {
    Timestamp(
        now.0
            .saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    fn state() -> DriverState {
        DriverState::new(Timestamp(0), EVERY, false)
    }

    fn step() -> Phase {
        Phase::Step {
            index: 0,
            progress: cutover_core::rollout::StepProgress::Routing { generation: 1 },
        }
    }

    #[test]
    fn a_frozen_driver_refuses_commands_and_does_not_act_until_thawed() {
        let mut s = state();
        s.freeze();
        assert!(!s.acts());
        let CommandGate::Refuse(refused) = s.gate_command(Command::Promote) else {
            panic!("a frozen driver passed a command on");
        };
        assert!(refused.phase.contains("new rollout"), "{}", refused.phase);
        s.thaw();
        assert!(s.acts());
        assert_eq!(s.gate_command(Command::Promote), CommandGate::Pass);
    }

    #[test]
    fn a_conflict_stops_the_driver_for_good_and_commands_name_the_other_controller() {
        let mut s = state();
        assert_eq!(s.persist_failed(true), PersistFailure::Stop);
        assert!(s.stopped() && !s.acts());
        s.thaw();
        assert!(!s.acts(), "a thaw does not undo a takeover");
        let CommandGate::Refuse(refused) = s.gate_command(Command::Abort) else {
            panic!("a stopped driver passed a command on");
        };
        assert!(refused.phase.contains("another controller"));
    }

    #[test]
    fn persist_retries_back_off_and_a_success_starts_them_short_again() {
        let mut s = state();
        let delays: Vec<_> = (0..8)
            .map(|_| match s.persist_failed(false) {
                PersistFailure::RetryAfter(d) => d,
                PersistFailure::Stop => panic!("a transient failure stopped the driver"),
            })
            .collect();
        assert_eq!(delays[0], std::time::Duration::from_millis(100));
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays[7], std::time::Duration::from_secs(5), "capped");
        assert!(s.acts(), "a transient failure never stops the driver");
        s.persisted();
        assert_eq!(
            s.persist_failed(false),
            PersistFailure::RetryAfter(std::time::Duration::from_millis(100))
        );
    }

    #[test]
    fn a_trip_cuts_the_candidate_only_once_the_machine_rolls_back() {
        let mut s = state();
        assert!(s.candidate_open(&step()));
        // Frozen or not, a trip that the machine did not turn into a rollback (a finished
        // or promoting rollout) leaves the routes as the machine wants them.
        s.freeze();
        s.trip_handled(&step());
        assert!(s.candidate_open(&step()));
        s.trip_handled(&Phase::RollingBack {
            reason: cutover_core::rollout::RollbackReason::Aborted,
            progress: cutover_core::rollout::RollbackProgress::Retiring,
        });
        assert!(!s.candidate_open(&step()), "cut while frozen too");
        assert!(!s.command_accepted(Command::Resume));
        assert!(!s.candidate_open(&step()), "only a retry clears the cut");
        assert!(
            s.command_accepted(Command::Retry),
            "the cut mark is cleared"
        );
        assert!(s.candidate_open(&step()));
    }

    #[test]
    fn a_trip_applies_only_to_this_rollouts_candidate_while_under_way() {
        let s = state();
        assert!(s.trip_applies("v2", "v2", false));
        assert!(!s.trip_applies("v1", "v2", false), "another version");
        assert!(!s.trip_applies("v2", "v2", true), "a finished rollout");
    }

    #[test]
    fn the_candidate_gets_traffic_only_during_steps_and_promotion() {
        let s = state();
        assert!(!s.candidate_open(&Phase::PreRollout));
        assert!(!s.candidate_open(&Phase::Deploying));
        assert!(s.candidate_open(&step()));
    }

    #[test]
    fn a_stale_slot_acknowledgement_after_a_newer_epoch_keeps_refreshes_off() {
        let mut s = state();
        let deploy = s.begin(SlotOperation::Deploy);
        // A retirement cancels the deploy under way and starts.
        s.cancel_deploy();
        let retire = s.begin(SlotOperation::Retire);
        // The deploy had finished before it was cancelled and reports late: it is not
        // awaited any more, and the retirement still is.
        assert!(!s.acknowledged(deploy), "stale");
        assert_eq!(s.in_flight(), 1);
        assert!(
            !s.refresh_due(Timestamp(10_000)),
            "the retirement is under way"
        );
        assert!(s.acknowledged(retire));
        assert_eq!(s.in_flight(), 0);
        assert!(s.refresh_due(Timestamp(20_000)));
    }

    #[test]
    fn endpoints_read_across_a_slot_operation_are_dropped() {
        let mut s = state();
        let before = s.slot_epoch();
        assert!(s.endpoints_current(Some(before)));
        let op = s.begin(SlotOperation::Promote);
        assert!(
            !s.endpoints_current(Some(before)),
            "an operation started since"
        );
        assert!(
            !s.endpoints_current(Some(s.slot_epoch())),
            "one is under way"
        );
        assert!(
            s.endpoints_current(None),
            "an operation's own report is current"
        );
        s.acknowledged(op);
        assert!(!s.endpoints_current(Some(before)), "it ended since");
        assert!(s.endpoints_current(Some(s.slot_epoch())));
    }

    #[test]
    fn a_stop_during_an_in_flight_deploy_leaves_it_awaited_but_the_driver_idle() {
        let mut s = state();
        let deploy = s.begin(SlotOperation::Deploy);
        assert_eq!(s.persist_failed(true), PersistFailure::Stop);
        assert!(!s.acts());
        assert_eq!(
            s.in_flight(),
            1,
            "the deploy still runs; no refresh races it"
        );
        assert!(!s.refresh_due(Timestamp(10_000)));
        assert!(s.acknowledged(deploy));
        assert!(!s.acts(), "its report does not wake a stopped driver");
    }

    #[test]
    fn refreshes_fall_due_every_period_and_not_before() {
        let mut s = state();
        assert_eq!(s.refresh_at(Timestamp(10_500)), Timestamp(10_000));
        assert!(!s.refresh_due(Timestamp(9_999)));
        assert!(s.refresh_due(Timestamp(10_500)));
        assert_eq!(
            s.refresh_at(Timestamp(10_500)),
            Timestamp(20_500),
            "a period after the refresh"
        );
        assert!(!s.refresh_due(Timestamp(20_000)), "not twice");
    }

    #[test]
    fn a_clock_stepped_back_does_not_put_the_next_refresh_off() {
        let mut s = state();
        assert!(s.refresh_due(Timestamp(3_600_000)));
        // The wall clock goes back an hour: the refresh is still a period away, not an
        // hour and a period.
        assert_eq!(s.refresh_at(Timestamp(500)), Timestamp(10_500));
        assert!(s.refresh_due(Timestamp(10_500)));
    }

    #[test]
    fn a_finished_rollout_is_counted_once_and_again_after_a_retry_finishes() {
        let mut s = state();
        assert!(!s.finish_to_count(false));
        assert!(s.finish_to_count(true));
        assert!(!s.finish_to_count(true), "once");
        assert!(!s.finish_to_count(false), "retried");
        assert!(s.finish_to_count(true), "the retry's end counts");
        let mut resumed = DriverState::new(Timestamp(0), EVERY, true);
        assert!(
            !resumed.finish_to_count(true),
            "a finished rollout resumed after a restart was counted before it"
        );
    }
}
