//! Live logs of running items: `GET /v1/tasks/{id}/items/{index}/log` and
//! `GET /v1/tasks/{id}/log`, read through [`AppState::live_logs`]
//! (`dts_engine::live`).
//!
//! With `?follow=true` both answer Server-Sent Events: `event: log` with
//! `{"index": n, "stream": "stdout"|"stderr", "text": "..."}` (lossy
//! UTF-8) for the buffered tail and then every chunk, and `event: end` with
//! `{"index": n}` when an item ends. An item's stream ends after its end; a
//! task's when the task ends. Without `follow`, an item's log is its tail
//! (or, once it ended, its recorded stdout then stderr) as text, and a
//! task's log is the tails of its running items, each line prefixed with
//! the item's index and a TAB.

use crate::AppState;
use crate::error::ApiError;
use crate::v1::{Params, find_task, flag, query};
use crate::views::ErrorBody;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use dts_engine::live::{LogEvent, TailChunk};
use dts_engine::with_causes;
use dts_executor::OutputStream;
use dts_model::{ItemResult, Task};
use dts_store::ResultFilter;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How often a follow looks at the task (ended?) and the item (recorded?).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// After the task ended, how long a task follow still passes on the last
/// chunks (a distributed worker's last ones come a read later).
const LAST_CHUNKS: Duration = Duration::from_millis(600);

type Events = mpsc::Sender<Result<Event, Infallible>>;

/// `GET /v1/tasks/{id}/items/{index}/log[?follow=true]`.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/items/{index}/log",
    tag = "v1",
    params(
        ("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters."),
        ("index" = u64, Path, description = "The item's index, from 0."),
        ("follow" = Option<bool>, Query, description = "Stream the output as it is written, until the item ends."),
    ),
    responses(
        (status = 200, description = "Without `follow`: the item's output so far as text (the live tail, \
            bounded by `executor.live-log-bytes`, while it runs; its recorded stdout and stderr once it \
            ended). With `follow=true`: server-sent events, `event: log` with data \
            `{\"index\", \"stream\": \"stdout\"|\"stderr\", \"text\"}` for the tail and each new chunk, \
            then `event: end` with data `{\"index\"}` when the item ends.",
         content((String = "text/plain"), (String = "text/event-stream"))),
        (status = 400, description = "A bad query parameter, task id or index; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id, or the task has no item at this index.", body = ErrorBody),
        (status = 409, description = "Without `follow`: the item has not started, or just ended and its result is on the way.", body = ErrorBody),
    )
)]
pub async fn item_log(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, String)>,
    params: Params,
) -> Result<Response, ApiError> {
    let params = query(params, &["follow"])?;
    let follow = flag(&params, "follow")?;
    let index: u64 = index.trim().parse().map_err(|_| {
        ApiError::invalid(
            "index",
            format!("the item index must be a whole number from 0; {index:?} is not"),
        )
    })?;
    let task = find_task(&state, &id).await?;
    if index >= task.items_total {
        return Err(ApiError::NoItem {
            id: task.id,
            index,
            items: task.items_total,
        });
    }
    if follow {
        // Following first, then looking for a result: an item that ends in
        // between is either recorded or its end is on the way.
        let live = state.live_logs.follow(&task.id).await.map_err(live_error)?;
        let (events, receiver) = mpsc::channel(64);
        tokio::spawn(follow_item(state, task, index, live, events));
        return Ok(sse(receiver));
    }
    if let Some(result) = recorded(&state, &task.id, index).await? {
        let mut text = result.stdout.as_bytes().to_vec();
        text.extend_from_slice(result.stderr.as_bytes());
        return Ok(plain(String::from_utf8_lossy(&text).into_owned()));
    }
    match state
        .live_logs
        .tail(&task.id, index)
        .await
        .map_err(live_error)?
    {
        Some(tail) => Ok(plain(String::from_utf8_lossy(&joined(&tail)).into_owned())),
        None => Err(ApiError::Conflict(format!(
            "item {index} of task {} is not running and has no result yet: it has not \
             started (or it just ended and its result is on the way); follow it with \
             ?follow=true to wait for its output",
            task.id
        ))),
    }
}

/// `GET /v1/tasks/{id}/log[?follow=true]`.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/log",
    tag = "v1",
    params(
        ("id" = String, Path, description = "The task's id, or a unique prefix of it of at least 4 characters."),
        ("follow" = Option<bool>, Query, description = "Stream every running item's output, until the task ends."),
    ),
    responses(
        (status = 200, description = "Without `follow`: the live tails of the running items as text, each \
            line as `INDEX<TAB>line`. With `follow=true`: server-sent events as for one item's log, for \
            every item running or starting later, until the task ends.",
         content((String = "text/plain"), (String = "text/event-stream"))),
        (status = 400, description = "A bad query parameter or task id; `field` names it.", body = ErrorBody),
        (status = 404, description = "No task has this id.", body = ErrorBody),
    )
)]
pub async fn task_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> Result<Response, ApiError> {
    let params = query(params, &["follow"])?;
    let follow = flag(&params, "follow")?;
    let task = find_task(&state, &id).await?;
    if follow {
        let live = state.live_logs.follow(&task.id).await.map_err(live_error)?;
        let (events, receiver) = mpsc::channel(64);
        tokio::spawn(follow_task(state, task, live, events));
        return Ok(sse(receiver));
    }
    let mut text = String::new();
    for (index, tail) in state.live_logs.tails(&task.id).await.map_err(live_error)? {
        let output = String::from_utf8_lossy(&joined(&tail)).into_owned();
        for line in output.lines() {
            text.push_str(&format!("{index}\t{line}\n"));
        }
    }
    Ok(plain(text))
}

