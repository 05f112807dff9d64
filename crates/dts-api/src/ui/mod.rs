//! The dashboard: `/` (overview), `/ui/tasks`, `/ui/tasks/{id}`,
//! `/ui/schedules`, `/ui/workers`, `/ui/login`, `/ui/logout`, the live
//! feed `/ui/events` and the assets under `/ui/assets/`.
//!
//! Pages are HTML skeletons rendered here; one script (`assets/app.js`)
//! fills them from the JSON API and keeps them live over SSE. Everything is
//! compiled into the binary: nothing is fetched from elsewhere. The script
//! builds the DOM with `textContent` only, so what tasks and schedules
//! hold (names, inputs, output, notes) is never parsed as HTML; the pages
//! forbid inline script and framing ([`security_headers`]).

mod auth;
mod events;
mod pages;

use crate::AppState;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

pub(crate) use auth::token_cookie;

/// What every dashboard response forbids: scripts, styles and connections
/// other than the server's own, inline script, and being framed (no
/// clickjacking of the Cancel button).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes; pages and the feed need the login when a token
/// is configured, the login form and the assets do not.
pub(crate) fn router(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/", get(pages::overview))
        .route("/ui/tasks", get(pages::tasks))
        .route("/ui/tasks/{id}", get(pages::task))
        .route("/ui/schedules", get(pages::schedules))
        .route("/ui/workers", get(pages::workers))
        .route("/ui/events", get(events::stream))
        .route_layer(middleware::from_fn_with_state(state, auth::require_login));
    Router::new()
        .merge(guarded)
        .route("/ui", get(|| async { Redirect::to("/") }))
        .route("/ui/login", get(auth::form).post(auth::login))
        .route("/ui/logout", get(auth::logout).post(auth::logout))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(style))
        .layer(middleware::from_fn(security_headers))
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
        .into_response()
}

/// Adds the headers every dashboard response carries.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Not `no-referrer`: with it a browser sends `Origin: null` on the
        // pages' form posts (login, logout), which the origin check refuses.
        (header::REFERRER_POLICY, "same-origin"),
        // Pages show live state, and the login page a token field.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
