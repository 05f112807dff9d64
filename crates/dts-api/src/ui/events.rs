//! `GET /ui/events?page=overview|tasks|schedules|workers[&status=][&name=]`:
//! the live feed of the overview, tasks, schedules and workers pages. About
//! once a second it reads what the page shows and sends it when it changed:
//! `event: overview` (`GET /v1/overview`'s body), `event: tasks` (the first
//! page of the list, filtered as the page is), `event: schedules` (`GET
//! /v1/schedules`'s body), `event: workers` (the live workers). Each is a
//! summary or a page, never a task's items, so a feed costs the same for a
//! task of a million items.

use crate::AppState;
use crate::error::ApiError;
use crate::v1::{list_views, query};
use crate::views::WorkerView;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use dts_model::TaskStatus;
use futures::Stream;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

/// How often the feed reads the store.
const TICK: Duration = Duration::from_secs(1);
/// Tasks the tasks page shows live; older ones it pages through the API.
const TASKS_SHOWN: usize = 50;
/// Tasks the overview lists.
const OVERVIEW_TASKS: usize = 10;

/// What one page needs.
#[derive(Clone)]
struct Feed {
    overview: bool,
    tasks: Option<usize>,
    schedules: bool,
    workers: bool,
    status: Option<TaskStatus>,
    name: Option<String>,
}

pub(crate) async fn stream(
    State(state): State<AppState>,
    params: crate::v1::Params,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let params = query(params, &["page", "status", "name"])?;
    let (status, name) = crate::v1::list_filters(&params)?;
    let feed = match params.get("page").map(|s| s.as_str()) {
        Some("overview") => Feed {
            overview: true,
            tasks: Some(OVERVIEW_TASKS),
            schedules: false,
            workers: false,
            status: None,
            name: None,
        },
        Some("tasks") => Feed {
            overview: false,
            tasks: Some(TASKS_SHOWN),
            schedules: false,
            workers: false,
            status,
            name,
        },
        Some("schedules") => Feed {
            overview: false,
            tasks: None,
            schedules: true,
            workers: false,
            status: None,
            name: None,
        },
        Some("workers") => Feed {
            overview: false,
            tasks: None,
            schedules: false,
            workers: true,
            status: None,
            name: None,
        },
        other => {
            return Err(ApiError::invalid(
                "page",
                format!("page must be overview, tasks, schedules or workers, not {other:?}"),
            ));
        }
    };
    let sent: Vec<(&'static str, String)> = Vec::new();
    let stream = futures::stream::unfold(
        (state, feed, sent, true),
        |(state, feed, mut sent, first)| async move {
            if !first {
                tokio::time::sleep(TICK).await;
            }
            let mut events = Vec::new();
            for (name, data) in snapshot(&state, &feed).await {
                let last = sent.iter_mut().find(|(sent_name, _)| *sent_name == name);
                match last {
                    Some((_, last)) if *last == data => continue,
                    Some((_, last)) => *last = data.clone(),
                    None => sent.push((name, data.clone())),
                }
                events.push(Ok(Event::default().event(name).data(data)));
            }
            Some((futures::stream::iter(events), (state, feed, sent, false)))
        },
    );
    use futures::StreamExt;
    Ok(Sse::new(stream.flatten()).keep_alive(KeepAlive::default()))
}

/// The events of one tick, as JSON; a part the store cannot give now is
/// left out (the page keeps what it showed) rather than ending the feed.
async fn snapshot(state: &AppState, feed: &Feed) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if feed.overview {
        match crate::overview::overview_view(state).await {
            Ok(view) => out.push(("overview", serde_json::to_string(&view))),
            Err(error) => {
                tracing::warn!(error = %error, "dashboard feed: cannot read the overview")
            }
        }
    }
    if let Some(limit) = feed.tasks {
        match list_views(state, feed.status, feed.name.as_deref(), None, limit, false).await {
            Ok((views, _)) => out.push(("tasks", serde_json::to_string(&views))),
            Err(error) => tracing::warn!(error = %error, "dashboard feed: cannot list tasks"),
        }
    }
    if feed.schedules {
        // The API's own list, so the page shows what `GET /v1/schedules` does.
        let every = Ok(Query(HashMap::new()));
        match crate::schedules::list(State(state.clone()), every).await {
            Ok(Json(views)) => out.push(("schedules", serde_json::to_string(&views))),
            Err(error) => tracing::warn!(error = %error, "dashboard feed: cannot list schedules"),
        }
    }
    if feed.workers {
        match state.store.live_workers().await {
            Ok(workers) => {
                let views: Vec<WorkerView> = workers.into_iter().map(WorkerView::from).collect();
                out.push(("workers", serde_json::to_string(&views)));
            }
            Err(error) => tracing::warn!(error = %error, "dashboard feed: cannot list workers"),
        }
    }
    out.into_iter()
        .filter_map(|(name, json)| json.ok().map(|json| (name, json)))
        .collect()
}
