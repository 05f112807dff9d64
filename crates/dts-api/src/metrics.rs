//! `GET /metrics` (the process's [`dts_metrics`] in the Prometheus text
//! format) and the layer that counts every HTTP request by its route
//! template. A distributed `dts worker` serves the same endpoint alone on
//! `worker.metrics-port` ([`serve_alone`]).

use crate::AppState;
use crate::access::{self, AccessLists, Policy};
use crate::error::ApiError;
use crate::serve::{self, ConnectionSettings};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dts_metrics::{CONTENT_TYPE, UNMATCHED_ROUTE};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// `GET /metrics`: first `dts_tasks{status}` and `dts_shards_waiting` from
/// the store's summary (O(statuses), never O(tasks)), then everything. A
/// store that cannot answer leaves them as the last scrape set them and is
/// counted; the rest of the metrics still matter most then.
pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    let metrics = dts_metrics::metrics();
    match state.store.stats().await {
        Ok(stats) => metrics.set_store_stats(
            stats
                .tasks_by_status
                .iter()
                .map(|(status, n)| (status.as_str(), *n)),
            stats.shards_waiting,
        ),
        Err(e) => {
            metrics.store_error("stats", false);
            tracing::warn!(error = %dts_engine::with_causes(&e), "cannot read the store's stats for /metrics");
        }
    }
    render().await
}

async fn render() -> Response {
    match dts_metrics::metrics().render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => ApiError::Internal(dts_engine::with_causes(&e)).into_response(),
    }
}

/// Counts the request in `dts_http_requests_total` and times it in
/// `dts_http_request_duration_seconds`, under its route template.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = route_label(request.extensions().get::<MatchedPath>());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    dts_metrics::metrics().http_request(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The route template (`/v1/tasks/{id}`), never the raw path: a series per
/// task id, or per path a scanner tries, would grow without bound.
fn route_label(matched: Option<&MatchedPath>) -> String {
    matched.map_or_else(|| UNMATCHED_ROUTE.to_owned(), |m| m.as_str().to_owned())
}

/// The method, or `other` for one outside the standard set: like raw
/// paths, made-up methods must not each get a series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The layer [`track`] as the router adds it.
pub(crate) fn layer<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(middleware::from_fn(track))
}

/// What the worker's metrics listener checks: the token, when one is set,
/// and the same Host and Origin rules as the API.
#[derive(Clone)]
struct Alone {
    token: Option<Arc<str>>,
}

async fn require_token_alone(
    State(alone): State<Alone>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = &alone.token {
        if !access::bearer_matches(request.headers(), expected) {
            return Err(ApiError::Unauthorized);
        }
    }
    Ok(next.run(request).await)
}

/// `/metrics` alone, for a `dts worker` (which has no API): token-protected
/// like the API when `token` is set.
fn alone_router(token: Option<Arc<str>>, lists: &AccessLists, bound: SocketAddr) -> Router {
    let policy = Arc::new(Policy::new(lists, bound));
    let router = Router::new()
        .route("/metrics", get(render))
        .route_layer(middleware::from_fn_with_state(
            Alone { token },
            require_token_alone,
        ))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(middleware::from_fn_with_state(
            policy,
            access::check_host_and_origin,
        ));
    layer(router)
}

/// Serves `/metrics` alone on `listener` until `shutdown` resolves: a
/// distributed worker's `worker.metrics-port`.
pub async fn serve_alone(
    listener: tokio::net::TcpListener,
    token: Option<Arc<str>>,
    lists: &AccessLists,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let bound = listener.local_addr()?;
    let app = alone_router(token, lists, bound);
    serve::run(listener, app, ConnectionSettings::default(), shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_no_route_matched_is_labelled_unmatched_not_by_its_path() {
        assert_eq!(route_label(None), "unmatched");
    }

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        let made_up = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&made_up), "other");
    }

    async fn get(app: &Router, path: &str, token: Option<&str>) -> StatusCode {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get(path).header(header::HOST, "127.0.0.1:9");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(axum::body::Body::empty()).unwrap();
        app.clone().oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_workers_metrics_need_the_token_and_count_requests_by_route_template() {
        let bound: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let app = alone_router(
            Some(Arc::from("0123456789abcdef")),
            &AccessLists::default(),
            bound,
        );
        assert_eq!(get(&app, "/metrics", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get(&app, "/metrics", Some("wrong")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&app, "/metrics", Some("0123456789abcdef")).await,
            StatusCode::OK
        );
        assert_eq!(
            get(&app, "/no/such/4711", None).await,
            StatusCode::NOT_FOUND
        );
        let text = dts_metrics::metrics().render().unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("dts_http_requests_total{"))
            .collect();
        assert_eq!(
            lines,
            [
                r#"dts_http_requests_total{method="GET",route="/metrics",status="200"} 1"#,
                r#"dts_http_requests_total{method="GET",route="/metrics",status="401"} 2"#,
                r#"dts_http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
            ]
        );
    }
}
