//! The local backend's candidate lifecycle: starting, adopting and stopping a slot's
//! instances, waiting for readiness, and the stable, deploy, promote, retire and delete
//! operations behind the trait.

use super::*;

impl LocalBackend {
    /// Starts (or adopts, after a restart) the instances of a command slot that are not
    /// running under a supervisor of this process.
    pub(super) async fn ensure_running(&self, release: &str, record: &SlotRecord) {
        let Workload::Command { argv, ports } = &record.workload else {
            return;
        };
        if self.running.lock().await.contains_key(&record.set) {
            return;
        }
        let prefix = format!("{}{}/", self.tag_prefix(release), record.set);
        let found = find_tagged(prefix.clone()).await;
        let mut running = self.running.lock().await;
        if running.contains_key(&record.set) {
            return;
        }
        let supervisors = ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                let tag = format!("{prefix}{n}");
                let adopt = found.iter().find(|(_, t)| *t == tag).map(|(pid, _)| *pid);
                if let Some(pid) = adopt {
                    tracing::info!(%tag, pid, "adopted a running instance");
                }
                let spec = InstanceSpec {
                    argv: argv
                        .iter()
                        .map(|a| a.replace("{{port}}", &port.to_string()))
                        .collect(),
                    port: *port,
                    tag,
                    log: self.log_path(release, &record.set, n),
                };
                Supervisor::start(spec, adopt)
            })
            .collect();
        running.insert(record.set.clone(), supervisors);
    }

    /// Stops every instance of `set`, supervised here or left by an earlier controller.
    pub(super) async fn stop_set(&self, release: &str, set: &str) {
        let supervisors = self.running.lock().await.remove(set);
        // In a task of its own: a caller cancelled half-way (an aborted deploy) must not
        // drop supervisors that were taken out but not yet stopped.
        let stopping = tokio::spawn(async move {
            for supervisor in supervisors.into_iter().flatten() {
                supervisor.stop().await;
            }
        });
        let _ = stopping.await;
        for (pid, tag) in find_tagged(format!("{}{set}/", self.tag_prefix(release))).await {
            process::terminate(pid, &tag).await;
        }
    }

    /// Stops instances of `release` that no slot claims (left by a deploy whose record was
    /// replaced before its instances were stopped). Only releases with a command slot can
    /// have any, so address-only releases skip the scan of `/proc`.
    pub(super) async fn sweep_strays(&self, release: &str, slots: &Slots, had_commands: bool) {
        let commands = [&slots.stable, &slots.candidate, &slots.previous]
            .into_iter()
            .flatten()
            .any(|r| matches!(r.workload, Workload::Command { .. }));
        if !commands && !had_commands {
            return;
        }
        let claimed: Vec<&str> = slots.sets().collect();
        for (pid, tag) in find_tagged(self.tag_prefix(release)).await {
            let set = tag.split('/').nth(2).unwrap_or_default();
            if !claimed.contains(&set) {
                tracing::info!(%tag, pid, "stopping an instance no slot claims");
                process::terminate(pid, &tag).await;
            }
        }
    }

    /// Why the slot's instances cannot run, if they cannot: a program that does not
    /// start, or one that keeps exiting.
    pub(super) async fn failure(&self, record: &SlotRecord, release: &str) -> Option<String> {
        let health: Vec<_> = {
            let running = self.running.lock().await;
            running
                .get(&record.set)?
                .iter()
                .map(Supervisor::health)
                .collect()
        };
        health.into_iter().enumerate().find_map(|(n, health)| {
            if let Some(fatal) = health.fatal {
                return Some(fatal);
            }
            (health.restarts >= CRASH_LOOP_RESTARTS).then(|| {
                let tail = process::log_tail(&self.log_path(release, &record.set, n), 10);
                format!(
                    "instance {n} exited {} times (last: {}); its log ends:\n{tail}",
                    health.restarts,
                    health.last_exit.unwrap_or_default()
                )
            })
        })
    }

    /// Probes every endpoint until all answer (`Ready`), the slot fails, `cancel` fires,
    /// or `within` passes.
    pub(super) async fn wait_ready(
        &self,
        release: &str,
        record: &SlotRecord,
        within: Option<Duration>,
        mut cancel: Option<watch::Receiver<u64>>,
    ) -> Result<Readiness, BackendError> {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(reason) = self.failure(record, release).await {
                return Ok(Readiness::Failed { reason });
            }
            let mut problem = None;
            for endpoint in record.endpoints() {
                if let Err(e) = probe::probe(&endpoint, &record.readiness_path).await {
                    problem = Some(format!("{endpoint}{}: {e}", record.readiness_path));
                    break;
                }
            }
            let Some(last_problem) = problem else {
                return Ok(Readiness::Ready(record.view()));
            };
            if within.is_some_and(|w| started.elapsed() > w) {
                return Err(BackendError::Unavailable(format!(
                    "not ready within {}s: {last_problem}",
                    within.map_or(0, |w| w.as_secs())
                )));
            }
            let sleep = tokio::time::sleep(PROBE_EVERY);
            match cancel.as_mut() {
                Some(cancel) => tokio::select! {
                    _ = sleep => {}
                    _ = cancel.changed() => {
                        return Err(BackendError::Unavailable(
                            "the deployment was cancelled by a retirement".to_string(),
                        ));
                    }
                },
                None => sleep.await,
            }
        }
    }

    pub(super) async fn stable_slot(
        &self,
        release: &Release,
        version: &str,
    ) -> Result<SlotView, BackendError> {
        let name = release.metadata.name.as_str();
        let target = local_target(release)?;
        let _guard = self.locks.lock(name).await;
        let (mut slots, mut revision) = self.load_slots(name)?;
        let created = slots.stable.is_none();
        let record = match &slots.stable {
            Some(record) => record.clone(),
            None => {
                let record = Self::new_record(
                    name,
                    version,
                    &target.stable,
                    release.spec.replicas.unwrap_or(1),
                    &target.readiness_path,
                )?;
                slots.stable = Some(record.clone());
                revision = self.store_slots(name, &slots, revision).await?;
                record
            }
        };
        let had_commands = matches!(target.candidate, LocalSlot::Command(_));
        self.sweep_strays(name, &slots, had_commands).await;
        self.ensure_running(name, &record).await;
        if matches!(record.workload, Workload::Addresses(_)) {
            // Instances cutover does not run are the user's to start: report, but do
            // not hold the release up on a slot that serves already.
            return Ok(record.view());
        }
        let failed = match self
            .wait_ready(name, &record, Some(STABLE_READY_WITHIN), None)
            .await
        {
            Ok(Readiness::Ready(view)) => return Ok(view),
            Ok(Readiness::Failed { reason }) => {
                BackendError::Invalid(format!("the stable slot of '{name}' cannot run: {reason}"))
            }
            Err(e) => e,
        };
        if created {
            // Nothing serves yet: forget the slot, so a corrected release file is read
            // again instead of this one retried for ever.
            self.stop_set(name, &record.set).await;
            slots.stable = None;
            self.store_slots(name, &slots, revision).await?;
        }
        Err(failed)
    }

    pub(super) async fn deploy_candidate(
        &self,
        release: &Release,
        version: &str,
    ) -> Result<Readiness, BackendError> {
        let name = release.metadata.name.as_str();
        let target = local_target(release)?;
        let cancel = self.cancel_signal(name);
        let record = {
            let _guard = self.locks.lock(name).await;
            let (mut slots, revision) = self.load_slots(name)?;
            let record = match slots.candidate.clone() {
                Some(record) if record.version == version => record,
                stale => {
                    if let Some(stale) = stale {
                        self.stop_set(name, &stale.set).await;
                    }
                    let record = Self::new_record(
                        name,
                        version,
                        &target.candidate,
                        release.spec.replicas.unwrap_or(1),
                        &target.readiness_path,
                    )?;
                    // Recorded before anything starts, so a controller killed in between
                    // finds (and adopts or stops) what it started.
                    slots.candidate = Some(record.clone());
                    self.store_slots(name, &slots, revision).await?;
                    record
                }
            };
            self.ensure_running(name, &record).await;
            record
        };
        let readiness = self.wait_ready(name, &record, None, Some(cancel)).await?;
        if let Readiness::Failed { reason } = &readiness {
            tracing::warn!(release = name, %reason, "the candidate cannot run");
        }
        Ok(readiness)
    }

    pub(super) async fn promote_candidate(&self, release: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(release).await;
        let (mut slots, revision) = self.load_slots(release)?;
        let Some(candidate) = slots.candidate.take() else {
            // Promoted already.
            return Ok(());
        };
        if let Some(previous) = slots.previous.take() {
            // A scale-down that never finished: that version is two releases old.
            self.stop_set(release, &previous.set).await;
        }
        slots.previous = slots.stable.take();
        slots.stable = Some(candidate);
        self.store_slots(release, &slots, revision).await?;
        Ok(())
    }

    /// Stops every instance of `release` (its slots' and any left unclaimed), then
    /// removes its slot record, its stored state and its logs.
    pub(super) async fn delete_release(&self, release: &str) -> Result<(), BackendError> {
        self.cancel_deploy(release);
        let _guard = self.locks.lock(release).await;
        // An unreadable slot record must not keep a delete from stopping what runs: the
        // tag scan below finds every instance of the release anyway.
        if let Ok((slots, _)) = self.load_slots(release) {
            for record in [&slots.stable, &slots.candidate, &slots.previous]
                .into_iter()
                .flatten()
            {
                self.stop_set(release, &record.set).await;
            }
        }
        for (pid, tag) in find_tagged(self.tag_prefix(release)).await {
            tracing::info!(%tag, pid, "stopping an instance of a deleted release");
            process::terminate(pid, &tag).await;
        }
        let (slots, releases) = (self.slots.clone(), self.releases.clone());
        let name = release.to_string();
        tokio::task::spawn_blocking(move || {
            slots.remove(&name)?;
            releases.remove(&name)
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("the state writer failed: {e}")))??;
        let logs = self.root.join("logs").join(release);
        match std::fs::remove_dir_all(&logs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::Unavailable(format!(
                    "cannot remove the logs {}: {e}",
                    logs.display()
                )));
            }
        }
        self.cancels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(release);
        Ok(())
    }

    pub(super) async fn retire_slot(&self, release: &str, slot: Slot) -> Result<(), BackendError> {
        if slot == Slot::Candidate {
            self.cancel_deploy(release);
        }
        let _guard = self.locks.lock(release).await;
        let (mut slots, revision) = self.load_slots(release)?;
        let mut had_commands = false;
        if let Some(record) = slots.take(slot) {
            had_commands = matches!(record.workload, Workload::Command { .. });
            if had_commands {
                self.stop_set(release, &record.set).await;
            }
            self.store_slots(release, &slots, revision).await?;
        }
        self.sweep_strays(release, &slots, had_commands).await;
        Ok(())
    }
}

/// [`process::find_tagged`] off the async workers: it reads every process's environment.
pub(super) async fn find_tagged(prefix: String) -> Vec<(u32, String)> {
    tokio::task::spawn_blocking(move || process::find_tagged(&prefix))
        .await
        .unwrap_or_default()
}
