//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several controller
//! replicas exactly one drives rollouts.
//!
//! The protocol is client-go's: the holder renews the Lease's `renewTime` every
//! `renew_every`; a candidate takes the Lease over only after it has seen the same record,
//! unchanged, for the Lease's whole duration, measured on its own clock (so clock skew
//! between hosts does not matter). Every write names the `resourceVersion` it read, so of
//! two candidates racing for a free Lease one gets a 409 and goes back to waiting. A holder
//! that cannot renew within `renew_deadline` gives up leadership before another can take
//! it: `renew_deadline < duration`.
//!
//! [`Observer`] is the decision, without I/O; [`LeaderElector`] carries it out.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::error;

/// How a controller takes part in the election.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity: unique among the replicas (pod name and process id).
    pub identity: String,
    /// How long a Lease not renewed stays with its holder.
    pub duration: Duration,
}

impl LeaseConfig {
    /// How often the holder renews: a third of the duration, as in client-go.
    pub fn renew_every(&self) -> Duration {
        self.duration / 3
    }

    /// How long the holder keeps trying to renew before it gives up: two thirds of the
    /// duration, so it stops driving before anyone may take over.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it, held by us.
    Create,
    /// It is free or expired: take it over.
    Take,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it: look again later.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// A candidate's view of the Lease over time: the record it last saw and when it first
/// saw it. Pure: time comes in as a parameter.
#[derive(Debug, Default)]
pub struct Observer {
    seen: Option<(String, Instant)>,
}

impl Observer {
    /// Decides what `identity` does with `lease` (as read at `now`), whose duration is
    /// `duration` unless the Lease says otherwise.
    pub fn decide(
        &mut self,
        now: Instant,
        lease: Option<&Lease>,
        identity: &str,
        duration: Duration,
    ) -> Decision {
        let Some(lease) = lease else {
            self.seen = None;
            return Decision::Create;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder.is_empty() {
            return Decision::Take;
        }
        if holder == identity {
            return Decision::Renew;
        }
        let record = format!(
            "{holder}|{:?}|{:?}",
            spec.renew_time.map(|t| t.0.to_string()),
            lease.metadata.resource_version
        );
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(duration, Duration::from_secs);
        match &self.seen {
            Some((seen, since)) if *seen == record => {
                if now.duration_since(*since) >= duration {
                    Decision::Take
                } else {
                    Decision::Wait { holder }
                }
            }
            _ => {
                self.seen = Some((record, now));
                Decision::Wait { holder }
            }
        }
    }
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another replica holds the Lease now.
    #[error("lost the Lease '{lease}' to {holder}")]
    Taken {
        /// The Lease.
        lease: String,
        /// Who holds it.
        holder: String,
    },
    /// Renewals failed until the renew deadline passed.
    #[error("could not renew the Lease '{lease}' for {elapsed:?}: {last}")]
    Expired {
        /// The Lease.
        lease: String,
        /// Since the last renewal.
        elapsed: Duration,
        /// The last error.
        last: String,
    },
}

/// How one round of the election went.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Round {
    /// This replica holds the Lease now.
    Leading,
    /// Another one holds it.
    HeldBy(String),
    /// Another replica wrote the Lease between our read and our write: look again.
    Raced,
}

/// Runs the election for one replica. Cheap to clone.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// An elector for `config` through `client`.
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Waits until this replica holds the Lease, and returns when the write that took it
    /// was sent: the Lease runs from no earlier than that. Errors from the API server are
    /// logged and retried: a standby waits out an outage.
    pub async fn acquire(&self) -> Instant {
        let mut observer = Observer::default();
        let mut said = None;
        loop {
            let sent = Instant::now();
            match self
                .try_acquire(&mut observer, self.config.renew_every())
                .await
            {
                Ok(Round::Leading) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "leading");
                    return sent;
                }
                Ok(Round::Raced) => {}
                Ok(Round::HeldBy(holder)) => {
                    if said.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.config.name, %holder, "standing by: another controller leads");
                        said = Some(holder);
                    }
                }
                Err(e) => {
                    // Said once per kind of failure: a missing RBAC rule names itself.
                    let text = self.explain(e);
                    if said.as_ref() != Some(&text) {
                        tracing::error!(lease = %self.config.name, error = %text, "leader election: retrying");
                        said = Some(text);
                    }
                }
            }
            tokio::time::sleep(self.config.renew_every().min(Duration::from_secs(2))).await;
        }
    }

    /// An election error in the operator's terms: a 403 names the Role rule it lacks.
    fn explain(&self, e: kube::Error) -> String {
        error::classify(
            error::Call {
                verbs: &["get", "create", "update"],
                resource: "leases",
                group: "coordination.k8s.io",
                namespace: &self.config.namespace,
            },
            e,
        )
        .to_string()
    }

    /// One round, bounded by `limit` so that a stalled call cannot hold a leader past its
    /// deadline.
    async fn try_acquire(
        &self,
        observer: &mut Observer,
        limit: Duration,
    ) -> Result<Round, kube::Error> {
        match tokio::time::timeout(limit, self.try_acquire_once(observer)).await {
            Ok(result) => result,
            Err(_) => Err(kube::Error::Service(
                format!("no answer from the API server within {limit:?}").into(),
            )),
        }
    }

    async fn try_acquire_once(&self, observer: &mut Observer) -> Result<Round, kube::Error> {
        let lease = self.api.get_opt(&self.config.name).await?;
        let decision = observer.decide(
            Instant::now(),
            lease.as_ref(),
            &self.config.identity,
            self.config.duration,
        );
        let written = match decision {
            Decision::Wait { holder } => return Ok(Round::HeldBy(holder)),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, true)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Decision::Take | Decision::Renew => {
                let Some(mut lease) = lease else {
                    return Ok(Round::Raced);
                };
                let taking = decision == Decision::Take;
                lease.spec = Some(self.spec(lease.spec.take(), taking));
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match written {
            Ok(()) => Ok(Round::Leading),
            // Another replica wrote first: look again.
            Err(e) if error::is_conflict(&e) => Ok(Round::Raced),
            Err(e) => Err(e),
        }
    }

    /// The Lease's spec with us as holder, renewed now.
    fn spec(&self, previous: Option<LeaseSpec>, taking: bool) -> LeaseSpec {
        let now = micro_now();
        let mut spec = previous.unwrap_or_default();
        if taking || spec.holder_identity.as_deref() != Some(&self.config.identity) {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions =
                Some(spec.lease_transitions.map_or(0, |t| t.saturating_add(1)));
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX));
        spec.renew_time = Some(now);
        spec
    }

    /// Renews the Lease, taken at `acquired` (what [`acquire`](Self::acquire) returned), for
    /// as long as this replica holds it; returns why it stopped. Start it as soon as
    /// `acquire` returns, before anything slow: whoever acquired must stop acting when this
    /// returns.
    pub async fn hold(&self, acquired: Instant) -> LeaseError {
        let mut renewed = acquired;
        let mut observer = Observer::default();
        let mut next = renewed + self.config.renew_every();
        loop {
            tokio::time::sleep_until(next.into()).await;
            let sent = Instant::now();
            next = sent + (self.config.renew_every() / 4).max(Duration::from_millis(200));
            // No attempt may end after the deadline: past it, another may lead.
            let left = self
                .config
                .renew_deadline()
                .saturating_sub(renewed.elapsed());
            if left.is_zero() {
                return LeaseError::Expired {
                    lease: self.config.name.clone(),
                    elapsed: renewed.elapsed(),
                    last: "no renewal succeeded".into(),
                };
            }
            match self
                .try_acquire(&mut observer, left.min(self.config.renew_every()))
                .await
            {
                Ok(Round::Leading) => {
                    renewed = sent;
                    next = renewed + self.config.renew_every();
                }
                Ok(Round::HeldBy(holder)) => {
                    return LeaseError::Taken {
                        lease: self.config.name.clone(),
                        holder,
                    };
                }
                Ok(Round::Raced) => {}
                Err(e) => {
                    let elapsed = renewed.elapsed();
                    let e = self.explain(e);
                    tracing::warn!(lease = %self.config.name, error = %e, ?elapsed, "cannot renew the Lease");
                    if elapsed >= self.config.renew_deadline() {
                        return LeaseError::Expired {
                            lease: self.config.name.clone(),
                            elapsed,
                            last: e.to_string(),
                        };
                    }
                    continue;
                }
            }
            if renewed.elapsed() >= self.config.renew_deadline() {
                return LeaseError::Expired {
                    lease: self.config.name.clone(),
                    elapsed: renewed.elapsed(),
                    last: "renewals kept losing races".into(),
                };
            }
        }
    }
}

