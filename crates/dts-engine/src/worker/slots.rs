//! Late binding (docs/scheduling.md): each of a worker's slots asks the store
//! for work when it frees, instead of being handed a queue of shards.
//!
//! A free slot ranks the runnable tasks with the one policy
//! ([`dts_model::scheduling::pick`]) and claims the chosen task's next ready
//! shard ([`Store::claim_ready_shard`]). The worker's slots share one
//! snapshot of the runnable tasks, read again on a wake and otherwise at most
//! every [`WorkerSettings::snapshot_max_age`], so a slot that finishes an
//! item rarely pays a store round trip to decide what comes next. A slot with
//! nothing to do waits for a wake (the scheduler publishes one when it
//! plans a task) or polls, backing off to [`WorkerSettings::idle_poll`], so
//! a lost wake costs latency, never work.
//!
//! [`Store::claim_ready_shard`]: dts_store::Store::claim_ready_shard
//! [`WorkerSettings::snapshot_max_age`]: super::WorkerSettings::snapshot_max_age
//! [`WorkerSettings::idle_poll`]: super::WorkerSettings::idle_poll

use super::Inner;
use crate::{sleep_unless_cancelled, with_causes};
use dts_model::scheduling::{self, Candidate, SlotOffer};
use dts_model::{ShardRange, Task};
use dts_store::{ReadyClaim, RunnableTask, StoreError, StoreResult};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Runnable tasks read in one snapshot: more than any cluster runs at once.
const SNAPSHOT_LIMIT: usize = 1_000;
/// How soon an idle slot first looks at the store again; it backs off from
/// here to `idle_poll`.
const FIRST_IDLE_POLL: Duration = Duration::from_millis(50);

/// The runnable tasks as this worker last read them, adjusted by its own
/// claims since, so its slots do not all pile onto one task between reads.
#[derive(Default)]
pub(super) struct Snapshot {
    read_at: Option<Instant>,
    pub(super) tasks: Vec<RunnableTask>,
    /// Counts wakes: a read that a wake overtook may predate the task the
    /// wake announced, so it is used once and read again at the next rank.
    wakes: u64,
    /// A slot has looked for a straggler to copy since this read.
    pub(super) copies_looked: bool,
}

impl Snapshot {
    fn candidates(&self) -> Vec<Candidate> {
        self.tasks
            .iter()
            .map(|t| Candidate::of(&t.task, t.held, t.ready > 0))
            .collect()
    }

    fn entry(&mut self, id: &str) -> Option<&mut RunnableTask> {
        self.tasks.iter_mut().find(|t| t.task.id == id)
    }
}

/// A shard a slot holds the lease on, with what it needs to run it.
pub(super) struct ClaimedShard {
    pub(super) task: Task,
    pub(super) shard: u32,
    pub(super) range: ShardRange,
    pub(super) attempt: u32,
    /// A speculative copy of a shard another slot holds (no lease): the
    /// token the store handed it out with.
    pub(super) copy: Option<u64>,
    /// The shard's first claim ever: none of its items has a result yet.
    pub(super) first: bool,
    /// When the claim was asked for: the lease runs at least `heartbeat_ttl`
    /// from then, by this worker's monotonic clock.
    pub(super) claimed_at: tokio::time::Instant,
}

