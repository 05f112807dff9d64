//! Running tasks' `reduce` steps (docs/workflows.md, "Reduce").
//!
//! Every worker looks for `REDUCING` tasks it may run (their `requires`
//! match its labels), claims one's reduce in the store, and runs its
//! script on one of its slots, with every item's result as a JSON line on
//! standard input, in index order. Results are read from the store a page
//! at a time while the script reads them, so a million results never sit
//! in memory. The reduce's result, recorded by [`dts_store::Store::finish_reduce`],
//! ends the task.
//!
//! A claim is the worker's until its heartbeat lapses: a worker that dies
//! mid-reduce loses it, and another worker (or this one, restarted) claims
//! it again as the next attempt. Only the attempt holding the claim can
//! record, so the task counts one reduce result.

use super::{Inner, Slot};
use crate::with_causes;
use dts_executor::{ExecOutcome, ItemContext, ItemLimits, StdinSource};
use dts_model::scheduling::Candidate;
use dts_model::{Bytes, ReduceResult, Task, template};
use dts_store::{ReduceClaim, ResultFilter, StoreError};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often an idle worker looks for reduces to run.
const REDUCE_POLL: Duration = Duration::from_millis(500);
/// `REDUCING` tasks read per look.
const REDUCING_PAGE: usize = 16;
/// Results read from the store per page of a reduce's input.
const RESULTS_PAGE: u64 = 1000;
/// Bytes of JSON lines per chunk sent to the script.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued ahead of the script: what it has not read yet, at most.
const CHUNKS_AHEAD: usize = 4;
/// Waits between tries of a store call a reduce cannot do without.
const STORE_RETRY: Duration = Duration::from_millis(500);

impl Inner {
    /// Looks for reduces to run every [`REDUCE_POLL`] (and when woken),
    /// running each it claims in its own tracked task, until `shutdown`.
    pub(super) async fn reduce_loop(
        self: Arc<Self>,
        shutdown: CancellationToken,
        reduces: tokio_util::task::TaskTracker,
    ) {
        // The reduces running here. The store grants a worker its own claim
        // again (as a new attempt, for a worker restarted with the same
        // id), so claiming a reduce this worker still runs would take the
        // claim from the running attempt, whose record would then be
        // refused, and so on at every look: the task would never end.
        let running = RunningHere::default();
        // ends: at shutdown.
        while crate::sleep_unless_cancelled(REDUCE_POLL, &shutdown).await {
            let tasks = match self.store.reducing_tasks(REDUCING_PAGE).await {
                Ok(tasks) => tasks,
                Err(e) => {
                    dts_metrics::metrics().store_error("reducing_tasks", true);
                    debug!(error = %with_causes(&e), "cannot look for reduces to run");
                    continue;
                }
            };
            for task in tasks {
                if running.contains(&task.id)
                    || !Candidate::of(&task, 0, true).placeable_on(&self.settings.labels)
                {
                    continue;
                }
                // A reduce waits for a free slot like an item; claiming
                // only once one is free leaves the reduce to a worker
                // that can start it now.
                let Ok(permit) = self.slots.try_acquire() else {
                    break;
                };
                match self.store.claim_reduce(&task.id, &self.settings.id).await {
                    Ok(ReduceClaim::Claimed { attempt }) => {
                        drop(permit);
                        let inner = self.clone();
                        let stop_intake = shutdown.clone();
                        let here = running.insert(&task.id);
                        reduces.spawn(async move {
                            inner.run_reduce(task, attempt, stop_intake).await;
                            // Recorded, or given up (claimed again at a
                            // later look): no longer running here.
                            drop(here);
                        });
                    }
                    Ok(ReduceClaim::Held { .. } | ReduceClaim::NotReducing { .. }) => {}
                    Err(StoreError::NoSuchTask { .. }) => {}
                    Err(e) => {
                        dts_metrics::metrics().store_error("claim_reduce", true);
                        debug!(task = %task.id, error = %with_causes(&e), "cannot claim a reduce");
                    }
                }
            }
        }
    }

