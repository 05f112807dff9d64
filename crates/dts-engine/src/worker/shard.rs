//! Running one shard: skip what is done, run the rest on the worker's slots,
//! record results in batches, complete the shard.

use super::Inner;
use crate::{EngineError, events, sleep_unless_cancelled, with_causes};
use dts_bus::Delivery;
use dts_executor::{ExecOutcome, ItemContext, ItemLimits, Program};
use dts_model::{ItemResult, ShardMessage};
use dts_store::{ShardClaim, StoreError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Longest wait between two attempts of a failed item.
const MAX_ITEM_BACKOFF: Duration = Duration::from_secs(30);
/// First and longest wait before an item that could not start for lack of
/// descriptors, processes or memory on this worker tries again.
const WORKER_FAULT_BACKOFF: Duration = Duration::from_millis(100);
const MAX_WORKER_FAULT_BACKOFF: Duration = Duration::from_secs(5);
/// How long a store write is retried before the shard is handed back.
const STORE_RETRY_FOR: Duration = Duration::from_secs(30);

/// How a shard run ended, which decides whether its message is acknowledged.
#[derive(Debug, PartialEq, Eq)]
enum ShardEnd {
    /// Every item has a result and the shard is completed.
    Done,
    /// Nothing to do: the shard is already completed, or its task is unknown.
    Skipped,
    /// The task had ended (cancelled, failed, past its deadline) before the
    /// shard started or while it ran; results so far are kept.
    TaskEnded,
    /// The worker is shutting down; the shard goes back to the bus.
    Interrupted,
    /// Another worker took the shard over (this one's lease expired): it
    /// finishes the shard; this delivery goes back unacknowledged.
    Lost,
}

/// What claiming the shard's lease came to.
enum Claim {
    Acquired(u32),
    Ended(ShardEnd),
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
    /// 1 for the shard's first delivery; more after workers died running it.
    attempt: u32,
}

impl ShardRun<'_> {
    fn id(&self) -> &str {
        &self.message.task_id
    }

    /// The shard lost a worker before: run it one item at a time, counting
    /// starts, to find an item that kills its workers.
    fn careful(&self) -> bool {
        self.attempt > 1
    }
}

impl Inner {
    pub(super) async fn run_shard(
        &self,
        delivery: Delivery,
        stop_intake: &CancellationToken,
        kill: &CancellationToken,
    ) {
        let message: ShardMessage = match serde_json::from_slice(&delivery.payload) {
            Ok(message) => message,
            Err(e) => {
                warn!(error = %with_causes(&e), key = %delivery.key, "skipping unreadable shard message");
                acknowledge(delivery).await;
                return;
            }
        };
        let started = Instant::now();
        let (task, shard) = (message.task_id.as_str(), message.shard_index);
        match self.execute(&message, stop_intake, kill).await {
            Ok(end @ (ShardEnd::Done | ShardEnd::Skipped | ShardEnd::TaskEnded)) => {
                debug!(task, shard, ?end, elapsed = ?started.elapsed(), "shard ended");
                acknowledge(delivery).await;
            }
            Ok(ShardEnd::Interrupted) => {
                info!(task, shard, "shard handed back unfinished");
                drop(delivery);
            }
            Ok(ShardEnd::Lost) => {
                warn!(task, shard, "another worker took the shard over");
                drop(delivery);
            }
            Err(e) => {
                warn!(task, shard, error = %with_causes(&e), "shard failed; handing it back");
                sleep_unless_cancelled(self.settings.retry_delay, stop_intake).await;
                drop(delivery);
            }
        }
    }

    async fn execute(
        &self,
        message: &ShardMessage,
        stop_intake: &CancellationToken,
        kill: &CancellationToken,
    ) -> Result<ShardEnd, EngineError> {
        let id = message.task_id.as_str();
        let shard = message.shard_index;
        let attempt = match self.claim(message, stop_intake).await? {
            Claim::Acquired(attempt) => attempt,
            Claim::Ended(end) => return Ok(end),
        };
        let task_stop = self.task_stop(id, kill);
        let run = ShardRun {
            message,
            stop_intake,
            kill,
            stop_items: self.hold_lease(id, shard, &task_stop),
            task_stop,
            attempt,
        };
        let outcome = self.run_claimed(&run).await;
        self.forget_lease(id, shard);
        self.release_task_stop(id);
        match &outcome {
            // Completion released the lease; a lost lease is not ours.
            Ok(ShardEnd::Done | ShardEnd::Lost) => {}
            _ => {
                if let Err(e) = self
                    .store
                    .release_shard(id, shard, &self.settings.id, true)
                    .await
                {
                    debug!(task = %id, shard, error = %with_causes(&e), "cannot release the shard's lease; it will expire");
                }
            }
        }
        outcome
    }

