//! `GET /v1/overview` and `GET /v1/tasks/{id}/activity`: the summaries the
//! dashboard shows, read from counts the store keeps as results are
//! recorded ([`dts_store::activity`]) and from the workers' heartbeats, so
//! neither walks a task's results however many it has.

use crate::AppState;
use crate::error::ApiError;
use crate::v1::{Params, find_task, query};
use crate::views::ErrorBody;
use axum::Json;
use axum::extract::{Path, State};
use dts_model::{WorkerKind, format_millis};
use dts_store::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The whole installation at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OverviewView {
    /// Tasks in each status, every status present (tasks past their
    /// retention are not counted).
    #[schema(schema_with = crate::openapi::tasks_by_status)]
    pub tasks: BTreeMap<String, u64>,
    /// Shards of running tasks waiting for a free slot: the queue depth.
    pub shards_waiting: u64,
    /// Item results recorded since the store was created.
    pub items_finished: u64,
    /// Item results recorded per second over the last minute.
    pub items_per_second: f64,
    /// Live dts workers.
    pub workers: u64,
    /// Their slots (cores), and how many run an item.
    pub slots: SlotsView,
}

/// Slots of the live workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlotsView {
    /// Items the live workers can run at once.
    pub total: u64,
    /// Items they were running at their last heartbeats.
    pub busy: u64,
}

/// What a task's page shows besides its counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityView {
    /// Items of the task running now, by the live workers' last heartbeats.
    pub running: u64,
    /// Results each worker recorded, by worker id.
    pub per_worker: Vec<WorkerActivityView>,
    /// Results recorded per 10-second bucket, oldest first, the last hour
    /// at most; buckets without results are left out.
    pub throughput: Vec<ThroughputView>,
}

/// Results one worker recorded for a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerActivityView {
    /// The worker's id.
    pub worker: String,
    /// Results with success.
    pub succeeded: u64,
    /// Results without.
    pub failed: u64,
}

/// Results recorded in one 10-second bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ThroughputView {
    /// The bucket's start (RFC 3339).
    pub at: String,
    /// Results recorded in it.
    pub items: u64,
}

/// `GET /v1/overview`.
#[utoipa::path(
    get,
    path = "/v1/overview",
    tag = "v1",
    responses(
        (status = 200, description = "Tasks by status, queue depth, items finished and per second, workers and slots.", body = OverviewView),
        (status = 400, description = "A query parameter: this endpoint takes none.", body = ErrorBody),
    )
)]
pub async fn overview(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<OverviewView>, ApiError> {
    query(params, &[])?;
    Ok(Json(overview_view(&state).await?))
}

/// The overview as `GET /v1/overview` and the dashboard's feed show it.
pub(crate) async fn overview_view(state: &AppState) -> Result<OverviewView, ApiError> {
    let stats = state.store.stats().await?;
    let workers = state.store.live_workers().await?;
    let dts_workers = workers.iter().filter(|w| w.kind == WorkerKind::Dts);
    let slots = dts_workers
        .clone()
        .fold(SlotsView { total: 0, busy: 0 }, |slots, w| SlotsView {
            total: slots.total + u64::from(w.cores),
            busy: slots.busy + u64::from(w.running_items),
        });
    Ok(OverviewView {
        tasks: stats
            .tasks_by_status
            .iter()
            .map(|(status, count)| (status.as_str().to_string(), *count))
            .collect(),
        shards_waiting: stats.shards_waiting,
        items_finished: stats.items_finished,
        items_per_second: stats.items_last_minute as f64 / 60.0,
        workers: dts_workers.count() as u64,
        slots,
    })
}

/// `GET /v1/tasks/{id}/activity`.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/activity",
    tag = "v1",
    params(
        ("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters."),
    ),
    responses(
        (status = 200, description = "Items running now, results per worker, and results per 10-second bucket.", body = ActivityView),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
    )
)]
pub async fn activity(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<ActivityView>, ApiError> {
    query(params, &[])?;
    let task = find_task(&state, &id).await?;
    // Deleted between the two reads: as unknown as it is now.
    let activity =
        state
            .store
            .task_activity(&task.id)
            .await?
            .ok_or_else(|| StoreError::NoSuchTask {
                id: task.id.clone(),
            })?;
    // Heartbeats are up to an interval old: an ended task's last items
    // may still be listed there, although the end stopped them.
    let running = if task.status.is_terminal() {
        0
    } else {
        state
            .store
            .live_workers()
            .await?
            .iter()
            .filter_map(|worker| worker.running_by_task.get(&task.id))
            .map(|running| u64::from(*running))
            .sum()
    };
    Ok(Json(ActivityView {
        running,
        per_worker: activity
            .per_worker
            .into_iter()
            .map(|(worker, counts)| WorkerActivityView {
                worker,
                succeeded: counts.succeeded,
                failed: counts.failed,
            })
            .collect(),
        throughput: activity
            .throughput
            .into_iter()
            .map(|(at, items)| ThroughputView {
                at: format_millis(at),
                items,
            })
            .collect(),
    }))
}
