//! API errors and the one place they become HTTP responses.
//!
//! Every error body is `{"error":{"code":"...","message":"...","field":"..."}}`
//! ([`ErrorBody`]; `field` only when one field is to blame). 5xx bodies say "internal error"
//! or "service unavailable"; the detail goes to the log.

use crate::views::{ErrorBody, ErrorDetail};
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dts_engine::{EngineError, with_causes};
use dts_model::ValidationError;
use dts_store::StoreError;
use tracing::error;

/// Everything a handler can answer instead of what was asked; each variant
/// has its HTTP status and a stable `code` in the JSON error body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong: 400 (or 413 for `too_large_body`).
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// `field` is the parameter that held the id (`id`, or the seed's `taskId`).
    #[error("no {what} with id {id:?}")]
    NotFound {
        /// What was looked for (`task`).
        what: &'static str,
        /// The id given.
        id: String,
        /// The request parameter that held it.
        field: &'static str,
    },
    /// An item index past the end of the task's input list: 404, naming
    /// `index`.
    #[error("task {id} has no item {index}: it has {items} item(s), indices 0 to {}", items.saturating_sub(1))]
    NoItem {
        /// The task's id.
        id: String,
        /// The index asked for.
        index: u64,
        /// How many items the task has.
        items: u64,
    },
    /// A task id prefix that several tasks' ids start with: 400
    /// `ambiguous_id`, listing them.
    #[error("{prefix:?} is the start of several task ids: {}{}; give more of the id", candidates.join(", "), if *more { ", ..." } else { "" })]
    AmbiguousId {
        /// The prefix given.
        prefix: String,
        /// Ids it starts, ascending, the first few.
        candidates: Vec<String>,
        /// Whether there are more than `candidates`.
        more: bool,
    },
    /// No schedule has this name: 404, naming `name`.
    #[error("no schedule named {0:?}")]
    NoSchedule(String),
    /// The request is valid but the resource's state refuses it: 409.
    #[error("{0}")]
    Conflict(String),
    /// A conflict one request field is to blame for.
    #[error("{message}")]
    FieldConflict {
        /// The request field to blame.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A request from a page of another site: 403.
    #[error(
        "requests from pages of origin {0:?} are not accepted; add the origin to server.allowed-origins to allow it"
    )]
    ForbiddenOrigin(String),
    /// A Host that is not this server's (DNS rebinding, a wrong proxy): 421.
    #[error(
        "the Host {0:?} is not an address of this server; add it to server.allowed-hosts to serve it"
    )]
    ForbiddenHost(String),
    /// No token, or the wrong one: 401.
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// A body whose `Content-Type` this endpoint does not take: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No endpoint at this path: 404.
    #[error("no route for {0}")]
    NoRoute(String),
    /// An endpoint that does not answer this method: 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A method this route refuses, with what to use instead.
    #[error("{message}")]
    UseMethod {
        /// The `Allow` header's value.
        allow: &'static str,
        /// What to do instead.
        message: &'static str,
    },
    /// The store has no room for the write (a full disk, Redis out of
    /// memory): 507. Nothing was changed.
    #[error(
        "the store is full (no space left on its disk, or Redis out of memory): nothing was changed; free space and try again"
    )]
    StorageFull(String),
    /// The store or bus is unreachable for now: 503.
    #[error("service unavailable")]
    Unavailable(String),
    /// A fault of dts itself: 500. The detail is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 `invalid_field` naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid(ValidationError::field("invalid_field", field, message))
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(e) if e.code == "too_large_body" => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid(_) | ApiError::AmbiguousId { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. }
            | ApiError::NoItem { .. }
            | ApiError::NoSchedule(_)
            | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) | ApiError::FieldConflict { .. } => StatusCode::CONFLICT,
            ApiError::ForbiddenOrigin(_) => StatusCode::FORBIDDEN,
            ApiError::ForbiddenHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed | ApiError::UseMethod { .. } => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ApiError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(e) => e.code,
            ApiError::NotFound { .. } | ApiError::NoItem { .. } | ApiError::NoSchedule(_) => {
                "not_found"
            }
            ApiError::AmbiguousId { .. } => "ambiguous_id",
            ApiError::Conflict(_) | ApiError::FieldConflict { .. } => "conflict",
            ApiError::ForbiddenOrigin(_) => "forbidden_origin",
            ApiError::ForbiddenHost(_) => "forbidden_host",
            ApiError::Unauthorized => "unauthorized",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed | ApiError::UseMethod { .. } => "method_not_allowed",
            ApiError::StorageFull(_) => "storage_full",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid(e) => e.field.as_deref(),
            ApiError::NotFound { field, .. } => Some(field),
            ApiError::NoItem { .. } => Some("index"),
            ApiError::FieldConflict { field, .. } => Some(field),
            ApiError::NoSchedule(_) => Some("name"),
            ApiError::AmbiguousId { .. } => Some("id"),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchTask { id } => ApiError::NotFound {
                what: "task",
                id,
                field: "id",
            },
            e @ StoreError::ScheduleExists { .. } => ApiError::FieldConflict {
                field: "name",
                message: format!("{e}: delete it first, or pick another name"),
            },
            e @ StoreError::Full { .. } => ApiError::StorageFull(with_causes(&e)),
            e if e.is_retryable() => ApiError::Unavailable(with_causes(&e)),
            e => ApiError::Internal(with_causes(&e)),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
            e @ EngineError::UnknownPrerequisite { position, .. } => ApiError::Invalid(
                ValidationError::field("unknown_task", format!("after[{position}]"), e.to_string()),
            ),
            e if e.is_retryable() => ApiError::Unavailable(with_causes(&e)),
            e => ApiError::Internal(with_causes(&e)),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Unavailable(detail) => {
                error!(detail = %detail, "request failed: backend unavailable");
                self.to_string()
            }
            ApiError::StorageFull(detail) => {
                error!(detail = %detail, "request failed: the store is full");
                self.to_string()
            }
            ApiError::Internal(detail) => {
                error!(detail = %detail, "request failed: internal error");
                self.to_string()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message,
                field: self.field().map(str::to_string),
                candidates: match &self {
                    ApiError::AmbiguousId { candidates, .. } => candidates.clone(),
                    _ => Vec::new(),
                },
            },
        };
        let mut response = (status, Json(body)).into_response();
        match self {
            ApiError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::UseMethod { allow, .. } => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_error_response_reads_back_as_an_error_body_naming_the_field() {
        let response = ApiError::invalid("limit", "limit must be a whole number").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            body,
            ErrorBody {
                error: ErrorDetail {
                    code: "invalid_field".into(),
                    message: "limit must be a whole number".into(),
                    field: Some("limit".into()),
                    candidates: Vec::new(),
                },
            }
        );
    }

    #[test]
    fn a_store_outage_is_unavailable_and_its_logged_detail_keeps_the_cause() {
        let outage = StoreError::Unavailable {
            op: "redis read task t at 127.0.0.1:7000".into(),
            source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused").into(),
        };
        match ApiError::from(outage) {
            ApiError::Unavailable(detail) => assert_eq!(
                detail,
                "store unavailable: redis read task t at 127.0.0.1:7000: refused"
            ),
            other => panic!("expected unavailable, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_task_is_not_found_naming_the_id() {
        let missing = StoreError::NoSuchTask { id: "t-1".into() };
        assert!(matches!(
            ApiError::from(missing),
            ApiError::NotFound { what: "task", ref id, field: "id" } if id == "t-1"
        ));
    }
}