impl Inner {
    /// One slot: claim a shard, run it, again, until shutdown begins.
    pub(super) async fn slot_loop(&self, stop_intake: CancellationToken, kill: CancellationToken) {
        let mut idle_wait = FIRST_IDLE_POLL;
        // ends: when shutdown begins (checked before every claim).
        while !stop_intake.is_cancelled() {
            // Listening before looking, so a wake that comes while this slot
            // finds nothing is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.claim_next().await {
                Ok(Some(claimed)) => {
                    idle_wait = FIRST_IDLE_POLL;
                    self.run_shard(claimed, &stop_intake, &kill).await;
                }
                Ok(None) => {
                    tokio::select! {
                        _ = stop_intake.cancelled() => break,
                        _ = &mut woken => idle_wait = FIRST_IDLE_POLL,
                        _ = tokio::time::sleep(idle_wait) => {
                            idle_wait = (idle_wait * 2).min(self.settings.idle_poll);
                        }
                    }
                }
                Err(e) => {
                    dts_metrics::metrics().store_error("claim_shard", true);
                    warn!(worker = %self.settings.id, error = %with_causes(&e), "cannot look for work");
                    if !sleep_unless_cancelled(self.settings.retry_delay, &stop_intake).await {
                        break;
                    }
                }
            }
        }
    }

    /// Work is ready somewhere: the next read sees it, and idle slots look now.
    pub(super) fn wake_slots(&self) {
        {
            let mut snapshot = self.snapshot_lock();
            snapshot.read_at = None;
            snapshot.wakes += 1;
        }
        self.wake.notify_waiters();
    }

    pub(super) fn offer(&self) -> SlotOffer<'_> {
        SlotOffer {
            labels: &self.settings.labels,
        }
    }

    pub(super) fn snapshot_lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The policy's candidates, from a snapshot no older than
    /// `snapshot_max_age`. One slot reads the store at a time, and the others
    /// take its read: two reads racing would let the later one overwrite the
    /// claims and yields counted since the earlier.
    async fn candidates(&self) -> StoreResult<Vec<Candidate>> {
        if !self.snapshot_is_fresh() {
            let _reading = self.snapshot_read.lock().await;
            if !self.snapshot_is_fresh() {
                let wakes_before = self.snapshot_lock().wakes;
                let tasks = self.store.runnable_tasks(SNAPSHOT_LIMIT).await?;
                self.keep_item_times_of(&tasks);
                let mut snapshot = self.snapshot_lock();
                let overtaken = snapshot.wakes != wakes_before;
                snapshot.read_at = (!overtaken).then(Instant::now);
                snapshot.tasks = tasks;
                snapshot.copies_looked = false;
            }
        }
        Ok(self.snapshot_lock().candidates())
    }

    fn snapshot_is_fresh(&self) -> bool {
        self.snapshot_lock()
            .read_at
            .is_some_and(|at| at.elapsed() < self.settings.snapshot_max_age)
    }

    /// Ranks the runnable tasks and claims a shard of the first the store
    /// grants; when no task this slot may run has a shard free, a copy of a
    /// straggling shard (see `speculation.rs`), or `None`.
    ///
    /// The pick counts the shard as held in the snapshot before the claim
    /// goes to the store, under the lock the pick was made under, so slots
    /// picking at the same moment see each other's picks; a refused claim
    /// takes it back.
    async fn claim_next(&self) -> StoreResult<Option<ClaimedShard>> {
        self.candidates().await?;
        let mut refused: Vec<String> = Vec::new();
        // ends: every refused claim adds its task to `refused`.
        loop {
            let picked = {
                let mut snapshot = self.snapshot_lock();
                let mut candidates = snapshot.candidates();
                candidates.retain(|c| !refused.contains(&c.task_id));
                let picked = scheduling::pick(self.offer(), &candidates)
                    .map(|chosen| (chosen.task_id.clone(), chosen.max_concurrency));
                if let Some(entry) = picked.as_ref().and_then(|(id, _)| snapshot.entry(id)) {
                    entry.held += 1;
                    entry.ready = entry.ready.saturating_sub(1);
                }
                picked
            };
            let Some((id, max_held)) = picked else {
                return self.claim_copy().await;
            };
            let asked = tokio::time::Instant::now();
            let answer = self
                .store
                .claim_ready_shard(
                    &id,
                    &self.settings.id,
                    self.settings.heartbeat_ttl,
                    max_held,
                )
                .await;
            // The snapshot's lock is not held across an await.
            let claimed = {
                let mut snapshot = self.snapshot_lock();
                let entry = snapshot.entry(&id);
                match answer {
                    Ok(ReadyClaim::Claimed {
                        shard,
                        range,
                        attempt,
                        first,
                    }) => Some((entry.map(|e| e.task.clone()), shard, range, attempt, first)),
                    Ok(ReadyClaim::NoneReady) => {
                        if let Some(entry) = entry {
                            entry.held = entry.held.saturating_sub(1);
                            entry.ready = 0;
                        }
                        None
                    }
                    Ok(ReadyClaim::AtCapacity) => {
                        if let Some(entry) = entry {
                            entry.held = entry.held.saturating_sub(1);
                            entry.held = entry.held.max(max_held.unwrap_or(entry.held));
                        }
                        None
                    }
                    Ok(ReadyClaim::TaskEnded) | Err(StoreError::NoSuchTask { .. }) => {
                        snapshot.tasks.retain(|t| t.task.id != id);
                        None
                    }
                    Err(e) => {
                        if let Some(entry) = entry {
                            entry.held = entry.held.saturating_sub(1);
                            entry.ready += 1;
                        }
                        return Err(e);
                    }
                }
            };
            match claimed {
                Some((Some(task), shard, range, attempt, first)) => {
                    return Ok(Some(ClaimedShard {
                        task,
                        shard,
                        range,
                        attempt,
                        copy: None,
                        first,
                        claimed_at: asked,
                    }));
                }
                Some((None, shard, range, attempt, first)) => {
                    // The snapshot was replaced meanwhile: read the task itself.
                    return self
                        .claimed_without_snapshot(id, shard, range, attempt, first, asked)
                        .await;
                }
                None => {
                    debug!(task = %id, "claim refused; ranking again");
                    refused.push(id);
                }
            }
        }
    }

    /// A claim whose task left the snapshot while it was made: read the
    /// task itself. If it is gone, give the shard back.
    async fn claimed_without_snapshot(
        &self,
        id: String,
        shard: u32,
        range: ShardRange,
        attempt: u32,
        first: bool,
        claimed_at: tokio::time::Instant,
    ) -> StoreResult<Option<ClaimedShard>> {
        match self.store.task(&id).await {
            Ok(Some(task)) => Ok(Some(ClaimedShard {
                task,
                shard,
                range,
                attempt,
                copy: None,
                first,
                claimed_at,
            })),
            other => {
                self.give_back(&id, shard).await;
                other.map(|_| None)
            }
        }
    }

    /// Releases a shard cleanly (its next claim is not a new attempt), and
    /// counts it free in the snapshot.
    pub(super) async fn give_back(&self, id: &str, shard: u32) {
        self.release_lease(id, shard).await;
        if let Some(entry) = self.snapshot_lock().entry(id) {
            entry.held = entry.held.saturating_sub(1);
            entry.ready += 1;
        }
    }

    /// Releases a shard cleanly in the store only: for a shard the snapshot
    /// already counts as given back (a yield).
    pub(super) async fn release_lease(&self, id: &str, shard: u32) {
        if let Err(e) = self
            .store
            .release_shard(id, shard, &self.settings.id, true)
            .await
        {
            debug!(task = %id, shard, error = %with_causes(&e), "cannot release the shard's lease; it will expire");
        }
    }

    /// Forgets this worker's count of a shard it held, after the shard was
    /// completed or its lease lost.
    pub(super) fn forget_held(&self, id: &str) {
        if let Some(entry) = self.snapshot_lock().entry(id) {
            entry.held = entry.held.saturating_sub(1);
        }
    }

    /// Whether the slot running `task` should give it up after the item it
    /// just finished, for a task the policy puts ahead. A yes counts the
    /// slot's shard as given back in the snapshot at once, under the same
    /// lock as the decision, so the worker's other slots, deciding at the
    /// same moment, do not all leave the task together. A store error keeps
    /// the slot where it is.
    pub(super) async fn should_yield(&self, task: &str) -> bool {
        if let Err(e) = self.candidates().await {
            debug!(task, error = %with_causes(&e), "cannot read the runnable tasks; not yielding");
            return false;
        }
        let mut snapshot = self.snapshot_lock();
        if !scheduling::should_yield(self.offer(), task, &snapshot.candidates()) {
            return false;
        }
        if let Some(entry) = snapshot.entry(task) {
            entry.held = entry.held.saturating_sub(1);
            entry.ready += 1;
        }
        true
    }
}
