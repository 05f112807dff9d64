//! Schedules: every node with an API fires the due firings of every
//! schedule, each firing exactly once however many nodes look.
//!
//! A pass reads each schedule and asks the model which firing is due
//! ([`Schedule::due`]). It decides that firing (fire, or skip it for
//! `overlap`, or drop it as missed) and stores the decision with the
//! store's compare-and-set ([`dts_store::Store::update_schedule`]): of
//! several nodes deciding the same firing, one write wins and the others
//! read the schedule again and see it handled. Only the winner acts.
//!
//! A fired run is stored with `stored: false` before its task exists. The
//! winner then submits the task, whose id is derived from the schedule and
//! the firing ([`dts_model::schedule::firing_task_id`]), and marks the run
//! stored. A node that dies in between leaves the run unstored; the next
//! pass of any node submits it again, and the id makes a second copy
//! impossible (the store refuses a taken id). So no firing is lost and
//! none runs twice.
//!
//! Firings more than the grace late count as missed (every node was down)
//! and follow `catchUp`.

use crate::submit::Submitter;
use crate::{EngineError, with_causes};
use dts_model::schedule::{CatchUp, Due, Overlap, Run, RunOutcome, Schedule};
use dts_model::{SubmitLimits, TaskStatus, format_millis};
use dts_store::{DynStore, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// How often and with which limits the schedule loop fires.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// How often the loop looks (a quarter of a second by default, so an
    /// every-second schedule fires on time).
    pub interval: Duration,
    /// How late a firing may be handled and still count as on time; later
    /// ones were missed while no node ran and follow `catchUp`.
    pub missed_after: Duration,
    /// What each firing's task may hold: the server's limits of the day.
    pub limits: SubmitLimits,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            interval: Duration::from_millis(250),
            missed_after: Duration::from_secs(60),
            limits: SubmitLimits::default(),
        }
    }
}

/// Firings one schedule handles per pass at most, so a schedule far behind
/// cannot hold up the others (the next pass goes on).
const FIRINGS_PER_PASS: usize = 20;

/// Starts the schedule loop on `tracker`; it stops with `shutdown`.
pub fn start(
    store: DynStore,
    submitter: Submitter,
    settings: ScheduleSettings,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        while crate::sleep_unless_cancelled(settings.interval, &shutdown).await {
            fire_due(&store, &submitter, &settings).await;
        }
    });
}

/// One pass over every schedule. A store that cannot be read ends the pass
/// (the next one tries again); one schedule's failure does not stop the
/// others.
pub async fn fire_due(store: &DynStore, submitter: &Submitter, settings: &ScheduleSettings) {
    let schedules = match store.schedules().await {
        Ok(schedules) => schedules,
        Err(e) => {
            dts_metrics::metrics().store_error("schedules", false);
            debug!(error = %with_causes(&e), "cannot list schedules; trying again later");
            return;
        }
    };
    for schedule in schedules {
        let name = schedule.name.clone();
        if let Err(e) = advance(store, submitter, settings, schedule).await {
            debug!(schedule = %name, error = %with_causes(&e), "cannot fire a schedule yet; trying again later");
        }
    }
}

/// Handles `schedule`'s due firings, one decision at a time.
async fn advance(
    store: &DynStore,
    submitter: &Submitter,
    settings: &ScheduleSettings,
    mut schedule: Schedule,
) -> Result<(), EngineError> {
    let cadence = match schedule.cadence() {
        Ok(cadence) => cadence,
        Err(e) => {
            warn!(schedule = %schedule.name, error = %e, "stored schedule does not parse; it cannot fire");
            return Ok(());
        }
    };
    for _ in 0..FIRINGS_PER_PASS {
        if let Some(run) = schedule.unstored_run().cloned() {
            match store_run(store, submitter, settings, &schedule, &run).await? {
                Some(updated) => schedule = updated,
                None => return Ok(()),
            }
            continue;
        }
        if schedule.paused {
            return Ok(());
        }
        let now = submitter.clock().now_millis();
        let grace = u64::try_from(settings.missed_after.as_millis()).unwrap_or(u64::MAX);
        let run = match schedule.due(&cadence, now, grace) {
            Due::Nothing { .. } => return Ok(()),
            Due::OnTime { at } => decide(store, &schedule, at, None).await?,
            Due::Missed { first, at } => {
                let note = missed_note(first, at);
                match schedule.catch_up {
                    CatchUp::Last => {
                        let note = format!("caught up (catchUp: last): {note}");
                        decide(store, &schedule, at, Some(note)).await?
                    }
                    CatchUp::None => Run {
                        at,
                        outcome: RunOutcome::Missed,
                        task_id: None,
                        stored: false,
                        note: Some(note),
                    },
                }
            }
        };
        let previous = schedule.previous_task().map(str::to_string);
        let mut decided = schedule.clone();
        decided.record(run.clone());
        if !store.update_schedule(&decided).await? {
            // Another node decided this firing, or the schedule changed or
            // was deleted: start again from what is stored.
            match store.schedule(&schedule.name).await? {
                Some(stored) => schedule = stored,
                None => return Ok(()),
            }
            continue;
        }
        decided.version += 1;
        dts_metrics::metrics().schedule_firing(run.outcome.as_str());
        info!(schedule = %decided.name, firing = %format_millis(run.at), outcome = run.outcome.as_str(), "schedule fired");
        if run.outcome == RunOutcome::Fired && decided.overlap == Overlap::CancelPrevious {
            if let Some(previous) = previous {
                cancel_previous(store, submitter, &decided.name, &previous).await;
            }
        }
        schedule = decided;
    }
    Ok(())
}

