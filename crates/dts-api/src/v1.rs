//! `/v1/*` handlers and `/healthz`.

use crate::AppState;
use crate::body;
use crate::error::ApiError;
use crate::openapi::SubmitRequest;
use crate::views::{
    ErrorBody, HealthView, ResultItemView, ResultView, ResultsPage, RetryView, TaskView, WorkerView,
};
use crate::waiting;
use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dts_model::{Task, TaskStatus, is_valid_task_id, submit};
use dts_store::{ResultFilter, StoreError, TaskCursor};
use futures::Stream;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

pub(crate) type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

const DEFAULT_LIST_LIMIT: u64 = 50;
const MAX_LIST_LIMIT: u64 = 1000;
const DEFAULT_RESULTS_LIMIT: u64 = 100;
const MAX_RESULTS_LIMIT: u64 = 10_000;
/// The shortest id prefix resolved: shorter ones would match many tasks
/// and make every lookup read a long run of the id index.
pub const MIN_ID_PREFIX: usize = 4;
/// Candidates an ambiguous prefix's error lists, at most.
const MAX_CANDIDATES: usize = 10;
/// The header that carries the next page's cursor of `GET /v1/tasks`.
pub const NEXT_CURSOR: &str = "x-next-cursor";
/// How often the event stream looks at the task.
const EVENTS_POLL: Duration = Duration::from_millis(250);

/// `POST /v1/tasks`: validate, store, publish; 202 with the task.
#[utoipa::path(
    post,
    path = "/v1/tasks",
    tag = "v1",
    request_body(content = SubmitRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored and published; the task with its inputs.", body = TaskView,
         headers(("Location" = String, description = "The task's URL."))),
        (status = 400, description = "A field is missing or wrong; `field` names it.", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.max-body-bytes`.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let json = body::json_only("POST /v1/tasks", &headers, body, state.max_body_bytes)?;
    let new = submit::from_json(&json, &state.limits)?;
    let inputs = new.inputs.clone();
    let task = state.submitter.submit(new).await?;
    let location = format!("/v1/tasks/{}", task.id);
    let reason = waiting_reason(&state, &task).await;
    let view = TaskView::new(task, Some(inputs)).with_waiting_reason(reason);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(view),
    )
        .into_response())
}

/// `GET /v1/tasks/{id}`: the task with its inputs (`?summary=true` leaves them out).
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "v1",
    params(
        ("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters."),
        ("summary" = Option<bool>, Query, description = "Leave out `variableJson` and `inputList`."),
    ),
    responses(
        (status = 200, description = "The task.", body = TaskView),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
    )
)]
pub async fn get_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<TaskView>, ApiError> {
    let params = query(params, &["summary"])?;
    let summary = flag(&params, "summary")?;
    let task = find_task(&state, &id).await?;
    let inputs = if summary {
        None
    } else {
        Some(load_inputs(&state, &task.id).await?)
    };
    let reason = waiting_reason(&state, &task).await;
    Ok(Json(
        TaskView::new(task, inputs).with_waiting_reason(reason),
    ))
}

/// `GET /v1/tasks?status=&name=&limit=&full=&cursor=`: newest first,
/// without variables and inputs unless `full=true`; `name` keeps the tasks
/// whose name holds it (any case). The body stays a bare list, as it always
/// was; when more tasks follow, the `X-Next-Cursor` header holds the
/// `cursor` of the next page and `Link` its URL (`rel="next"`).
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "v1",
    params(
        ("status" = Option<TaskStatus>, Query, description = "Only tasks with this status."),
        ("name" = Option<String>, Query, description = "Only tasks whose name holds this text, in any case."),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Tasks per page (default 50)."),
        ("full" = Option<bool>, Query, description = "With `variableJson` and `inputList`."),
        ("cursor" = Option<String>, Query, description = "The `X-Next-Cursor` of the page before."),
    ),
    responses(
        (status = 200, description = "Tasks, newest first.", body = Vec<TaskView>,
         headers(
            ("X-Next-Cursor" = String, description = "The `cursor` of the next page, when there is one."),
            ("Link" = String, description = "The next page's URL, `rel=\"next\"`, when there is one."),
         )),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, params: Params) -> Result<Response, ApiError> {
    let params = query(params, &["status", "name", "limit", "full", "cursor"])?;
    let (status, name) = list_filters(&params)?;
    let name = name.as_deref();
    let limit = number(&params, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)?;
    let full = flag(&params, "full")?;
    let after = match params.get("cursor").map(|s| s.trim()) {
        None | Some("") => None,
        Some(text) => Some(TaskCursor::decode(text).map_err(|e| {
            ApiError::invalid(
                "cursor",
                format!("{e}: pass the X-Next-Cursor header of the page before, unchanged"),
            )
        })?),
    };
    let (views, next) = list_views(&state, status, name, after, limit as usize, full).await?;
    let mut response = Json(views).into_response();
    if let Some(next) = next {
        let cursor = next.encode();
        let mut link = format!("</v1/tasks?limit={limit}&cursor={cursor}");
        if let Some(status) = status {
            link.push_str(&format!("&status={status}"));
        }
        if let Some(name) = name {
            let encoded =
                percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
            link.push_str(&format!("&name={encoded}"));
        }
        if full {
            link.push_str("&full=true");
        }
        link.push_str(">; rel=\"next\"");
        // Both are digits, dashes and URL characters dts wrote itself.
        for (name, value) in [(NEXT_CURSOR, cursor), (header::LINK.as_str(), link)] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    Ok(response)
}

/// The `status` and `name` filters of a task listing (`GET /v1/tasks`, the
/// dashboard's feed); blank means none.
pub(crate) fn list_filters(
    params: &HashMap<String, String>,
) -> Result<(Option<TaskStatus>, Option<String>), ApiError> {
    let status = match params
        .get("status")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        Some(text) => Some(
            text.parse::<TaskStatus>()
                .map_err(|e| ApiError::invalid("status", e.to_string()))?,
        ),
        None => None,
    };
    let name = params
        .get("name")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    Ok((status, name))
}

