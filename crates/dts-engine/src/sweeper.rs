//! The sweeper: finds tasks that were stored but whose publishing stopped
//! half-way — the server that accepted them died before the task reached the
//! bus, or while it was retrying — and publishes them again; and ends tasks
//! whose deadline passed while nobody ran their remaining items.
//!
//! Every node with an API runs one (`dts server`, `dts up`, `dts run`), and
//! beside it the drainer of completion events owed (`events.rs`). A
//! task counts as stuck when it is still `QUEUED` or
//! `RETRYING` longer after its creation than any live server would keep
//! trying (`republish_after`). Two servers may both republish a stuck task;
//! planning is idempotent, so that costs a message, not a second plan.
//!
//! A task still `SUBMITTED` (published, never planned) that long after its
//! creation gets its message again too, from each sweeper, then after 2,
//! 4 and at most 8 times that period: its plan may have been lost with a
//! Redis failover after the scheduler had acknowledged the message
//! (replication is asynchronous), or the message with a broker's storage. Under a backlog
//! the copy only costs the scheduler a look at a task it plans anyway.
//!
//! "Now" is the clock of the submitter the sweeper republishes through: both
//! belong to the same node.

use crate::events::DrainerSettings;
use crate::submit::Submitter;
use crate::with_causes;
use dts_model::TaskStatus;
use dts_store::DynStore;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Tasks looked at per status and sweep.
const SWEEP_LIMIT: usize = 1000;

/// How often the sweeper looks, and when it gives a task up for abandoned.
#[derive(Debug, Clone)]
pub struct SweeperSettings {
    /// How often to look.
    pub interval: Duration,
    /// How long after creation a task still `QUEUED` or `RETRYING` is
    /// taken for abandoned. Longer than a whole round of publishing retries.
    pub republish_after: Duration,
    /// The completion-event drainer that runs beside the sweeper
    /// ([`crate::events::start_drainer`]).
    pub drainer: DrainerSettings,
    /// How often the release loop of waiting tasks looks
    /// ([`crate::after::start`]).
    pub release_interval: Duration,
    /// The schedule loop that runs beside the sweeper
    /// ([`crate::schedules::start`]).
    pub schedules: crate::schedules::ScheduleSettings,
}

impl Default for SweeperSettings {
    fn default() -> Self {
        SweeperSettings {
            interval: Duration::from_secs(30),
            republish_after: Duration::from_secs(120),
            drainer: DrainerSettings::default(),
            release_interval: crate::after::DEFAULT_RELEASE_INTERVAL,
            schedules: crate::schedules::ScheduleSettings::default(),
        }
    }
}

/// Starts the sweeper, the drainer of completion events owed, the
/// release loop of waiting tasks and the schedule loop on `tracker`; they
/// stop with `shutdown`.
pub fn start(
    store: DynStore,
    submitter: Submitter,
    settings: SweeperSettings,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    submitter.drain_completions(settings.drainer.clone(), tracker, shutdown.clone());
    crate::after::start(
        store.clone(),
        submitter.clone(),
        settings.release_interval,
        tracker,
        shutdown.clone(),
    );
    crate::schedules::start(
        store.clone(),
        submitter.clone(),
        settings.schedules.clone(),
        tracker,
        shutdown.clone(),
    );
    let sweeping = Arc::new(Mutex::new(HashSet::new()));
    let spawner = tracker.clone();
    tracker.spawn(async move {
        let mut unplanned = Unplanned::default();
        while crate::sleep_unless_cancelled(settings.interval, &shutdown).await {
            sweep(&store, &submitter, &settings, &sweeping, &spawner).await;
            unplanned
                .republish(&store, &submitter, settings.republish_after)
                .await;
            end_overdue(&store, &submitter, settings.interval).await;
        }
    });
}

/// Ends tasks whose deadline passed while some items never ran (no worker
/// took their shards): workers fail late items themselves, so this only
/// catches tasks nobody is working on.
async fn end_overdue(store: &DynStore, submitter: &Submitter, grace: Duration) {
    let now = submitter.clock().now_millis();
    // A reducing task's deadline covers its reduce too.
    for status in [
        TaskStatus::Submitted,
        TaskStatus::InProgress,
        TaskStatus::Reducing,
    ] {
        let Ok(tasks) = store.list_tasks(Some(status), SWEEP_LIMIT).await else {
            return;
        };
        for task in tasks {
            let Some(deadline) = task.deadline_at() else {
                continue;
            };
            if now < deadline.saturating_add(grace.as_millis() as u64) {
                continue;
            }
            let reason = if status == TaskStatus::Reducing {
                format!(
                    "the deadline of {} s passed before the reduce ended",
                    task.deadline_secs.unwrap_or(0)
                )
            } else {
                format!(
                    "the deadline of {} s passed before every item ran ({} of {} ended)",
                    task.deadline_secs.unwrap_or(0),
                    task.items_done(),
                    task.items_total
                )
            };
            match store
                .transition(&task.id, TaskStatus::Failed, Some(&reason))
                .await
            {
                Ok(ended) => {
                    warn!(task = %task.id, "{reason}");
                    submitter.announce_end(&ended).await;
                }
                Err(e) => {
                    debug!(task = %task.id, error = %with_causes(&e), "could not end an overdue task")
                }
            }
        }
    }
}

