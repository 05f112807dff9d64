//! `/v1/schedules`: create, list, read, delete, pause and resume schedules.
//! The engine's schedule loop fires them (`dts_engine::schedules`).

use crate::AppState;
use crate::body;
use crate::error::ApiError;
use crate::v1::{Params, query};
use crate::views::ErrorBody;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dts_model::schedule::{self, CatchUp, Overlap, RunOutcome, Schedule};
use dts_model::{TaskStatus, format_millis};
use serde::Serialize;
use utoipa::ToSchema;

/// Compare-and-set attempts of a pause or resume before it gives up (each
/// lost one means a firing was stored meanwhile).
const CHANGE_ATTEMPTS: usize = 20;

/// A schedule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// Its unique name.
    pub name: String,
    /// The cron expression (5 fields, or 6 with seconds first).
    pub cron: String,
    /// The IANA time zone it is read in.
    pub timezone: String,
    /// The task body each firing submits.
    #[schema(value_type = Object)]
    pub task: serde_json::Value,
    /// What a firing does while the previous task runs.
    pub overlap: Overlap,
    /// What happens to firings missed while no server ran.
    pub catch_up: CatchUp,
    /// Paused schedules do not fire.
    pub paused: bool,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it fires next (RFC 3339); absent while paused, or when the
    /// expression never matches again.
    pub next_firing: Option<String>,
    /// Tasks its firings created.
    pub fired: u64,
    /// Firings skipped because the previous task still ran.
    pub skipped_overlaps: u64,
    /// The latest handled firings, newest first.
    pub runs: Vec<RunView>,
}

/// One handled firing.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    /// The firing's time (RFC 3339).
    pub at: String,
    /// What became of it.
    pub outcome: RunOutcome,
    /// The task it created.
    pub task_id: Option<String>,
    /// That task's status now; absent when it is deleted or expired.
    pub task_status: Option<TaskStatus>,
    /// Why, for a firing that did not fire on time.
    pub note: Option<String>,
}

impl ScheduleView {
    async fn new(state: &AppState, schedule: Schedule) -> Result<ScheduleView, ApiError> {
        // Up to 20 status reads per schedule, and the dashboard reads every
        // schedule each second: asked at once, not one after another.
        let statuses = futures::future::try_join_all(schedule.runs.iter().map(|run| async {
            match &run.task_id {
                Some(id) => state.store.task_status(id).await,
                None => Ok(None),
            }
        }))
        .await?;
        let runs = schedule
            .runs
            .iter()
            .zip(statuses)
            .map(|(run, task_status)| RunView {
                at: format_millis(run.at),
                outcome: run.outcome,
                task_id: run.task_id.clone(),
                task_status,
                note: run.note.clone(),
            })
            .collect();
        let next_firing = if schedule.paused {
            None
        } else {
            schedule
                .cadence()
                .ok()
                .and_then(|cadence| cadence.next_after(schedule.handled_until))
                .map(format_millis)
        };
        Ok(ScheduleView {
            name: schedule.name,
            cron: schedule.cron,
            timezone: schedule.timezone,
            task: schedule.task,
            overlap: schedule.overlap,
            catch_up: schedule.catch_up,
            paused: schedule.paused,
            created_at: format_millis(schedule.created_at),
            next_firing,
            fired: schedule.fired,
            skipped_overlaps: schedule.skipped_overlaps,
            runs,
        })
    }
}

/// What `POST /v1/schedules` takes. Validated by hand like a task body;
/// this type only describes it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct ScheduleRequest {
    /// A unique name: 1 to 100 letters, digits, `.`, `_` or `-`.
    name: String,
    /// A cron expression: 5 fields (minute hour day month weekday), or 6
    /// with seconds first.
    cron: String,
    /// The IANA time zone the expression is read in (default UTC).
    timezone: Option<String>,
    /// The task body each firing submits, as `POST /v1/tasks` takes it
    /// (without `after`).
    task: crate::openapi::SubmitRequest,
    /// While the previous task runs: `skip` (default), `allow` or
    /// `cancel-previous`.
    overlap: Option<Overlap>,
    /// Firings missed while no server ran: `none` (default) drops them,
    /// `last` runs the latest once.
    catch_up: Option<CatchUp>,
}

