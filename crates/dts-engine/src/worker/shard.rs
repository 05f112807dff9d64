//! Running one claimed shard: skip what is done, run the rest one item after
//! another on the slot, record results in batches, and complete the shard —
//! or give it back between two items when the policy says another task
//! should have the slot.

use super::Inner;
use super::slots::ClaimedShard;
use crate::shard::shard_message;
use crate::{EngineError, events, sleep_unless_cancelled, with_causes};
use dts_executor::{ExecOutcome, ItemContext, ItemLimits, Program};
use dts_model::{Bytes, ItemResult, ShardMessage, Task, TaskStatus};
use dts_store::StoreError;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Longest wait between two attempts of a failed item.
const MAX_ITEM_BACKOFF: Duration = Duration::from_secs(30);
/// First and longest wait before an item that could not start for lack of
/// descriptors, processes or memory on this worker tries again.
const WORKER_FAULT_BACKOFF: Duration = Duration::from_millis(100);
const MAX_WORKER_FAULT_BACKOFF: Duration = Duration::from_secs(5);
/// How long a store write is retried before the shard is handed back.
const STORE_RETRY_FOR: Duration = Duration::from_secs(30);

/// How a shard run ended, which decides what happens to its lease.
#[derive(Debug, PartialEq, Eq)]
enum ShardEnd {
    /// Every item has a result and the shard is completed (which released
    /// the lease).
    Done,
    /// The task had ended (cancelled, failed, past its deadline) before the
    /// shard started or while it ran; results so far are kept.
    TaskEnded,
    /// Stopped between items by shutdown: released cleanly, so its other
    /// items run when it is claimed again, attempt unchanged.
    Interrupted,
    /// Stopped between items to give the slot to a task the policy puts
    /// ahead: released cleanly like `Interrupted` (the snapshot already
    /// counts it given back).
    Yielded,
    /// Another worker took the shard over (this one's lease expired): it
    /// finishes the shard; nothing is released.
    Lost,
}

/// One shard being run: its message, how it runs, and the tokens that stop it.
struct ShardRun<'a> {
    message: &'a ShardMessage,
    /// Shutdown began: start no new item.
    stop_intake: &'a CancellationToken,
    /// The worker must stop now.
    kill: &'a CancellationToken,
    /// Cancelled when the task ends (a cancel) or the worker must stop now.
    task_stop: CancellationToken,
    /// `task_stop`, or this shard's lease was lost: kills the running items.
    stop_items: CancellationToken,
    /// The task halted `soon`: start no new item, let the running one end.
    drain: CancellationToken,
    /// The task has a `halt`: a failure is written at once, so the store
    /// can halt the task before another item starts.
    halts: bool,
    /// 1 for the shard's first claim; more after workers died running it.
    attempt: u32,
    /// A speculative copy of a shard another slot holds, with the token
    /// the store handed it out with: it has no lease and never yields; its
    /// results count where they come first, while it is still the shard's
    /// copy.
    copy: Option<u64>,
    /// The shard's first claim ever: no item of it has a result to skip.
    first: bool,
    /// Set on the first claim of shard 0 until its first item starts: that
    /// start is the task's first, since workers claim a task's ready shards
    /// lowest index first; it is what `dts_task_first_item_latency_seconds`
    /// times, once per task across all workers. (A first claim given back
    /// before any item started leaves that task unobserved.)
    first_of_task: AtomicBool,
    /// When the task was submitted, in ms since the epoch.
    submitted_at: u64,
    /// Items of the task running on this worker (shared by its shards
    /// here): what the heartbeat reports per task.
    task_running: Arc<AtomicU32>,
}

impl ShardRun<'_> {
    fn id(&self) -> &str {
        &self.message.task_id
    }

    /// The shard lost a worker before: run it alone on this worker, counting
    /// starts, to find an item that kills its workers.
    fn careful(&self) -> bool {
        self.attempt > 1 && self.copy.is_none()
    }
}

/// The results of a shard's items not yet written, and when they last were.
struct Pending {
    results: Vec<ItemResult>,
    flushed_at: Instant,
}