/// The identity of this process: the host name (a pod's name in Kubernetes), the process
/// id and the start time, so that two replicas on one host differ, and so does a replica
/// from its own restart.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cutover".into());
    // In a container the process id is always the same; the start time tells a restarted
    // process from the one before it.
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host}_{}_{started:x}", std::process::id())
}

fn micro_now() -> MicroTime {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(micros).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: &str, rv: &str) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "cutover", "resourceVersion": rv },
            "spec": { "holderIdentity": holder, "leaseDurationSeconds": 3, "renewTime": renewed },
        }))
        .expect("a lease")
    }

    #[test]
    fn a_lease_is_taken_only_after_its_duration_without_renewal() {
        let d = Duration::from_secs(15);
        let start = Instant::now();
        let mut o = Observer::default();
        assert_eq!(o.decide(start, None, "b", d), Decision::Create);
        let held = lease(Some("a"), "2026-11-27T10:00:00.000000Z", "5");
        let wait = Decision::Wait { holder: "a".into() };
        assert_eq!(o.decide(start, Some(&held), "b", d), wait);
        assert_eq!(
            o.decide(start + Duration::from_secs(2), Some(&held), "b", d),
            wait
        );
        // Renewed: the clock starts again.
        let renewed = lease(Some("a"), "2026-11-27T10:00:01.000000Z", "6");
        let at = start + Duration::from_secs(2);
        assert_eq!(o.decide(at, Some(&renewed), "b", d), wait);
        assert_eq!(
            o.decide(at + Duration::from_secs(2), Some(&renewed), "b", d),
            wait
        );
        // The Lease's own duration (3 s) counts, not the caller's default.
        assert_eq!(
            o.decide(at + Duration::from_secs(3), Some(&renewed), "b", d),
            Decision::Take
        );
        assert_eq!(o.decide(at, Some(&renewed), "a", d), Decision::Renew);
        let free = lease(None, "2026-11-27T10:00:01.000000Z", "7");
        assert_eq!(o.decide(at, Some(&free), "b", d), Decision::Take);
    }

    #[test]
    fn the_holder_stops_before_anyone_may_take_over() {
        let config = LeaseConfig {
            name: "cutover".into(),
            namespace: "shop".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
        };
        assert!(config.renew_deadline() < config.duration);
        assert!(config.renew_every() < config.renew_deadline());
    }
}