/// Tasks a search by name reads from the store per request, at most: a
/// rare name in a long history must not make one request read all of it.
/// The page then holds fewer than `limit` matches, and its cursor goes on.
const MAX_NAME_SCAN: usize = 10_000;
/// Tasks read per store page while searching by name.
const NAME_SCAN_BATCH: usize = 200;

/// One page of `GET /v1/tasks` as views, with the cursor of the next. With
/// `name`, pages of the store are read until `limit` tasks match (or
/// [`MAX_NAME_SCAN`] were read), and the cursor points just past the last
/// match, so no match is skipped or repeated between pages.
pub(crate) async fn list_views(
    state: &AppState,
    status: Option<TaskStatus>,
    name: Option<&str>,
    after: Option<TaskCursor>,
    limit: usize,
    full: bool,
) -> Result<(Vec<TaskView>, Option<TaskCursor>), ApiError> {
    let (tasks, next) = match name {
        None => {
            let page = state.store.list_tasks_page(status, after, limit).await?;
            (page.tasks, page.next)
        }
        Some(name) => search_by_name(state, status, name, after, limit).await?,
    };
    let reasons = waiting_reasons(state, &tasks).await;
    let mut views = Vec::with_capacity(tasks.len());
    for (task, reason) in tasks.into_iter().zip(reasons) {
        let view = if full {
            // A task that expired since the listing lists without inputs.
            let inputs = state.store.inputs(&task.id).await?;
            TaskView::new(task, inputs)
        } else {
            TaskView::brief(task)
        };
        views.push(view.with_waiting_reason(reason));
    }
    Ok((views, next))
}

fn name_matches(task: &Task, lowered: &str) -> bool {
    task.name
        .as_deref()
        .is_some_and(|name| name.to_lowercase().contains(lowered))
}

async fn search_by_name(
    state: &AppState,
    status: Option<TaskStatus>,
    name: &str,
    mut after: Option<TaskCursor>,
    limit: usize,
) -> Result<(Vec<Task>, Option<TaskCursor>), ApiError> {
    let lowered = name.to_lowercase();
    let mut found = Vec::new();
    let mut scanned = 0;
    // ends: every turn reads at least one task further or stops; the scan
    // is capped at MAX_NAME_SCAN tasks.
    loop {
        let need = limit - found.len();
        let batch = need.max(NAME_SCAN_BATCH);
        let page = state.store.list_tasks_page(status, after, batch).await?;
        scanned += page.tasks.len();
        let matching: Vec<usize> = page
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, task)| name_matches(task, &lowered))
            .map(|(at, _)| at)
            .collect();
        if matching.len() >= need {
            // The page ends with the last match taken: read the store page
            // again up to it, for the cursor just past it (new tasks come
            // first in the listing, so what follows `after` is stable).
            let cut = matching[need - 1] + 1;
            let next = if cut == page.tasks.len() {
                page.next
            } else {
                state.store.list_tasks_page(status, after, cut).await?.next
            };
            let mut tasks = page.tasks;
            tasks.truncate(cut);
            found.extend(tasks.into_iter().filter(|t| name_matches(t, &lowered)));
            return Ok((found, next));
        }
        found.extend(
            page.tasks
                .into_iter()
                .filter(|task| name_matches(task, &lowered)),
        );
        match page.next {
            Some(next) if scanned < MAX_NAME_SCAN => after = Some(next),
            next => return Ok((found, next)),
        }
    }
}