    /// Takes the shard's lease, waiting while another worker (or this one,
    /// for a duplicate delivery) holds it.
    async fn claim(
        &self,
        message: &ShardMessage,
        stop_intake: &CancellationToken,
    ) -> Result<Claim, EngineError> {
        let id = message.task_id.as_str();
        loop {
            let Some(task) = self.store.task(id).await? else {
                warn!(task = %id, "shard of an unknown task");
                return Ok(Claim::Ended(ShardEnd::Skipped));
            };
            if task.status.is_terminal() {
                return Ok(Claim::Ended(ShardEnd::TaskEnded));
            }
            let lease = self.settings.heartbeat_ttl;
            match self
                .store
                .claim_shard(id, message.shard_index, &self.settings.id, lease)
                .await?
            {
                ShardClaim::Acquired { attempt } => return Ok(Claim::Acquired(attempt)),
                ShardClaim::Completed => return Ok(Claim::Ended(ShardEnd::Skipped)),
                ShardClaim::Held { owner, expires_in } => {
                    debug!(task = %id, shard = message.shard_index, %owner, ?expires_in, "shard held by another run; waiting");
                    let wait = expires_in.clamp(Duration::from_millis(100), Duration::from_secs(1));
                    if !sleep_unless_cancelled(wait, stop_intake).await {
                        return Ok(Claim::Ended(ShardEnd::Interrupted));
                    }
                }
            }
        }
    }