/// Each further copy of a task that stays `SUBMITTED` waits twice as long
/// as the one before, up to this many times `republish_after`: a scheduler
/// that is merely behind (a slow broker, a rebalance) must not be buried
/// under copies of the tasks it has yet to reach, which would put it
/// further behind.
const REPUBLISH_BACKOFF_CAP: u32 = 8;

/// How long after the last copy of a task still `SUBMITTED` the next one
/// is due, when `copies` were published already: `after`, then twice that,
/// four times, up to [`REPUBLISH_BACKOFF_CAP`] times.
fn next_copy_after(after: Duration, copies: u32) -> Duration {
    let factor = 1u32
        .checked_shl(copies.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(REPUBLISH_BACKOFF_CAP);
    after.saturating_mul(factor)
}

/// What this sweeper published for each task still `SUBMITTED`: when, and
/// how many copies, so a task that stays unplanned gets its copies further
/// and further apart ([`next_copy_after`]), not one per sweep.
#[derive(Debug, Default)]
struct Unplanned {
    republished: HashMap<String, Copies>,
}

/// The copies of one task's message this sweeper published.
#[derive(Debug, Clone, Copy)]
struct Copies {
    /// When the last one went out (the submitter's clock, ms).
    last_at: u64,
    /// How many went out.
    count: u32,
}

impl Unplanned {
    /// Publishes the task message again for every task `SUBMITTED` longer
    /// than `after` since its creation, and long enough since this sweeper
    /// last did.
    async fn republish(&mut self, store: &DynStore, submitter: &Submitter, after: Duration) {
        let now = submitter.clock().now_millis();
        let cutoff = now.saturating_sub(after.as_millis() as u64);
        let tasks = match store
            .list_tasks(Some(TaskStatus::Submitted), SWEEP_LIMIT)
            .await
        {
            Ok(tasks) => tasks,
            Err(e) => {
                dts_metrics::metrics().store_error("list_tasks", true);
                warn!(error = %with_causes(&e), "cannot look for unplanned tasks");
                return;
            }
        };
        // Forget tasks that moved on (planned or ended).
        let listed: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        self.republished
            .retain(|id, _| listed.contains(id.as_str()));
        for task in tasks.iter().filter(|t| t.created_at < cutoff) {
            let copies = self.republished.get(&task.id).copied();
            if let Some(copies) = copies {
                let wait = next_copy_after(after, copies.count).as_millis() as u64;
                if now < copies.last_at.saturating_add(wait) {
                    continue;
                }
            }
            info!(task = %task.id, "republishing a task still unplanned");
            if !submitter.republish(&task.id).await {
                // The bus is down: the others wait for the next sweep
                // rather than each for the publish timeout.
                break;
            }
            let count = copies.map_or(1, |c| c.count.saturating_add(1));
            self.republished.insert(
                task.id.clone(),
                Copies {
                    last_at: now,
                    count,
                },
            );
        }
    }
}

async fn sweep(
    store: &DynStore,
    submitter: &Submitter,
    settings: &SweeperSettings,
    sweeping: &Arc<Mutex<HashSet<String>>>,
    tracker: &TaskTracker,
) {
    let cutoff = submitter
        .clock()
        .now_millis()
        .saturating_sub(settings.republish_after.as_millis() as u64);
    for status in [TaskStatus::Queued, TaskStatus::Retrying] {
        let tasks = match store.list_tasks(Some(status), SWEEP_LIMIT).await {
            Ok(tasks) => tasks,
            Err(e) => {
                dts_metrics::metrics().store_error("list_tasks", true);
                warn!(error = %with_causes(&e), "cannot look for stuck tasks");
                return;
            }
        };
        for task in tasks.into_iter().filter(|t| t.created_at < cutoff) {
            // One republishing loop per task in this process.
            if !sweeping
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(task.id.clone())
            {
                continue;
            }
            info!(task = %task.id, status = %task.status, "republishing a task whose publishing stopped");
            let (submitter, sweeping) = (submitter.clone(), sweeping.clone());
            tracker.spawn(async move {
                submitter.publish_with_retries(&task.id).await;
                sweeping
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&task.id);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_a_task_left_submitted_come_further_and_further_apart_up_to_eight_periods() {
        let after = Duration::from_secs(120);
        let waits: Vec<u64> = (1..=6)
            .map(|copies| next_copy_after(after, copies).as_secs())
            .collect();
        assert_eq!(waits, [120, 240, 480, 960, 960, 960]);
        assert_eq!(
            next_copy_after(after, u32::MAX),
            after * REPUBLISH_BACKOFF_CAP,
            "no overflow however many copies went out"
        );
    }
}
