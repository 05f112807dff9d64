//! The HTTP API: the v1 endpoints and the seed-compatible `/schedule/*`
//! endpoints, over one [`AppState`]; and the dashboard (`/`, `/ui/*`),
//! whose pages use the same API.
//!
//! Handlers are thin: they read and validate the request (with
//! [`dts_model::submit`]), call the store or the [`Submitter`], and shape the
//! answer with [`views`]. Errors become responses in one place
//! ([`error::ApiError`]). Any server can answer any request: the state is only
//! handles to the shared store and bus.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod body;
pub mod error;
mod logs;
pub mod metrics;
pub mod openapi;
pub mod overview;
mod schedules;
mod seed;
pub mod serve;
pub mod strict_json;
mod ui;
mod v1;
pub mod views;
pub mod waiting;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::routing::{get, post};
use dts_engine::live::DynLiveLogs;
use dts_engine::submit::Submitter;
use dts_model::SubmitLimits;
use dts_store::DynStore;
use error::ApiError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
pub use v1::{MIN_ID_PREFIX, NEXT_CURSOR};

pub use access::AccessLists;
pub use serve::ConnectionSettings;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    /// Where tasks and results are read.
    pub store: DynStore,
    /// Stores and publishes new tasks, and announces ends the API causes.
    pub submitter: Submitter,
    /// What a submission may hold.
    pub limits: SubmitLimits,
    /// The largest request body read, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// When set, every endpoint but `/healthz`, `/openapi.json` and
    /// `/schedule/ping` needs `Authorization: Bearer <token>` or the
    /// dashboard's login cookie, and the dashboard's pages need the login.
    pub auth_token: Option<Arc<str>>,
    /// TTL given to heartbeats recorded through `/schedule/node-beat`.
    pub heartbeat_ttl: Duration,
    /// Origins and hosts served besides the server's own ([`access`]).
    pub access: AccessLists,
    /// Timeouts and the cap on connections ([`mod@serve`]).
    pub connections: ConnectionSettings,
    /// Running items' output: the worker's own registry in embedded mode,
    /// Redis in distributed mode.
    pub live_logs: DynLiveLogs,
}

/// All routes, with the Host and Origin checks for a server bound to
/// `bound`, the body limit and the auth check.
pub fn router(state: AppState, bound: SocketAddr) -> Router {
    let policy = Arc::new(access::Policy::new(&state.access, bound));
    let protected = Router::new()
        .route("/v1/tasks", post(v1::submit).get(v1::list))
        .route("/v1/tasks/{id}", get(v1::get_task).delete(v1::delete))
        .route("/v1/tasks/{id}/results", get(v1::results))
        .route("/v1/tasks/{id}/cancel", post(v1::cancel))
        .route("/v1/tasks/{id}/retry", post(v1::retry))
        .route("/v1/tasks/{id}/events", get(v1::events))
        .route("/v1/tasks/{id}/activity", get(overview::activity))
        .route("/v1/tasks/{id}/log", get(logs::task_log))
        .route("/v1/tasks/{id}/items/{index}/log", get(logs::item_log))
        .route(
            "/v1/schedules",
            post(schedules::create).get(schedules::list),
        )
        .route(
            "/v1/schedules/{name}",
            get(schedules::get_one).delete(schedules::delete),
        )
        .route("/v1/schedules/{name}/pause", post(schedules::pause))
        .route("/v1/schedules/{name}/resume", post(schedules::resume))
        .route("/v1/workers", get(v1::workers))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/overview", get(overview::overview))
        .route("/schedule/create", post(seed::create))
        .route("/schedule/status", get(seed::status))
        .route(
            "/schedule/node-beat",
            post(seed::node_beat).get(seed::node_beat_by_get),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            access::require_token,
        ));
    let app = Router::new()
        .route("/healthz", get(v1::healthz))
        .route("/openapi.json", get(openapi::serve_document))
        .route("/schedule/ping", get(seed::ping))
        .merge(protected)
        .merge(ui::router(state.clone()))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            policy,
            access::check_host_and_origin,
        ));
    // Outermost, so refused requests (421, 403, 401) are counted too.
    metrics::layer(app).with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the
/// requests in flight (for up to [`serve::DRAIN_GRACE`]). Connections are
/// bounded by `state.connections`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let settings = state.connections;
    serve::run(listener, router(state, bound), settings, shutdown).await
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NoRoute(format!("{} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
