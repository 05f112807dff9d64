//! Running one shard: skip what is done, run the rest on the worker's slots,
//! record results in batches, complete the shard.

use super::Inner;
use crate::{EngineError, events, sleep_unless_cancelled};
use dts_bus::Delivery;
use dts_executor::{ExecOutcome, ItemContext, Program};
use dts_model::{ItemResult, ShardMessage};
use dts_store::StoreError;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Longest wait between two attempts of a failed item.
const MAX_ITEM_BACKOFF: Duration = Duration::from_secs(30);
/// How long a store write is retried before the shard is handed back.
const STORE_RETRY_FOR: Duration = Duration::from_secs(30);

/// How a shard run ended, which decides whether its message is acknowledged.
#[derive(Debug, PartialEq, Eq)]
enum ShardEnd {
    /// Every item has a result and the shard is completed.
    Done,
    /// Nothing to do: already completed, or its task is unknown or has ended.
    Skipped,
    /// The task was cancelled while the shard ran; results so far are kept.
    TaskEnded,
    /// The worker is shutting down; the shard goes back to the bus.
    Interrupted,
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
                warn!(error = %e, key = %delivery.key, "skipping unreadable shard message");
                acknowledge(delivery).await;
                return;
            }
        };
        let started = Instant::now();
        match self.execute(&message, stop_intake, kill).await {
            Ok(end @ (ShardEnd::Done | ShardEnd::Skipped | ShardEnd::TaskEnded)) => {
                debug!(task = %message.task_id, shard = message.shard_index, ?end, elapsed = ?started.elapsed(), "shard ended");
                acknowledge(delivery).await;
            }
            Ok(ShardEnd::Interrupted) => {
                info!(task = %message.task_id, shard = message.shard_index, "shard handed back unfinished");
                drop(delivery);
            }
            Err(e) => {
                warn!(task = %message.task_id, shard = message.shard_index, error = %e, "shard failed; handing it back");
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
        let Some(task) = self.store.task(id).await? else {
            warn!(task = %id, "shard of an unknown task");
            return Ok(ShardEnd::Skipped);
        };
        if task.status.is_terminal() {
            return Ok(ShardEnd::TaskEnded);
        }
        if self
            .store
            .completed_shards(id)
            .await?
            .binary_search(&message.shard_index)
            .is_ok()
        {
            return Ok(ShardEnd::Skipped);
        }
        let end = message.start + message.items.len() as u64;
        let recorded: HashSet<u64> = self
            .store
            .recorded_indices(id, message.start, end)
            .await?
            .into_iter()
            .collect();
        let pending: Vec<u64> = (message.start..end)
            .filter(|i| !recorded.contains(i))
            .collect();
        if !recorded.is_empty() {
            info!(task = %id, shard = message.shard_index, done = recorded.len(), left = pending.len(), "resuming a shard");
        }

        let stop_items = self.task_stop(id, kill);
        let outcome = self
            .run_pending(message, &pending, stop_intake, kill, &stop_items)
            .await;
        self.release_task_stop(id);
        outcome
    }

    /// Runs the `pending` items of the shard and completes it. `stop_items`
    /// is cancelled when the task ends (a cancel) or the worker must stop
    /// now; it kills the running items.
    async fn run_pending(
        &self,
        message: &ShardMessage,
        pending: &[u64],
        stop_intake: &CancellationToken,
        kill: &CancellationToken,
        stop_items: &CancellationToken,
    ) -> Result<ShardEnd, EngineError> {
        let id = message.task_id.as_str();
        let program = self.executor.prepare(&message.script, &message.interpreter);
        let next = AtomicUsize::new(0);
        let (results_tx, results_rx) =
            mpsc::channel::<ItemResult>(self.settings.flush_batch.max(1));
        let runners = (self.settings.cores as usize).min(pending.len());

        let run_items = futures::future::join_all((0..runners).map(|_| {
            let results_tx = results_tx.clone();
            let (next, program) = (&next, &program);
            async move {
                while !stop_intake.is_cancelled() && !stop_items.is_cancelled() {
                    let slot = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&index) = pending.get(slot) else {
                        break;
                    };
                    let input = &message.items[(index - message.start) as usize];
                    let Some(result) = self
                        .run_item(program, message, index, input, stop_intake, stop_items)
                        .await
                    else {
                        break;
                    };
                    if results_tx.send(result).await.is_err() {
                        break;
                    }
                }
            }
        }));
        drop(results_tx);
        let (_, collected) = tokio::join!(run_items, self.collect(id, results_rx, stop_items));
        let Collected {
            recorded: newly,
            unsaved,
        } = collected?;

        if stop_items.is_cancelled() && !kill.is_cancelled() {
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
    async fn collect(
        &self,
        id: &str,
        mut results: mpsc::Receiver<ItemResult>,
        stop_items: &CancellationToken,
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
                            recorded += self.flush(id, &mut batch, stop_items).await;
                            last_status_check = Instant::now();
                        }
                    }
                    None => break,
                },
                _ = ticker.tick() => {
                    if !batch.is_empty() {
                        recorded += self.flush(id, &mut batch, stop_items).await;
                        last_status_check = Instant::now();
                    } else if last_status_check.elapsed() >= self.settings.status_poll {
                        last_status_check = Instant::now();
                        match self.store.task(id).await {
                            Ok(Some(task)) if task.status.is_terminal() => stop_items.cancel(),
                            Ok(_) => {}
                            Err(e) => debug!(task = %id, error = %e, "cannot check the task's status"),
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
        stop_items: &CancellationToken,
    ) -> usize {
        match self.store.record_results(id, batch).await {
            Ok(status) => {
                if status.is_terminal() {
                    stop_items.cancel();
                }
                let written = batch.len();
                batch.clear();
                written
            }
            Err(e) => {
                warn!(task = %id, error = %e, waiting = batch.len(), "cannot record results yet");
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
                    warn!(error = %e, "store unavailable; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Runs one item, retrying a failure up to the task's `retries`. `None`
    /// if it was stopped before a final result (it will run again elsewhere).
    async fn run_item(
        &self,
        program: &Program,
        message: &ShardMessage,
        index: u64,
        input: &str,
        stop_intake: &CancellationToken,
        stop_items: &CancellationToken,
    ) -> Option<ItemResult> {
        let attempts = message.retries.saturating_add(1);
        let context = ItemContext {
            task_id: &message.task_id,
            shard_index: message.shard_index,
            index,
            input,
        };
        let timeout = Duration::from_secs(message.timeout_secs.max(1));
        for attempt in 1..=attempts {
            let permit = tokio::select! {
                biased;
                _ = stop_items.cancelled() => return None,
                permit = self.slots.acquire() => permit.ok()?,
            };
            // The wait for a slot may have outlasted the task.
            if stop_items.is_cancelled() {
                return None;
            }
            self.running.fetch_add(1, Ordering::Relaxed);
            let outcome = self
                .executor
                .run(program, &context, timeout, stop_items)
                .await;
            self.running.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            if outcome.cancelled {
                return None;
            }
            if outcome.succeeded() || attempt == attempts {
                return Some(self.to_result(index, input, outcome, attempt));
            }
            if stop_intake.is_cancelled() {
                return None;
            }
            let backoff = Duration::from_millis(500u64.saturating_mul(1 << (attempt - 1).min(16)))
                .min(MAX_ITEM_BACKOFF);
            debug!(task = %message.task_id, index, attempt, "item failed; retrying in {backoff:?}");
            if !sleep_unless_cancelled(backoff, stop_items).await {
                return None;
            }
        }
        None
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
        warn!(error = %e, "cannot acknowledge a shard message");
    }
}