impl Inner {
    /// Runs a shard this worker's slot holds the lease on, and lets the
    /// lease go as its end requires.
    pub(super) async fn run_shard(
        &self,
        claimed: ClaimedShard,
        stop_intake: &CancellationToken,
        kill: &CancellationToken,
    ) {
        let (id, shard) = (claimed.task.id.clone(), claimed.shard);
        let started = Instant::now();
        if claimed.copy.is_some() {
            // A copy holds no lease and was never counted in the snapshot:
            // whatever its end, there is nothing to give back.
            match self.execute(claimed, stop_intake, kill).await {
                Ok(end) => {
                    debug!(task = %id, shard, ?end, elapsed = ?started.elapsed(), "copy of a straggling shard ended")
                }
                Err(e) => {
                    warn!(task = %id, shard, error = %with_causes(&e), "copy of a straggling shard failed; its holder runs on");
                    sleep_unless_cancelled(self.settings.retry_delay, stop_intake).await;
                }
            }
            return;
        }
        match self.execute(claimed, stop_intake, kill).await {
            Ok(end @ (ShardEnd::Done | ShardEnd::Lost)) => {
                if end == ShardEnd::Lost {
                    warn!(task = %id, shard, "another worker took the shard over, or a copy of it completed it");
                }
                debug!(task = %id, shard, ?end, elapsed = ?started.elapsed(), "shard ended");
                self.forget_held(&id);
            }
            Ok(end @ (ShardEnd::TaskEnded | ShardEnd::Interrupted)) => {
                debug!(task = %id, shard, ?end, elapsed = ?started.elapsed(), "shard given back");
                self.give_back(&id, shard).await;
            }
            Ok(ShardEnd::Yielded) => {
                debug!(task = %id, shard, elapsed = ?started.elapsed(), "slot given to a task the policy puts ahead");
                self.release_lease(&id, shard).await;
            }
            Err(e) => {
                warn!(task = %id, shard, error = %with_causes(&e), "shard failed; giving it back");
                self.give_back(&id, shard).await;
                sleep_unless_cancelled(self.settings.retry_delay, stop_intake).await;
            }
        }
    }

    async fn execute(
        &self,
        claimed: ClaimedShard,
        stop_intake: &CancellationToken,
        kill: &CancellationToken,
    ) -> Result<ShardEnd, EngineError> {
        let task = &claimed.task;
        let (id, shard, range) = (task.id.as_str(), claimed.shard, claimed.range);
        let items = self
            .store
            .inputs_range(id, range.start, range.len)
            .await
            .inspect_err(|_| dts_metrics::metrics().store_error("inputs_range", false))?;
        let Some(items) = items else {
            return Ok(ShardEnd::TaskEnded);
        };
        let message = match shard_message(task, shard, task.chunks_to_execute, range, items) {
            Ok(message) => message,
            Err(e) => {
                // No claim can ever run it: end the task with the reason
                // instead of handing the shard around forever.
                let reason = format!("cannot run the task: {}", with_causes(&e));
                error!(task = %id, shard, "{reason}");
                match self
                    .store
                    .transition(id, TaskStatus::Failed, Some(&reason))
                    .await
                {
                    Ok(ended) => {
                        self.announce_end(&ended).await;
                    }
                    Err(StoreError::IllegalTransition { .. }) => {}
                    Err(e) => {
                        dts_metrics::metrics().store_error("transition", false);
                        return Err(e.into());
                    }
                }
                return Ok(ShardEnd::TaskEnded);
            }
        };
        let (task_stop, drain, task_running) = self.task_stop(task, kill);
        let (stop_items, completion_watch) = if let Some(token) = claimed.copy {
            let (stop, watch) = self.stop_when_completed(id, shard, token, &task_stop);
            (stop, Some(watch))
        } else {
            (
                self.hold_lease(id, shard, &task_stop, claimed.claimed_at),
                None,
            )
        };
        let run = ShardRun {
            message: &message,
            stop_intake,
            kill,
            stop_items,
            task_stop,
            drain,
            halts: task.halt.is_some(),
            attempt: claimed.attempt,
            copy: claimed.copy,
            first: claimed.first,
            first_of_task: AtomicBool::new(claimed.first && shard == 0 && claimed.copy.is_none()),
            submitted_at: task.created_at,
            task_running,
        };
        let outcome = self.run_claimed(&run).await;
        if run.copy.is_some() {
            drop(completion_watch);
        } else {
            self.forget_lease(id, shard);
        }
        self.release_task_stop(id);
        outcome
    }