/// The run of a firing at `at` that is not missed (or is caught up, with
/// `note`): fired, unless the previous task still runs and `overlap` is
/// `skip`.
async fn decide(
    store: &DynStore,
    schedule: &Schedule,
    at: u64,
    note: Option<String>,
) -> Result<Run, EngineError> {
    if schedule.overlap == Overlap::Skip {
        if let Some(previous) = schedule.previous_task() {
            let running = store
                .task_status(previous)
                .await?
                .is_some_and(|status| !status.is_terminal());
            if running {
                return Ok(Run {
                    at,
                    outcome: RunOutcome::SkippedOverlap,
                    task_id: None,
                    stored: false,
                    note: Some(format!("task {previous} had not ended")),
                });
            }
        }
    }
    Ok(Run {
        at,
        outcome: RunOutcome::Fired,
        task_id: Some(dts_model::schedule::firing_task_id(&schedule.name, at)),
        stored: false,
        note,
    })
}

/// Submits the task of fired `run` (a taken id means a node did already)
/// and marks the run stored; a body the server's limits now refuse marks
/// it failed. The schedule as stored after, or `None` if it is gone.
async fn store_run(
    store: &DynStore,
    submitter: &Submitter,
    settings: &ScheduleSettings,
    schedule: &Schedule,
    run: &Run,
) -> Result<Option<Schedule>, EngineError> {
    let mut failure = None;
    match schedule.firing_task(run.at, &settings.limits) {
        Err(e) => failure = Some(format!("the task body is refused: {e}")),
        Ok(new) => match submitter.submit(new).await {
            Ok(task) => {
                info!(schedule = %schedule.name, task = %task.id, firing = %format_millis(run.at), "scheduled task submitted")
            }
            Err(EngineError::Store(StoreError::TaskExists { .. })) => {}
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                failure = Some(format!(
                    "the task could not be submitted: {}",
                    with_causes(&e)
                ))
            }
        },
    }
    let mut updated = schedule.clone();
    if let Some(first) = updated.runs.first_mut() {
        first.stored = true;
        if let Some(failure) = failure {
            warn!(schedule = %schedule.name, firing = %format_millis(run.at), failure, "scheduled task not created");
            dts_metrics::metrics().schedule_firing(RunOutcome::Failed.as_str());
            first.outcome = RunOutcome::Failed;
            first.task_id = None;
            first.note = Some(failure);
            updated.fired = updated.fired.saturating_sub(1);
        }
    }
    if store.update_schedule(&updated).await? {
        updated.version += 1;
        return Ok(Some(updated));
    }
    Ok(store.schedule(&schedule.name).await?)
}

/// Cancels the schedule's previous task for `cancel-previous`, if it still
/// runs.
async fn cancel_previous(store: &DynStore, submitter: &Submitter, schedule: &str, id: &str) {
    match store.transition(id, TaskStatus::Cancelled, None).await {
        Ok(task) => {
            info!(schedule, task = %id, "previous scheduled task cancelled");
            submitter.announce_end(&task).await;
        }
        Err(StoreError::IllegalTransition { .. } | StoreError::NoSuchTask { .. }) => {}
        Err(e) => {
            warn!(schedule, task = %id, error = %with_causes(&e), "cannot cancel the previous scheduled task")
        }
    }
}

/// What a missed run's note says: which firings were missed.
fn missed_note(first: u64, at: u64) -> String {
    if first == at {
        format!("missed at {} while no server ran", format_millis(at))
    } else {
        format!(
            "missed from {} to {} while no server ran",
            format_millis(first),
            format_millis(at)
        )
    }
}