    /// Runs attempt `attempt` of `task`'s reduce and records its result.
    async fn run_reduce(self: Arc<Self>, task: Task, attempt: u32, stop_intake: CancellationToken) {
        let Some(reduce) = task.reduce.clone() else {
            return;
        };
        info!(task = %task.id, attempt, "reduce started");
        let (stop, _drain, _running) = self.task_stop(&task, &self.kill);
        // At shutdown a running reduce may finish within the drain grace,
        // as items may; then it is stopped, and run again by the next
        // holder of its claim.
        let grace = self.settings.drain_grace;
        let draining = {
            let (stop, stop_intake) = (stop.clone(), stop_intake.clone());
            tokio::spawn(async move {
                stop_intake.cancelled().await;
                tokio::time::sleep(grace).await;
                stop.cancel();
            })
        };
        let result = match template::render(&reduce.template_function, &task.variables) {
            Err(missing) => {
                draining.abort();
                self.unrun(attempt, format!("not run: {missing}"))
            }
            Ok(script) => {
                let program = self.runner.prepare(&script, &reduce.interpreter);
                let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
                let feeding = tokio::spawn(feed_results(
                    self.store.clone(),
                    task.id.clone(),
                    task.items_total,
                    sender,
                    stop.clone(),
                ));
                let permit = tokio::select! {
                    biased;
                    _ = stop.cancelled() => None,
                    _ = stop_intake.cancelled() => None,
                    permit = self.slots.acquire() => permit.ok(),
                };
                // The task's deadline cuts the reduce short, as it does items.
                let timeout = Duration::from_secs(reduce.timeout_secs.max(1));
                let timeout = match task.deadline_at() {
                    Some(at) => timeout.min(Duration::from_millis(
                        at.saturating_sub(self.settings.clock.now_millis()),
                    )),
                    None => timeout,
                };
                let outcome = match permit {
                    None => None,
                    Some(_) if timeout.is_zero() => {
                        drop(permit);
                        Some(ExecOutcome {
                            error: Some(
                                "not run: the task's deadline (deadlineSecs) passed before the reduce started"
                                    .into(),
                            ),
                            ..ExecOutcome::default()
                        })
                    }
                    Some(permit) => {
                        let context = ItemContext {
                            task_id: &task.id,
                            shard_index: task.chunks_to_execute,
                            index: task.items_total,
                            attempt,
                            worker_id: &self.settings.id,
                            input: b"",
                            limits: ItemLimits {
                                memory_mb: task.memory_mb,
                                milli_cpus: task.milli_cpus,
                            },
                        };
                        self.running.fetch_add(1, Ordering::Relaxed);
                        let outcome = self
                            .runner
                            .run_streamed(
                                &program,
                                &context,
                                StdinSource::new(receiver),
                                attempt,
                                timeout,
                                &stop,
                                Slot::new(permit),
                            )
                            .await;
                        self.running.fetch_sub(1, Ordering::Relaxed);
                        Some(outcome)
                    }
                };
                feeding.abort();
                draining.abort();
                match outcome {
                    // The worker could not start it (out of processes or
                    // memory): not the reduce's failure. The claim stays
                    // this worker's, which claims it again at its next look.
                    Some(outcome) if outcome.worker_fault => {
                        self.release_task_stop(&task.id);
                        warn!(task = %task.id, attempt, error = ?outcome.error, "could not start the reduce; trying again");
                        return;
                    }
                    Some(outcome) if !stop.is_cancelled() => self.reduce_result(outcome, attempt),
                    // Cancelled, ended otherwise, or the worker is stopping:
                    // nothing to record; a claim left behind is taken over
                    // once this worker's heartbeat is gone.
                    _ => {
                        self.release_task_stop(&task.id);
                        info!(task = %task.id, attempt, "reduce stopped before its end");
                        return;
                    }
                }
            }
        };
        self.release_task_stop(&task.id);
        self.record_reduce(&task, attempt, &result).await;
    }