    /// Runs a shard this worker holds the lease on, or a copy of one.
    async fn run_claimed(&self, run: &ShardRun<'_>) -> Result<ShardEnd, EngineError> {
        let message = run.message;
        let end = message.start + message.items.len() as u64;
        // A first claim saves the round trip: no item of it can have a result.
        let recorded: HashSet<u64> = if run.first {
            HashSet::new()
        } else {
            self.store
                .recorded_indices(run.id(), message.start, end)
                .await
                .inspect_err(|_| dts_metrics::metrics().store_error("recorded_indices", false))?
                .into_iter()
                .collect()
        };
        let pending: Vec<u64> = (message.start..end)
            .filter(|i| !recorded.contains(i))
            .collect();
        if run.careful() {
            warn!(
                task = %run.id(), shard = message.shard_index, attempt = run.attempt, left = pending.len(),
                "a worker died running this shard before: running it alone on this worker"
            );
        } else if !recorded.is_empty() {
            debug!(task = %run.id(), shard = message.shard_index, done = recorded.len(), left = pending.len(), "resuming a shard");
        }
        // One careful shard at a time on this worker, so a death points at one item.
        let _careful = if run.careful() {
            tokio::select! {
                permit = self.careful.acquire() => permit.ok(),
                _ = run.stop_items.cancelled() => None,
            }
        } else {
            None
        };
        self.run_pending(run, &pending).await
    }

    /// Runs the `pending` items of the shard one after another, records
    /// their results and completes the shard; or stops between two items
    /// (shutdown, a task the policy puts ahead) and keeps what ran.
    async fn run_pending(
        &self,
        run: &ShardRun<'_>,
        pending: &[u64],
    ) -> Result<ShardEnd, EngineError> {
        let (message, id) = (run.message, run.id());
        let program = self.runner.prepare(&message.script, &message.interpreter);
        let mut unsaved = Pending {
            results: Vec::new(),
            flushed_at: Instant::now(),
        };
        let mut ran = 0usize;
        for (position, &index) in pending.iter().enumerate() {
            if run.stop_intake.is_cancelled()
                || run.stop_items.is_cancelled()
                || run.drain.is_cancelled()
            {
                break;
            }
            let input = &message.items[(index - message.start) as usize];
            let item = self.run_item(run, &program, index, input);
            let Some(result) = self.flushing_while(item, run, &mut unsaved).await else {
                break;
            };
            ran += 1;
            self.metrics.item_finished(result.succeeded());
            self.record_item_time(id, result.duration_ms);
            unsaved.results.push(result);
            let last = position + 1 == pending.len();
            // Careful runs record each result before the next item starts: a
            // death must not take finished items' results with it. The last
            // result goes with the shard's completion (one write less).
            if run.careful() {
                self.save_with_retries(run, &unsaved.results).await?;
                unsaved.results.clear();
            } else if !last && run.halts && unsaved.results.last().is_some_and(|r| !r.succeeded()) {
                // The store halts the task when it counts this failure.
                self.flush(run, &mut unsaved.results).await;
                unsaved.flushed_at = Instant::now();
            } else if !last
                && (unsaved.results.len() >= self.settings.flush_batch
                    || unsaved.flushed_at.elapsed() >= self.settings.flush_interval)
            {
                self.flush(run, &mut unsaved.results).await;
                unsaved.flushed_at = Instant::now();
            }
            if !last
                && run.copy.is_none()
                && !run.task_stop.is_cancelled()
                && self.should_yield(id).await
            {
                self.save_with_retries(run, &unsaved.results).await?;
                return Ok(ShardEnd::Yielded);
            }
        }

        if let Some(token) = run.copy {
            return self
                .end_copy(run, token, &unsaved.results, ran < pending.len())
                .await;
        }
        if run.stop_items.is_cancelled() && !run.task_stop.is_cancelled() {
            // Lost the lease: the results are still true and the new owner
            // skips them. If a copy completed the shard, the store keeps
            // the copy's results and writes none of these.
            self.save_with_retries(run, &unsaved.results).await?;
            return Ok(ShardEnd::Lost);
        }
        if run.task_stop.is_cancelled() && !run.kill.is_cancelled() {
            self.save_with_retries(run, &unsaved.results).await?;
            info!(task = %id, shard = message.shard_index, "task ended while its shard ran");
            return Ok(ShardEnd::TaskEnded);
        }
        if ran < pending.len() {
            self.save_with_retries(run, &unsaved.results).await?;
            return Ok(ShardEnd::Interrupted);
        }
        self.completing_lease(id, message.shard_index);
        let completion = self
            .with_store_retries("complete_shard", || {
                self.store
                    .complete_shard(id, message.shard_index, &unsaved.results)
            })
            .await?;
        if completion.finished_task {
            self.announce_end(&completion.task).await;
        }
        Ok(ShardEnd::Done)
    }

