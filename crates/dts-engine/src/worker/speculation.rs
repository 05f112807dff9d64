//! Straggler speculation (docs/scheduling.md, "Stragglers"): a slot with
//! nothing to claim runs a copy of a shard that has run far longer than the
//! task's items take, so one slow or stuck worker does not hold up the end
//! of a task.
//!
//! The worker judges "far longer" by the items its own slots ran for the
//! task ([`ItemTimes`](dts_model::scheduling::ItemTimes)); the store picks the straggler and hands out one
//! copy per shard ([`Store::claim_copy`]). A copy holds no lease: it runs
//! the shard's items not yet recorded and writes their results as the
//! holder does. The store keeps the first result of each item of a shard
//! and records nothing for a completed shard
//! ([`Store::record_shard_results`]), so the first result of each item and
//! the first completion count; the other run is stopped: the holder at its
//! next lease renewal (its lease went with the completion), the copy at its
//! next check ([`Store::copy_state`], before each item and every status
//! poll).
//!
//! A copy carries the token the store handed it out with. A retry that
//! reopens the shard forgets the copy, so a copy from before the retry
//! starts no item of the retried run and the store refuses its writes
//! ([`Store::record_copy_results`], [`Store::complete_copy`]): each round
//! of a task runs an item at most twice per attempt, once by the holder
//! and once by the round's own copy.
//!
//! [`Store::claim_copy`]: dts_store::Store::claim_copy
//! [`Store::record_shard_results`]: dts_store::Store::record_shard_results
//! [`Store::copy_state`]: dts_store::Store::copy_state
//! [`Store::record_copy_results`]: dts_store::Store::record_copy_results
//! [`Store::complete_copy`]: dts_store::Store::complete_copy

use super::Inner;
use super::slots::ClaimedShard;
use crate::with_causes;
use dts_model::scheduling::{self, Candidate};
use dts_store::{CopyClaim, CopyState, RunnableTask, StoreError, StoreResult};
use std::cmp::Reverse;
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info};

impl Inner {
    /// Counts one item of `task` that took `millis` on this worker.
    pub(super) fn record_item_time(&self, task: &str, millis: u64) {
        if self.settings.speculation_factor == 0 {
            return;
        }
        let mut times = self.item_times.lock().unwrap_or_else(|p| p.into_inner());
        // Called after every item: the task's id is copied only the first time.
        match times.get_mut(task) {
            Some(recent) => recent.record(millis),
            None => times.entry(task.to_string()).or_default().record(millis),
        }
    }

    /// Forgets the item times of tasks no longer runnable.
    pub(super) fn keep_item_times_of(&self, runnable: &[RunnableTask]) {
        let mut times = self.item_times.lock().unwrap_or_else(|p| p.into_inner());
        if times.is_empty() {
            return;
        }
        let ids: std::collections::HashSet<&str> =
            runnable.iter().map(|t| t.task.id.as_str()).collect();
        times.retain(|id, _| ids.contains(id.as_str()));
    }

    /// A copy of a straggling shard for a slot that found nothing to claim,
    /// or `None`. Looked for once per snapshot read, so idle slots ask the
    /// store about stragglers about once per `snapshot_max_age`, not on
    /// every poll.
    pub(super) async fn claim_copy(&self) -> StoreResult<Option<ClaimedShard>> {
        let factor = self.settings.speculation_factor;
        if factor == 0 {
            return Ok(None);
        }
        let mut tails: Vec<(dts_model::Task, u64)> = {
            let mut snapshot = self.snapshot_lock();
            if snapshot.copies_looked {
                return Ok(None);
            }
            snapshot.copies_looked = true;
            let times = self.item_times.lock().unwrap_or_else(|p| p.into_inner());
            snapshot
                .tasks
                .iter()
                .filter(|t| {
                    let candidate = Candidate::of(&t.task, t.held, t.ready > 0);
                    scheduling::may_copy(self.offer(), &candidate, t.task.scheduling.speculation)
                })
                .filter_map(|t| {
                    let per_item = times.get(&t.task.id)?.straggler_after(factor)?;
                    Some((t.task.clone(), per_item))
                })
                .collect()
        };
        tails.sort_by_key(|(task, _)| (Reverse(task.scheduling.priority), task.created_at));
        for (task, per_item) in tails {
            let answer = self
                .store
                .claim_copy(
                    &task.id,
                    &self.settings.id,
                    Duration::from_millis(per_item),
                    self.settings.speculation_min,
                )
                .await;
            match answer {
                Ok(CopyClaim::Copied {
                    shard,
                    range,
                    attempt,
                    token,
                }) => {
                    info!(task = %task.id, shard, items = range.len, straggler_after_ms_per_item = per_item,
                        "running a copy of a straggling shard");
                    return Ok(Some(ClaimedShard {
                        task,
                        shard,
                        range,
                        attempt,
                        copy: Some(token),
                        first: false,
                        claimed_at: tokio::time::Instant::now(),
                    }));
                }
                Ok(CopyClaim::NoStraggler | CopyClaim::TaskEnded)
                | Err(StoreError::NoSuchTask { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// A token for the items of the copy of shard `shard` of `task` handed
    /// out with `token`: cancelled with `parent`, or once the store says
    /// the copy may not run on ([`Inner::copy_may_run`]: its holder
    /// completed the shard, the task ended, or a retry reopened the shard
    /// since), checked every `status_poll`. The check stops when the guard
    /// drops.
    pub(super) fn stop_when_completed(
        &self,
        task: &str,
        shard: u32,
        token: u64,
        parent: &CancellationToken,
    ) -> (CancellationToken, DropGuard) {
        let stop = parent.child_token();
        let done = CancellationToken::new();
        let (store, poll) = (self.store.clone(), self.settings.status_poll);
        let (id, watching, ended) = (task.to_string(), stop.clone(), done.clone());
        tokio::spawn(async move {
            // ends: when the copy ends (the guard drops) or its items stop.
            loop {
                tokio::select! {
                    _ = ended.cancelled() => return,
                    _ = watching.cancelled() => return,
                    _ = tokio::time::sleep(poll) => {}
                }
                match store.copy_state(&id, shard, token).await {
                    Ok(CopyState::Runs) => {}
                    Ok(state) => {
                        info!(task = %id, shard, ?state, "the copy may not run on (its holder completed the shard, the task ended or was retried); stopping it");
                        watching.cancel();
                        return;
                    }
                    Err(e) => {
                        debug!(task = %id, shard, error = %with_causes(&e), "cannot check whether the copy may run on")
                    }
                }
            }
        });
        (stop, done.drop_guard())
    }
}