/// Passes on item `index`'s events until it ends (or, when no end came,
/// its result is recorded or the task ended without running it).
async fn follow_item(
    state: AppState,
    task: Task,
    index: u64,
    mut live: mpsc::Receiver<LogEvent>,
    events: Events,
) {
    let mut sent = false;
    let mut check = tokio::time::interval(CHECK_EVERY);
    // ends: at the item's end, the task's, or when the client goes.
    loop {
        tokio::select! {
            _ = events.closed() => return,
            event = live.recv(), if !live.is_closed() => match event {
                Some(LogEvent::End { index: at }) if at == index => {
                    let _ = events.send(Ok(end_event(index))).await;
                    return;
                }
                Some(event @ LogEvent::Log { index: at, .. }) if at == index => {
                    sent = true;
                    if events.send(Ok(log_event(&event))).await.is_err() {
                        return;
                    }
                }
                _ => {}
            },
            _ = check.tick() => {
                match ended(&state, &task.id, index).await {
                    Ok(None) => {}
                    Ok(Some(result)) => {
                        if !sent {
                            for event in result_events(result.as_ref()) {
                                if events.send(Ok(event)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        let _ = events.send(Ok(end_event(index))).await;
                        return;
                    }
                    Err(e) => tracing::debug!(task = %task.id, index, error = %e, "a log follow could not check the item"),
                }
            }
        }
    }
}

/// Whether item `index` is over as the store sees it: `Some(Some(result))`
/// once recorded, `Some(None)` when the task ended without it.
async fn ended(
    state: &AppState,
    id: &str,
    index: u64,
) -> Result<Option<Option<ItemResult>>, ApiError> {
    if let Some(result) = recorded(state, id, index).await? {
        return Ok(Some(Some(result)));
    }
    let status = state.store.task_status(id).await?;
    // A result is recorded before its task ends: a task that ended
    // without one never ran the item.
    Ok(match status {
        Some(status) if !status.is_terminal() => None,
        _ => match recorded(state, id, index).await? {
            Some(result) => Some(Some(result)),
            None => Some(None),
        },
    })
}

/// Passes on every item's events until the task ends.
async fn follow_task(
    state: AppState,
    task: Task,
    mut live: mpsc::Receiver<LogEvent>,
    events: Events,
) {
    let mut check = tokio::time::interval(CHECK_EVERY);
    let mut over: Option<tokio::time::Instant> = None;
    // ends: once the task has ended (and its last chunks were passed on),
    // or when the client goes.
    loop {
        let last_call = async {
            match over {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = events.closed() => return,
            _ = last_call => return,
            event = live.recv(), if !live.is_closed() => {
                let event = match event {
                    Some(event @ LogEvent::Log { .. }) => log_event(&event),
                    Some(LogEvent::End { index }) => end_event(index),
                    None => continue,
                };
                if events.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            _ = check.tick(), if over.is_none() => {
                match state.store.task_status(&task.id).await {
                    Ok(Some(status)) if !status.is_terminal() => {}
                    Ok(_) => over = Some(tokio::time::Instant::now() + LAST_CHUNKS),
                    Err(e) => tracing::debug!(task = %task.id, error = %with_causes(&e), "a log follow could not check the task"),
                }
            }
        }
    }
}

/// The recorded result of item `index`, if there is one.
async fn recorded(state: &AppState, id: &str, index: u64) -> Result<Option<ItemResult>, ApiError> {
    let end = index.saturating_add(1);
    if state
        .store
        .recorded_indices(id, index, end)
        .await?
        .is_empty()
    {
        return Ok(None);
    }
    // Results are paged by rank among the recorded ones.
    let rank = state.store.recorded_indices(id, 0, index).await?.len() as u64;
    let (_, page) = state.store.results(id, ResultFilter::All, rank, 1).await?;
    Ok(page.into_iter().find(|result| result.index == index))
}

/// A recorded result's output as log events: stdout, then stderr.
fn result_events(result: Option<&ItemResult>) -> Vec<Event> {
    let Some(result) = result else {
        return Vec::new();
    };
    [
        (OutputStream::Stdout, result.stdout.as_bytes()),
        (OutputStream::Stderr, result.stderr.as_bytes()),
    ]
    .into_iter()
    .filter(|(_, bytes)| !bytes.is_empty())
    .map(|(stream, bytes)| {
        log_event(&LogEvent::Log {
            index: result.index,
            stream,
            bytes: bytes.to_vec(),
        })
    })
    .collect()
}

fn log_event(event: &LogEvent) -> Event {
    match event {
        LogEvent::Log {
            index,
            stream,
            bytes,
        } => Event::default().event("log").data(
            json!({
                "index": index,
                "stream": stream_name(*stream),
                "text": String::from_utf8_lossy(bytes),
            })
            .to_string(),
        ),
        LogEvent::End { index } => end_event(*index),
    }
}

fn end_event(index: u64) -> Event {
    Event::default()
        .event("end")
        .data(json!({ "index": index }).to_string())
}

fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

fn joined(tail: &[TailChunk]) -> Vec<u8> {
    tail.iter()
        .flat_map(|chunk| chunk.bytes.iter().copied())
        .collect()
}

fn sse(receiver: mpsc::Receiver<Result<Event, Infallible>>) -> Response {
    Sse::new(ReceiverStream::new(receiver))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn plain(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

fn live_error(e: dts_engine::live::LiveLogError) -> ApiError {
    match e {
        dts_engine::live::LiveLogError::Store(e) => e.into(),
    }
}