    /// Publishes the completion event of a task this worker ended (its
    /// outbox entry makes a drainer publish it if this fails).
    async fn announce_end(&self, task: &Task) {
        events::publish_completion(&self.bus, &self.settings.topics, &*self.store, task).await;
    }

    /// Ends the speculative copy handed out with `token`: if it ran every
    /// item, completes the shard (the store records nothing if the holder
    /// completed it first, or a retry reopened the shard since the copy
    /// began, and keeps the first result of every item either way). A copy
    /// stopped early keeps what it wrote: each of those results came first.
    async fn end_copy(
        &self,
        run: &ShardRun<'_>,
        token: u64,
        results: &[ItemResult],
        stopped_early: bool,
    ) -> Result<ShardEnd, EngineError> {
        let (id, shard) = (run.id(), run.message.shard_index);
        if run.stop_items.is_cancelled() || stopped_early {
            self.save_with_retries(run, results).await?;
            return Ok(if run.task_stop.is_cancelled() {
                ShardEnd::TaskEnded
            } else if run.stop_items.is_cancelled() {
                ShardEnd::Lost
            } else {
                ShardEnd::Interrupted
            });
        }
        let completion = self
            .with_store_retries("complete_shard", || {
                self.store.complete_copy(id, shard, token, results)
            })
            .await?;
        let Some(completion) = completion else {
            info!(task = %id, shard, "the task was retried since the copy began; the copy's results are discarded");
            return Ok(ShardEnd::Lost);
        };
        if completion.newly_completed {
            info!(task = %id, shard, "the copy completed the straggling shard first");
        } else {
            info!(task = %id, shard, "the shard's holder completed it first; the copy's results are discarded");
        }
        if completion.finished_task {
            self.announce_end(&completion.task).await;
        }
        Ok(if completion.newly_completed {
            ShardEnd::Done
        } else {
            ShardEnd::Lost
        })
    }

    /// Awaits `item`, writing the results still unsaved once they are
    /// `flush_interval` old, so the results of quick items are not held back
    /// for as long as a slow item after them runs.
    async fn flushing_while<F>(
        &self,
        item: F,
        run: &ShardRun<'_>,
        unsaved: &mut Pending,
    ) -> Option<ItemResult>
    where
        F: std::future::Future<Output = Option<ItemResult>>,
    {
        let mut item = std::pin::pin!(item);
        // ends: the item's future ends; each flush empties `unsaved`, or
        // leaves it for the item's end after a failed write.
        loop {
            if unsaved.results.is_empty() {
                return item.await;
            }
            let due = unsaved.flushed_at + self.settings.flush_interval;
            tokio::select! {
                result = &mut item => return result,
                _ = tokio::time::sleep_until(due) => {
                    self.flush(run, &mut unsaved.results).await;
                    unsaved.flushed_at = Instant::now();
                    if !unsaved.results.is_empty() {
                        return item.await;
                    }
                }
            }
        }
    }

