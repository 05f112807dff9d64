//! The seed's endpoints, so a client written for the original keeps working:
//! `/schedule/ping`, `/schedule/create`, `/schedule/status`,
//! `/schedule/node-beat` (a POST now: no GET changes state). Tasks come back
//! in the seed's `MasterTask` shape.

use crate::AppState;
use crate::body::{self, BodyKind};
use crate::error::ApiError;
use crate::openapi::SubmitRequest;
use crate::v1::{Params, load_inputs, load_task, query_any};
use crate::views::{ErrorBody, NodeBeatView, SeedTaskView};
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dts_model::{WorkerInfo, WorkerKind, now_millis, submit};
use dts_store::HeartbeatOutcome;
use std::collections::HashMap;

/// `GET /schedule/ping`, word for word as the seed answered.
#[utoipa::path(
    get,
    path = "/schedule/ping",
    tag = "seed",
    responses(
        (status = 200, description = "`Scheduler Service Status :  [Running]`, as the seed answered.",
         content_type = "text/plain", body = String),
    )
)]
pub async fn ping() -> &'static str {
    "Scheduler Service Status :  [Running]"
}

/// `POST /schedule/create`: JSON or the seed's form; 202 with the task.
#[utoipa::path(
    post,
    path = "/schedule/create",
    tag = "seed",
    request_body(
        description = "A submission as JSON, or as the seed's form: the same field names, `inputList` repeated or comma-separated, `variableJson` a JSON string.",
        content(
            (SubmitRequest = "application/json"),
            (Object = "application/x-www-form-urlencoded"),
        )
    ),
    responses(
        (status = 202, description = "Stored and published; the task in the seed's shape.", body = SeedTaskView),
        (status = 400, description = "A field is missing or wrong; `field` names it.", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.max-body-bytes`.", body = ErrorBody),
        (status = 415, description = "The body is neither JSON nor a form.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = body::body_kind(&headers).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "POST /schedule/create takes application/json or application/x-www-form-urlencoded"
                .into(),
        )
    })?;
    let bytes = body::bytes(body, state.max_body_bytes)?;
    let new = match kind {
        BodyKind::Json => submit::from_json(&body::json(&bytes)?, &state.limits)?,
        BodyKind::Form => submit::from_form(&body::form_pairs(&bytes)?, &state.limits)?,
    };
    let inputs = new.inputs.clone();
    let task = state.submitter.submit(new).await?;
    Ok((StatusCode::ACCEPTED, Json(SeedTaskView::new(task, inputs))).into_response())
}

/// `GET /schedule/status?taskId=`: the task in the seed's shape.
#[utoipa::path(
    get,
    path = "/schedule/status",
    tag = "seed",
    params(
        ("taskId" = String, Query, description = "The task's whole id."),
    ),
    responses(
        (status = 200, description = "The task in the seed's shape.", body = SeedTaskView),
        (status = 400, description = "`taskId` is missing or not a task id.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<SeedTaskView>, ApiError> {
    // The seed's clients may add parameters of their own: accepted, as the seed did.
    let params = query_any(params)?;
    let id = required(&params, "taskId")?;
    let task = load_task(&state, id)
        .await
        .map_err(|e| rename_id_field(e, "taskId"))?;
    let inputs = load_inputs(&state, id)
        .await
        .map_err(|e| rename_id_field(e, "taskId"))?;
    Ok(Json(SeedTaskView::new(task, inputs)))
}

/// `POST /schedule/node-beat` with `nodeId` and `cores` (default 1) in the
/// query or a form body: records a heartbeat for a node, as the seed's
/// workers sent them. The node is listed among the workers as a
/// `node-beat` one: it runs nothing, so it never counts in planning, and it
/// never replaces a live dts worker (409 naming `nodeId`).
#[utoipa::path(
    post,
    path = "/schedule/node-beat",
    tag = "seed",
    params(
        ("nodeId" = String, Query, description = "The node; also accepted in a form body."),
        ("cores" = Option<u32>, Query, minimum = 1, maximum = 4096, description = "Its cores (default 1); also accepted in a form body."),
    ),
    request_body(
        description = "Optional: `nodeId` and `cores` as a form.",
        content((Object = "application/x-www-form-urlencoded")),
    ),
    responses(
        (status = 200, description = "The heartbeat is recorded.", body = NodeBeatView),
        (status = 400, description = "`nodeId` or `cores` is missing, repeated or wrong; `field` names it.", body = ErrorBody),
        (status = 409, description = "`nodeId` is a live dts worker.", body = ErrorBody),
        (status = 413, description = "The body is larger than `server.max-body-bytes`.", body = ErrorBody),
        (status = 415, description = "A body that is not a form.", body = ErrorBody),
    )
)]
pub async fn node_beat(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<NodeBeatView>, ApiError> {
    let bytes = body::bytes(body, state.max_body_bytes)?;
    let mut pairs = body::form_pairs(query.unwrap_or_default().as_bytes())?;
    if !bytes.is_empty() {
        if body::body_kind(&headers) != Some(BodyKind::Form) {
            return Err(ApiError::UnsupportedMediaType(
                "POST /schedule/node-beat takes its fields in the query or as application/x-www-form-urlencoded".into(),
            ));
        }
        pairs.extend(body::form_pairs(&bytes)?);
    }
    let mut params = HashMap::new();
    for (key, value) in pairs {
        if params.contains_key(&key) {
            return Err(ApiError::Invalid(dts_model::ValidationError::field(
                "repeated_field",
                key.clone(),
                format!("`{key}` is given more than once"),
            )));
        }
        params.insert(key, value);
    }
    let node = required(&params, "nodeId")?;
    if node.len() > 200 || node.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "nodeId",
            "nodeId must be at most 200 printable characters",
        ));
    }
    let cores = match params.get("cores") {
        None => 1,
        Some(text) => text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|c| (1..=4096).contains(c))
            .ok_or_else(|| {
                ApiError::invalid("cores", "cores must be a whole number from 1 to 4096")
            })?,
    };
    let info = WorkerInfo {
        id: node.to_string(),
        hostname: node.to_string(),
        cores,
        running_items: 0,
        last_heartbeat: now_millis(),
        kind: WorkerKind::NodeBeat,
        isolation: None,
        labels: Default::default(),
        shards_held: 0,
        running_by_task: Default::default(),
    };
    match state.store.heartbeat(&info, state.heartbeat_ttl).await? {
        HeartbeatOutcome::Recorded => Ok(Json(NodeBeatView {
            node_id: node.to_string(),
            cores,
            recorded: true,
        })),
        HeartbeatOutcome::Refused => Err(ApiError::FieldConflict {
            field: "nodeId",
            message: format!("nodeId {node:?} is a live dts worker; a node-beat cannot replace it"),
        }),
    }
}

/// `GET /schedule/node-beat`: refused, since a GET must change nothing (an
/// `<img>` tag on any page could send it).
#[utoipa::path(
    get,
    path = "/schedule/node-beat",
    tag = "seed",
    responses(
        (status = 405, description = "Always: use POST. `Allow: POST`.", body = ErrorBody,
         headers(("Allow" = String, description = "`POST`."))),
    )
)]
pub async fn node_beat_by_get() -> ApiError {
    ApiError::UseMethod {
        allow: "POST",
        message: "node-beat records a heartbeat, so it takes POST (nodeId and cores in the query or a form body), not GET",
    }
}

fn required<'a>(params: &'a HashMap<String, String>, field: &str) -> Result<&'a str, ApiError> {
    params
        .get(field)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::Invalid(dts_model::ValidationError::field(
                "missing_field",
                field,
                format!("the query parameter {field} is required"),
            ))
        })
}

/// The seed calls the id `taskId`; errors should say so.
fn rename_id_field(error: ApiError, field: &'static str) -> ApiError {
    match error {
        ApiError::Invalid(mut e) if e.field.as_deref() == Some("id") => {
            e.field = Some(field.to_string());
            ApiError::Invalid(e)
        }
        ApiError::NotFound { what, id, .. } => ApiError::NotFound { what, id, field },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bug found by the hostile-input table: `/schedule/status?taskId=<unknown>`
    /// answered 404 blaming `id`, a parameter the seed's API does not have.
    #[test]
    fn status_of_an_unknown_task_blames_task_id_not_id() {
        let not_found = ApiError::NotFound {
            what: "task",
            id: "x".into(),
            field: "id",
        };
        match rename_id_field(not_found, "taskId") {
            ApiError::NotFound { field, .. } => assert_eq!(field, "taskId"),
            other => panic!("unexpected {other:?}"),
        }
        let invalid = ApiError::invalid("id", "bad");
        match rename_id_field(invalid, "taskId") {
            ApiError::Invalid(e) => assert_eq!(e.field.as_deref(), Some("taskId")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
