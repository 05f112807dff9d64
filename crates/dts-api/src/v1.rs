//! `/v1/*` handlers and `/healthz`.

use crate::AppState;
use crate::body::{self, BodyKind};
use crate::error::ApiError;
use crate::views::{ResultView, ResultsPage, TaskView, WorkerView};
use crate::waiting;
use axum::Json;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dts_model::{Task, TaskStatus, is_valid_task_id, submit};
use dts_store::{ResultFilter, StoreError};
use futures::Stream;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

const DEFAULT_LIST_LIMIT: u64 = 50;
const MAX_LIST_LIMIT: u64 = 1000;
const DEFAULT_RESULTS_LIMIT: u64 = 100;
const MAX_RESULTS_LIMIT: u64 = 10_000;
/// How often the event stream looks at the task.
const EVENTS_POLL: Duration = Duration::from_millis(250);

/// `POST /v1/tasks`: validate, store, publish; 202 with the task.
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if body::body_kind(&headers) != Some(BodyKind::Json) {
        return Err(ApiError::UnsupportedMediaType(
            "POST /v1/tasks takes a JSON body (Content-Type: application/json)".into(),
        ));
    }
    let bytes = body::bytes(body, state.max_body_bytes)?;
    let new = submit::from_json(&body::json(&bytes)?, &state.limits)?;
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
pub async fn get_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<TaskView>, ApiError> {
    let params = query(params)?;
    let summary = flag(&params, "summary")?;
    let task = load_task(&state, &id).await?;
    let inputs = if summary {
        None
    } else {
        Some(load_inputs(&state, &id).await?)
    };
    let reason = waiting_reason(&state, &task).await;
    Ok(Json(
        TaskView::new(task, inputs).with_waiting_reason(reason),
    ))
}

/// `GET /v1/tasks?status=&limit=&full=`: newest first, without variables
/// and inputs unless `full=true`.
pub async fn list(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    let params = query(params)?;
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
    let limit = number(&params, "limit", DEFAULT_LIST_LIMIT, 1, MAX_LIST_LIMIT)?;
    let full = flag(&params, "full")?;
    let tasks = state.store.list_tasks(status, limit as usize).await?;
    let reasons = waiting_reasons(&state, &tasks).await;
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
    Ok(Json(views))
}

/// `GET /v1/tasks/{id}/results?status=failed|succeeded&offset=&limit=`.
pub async fn results(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Json<ResultsPage>, ApiError> {
    let params = query(params)?;
    load_task(&state, &id).await?;
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
    let (total, items) = state.store.results(&id, filter, offset, limit).await?;
    let items = items
        .into_iter()
        .map(|result| ResultView {
            succeeded: result.succeeded(),
            result,
        })
        .collect();
    Ok(Json(ResultsPage { total, items }))
}

/// `POST /v1/tasks/{id}/cancel`: 200 with the cancelled task, 409 if it had ended.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskView>, ApiError> {
    check_id(&id)?;
    match state
        .store
        .transition(&id, TaskStatus::Cancelled, None)
        .await
    {
        Ok(task) => {
            tracing::info!(task = %id, "task cancelled");
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

/// `GET /v1/tasks/{id}/events?full=`: server-sent events, one `task` event
/// whenever the task changes, ending when the task ends. Events show the
/// task without variables and inputs unless `full=true`. A change is seen
/// by reading the task's version alone; the whole task is read only when
/// it moved. An event's `waitingReason` is as of that event: a worker that
/// comes or goes changes no version, so it shows with the task's next change.
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = query(params)?;
    let full = flag(&params, "full")?;
    let first = load_task(&state, &id).await?;
    // Inputs never change: read once, for every event.
    let inputs = if full {
        Some(load_inputs(&state, &id).await?)
    } else {
        None
    };
    let stream = futures::stream::unfold(
        (state, Some(first), inputs),
        move |(state, next, inputs)| async move {
            let task = next?;
            let ended = task.status.is_terminal();
            let version = task.version;
            let reason = waiting_reason(&state, &task).await;
            let view = if full {
                TaskView::new(task.clone(), inputs.clone())
            } else {
                TaskView::brief(task.clone())
            }
            .with_waiting_reason(reason);
            let data = serde_json::to_string(&view).unwrap_or_default();
            let event = Event::default().event("task").data(data);
            let upcoming = if ended {
                None
            } else {
                next_version(&state, &task.id, version).await
            };
            Some((Ok(event), (state, upcoming, inputs)))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
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
pub async fn workers(State(state): State<AppState>) -> Result<Json<Vec<WorkerView>>, ApiError> {
    let workers = state.store.live_workers().await?;
    Ok(Json(workers.into_iter().map(WorkerView::from).collect()))
}

/// `GET /healthz`: 200 when the store answers.
pub async fn healthz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.live_workers().await?;
    Ok(Json(json!({ "status": "ok" })))
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

pub(crate) async fn load_inputs(state: &AppState, id: &str) -> Result<Vec<String>, ApiError> {
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

pub(crate) fn query(params: Params) -> Result<HashMap<String, String>, ApiError> {
    params.map(|Query(map)| map).map_err(|e| {
        ApiError::Invalid(dts_model::ValidationError::general(
            "invalid_query",
            e.body_text(),
        ))
    })
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

fn flag(params: &HashMap<String, String>, field: &str) -> Result<bool, ApiError> {
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
