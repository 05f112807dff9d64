//! The HTTP API: the v1 endpoints and the seed-compatible `/schedule/*`
//! endpoints, over one [`AppState`].
//!
//! Handlers are thin: they read and validate the request (with
//! [`dts_model::submit`]), call the store or the [`Submitter`], and shape the
//! answer with [`views`]. Errors become responses in one place
//! ([`error::ApiError`]). Any server can answer any request: the state is only
//! handles to the shared store and bus.

pub mod body;
pub mod error;
mod seed;
pub mod strict_json;
mod v1;
pub mod views;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use dts_engine::submit::Submitter;
use dts_model::SubmitLimits;
use dts_store::DynStore;
use error::ApiError;
use std::sync::Arc;
use std::time::Duration;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub store: DynStore,
    pub submitter: Submitter,
    pub limits: SubmitLimits,
    pub max_body_bytes: usize,
    /// When set, every endpoint but `/healthz` and `/schedule/ping` needs
    /// `Authorization: Bearer <token>`.
    pub auth_token: Option<Arc<str>>,
    /// TTL given to heartbeats recorded through `/schedule/node-beat`.
    pub heartbeat_ttl: Duration,
}

/// All routes, with the body limit and the auth check.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/tasks", post(v1::submit).get(v1::list))
        .route("/v1/tasks/{id}", get(v1::get_task))
        .route("/v1/tasks/{id}/results", get(v1::results))
        .route("/v1/tasks/{id}/cancel", post(v1::cancel))
        .route("/v1/tasks/{id}/events", get(v1::events))
        .route("/v1/workers", get(v1::workers))
        .route("/schedule/create", post(seed::create))
        .route("/schedule/status", get(seed::status))
        .route("/schedule/node-beat", get(seed::node_beat))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(v1::healthz))
        .route("/schedule/ping", get(seed::ping))
        .merge(protected)
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = &state.auth_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// Compares without stopping at the first difference, so response time does
/// not reveal how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn no_route(request: Request) -> ApiError {
    ApiError::NoRoute(format!("{} {}", request.method(), request.uri().path()))
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison_needs_every_byte() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