/// `GET /v1/tasks/{id}/results?status=failed|succeeded&offset=&limit=`.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/results",
    tag = "v1",
    params(
        ("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters."),
        ("status" = Option<String>, Query, description = "`failed`, `succeeded` or `all` (the default)."),
        ("offset" = Option<u64>, Query, description = "Results to skip, by index (default 0)."),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 10000, description = "Results per page (default 100)."),
    ),
    responses(
        (status = 200, description = "A page of the task's results, by index.", body = ResultsPage),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
    )
)]
pub async fn results(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<ResultsPage>, ApiError> {
    let params = query(params, &["status", "offset", "limit"])?;
    let id = find_task(&state, &id).await?.id;
    let filter = match params
        .get("status")
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("all") => ResultFilter::All,
        Some("failed") => ResultFilter::Failed,
        Some("succeeded") => ResultFilter::Succeeded,
        Some(other) => {
            return Err(ApiError::invalid(
                "status",
                format!("status must be failed, succeeded or all, not {other:?}"),
            ));
        }
    };
    let offset = number(&params, "offset", 0, 0, u64::MAX)?;
    let limit = number(
        &params,
        "limit",
        DEFAULT_RESULTS_LIMIT,
        1,
        MAX_RESULTS_LIMIT,
    )?;
    let (total, items) = state
        .store
        .results_with_history(&id, filter, offset, limit)
        .await?;
    let items = items
        .into_iter()
        .map(|(result, previous_attempts)| ResultItemView {
            view: ResultView {
                succeeded: result.succeeded(),
                result,
            },
            previous_attempts,
        })
        .collect();
    Ok(Json(ResultsPage { total, items }))
}