    /// Writes `batch`; on success empties it and returns how many were
    /// written. A failed write keeps the batch for the next try.
    async fn flush(&self, run: &ShardRun<'_>, batch: &mut Vec<ItemResult>) -> usize {
        let id = run.id();
        match self.record(run, batch).await {
            Ok(None) => {
                self.stop_replaced_copy(run);
                batch.clear();
                0
            }
            Ok(Some(status)) => {
                if status.is_terminal() {
                    self.task_ended(id, Some(status));
                }
                let written = batch.len();
                batch.clear();
                written
            }
            Err(e) => {
                // Kept for the next flush or the shard's end.
                dts_metrics::metrics().store_error("record_results", true);
                warn!(task = %id, error = %with_causes(&e), waiting = batch.len(), "cannot record results yet");
                0
            }
        }
    }

    /// Writes a shard's results, retrying while the store is unavailable.
    /// Nothing is written once the shard is completed (a copy completed it).
    async fn save_with_retries(
        &self,
        run: &ShardRun<'_>,
        results: &[ItemResult],
    ) -> Result<(), EngineError> {
        if results.is_empty() {
            return Ok(());
        }
        let written = self
            .with_store_retries("record_results", || self.record(run, results))
            .await?;
        if written.is_none() {
            self.stop_replaced_copy(run);
        }
        Ok(())
    }

    /// Writes `results` of the shard as its holder or as its copy: `None`,
    /// and nothing written, when the store refused a copy that is no
    /// longer the shard's.
    async fn record(
        &self,
        run: &ShardRun<'_>,
        results: &[ItemResult],
    ) -> Result<Option<TaskStatus>, StoreError> {
        let (id, shard) = (run.id(), run.message.shard_index);
        match run.copy {
            Some(token) => {
                self.store
                    .record_copy_results(id, shard, token, results)
                    .await
            }
            None => self
                .store
                .record_shard_results(id, shard, results)
                .await
                .map(Some),
        }
    }

    /// Stops a copy whose writes the store refused: a retry reopened its
    /// shard since it began, so its items belong to a run the task no
    /// longer has.
    fn stop_replaced_copy(&self, run: &ShardRun<'_>) {
        if !run.stop_items.is_cancelled() {
            info!(task = %run.id(), shard = run.message.shard_index, "the task was retried since the copy began; stopping the copy and discarding its results");
            run.stop_items.cancel();
        }
    }