    /// Runs a shard whose lease this worker holds.
    async fn run_claimed(&self, run: &ShardRun<'_>) -> Result<ShardEnd, EngineError> {
        let message = run.message;
        let end = message.start + message.items.len() as u64;
        let recorded: HashSet<u64> = self
            .store
            .recorded_indices(run.id(), message.start, end)
            .await?
            .into_iter()
            .collect();
        let pending: Vec<u64> = (message.start..end)
            .filter(|i| !recorded.contains(i))
            .collect();
        if run.careful() {
            warn!(
                task = %run.id(), shard = message.shard_index, attempt = run.attempt, left = pending.len(),
                "a worker died running this shard before: running it one item at a time"
            );
        } else if !recorded.is_empty() {
            info!(task = %run.id(), shard = message.shard_index, done = recorded.len(), left = pending.len(), "resuming a shard");
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

    /// Runs the `pending` items of the shard, records their results and
    /// completes the shard.
    async fn run_pending(
        &self,
        run: &ShardRun<'_>,
        pending: &[u64],
    ) -> Result<ShardEnd, EngineError> {
        let (message, id) = (run.message, run.id());
        let program = self.runner.prepare(&message.script, &message.interpreter);
        let next = AtomicUsize::new(0);
        // Careful runs record each result before the next item starts: a
        // death must not take finished items' results with it.
        let saved_at_once = AtomicUsize::new(0);
        let (results_tx, results_rx) =
            mpsc::channel::<ItemResult>(self.settings.flush_batch.max(1));
        let parallel = if run.careful() {
            1
        } else {
            self.settings.cores as usize
        };
        let runners = parallel.min(pending.len());

        let run_items = futures::future::join_all((0..runners).map(|_| {
            let results_tx = results_tx.clone();
            let (next, program, saved_at_once) = (&next, &program, &saved_at_once);
            async move {
                while !run.stop_intake.is_cancelled() && !run.stop_items.is_cancelled() {
                    let slot = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = pending.get(slot) else {
                        break;
                    };
                    let input = &message.items[(index - message.start) as usize];
                    let Some(result) = self.run_item(run, program, index, input).await else {
                        break;
                    };
                    if run.careful() {
                        if self
                            .save_with_retries(id, std::slice::from_ref(&result))
                            .await
                            .is_err()
                        {
                            break;
                        }
                        saved_at_once.fetch_add(1, Ordering::Relaxed);
                    } else if results_tx.send(result).await.is_err() {
                        break;
                    }
                }
            }
        }));
        drop(results_tx);
        let (_, collected) = tokio::join!(run_items, self.collect(id, results_rx, &run.task_stop));
        let Collected { recorded, unsaved } = collected?;
        let newly = recorded + saved_at_once.load(Ordering::Relaxed);

        if run.stop_items.is_cancelled() && !run.task_stop.is_cancelled() {
            // Lost the lease: the results are still true; the new owner skips them.
            self.save_with_retries(id, &unsaved).await?;
            return Ok(ShardEnd::Lost);
        }
        if run.task_stop.is_cancelled() && !run.kill.is_cancelled() {
            self.save_with_retries(id, &unsaved).await?;
            info!(task = %id, shard = message.shard_index, "task ended while its shard ran");
            return Ok(ShardEnd::TaskEnded);
        }
        if newly + unsaved.len() < pending.len() {
            self.save_with_retries(id, &unsaved).await?;
            return Ok(ShardEnd::Interrupted);
        }
        let completion = self
            .with_store_retries(|| self.store.complete_shard(id, message.shard_index, &unsaved))
            .await?;
        if completion.finished_task {
            events::publish_completion(&self.bus, &self.settings.topics, &completion.task).await;
        }
        Ok(ShardEnd::Done)
    }

    /// Receives results until every runner is done, writing them in batches.
    /// Returns how many were written and those still unwritten (the last
    /// batch goes with the shard's completion, in the same store operation).
    /// Learning that the task ended cancels `task_stop`, which stops every
    /// shard of the task on this worker at once.
    async fn collect(
        &self,
        id: &str,
        mut results: mpsc::Receiver<ItemResult>,
        task_stop: &CancellationToken,
    ) -> Result<Collected, EngineError> {
        let mut batch: Vec<ItemResult> = Vec::new();
        let mut recorded = 0usize;
        let mut ticker = tokio::time::interval(self.settings.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_status_check = Instant::now();
        loop {
            tokio::select! {
                result = results.recv() => match result {
                    Some(result) => {
                        batch.push(result);
                        if batch.len() >= self.settings.flush_batch {
                            recorded += self.flush(id, &mut batch, task_stop).await;
                            last_status_check = Instant::now();
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if !batch.is_empty() {
                        recorded += self.flush(id, &mut batch, task_stop).await;
                        last_status_check = Instant::now();
                    } else if last_status_check.elapsed() >= self.settings.status_poll {
                        last_status_check = Instant::now();
                        match self.store.task(id).await {
                            Ok(Some(task)) if task.status.is_terminal() => task_stop.cancel(),
                            Ok(_) => {}
                            Err(e) => debug!(task = %id, error = %with_causes(&e), "cannot check the task's status"),
                        }
                    }
                }
            }
        }
        Ok(Collected {
            recorded,
            unsaved: batch,
        })
    }

    /// Writes `batch`; on success empties it and returns how many were
    /// written. A failed write keeps the batch for the next try.
    async fn flush(
        &self,
        id: &str,
        batch: &mut Vec<ItemResult>,
        task_stop: &CancellationToken,
    ) -> usize {
        match self.store.record_results(id, batch).await {
            Ok(status) => {
                if status.is_terminal() {
                    task_stop.cancel();
                }
                let written = batch.len();
                batch.clear();
                written
            }
            Err(e) => {
                warn!(task = %id, error = %with_causes(&e), waiting = batch.len(), "cannot record results yet");
                0
            }
        }
    }

    async fn save_with_retries(&self, id: &str, results: &[ItemResult]) -> Result<(), EngineError> {
        if results.is_empty() {
            return Ok(());
        }
        self.with_store_retries(|| self.store.record_results(id, results))
            .await?;
        Ok(())
    }

    /// Runs a store operation, retrying while the store is unavailable.
    async fn with_store_retries<T, F, Fut>(&self, mut op: F) -> Result<T, EngineError>
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
                    warn!(error = %with_causes(&e), "store unavailable; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
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
        input: &str,
    ) -> Option<ItemResult> {
        let message = run.message;
        let tries = message.retries.saturating_add(1);
        let context = ItemContext {
            task_id: &message.task_id,
            shard_index: message.shard_index,
            index,
            input,
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
            if self.deadline_left(message) == Some(Duration::ZERO) {
                return Some(self.past_deadline(index, input, attempt));
            }
            if run.careful() && !start_counted {
                if let Some(refused) = self.refuse_poison(run, index, input, attempt).await {
                    return Some(refused);
                }
                start_counted = true;
            }
            let permit = tokio::select! {
                biased;
                _ = run.stop_items.cancelled() => return None,
                permit = self.slots.acquire() => permit.ok()?,
            };
            // The wait for a slot may have outlasted the task.
            if run.stop_items.is_cancelled() {
                return None;
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
                )
                .await;
            self.running.fetch_sub(1, Ordering::Relaxed);
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
    fn past_deadline(&self, index: u64, input: &str, attempt: u32) -> ItemResult {
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
        input: &str,
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
    fn failed_unrun(&self, index: u64, input: &str, attempt: u32, reason: &str) -> ItemResult {
        ItemResult {
            index,
            input: input.to_string(),
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0,
            worker: self.settings.id.clone(),
            attempt,
            error: Some(reason.to_string()),
        }
    }

    fn to_result(&self, index: u64, input: &str, outcome: ExecOutcome, attempt: u32) -> ItemResult {
        ItemResult {
            index,
            input: input.to_string(),
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            duration_ms: outcome.duration.as_millis() as u64,
            worker: self.settings.id.clone(),
            attempt,
            error: outcome.error,
        }
    }
}

struct Collected {
    recorded: usize,
    unsaved: Vec<ItemResult>,
}

async fn acknowledge(delivery: Delivery) {
    if let Err(e) = delivery.ack().await {
        warn!(error = %with_causes(&e), "cannot acknowledge a shard message");
    }
}