/// `POST /v1/tasks/{id}/retry`: runs an ended task's failed and never-run
/// items again, as the same task (its id, results and counts stay one);
/// 202 with the task and how many items run. 409 when it is still running,
/// when every item succeeded, when it was never planned or its deadline
/// passed; 404 if unknown.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/retry",
    tag = "v1",
    params(("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters.")),
    responses(
        (status = 202, description = "The task runs its failed and never-run items again.", body = RetryView),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
        (status = 409, description = "The task is still running, every item succeeded, it was never planned, or its deadline passed.", body = ErrorBody),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    query(params, &[])?;
    let id = resolve_id(&state, &id).await?;
    match state.submitter.retry(&id).await {
        Ok(outcome) => {
            let view = RetryView {
                queued: outcome.queued(),
                failed: outcome.failed,
                not_run: outcome.not_run,
                task: TaskView::brief(outcome.task),
            };
            Ok((StatusCode::ACCEPTED, Json(view)).into_response())
        }
        Err(dts_engine::EngineError::Store(StoreError::CannotRetry { refusal, .. })) => {
            Err(ApiError::Conflict(format!("task {id}: {refusal}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/tasks/{id}/cancel`: 200 with the cancelled task, 409 if it had
/// ended. The 200 comes once the workers holding the task's shards stopped
/// starting its items (or their leases lapsed): after it, none starts.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/cancel",
    tag = "v1",
    params(("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters.")),
    responses(
        (status = 200, description = "The cancelled task. Sent once every worker holding one of its shards stopped starting its items and killed the running ones, or its lease lapsed (at most the lease time): no item of the task starts after it.", body = TaskView),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
        (status = 409, description = "The task had ended already.", body = ErrorBody),
        (status = 503, description = "The store is unavailable; or, with Redis Sentinel, no replica confirmed the cancel within 10 s: the task is cancelled on the primary, but a failover could undo it, so read the task and cancel it again unless it is CANCELLED.", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<TaskView>, ApiError> {
    query(params, &[])?;
    let id = resolve_id(&state, &id).await?;
    match state
        .store
        .transition(&id, TaskStatus::Cancelled, None)
        .await
    {
        Ok(task) => {
            tracing::info!(task = %id, "task cancelled");
            // The answer promises that no item of the task starts any more.
            state.submitter.await_stopped(&id).await;
            // The cancel is recorded; its event must not hold up the answer
            // while the bus is slow or down (publishing may wait seconds).
            let submitter = state.submitter.clone();
            let ended = task.clone();
            tokio::spawn(async move { submitter.announce_end(&ended).await });
            Ok(Json(TaskView::new(task, None)))
        }
        Err(StoreError::IllegalTransition { from, .. }) => Err(ApiError::Conflict(format!(
            "task {id} has already ended ({from}) and cannot be cancelled"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /v1/tasks/{id}`: deletes an ended task with its inputs and
/// results; 200 with the task as it was, 409 if it has not ended (cancel it
/// first), 404 if unknown.
#[utoipa::path(
    delete,
    path = "/v1/tasks/{id}",
    tag = "v1",
    params(("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters.")),
    responses(
        (status = 200, description = "The deleted task, as it was.", body = TaskView),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
        (status = 409, description = "The task has not ended: cancel it first.", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<TaskView>, ApiError> {
    query(params, &[])?;
    let id = resolve_id(&state, &id).await?;
    match state.store.delete_task(&id).await {
        Ok(task) => {
            tracing::info!(task = %id, "task deleted");
            Ok(Json(TaskView::brief(task)))
        }
        Err(StoreError::TaskNotEnded { status, .. }) => Err(ApiError::Conflict(format!(
            "task {id} is {status}, not ended: cancel it first (POST /v1/tasks/{id}/cancel), then delete it"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/tasks/{id}/events?full=`: server-sent events, one `task` event
/// whenever the task changes, ending when the task ends. Events show the
/// task without variables and inputs unless `full=true`. A change is seen
/// by reading the task's version alone; the whole task is read only when
/// it moved. An event's `waitingReason` is as of that event: a worker that
/// comes or goes changes no version, so it shows with the task's next change.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/events",
    tag = "v1",
    params(
        ("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters."),
        ("full" = Option<bool>, Query, description = "Events with `variableJson` and `inputList`."),
    ),
    responses(
        (status = 200, description = "Server-sent events: `event: task` with a `TaskView` as its data, whenever the task changes; the stream ends when the task ends.",
         content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = query(params, &["full"])?;
    let full = flag(&params, "full")?;
    let first = find_task(&state, &id).await?;
    // Inputs never change: read once, for every event.
    let inputs = if full {
        Some(load_inputs(&state, &first.id).await?)
    } else {
        None
    };
    // Each event is sent as soon as it is built; the wait for the task's
    // next change starts only when the stream is asked for the event after
    // it (waiting first would hold every event back until the next change).
    let stream = futures::stream::unfold(
        (state, Some(EventStep::Send(Box::new(first))), inputs),
        move |(state, step, inputs)| async move {
            let task = match step? {
                EventStep::Send(task) => *task,
                EventStep::After { id, version } => next_version(&state, &id, version).await?,
            };
            let ended = task.status.is_terminal();
            let reason = waiting_reason(&state, &task).await;
            let view = if full {
                TaskView::new(task.clone(), inputs.clone())
            } else {
                TaskView::brief(task.clone())
            }
            .with_waiting_reason(reason);
            let data = serde_json::to_string(&view).unwrap_or_default();
            let event = Event::default().event("task").data(data);
            let next = (!ended).then_some(EventStep::After {
                version: task.version,
                id: task.id,
            });
            Some((Ok(event), (state, next, inputs)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// What the event stream of `GET /v1/tasks/{id}/events` does next.
enum EventStep {
    /// Send this version of the task.
    Send(Box<Task>),
    /// Wait until the task's version differs from `version`, then send it.
    After { id: String, version: u64 },
}

/// The `waitingReason` of each of `tasks`, in order. A hint: when the store
/// cannot say, the views go without it rather than the request failing (a
/// submission, above all, must not look failed once stored).
async fn waiting_reasons(state: &AppState, tasks: &[Task]) -> Vec<Option<String>> {
    match waiting::reasons(&*state.store, tasks).await {
        Ok(reasons) => reasons,
        Err(error) => {
            tracing::warn!(error = %error, "cannot tell why tasks wait");
            vec![None; tasks.len()]
        }
    }
}

async fn waiting_reason(state: &AppState, task: &Task) -> Option<String> {
    waiting_reasons(state, std::slice::from_ref(task))
        .await
        .pop()
        .flatten()
}

/// Waits until the task's version differs from `seen` and returns the task
/// then; `None` once it is gone or unreadable (the stream ends).
async fn next_version(state: &AppState, id: &str, seen: u64) -> Option<Task> {
    loop {
        tokio::time::sleep(EVENTS_POLL).await;
        let version = state.store.task_version(id).await.ok()??;
        if version != seen {
            return state.store.task(id).await.ok().flatten();
        }
    }
}

/// `GET /v1/workers`: live workers.
#[utoipa::path(
    get,
    path = "/v1/workers",
    tag = "v1",
    responses(
        (status = 200, description = "The live workers.", body = Vec<WorkerView>),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
    )
)]
pub async fn workers(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<WorkerView>>, ApiError> {
    query(params, &[])?;
    let workers = state.store.live_workers().await?;
    Ok(Json(workers.into_iter().map(WorkerView::from).collect()))
}

/// `GET /healthz`: 200 when the store answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses(
        (status = 200, description = "The store answers.", body = HealthView),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<HealthView>, ApiError> {
    state.store.live_workers().await?;
    Ok(Json(HealthView {
        status: "ok".into(),
    }))
}

/// The full id of the task `id` names: `id` itself when it is a whole
/// UUID, else the one task whose id starts with it (at least
/// [`MIN_ID_PREFIX`] characters). 404 when none does; 400 `ambiguous_id`
/// listing the candidates when several do.
pub(crate) async fn resolve_id(state: &AppState, id: &str) -> Result<String, ApiError> {
    if is_valid_task_id(id) {
        return Ok(id.to_string());
    }
    let prefix = id.to_ascii_lowercase();
    let shape_ok = (MIN_ID_PREFIX..36).contains(&prefix.len())
        && prefix.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !shape_ok {
        return Err(ApiError::invalid(
            "id",
            format!(
                "a task id is a UUID such as 0b7e0a3c-4f55-4c43-9a55-3e8e1f0f9a11, or a unique \
                 prefix of one of at least {MIN_ID_PREFIX} characters; {id:?} is neither"
            ),
        ));
    }
    let mut found = state
        .store
        .task_ids_with_prefix(&prefix, MAX_CANDIDATES + 1)
        .await?;
    match found.len() {
        0 => Err(ApiError::NotFound {
            what: "task",
            id: id.to_string(),
            field: "id",
        }),
        1 => Ok(found.remove(0)),
        _ => {
            let more = found.len() > MAX_CANDIDATES;
            found.truncate(MAX_CANDIDATES);
            Err(ApiError::AmbiguousId {
                prefix: id.to_string(),
                candidates: found,
                more,
            })
        }
    }
}

/// The task `id` names, a whole id or a unique prefix ([`resolve_id`]).
pub(crate) async fn find_task(state: &AppState, id: &str) -> Result<Task, ApiError> {
    let id = resolve_id(state, id).await?;
    load_task(state, &id).await
}

pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    if is_valid_task_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "id",
            "a task id is a UUID such as 0b7e0a3c-4f55-4c43-9a55-3e8e1f0f9a11",
        ))
    }
}

pub(crate) async fn load_task(state: &AppState, id: &str) -> Result<Task, ApiError> {
    check_id(id)?;
    state
        .store
        .task(id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "task",
            id: id.to_string(),
            field: "id",
        })
}

pub(crate) async fn load_inputs(
    state: &AppState,
    id: &str,
) -> Result<Vec<dts_model::Bytes>, ApiError> {
    state
        .store
        .inputs(id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: "task",
            id: id.to_string(),
            field: "id",
        })
}

/// The query parameters, whatever their names (the seed's endpoints).
pub(crate) fn query_any(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params.map(|Query(map)| map).map_err(|e| {
        ApiError::Invalid(dts_model::ValidationError::general(
            "invalid_query",
            e.body_text(),
        ))
    })
}

/// The query parameters, refusing any not in `allowed` with a 400 naming
/// it: a misspelt `staus=FAILED` must not quietly list every task.
pub(crate) fn query(params: Params, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let params = query_any(params)?;
    let mut unknown: Vec<&String> = params
        .keys()
        .filter(|name| !allowed.contains(&name.as_str()))
        .collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        let known = if allowed.is_empty() {
            "this endpoint takes no query parameters".to_string()
        } else {
            format!("it takes {}", allowed.join(", "))
        };
        return Err(ApiError::Invalid(dts_model::ValidationError::field(
            "unknown_parameter",
            name.as_str(),
            format!("unknown query parameter {name:?}: {known}"),
        )));
    }
    Ok(params)
}

fn number(
    params: &HashMap<String, String>,
    field: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match params
        .get(field)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(
                field,
                format!("{field} must be a whole number from {min} to {max}"),
            )),
        },
    }
}

pub(crate) fn flag(params: &HashMap<String, String>, field: &str) -> Result<bool, ApiError> {
    match params
        .get(field)
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("") | Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(_) => Err(ApiError::invalid(
            field,
            format!("{field} must be true or false"),
        )),
    }
}