/// `POST /v1/schedules`: validate and store a schedule; 201 with it.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    operation_id = "create_schedule",
    tag = "schedules",
    request_body(content = ScheduleRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored; it fires from now on.", body = ScheduleView,
         headers(("Location" = String, description = "The schedule's URL."))),
        (status = 400, description = "A field is missing or wrong; `field` names it (`task.<field>` inside the task body).", body = ErrorBody),
        (status = 409, description = "A schedule with this name exists.", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.max-body-bytes`.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let json = body::json_only("POST /v1/schedules", &headers, body, state.max_body_bytes)?;
    let now = state.submitter.clock().now_millis();
    let schedule = schedule::from_json(&json, &state.limits, now)?;
    state.store.insert_schedule(&schedule).await?;
    tracing::info!(schedule = %schedule.name, cron = %schedule.cron, timezone = %schedule.timezone, "schedule created");
    let location = format!("/v1/schedules/{}", schedule.name);
    let view = ScheduleView::new(&state, schedule).await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

/// `GET /v1/schedules`: every schedule, by name.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    operation_id = "list_schedules",
    tag = "schedules",
    responses(
        (status = 200, description = "Every schedule, by name.", body = Vec<ScheduleView>),
        (status = 400, description = "A bad query parameter.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<ScheduleView>>, ApiError> {
    query(params, &[])?;
    let mut views = Vec::new();
    for schedule in state.store.schedules().await? {
        views.push(ScheduleView::new(&state, schedule).await?);
    }
    Ok(Json(views))
}

/// `GET /v1/schedules/{name}`: one schedule with its last runs.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    operation_id = "get_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses(
        (status = 200, description = "The schedule.", body = ScheduleView),
        (status = 404, description = "No schedule has this name.", body = ErrorBody),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<ScheduleView>, ApiError> {
    query(params, &[])?;
    let schedule = load(&state, &name).await?;
    Ok(Json(ScheduleView::new(&state, schedule).await?))
}

/// `DELETE /v1/schedules/{name}`: deletes the schedule; the tasks it
/// created stay. 200 with the schedule as it was.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    operation_id = "delete_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses(
        (status = 200, description = "The deleted schedule, as it was.", body = ScheduleView),
        (status = 404, description = "No schedule has this name.", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<ScheduleView>, ApiError> {
    query(params, &[])?;
    let schedule = load(&state, &name).await?;
    if !state.store.delete_schedule(&name).await? {
        return Err(ApiError::NoSchedule(name));
    }
    tracing::info!(schedule = %name, "schedule deleted");
    Ok(Json(ScheduleView::new(&state, schedule).await?))
}

/// `POST /v1/schedules/{name}/pause`: it stops firing until resumed.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    operation_id = "pause_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses(
        (status = 200, description = "The schedule, paused (pausing a paused one changes nothing).", body = ScheduleView),
        (status = 404, description = "No schedule has this name.", body = ErrorBody),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<ScheduleView>, ApiError> {
    query(params, &[])?;
    let schedule = change(&state, &name, |schedule, _| schedule.paused = true).await?;
    tracing::info!(schedule = %name, "schedule paused");
    Ok(Json(ScheduleView::new(&state, schedule).await?))
}

/// `POST /v1/schedules/{name}/resume`: it fires again from now on; the
/// firings that came due while it was paused do not run.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    operation_id = "resume_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name.")),
    responses(
        (status = 200, description = "The schedule, firing again (resuming a running one changes nothing).", body = ScheduleView),
        (status = 404, description = "No schedule has this name.", body = ErrorBody),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
    params: Params,
) -> Result<Json<ScheduleView>, ApiError> {
    query(params, &[])?;
    let schedule = change(&state, &name, |schedule, now| {
        if schedule.paused {
            schedule.paused = false;
            // Firings while paused were not wanted; fire from now on.
            schedule.handled_until = schedule.handled_until.max(now);
        }
    })
    .await?;
    tracing::info!(schedule = %name, "schedule resumed");
    Ok(Json(ScheduleView::new(&state, schedule).await?))
}

/// The schedule named `name`, or 404.
async fn load(state: &AppState, name: &str) -> Result<Schedule, ApiError> {
    if !schedule::is_valid_name(name) {
        return Err(ApiError::NoSchedule(name.to_string()));
    }
    state
        .store
        .schedule(name)
        .await?
        .ok_or_else(|| ApiError::NoSchedule(name.to_string()))
}

/// Applies `edit` to the stored schedule with the store's compare-and-set,
/// reading it again when a firing was stored meanwhile.
async fn change(
    state: &AppState,
    name: &str,
    edit: impl Fn(&mut Schedule, u64),
) -> Result<Schedule, ApiError> {
    for _ in 0..CHANGE_ATTEMPTS {
        let mut schedule = load(state, name).await?;
        edit(&mut schedule, state.submitter.clock().now_millis());
        if state.store.update_schedule(&schedule).await? {
            schedule.version += 1;
            return Ok(schedule);
        }
    }
    Err(ApiError::Unavailable(format!(
        "schedule {name} changed {CHANGE_ATTEMPTS} times while this request tried to change it; try again"
    )))
}