    /// Runs a store operation, retrying while the store is unavailable;
    /// each failure is counted under `operation`.
    async fn with_store_retries<T, F, Fut>(
        &self,
        operation: &str,
        mut op: F,
    ) -> Result<T, EngineError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let deadline = Instant::now() + STORE_RETRY_FOR;
        let mut delay = Duration::from_millis(100);
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    dts_metrics::metrics().store_error(operation, true);
                    warn!(error = %with_causes(&e), "store unavailable; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    dts_metrics::metrics().store_error(operation, false);
                    return Err(e.into());
                }
            }
        }
    }

    /// Runs one item, retrying a failure up to the task's `retries`. `None`
    /// if it was stopped before a final result (it will run again elsewhere).
    ///
    /// `attempt` in the result counts the shard's earlier deliveries that
    /// lost their worker plus this item's retries, so an item run again after
    /// its worker died shows attempt 2.
    async fn run_item(
        &self,
        run: &ShardRun<'_>,
        program: &Program,
        index: u64,
        input: &Bytes,
    ) -> Option<ItemResult> {
        let message = run.message;
        let tries = message.retries.saturating_add(1);
        let mut context = ItemContext {
            task_id: &message.task_id,
            shard_index: message.shard_index,
            index,
            attempt: run.attempt,
            worker_id: &self.settings.id,
            input: input.as_bytes(),
            limits: ItemLimits {
                memory_mb: message.memory_mb,
                milli_cpus: message.milli_cpus,
            },
        };
        let item_timeout = Duration::from_secs(message.timeout_secs.max(1));
        let mut retry = 1;
        let mut fault_backoff = WORKER_FAULT_BACKOFF;
        // A start the last try did not make (the worker's fault) is not
        // counted again against a careful shard's poison limit.
        let mut start_counted = false;
        loop {
            let attempt = run.attempt - 1 + retry;
            context.attempt = attempt;
            if self.deadline_left(message) == Some(Duration::ZERO) {
                return Some(self.past_deadline(index, input, attempt));
            }
            if run.careful() && !start_counted {
                if let Some(refused) = self.refuse_poison(run, index, input, attempt).await {
                    return Some(refused);
                }
                start_counted = true;
            }
            // A worker told to stop starts no new item, even one that was
            // already waiting for a core.
            let permit = tokio::select! {
                biased;
                _ = run.stop_items.cancelled() => return None,
                _ = run.stop_intake.cancelled() => return None,
                permit = self.slots.acquire() => permit.ok()?,
            };
            // The wait for a slot may have outlasted the task or the worker.
            if run.stop_items.is_cancelled() || run.stop_intake.is_cancelled() {
                return None;
            }
            // ...or the lease: after a pause (SIGSTOP, failing renewals) the
            // task may have been cancelled or the shard taken over while
            // this worker could not hear of it.
            if run.copy.is_none() && !self.lease_fresh(&message.task_id, message.shard_index) {
                drop(permit);
                if !self
                    .await_lease(&message.task_id, message.shard_index, &run.stop_items)
                    .await
                {
                    return None;
                }
                continue;
            }
            // A copy holds no lease, so no cancel waits for it to stop: it
            // asks the store before each item that the task still runs, the
            // shard is open and no retry reopened it since the copy began.
            if let Some(token) = run.copy {
                if !self
                    .copy_may_run(&message.task_id, message.shard_index, token)
                    .await
                {
                    drop(permit);
                    return None;
                }
            }
            // The task's deadline shortens the item's timeout, and once it
            // has passed no item starts. Judged now, with the slot in hand:
            // the wait for it may have used up the time that was left.
            let (timeout, cut_by_deadline) = match self.deadline_left(message) {
                Some(Duration::ZERO) => {
                    drop(permit);
                    return Some(self.past_deadline(index, input, attempt));
                }
                Some(left) => (left.min(item_timeout), left < item_timeout),
                None => (item_timeout, false),
            };
            self.running.fetch_add(1, Ordering::Relaxed);
            self.metrics.item_started();
            if run.first_of_task.swap(false, Ordering::Relaxed) {
                let now = self.settings.clock.now_millis();
                self.metrics.first_item_started(Duration::from_millis(
                    now.saturating_sub(run.submitted_at),
                ));
            }
            run.task_running.fetch_add(1, Ordering::Relaxed);
            // Ends (and leaves the registry) when this try ends.
            let live = self.settings.live_logs.start(&message.task_id, index);
            // The slot is given back the moment the process exits, so the next
            // item starts while this one's output and result are handled.
            let mut outcome = self
                .runner
                .run(
                    program,
                    &context,
                    attempt,
                    timeout,
                    &run.stop_items,
                    super::Slot::new(permit),
                    live.as_ref().map(|live| live.tap()),
                )
                .await;
            drop(live);
            self.running.fetch_sub(1, Ordering::Relaxed);
            // A start the worker could not make (a worker fault) ran nothing
            // to time; it was counted started all the same.
            self.metrics
                .item_run_ended((!outcome.worker_fault).then_some(outcome.duration));
            run.task_running.fetch_sub(1, Ordering::Relaxed);
            if outcome.cancelled {
                return None;
            }
            if outcome.worker_fault {
                // Out of descriptors, processes or memory here: the item did
                // not run. It waits and tries again; its attempt stays.
                warn!(
                    task = %message.task_id, index,
                    error = outcome.error.as_deref().unwrap_or_default(),
                    "the item could not start on this worker; trying again in {fault_backoff:?} (not counted as an attempt)"
                );
                if !sleep_unless_cancelled(fault_backoff, &run.stop_items).await
                    || run.stop_intake.is_cancelled()
                {
                    return None;
                }
                fault_backoff = (fault_backoff * 2).min(MAX_WORKER_FAULT_BACKOFF);
                continue;
            }
            if outcome.timed_out && cut_by_deadline {
                outcome.error =
                    Some("killed: the task's deadline (deadlineSecs) passed while it ran".into());
                return Some(self.to_result(index, input, outcome, attempt));
            }
            if outcome.succeeded() || retry >= tries {
                return Some(self.to_result(index, input, outcome, attempt));
            }
            if run.stop_intake.is_cancelled() {
                return None;
            }
            let backoff = Duration::from_millis(500u64.saturating_mul(1 << (retry - 1).min(16)))
                .min(MAX_ITEM_BACKOFF);
            debug!(task = %message.task_id, index, retry, "item failed; retrying in {backoff:?}");
            if !sleep_unless_cancelled(backoff, &run.stop_items).await {
                return None;
            }
            retry += 1;
            start_counted = false;
        }
    }

    /// The time left before the task's deadline, if it has one (zero once
    /// it has passed).
    fn deadline_left(&self, message: &ShardMessage) -> Option<Duration> {
        message
            .deadline_at
            .map(|at| Duration::from_millis(at.saturating_sub(self.settings.clock.now_millis())))
    }

    /// The result of an item the task's deadline kept from starting.
    fn past_deadline(&self, index: u64, input: &Bytes, attempt: u32) -> ItemResult {
        self.failed_unrun(
            index,
            input,
            attempt,
            "not run: the task's deadline (deadlineSecs) passed before this item started",
        )
    }

    /// In a careful run, counts this start of the item; an item that was
    /// running each of the `shard_attempts` times a worker died is not run
    /// again but failed, with the reason.
    async fn refuse_poison(
        &self,
        run: &ShardRun<'_>,
        index: u64,
        input: &Bytes,
        attempt: u32,
    ) -> Option<ItemResult> {
        let starts = match self.store.mark_item_started(run.id(), index).await {
            Ok(starts) => starts,
            Err(e) => {
                // Not knowing costs at most one more death; run it.
                warn!(task = %run.id(), index, error = %with_causes(&e), "cannot count the item's starts");
                return None;
            }
        };
        if starts < self.settings.shard_attempts {
            return None;
        }
        warn!(task = %run.id(), index, starts, "not running an item that was running each time its worker died");
        let reason = format!(
            "not run again: this item was running when its worker died {} times \
             (it may kill its worker, e.g. with kill $PPID, or exhaust the machine's memory); \
             worker.shard-attempts is {}",
            starts, self.settings.shard_attempts
        );
        Some(self.failed_unrun(index, input, attempt, &reason))
    }

    /// The result of an item failed without running, with the reason.
    fn failed_unrun(&self, index: u64, input: &Bytes, attempt: u32, reason: &str) -> ItemResult {
        ItemResult {
            error: Some(reason.to_string()),
            ..ItemResult::empty(index, input.clone(), self.settings.id.clone(), attempt)
        }
    }

    fn to_result(
        &self,
        index: u64,
        input: &Bytes,
        outcome: ExecOutcome,
        attempt: u32,
    ) -> ItemResult {
        ItemResult {
            index,
            input: input.clone(),
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            stdout: Bytes::new(outcome.stdout),
            stderr: Bytes::new(outcome.stderr),
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            stdout_bytes: outcome.stdout_bytes,
            stderr_bytes: outcome.stderr_bytes,
            duration_ms: outcome.duration.as_millis() as u64,
            worker: self.settings.id.clone(),
            attempt,
            error: outcome.error,
        }
    }
}