    /// Records `result` as attempt `attempt` of `task`'s reduce, trying again
    /// while the store fails; publishes the task's completion event.
    async fn record_reduce(&self, task: &Task, attempt: u32, result: &ReduceResult) {
        // ends: recorded, refused (the claim moved on), or the process
        // stops; a claim left unrecorded is run again by its next holder.
        loop {
            match self
                .store
                .finish_reduce(&task.id, &self.settings.id, attempt, result)
                .await
            {
                Ok(Some(ended)) => {
                    info!(task = %task.id, attempt, status = %ended.status, "reduce recorded; task ended");
                    crate::events::publish_completion(
                        &self.bus,
                        &self.settings.topics,
                        &*self.store,
                        &ended,
                    )
                    .await;
                    return;
                }
                Ok(None) => {
                    warn!(task = %task.id, attempt, "reduce result not recorded: the task ended otherwise or another worker's attempt holds the claim");
                    return;
                }
                Err(e) if e.is_retryable() => {
                    dts_metrics::metrics().store_error("finish_reduce", true);
                    warn!(task = %task.id, error = %with_causes(&e), "cannot record the reduce's result; trying again");
                    tokio::time::sleep(STORE_RETRY).await;
                }
                Err(e) => {
                    dts_metrics::metrics().store_error("finish_reduce", false);
                    warn!(task = %task.id, error = %with_causes(&e), "cannot record the reduce's result");
                    return;
                }
            }
        }
    }

    fn reduce_result(&self, outcome: ExecOutcome, attempt: u32) -> ReduceResult {
        ReduceResult {
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            timed_out: outcome.timed_out,
            stdout: Bytes::new(outcome.stdout),
            stderr: Bytes::new(outcome.stderr),
            stdout_truncated: outcome.stdout_truncated,
            stderr_truncated: outcome.stderr_truncated,
            duration_ms: outcome.duration.as_millis() as u64,
            worker: self.settings.id.clone(),
            attempt,
            error: outcome.error,
        }
    }

    fn unrun(&self, attempt: u32, reason: String) -> ReduceResult {
        ReduceResult {
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: Bytes::default(),
            stderr: Bytes::default(),
            stdout_truncated: false,
            stderr_truncated: false,
            duration_ms: 0,
            worker: self.settings.id.clone(),
            attempt,
            error: Some(reason),
        }
    }
}

/// The tasks whose reduce runs on this worker (claimed, not yet recorded or
/// given up). Cheap to clone.
#[derive(Clone, Default)]
struct RunningHere {
    tasks: Arc<Mutex<HashSet<String>>>,
}

impl RunningHere {
    fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    /// Marks task `id`'s reduce running here until the guard is dropped
    /// (its run ended, or was dropped with the runtime).
    fn insert(&self, id: &str) -> RunningGuard {
        self.lock().insert(id.to_string());
        RunningGuard {
            running: self.clone(),
            id: id.to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Task `id`'s reduce runs here while this lives.
struct RunningGuard {
    running: RunningHere,
    id: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running.lock().remove(&self.id);
    }
}

/// Sends every result of task `id` (items `0..items`) as JSON lines, in
/// index order, in chunks of about [`CHUNK_BYTES`]; the channel's bound
/// paces the reads to the script's. A store error is tried again (the
/// script must see every result or none), until `stop`. Ends when the
/// script stops reading (the channel closes).
async fn feed_results(
    store: dts_store::DynStore,
    id: String,
    items: u64,
    sender: mpsc::Sender<Vec<u8>>,
    stop: CancellationToken,
) {
    let mut next = 0;
    let mut chunk = Vec::with_capacity(CHUNK_BYTES);
    // ends: at the last page, when the script stops reading, or at `stop`.
    while next < items {
        let page = match store
            .results(&id, ResultFilter::All, next, RESULTS_PAGE)
            .await
        {
            Ok((_, page)) => page,
            Err(e) => {
                dts_metrics::metrics().store_error("results", true);
                warn!(task = %id, error = %with_causes(&e), "cannot read results for the reduce; trying again");
                if !crate::sleep_unless_cancelled(STORE_RETRY, &stop).await {
                    return;
                }
                continue;
            }
        };
        if page.is_empty() {
            warn!(task = %id, from = next, "the reduce's input ends early: results are missing");
            break;
        }
        for result in &page {
            match serde_json::to_vec(result) {
                Ok(line) => chunk.extend_from_slice(&line),
                Err(e) => {
                    warn!(task = %id, index = result.index, error = %e, "cannot encode a result for the reduce");
                    continue;
                }
            }
            chunk.push(b'\n');
            if chunk.len() >= CHUNK_BYTES {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES));
                if sender.send(full).await.is_err() {
                    return;
                }
            }
        }
        next += page.len() as u64;
    }
    if !chunk.is_empty() {
        let _ = sender.send(chunk).await;
    }
}
