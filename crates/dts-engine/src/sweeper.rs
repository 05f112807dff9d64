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
//! creation gets its message again too, at most once per `republish_after`
//! from each sweeper: its plan may have been lost with a Redis failover
//! after the scheduler had acknowledged the message (replication is
//! asynchronous), or the message with a broker's storage. Under a backlog
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
}

impl Default for SweeperSettings {
    fn default() -> Self {
        SweeperSettings {
            interval: Duration::from_secs(30),
            republish_after: Duration::from_secs(120),
            drainer: DrainerSettings::default(),
        }
    }
}

/// Starts the sweeper, and the drainer of completion events owed, on
/// `tracker`; they stop with `shutdown`.
pub fn start(
    store: DynStore,
    submitter: Submitter,
    settings: SweeperSettings,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    submitter.drain_completions(settings.drainer.clone(), tracker, shutdown.clone());
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
    for status in [TaskStatus::Submitted, TaskStatus::InProgress] {
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
            let reason = format!(
                "the deadline of {} s passed before every item ran ({} of {} ended)",
                task.deadline_secs.unwrap_or(0),
                task.items_done(),
                task.items_total
            );
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

/// When this sweeper last republished each task still `SUBMITTED`, so a
/// task that stays unplanned gets one more message per `republish_after`,
/// not one per sweep.
#[derive(Debug, Default)]
struct Unplanned {
    republished_at: HashMap<String, u64>,
}

impl Unplanned {
    /// Publishes the task message again for every task `SUBMITTED` longer
    /// than `after` since its creation and since this sweeper last did.
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
        let mut still = HashMap::with_capacity(tasks.len());
        for task in tasks.iter().filter(|t| t.created_at < cutoff) {
            let recent = self.republished_at.get(&task.id).copied();
            if let Some(last) = recent.filter(|last| *last >= cutoff) {
                still.insert(task.id.clone(), last);
                continue;
            }
            info!(task = %task.id, "republishing a task still unplanned");
            if !submitter.republish(&task.id).await {
                // The bus is down: the others wait for the next sweep
                // rather than each for the publish timeout.
                break;
            }
            still.insert(task.id.clone(), now);
        }
        self.republished_at = still;
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
