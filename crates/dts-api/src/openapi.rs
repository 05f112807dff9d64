//! The API's OpenAPI 3.1 document, served at `GET /openapi.json`.
//!
//! It is generated from the code, never written by hand: each handler
//! carries a `#[utoipa::path(...)]` attribute with its parameters, body and
//! every status it answers, and each view in [`crate::views`] derives
//! `ToSchema` from the same struct serde writes. Where serde is hand-written
//! ([`dts_model::Bytes`], [`crate::views::ResultView`]) the schema is
//! hand-written beside it, and the integration tests validate every
//! response they receive against this document, so it cannot drift.
//!
//! Answers that any request can get are added here once, by
//! `SharedAnswers`, rather than on each handler: 403 and 421 from the
//! Host and Origin checks, 401 from the token check (with the bearer
//! security requirement) on every endpoint but the public ones, 500
//! and 503 on every endpoint that reads the store, and 507 (the store is
//! full) on those of them that are not `GET`s.
//!
//! To document a new endpoint:
//! 1. annotate its handler with `#[utoipa::path(method, path = "...",
//!    responses(...))]`, listing each status it can answer itself (errors
//!    as `body = ErrorBody`); a non-JSON answer names its content type
//!    (`content_type = "text/plain"`);
//! 2. derive `ToSchema` on the views it answers with;
//! 3. add the handler to `paths(...)` of [`ApiDoc`] below, and to
//!    [`PUBLIC`] or [`STORELESS`] if it needs no token or reads no store.
//!
//! The unit test `every_route_the_router_serves_is_in_the_document` fails
//! until step 3 is done for each `.route(...)` of this crate.

use crate::overview::{ActivityView, OverviewView};
use crate::schedules::{RunView, ScheduleRequest, ScheduleView};
use crate::views::{
    ErrorBody, ErrorDetail, HealthView, NodeBeatView, ReduceResultView, ReduceView, ResultItemView,
    ResultView, ResultsPage, RetryView, SeedTaskView, TaskView, WorkerView,
};
use crate::{logs, overview, schedules, seed, v1};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{
    AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

/// Endpoints that need no token (as the router has them outside the token check).
pub const PUBLIC: &[&str] = &["/healthz", "/schedule/ping", "/openapi.json"];

/// Endpoints that never read the store, so never answer 500 or 503.
pub const STORELESS: &[(&str, &str)] = &[
    ("get", "/schedule/ping"),
    ("get", "/schedule/node-beat"),
    ("get", "/openapi.json"),
];

/// The name of the bearer token's security scheme.
const BEARER: &str = "bearerToken";

/// The document's parts; [`document`] is the whole.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "dts",
        description = "The HTTP API of dts, a distributed task scheduler: the v1 endpoints \
            and the seed-compatible `/schedule/*` ones. Every error answers with the \
            `ErrorBody` shape. A path or method that is not here answers 404 `no_route` \
            or 405 `method_not_allowed`, also as an `ErrorBody`."
    ),
    paths(
        v1::submit,
        v1::list,
        v1::get_task,
        v1::delete,
        v1::results,
        v1::cancel,
        v1::retry,
        v1::events,
        v1::workers,
        schedules::create,
        schedules::list,
        schedules::get_one,
        schedules::delete,
        schedules::pause,
        schedules::resume,
        overview::overview,
        overview::activity,
        logs::item_log,
        logs::task_log,
        v1::healthz,
        crate::metrics::scrape,
        serve_document,
        seed::ping,
        seed::create,
        seed::status,
        seed::node_beat,
        seed::node_beat_by_get,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        TaskView,
        SeedTaskView,
        ResultView,
        ResultItemView,
        ResultsPage,
        RetryView,
        WorkerView,
        OverviewView,
        ActivityView,
        HealthView,
        NodeBeatView,
        SubmitRequest,
        BytesJson,
        ScheduleView,
        RunView,
        ReduceView,
        ReduceResultView,
        ReduceRequest,
        ScheduleRequest,
    )),
    modifiers(&SharedAnswers),
    tags(
        (name = "v1", description = "Tasks, results and workers."),
        (name = "schedules", description = "Tasks fired on a cron expression."),
        (name = "seed", description = "The original scheduler's endpoints, kept for its clients."),
        (name = "meta", description = "Health and this document."),
    )
)]
pub struct ApiDoc;

/// The whole OpenAPI 3.1 document.
pub fn document() -> Document {
    ApiDoc::openapi()
}

/// The document as JSON, built once: it is the same for every request.
pub fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // A document of strings and numbers always serializes.
        document().to_pretty_json().unwrap_or_default()
    })
}

/// `GET /openapi.json`: this document. Public: it holds no data.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.",
         content_type = "application/json", body = Object),
    )
)]
pub async fn serve_document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// Adds the answers any request can get (see the module's docs).
struct SharedAnswers;

impl Modify for SharedAnswers {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC.contains(&path.as_str());
            for (method, operation) in [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
            ] {
                let Some(operation) = operation else {
                    continue;
                };
                let reads_store = !STORELESS.contains(&(method, path.as_str()));
                add_error(
                    operation,
                    "403",
                    "A request from a page of an origin not allowed.",
                );
                add_error(
                    operation,
                    "421",
                    "A Host that is not an address of this server.",
                );
                if public {
                    operation.security = Some(Vec::new());
                } else {
                    operation.security =
                        Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
                    add_error(
                        operation,
                        "401",
                        "No token, or the wrong one, when the server has one.",
                    );
                }
                if reads_store {
                    add_error(
                        operation,
                        "500",
                        "A fault of dts; the detail is in its log.",
                    );
                    add_error(
                        operation,
                        "503",
                        "The store or the bus cannot be reached for now.",
                    );
                    if method != "get" {
                        add_error(
                            operation,
                            "507",
                            "The store is full (its disk, or Redis's memory); nothing was changed.",
                        );
                    }
                }
            }
        }
    }
}

/// `status` answering an [`ErrorBody`], unless the handler documents it already.
fn add_error(operation: &mut Operation, status: &str, description: &str) {
    let response = ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    ErrorBody::name(),
                ))))
                .build(),
        )
        .build();
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert(RefOr::T(response));
}

/// [`dts_model::Bytes`] as serde writes it: the text when it is UTF-8, else
/// `{"base64": "..."}` with the exact bytes.
pub struct BytesJson;

impl PartialSchema for BytesJson {
    fn schema() -> RefOr<Schema> {
        let text = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .description(Some("The bytes, when they are UTF-8."));
        let exact = ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some("The bytes, when they are not UTF-8."))
            .property(
                "base64",
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .content_encoding("base64"),
            )
            .required("base64")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new().item(text).item(exact).into()
    }
}

impl ToSchema for BytesJson {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Bytes")
    }
}

/// `tasks` of `GET /v1/overview`: a count for every status, by its name.
pub(crate) fn tasks_by_status() -> Schema {
    let mut object = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    for status in dts_model::TaskStatus::ALL {
        object = object
            .property(
                status.as_str(),
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Integer))
                    .minimum(Some(0)),
            )
            .required(status.as_str());
    }
    object.build().into()
}

/// `variableJson` as a submission may give it.
fn variables_schema() -> Schema {
    let value = ObjectBuilder::new().schema_type(SchemaType::from_iter([
        Type::String,
        Type::Number,
        Type::Boolean,
    ]));
    let object = ObjectBuilder::new()
        .schema_type(SchemaType::new(Type::Object))
        .additional_properties(Some(value));
    let text = ObjectBuilder::new().schema_type(SchemaType::new(Type::String));
    let none = ObjectBuilder::new().schema_type(SchemaType::new(Type::Null));
    OneOfBuilder::new()
        .item(object)
        .item(text)
        .item(none)
        .build()
        .into()
}

/// A field of a task that a submission may hold and that is ignored: any
/// value, read-only.
fn ignored_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .read_only(Some(true))
        .build()
        .into()
}

/// A task's `reduce` step, as `POST /v1/tasks` takes it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct ReduceRequest {
    /// The script, a template over the task's variables.
    template_function: String,
    /// The program that runs it (default `bash`).
    interpreter: Option<String>,
    /// Its time limit, in seconds (default the server's item default).
    timeout_secs: Option<u64>,
    /// `success` (the default: only if every item succeeded) or `always`.
    when: Option<dts_model::ReduceWhen>,
}

/// The body of `POST /v1/tasks` and the JSON body of `POST /schedule/create`:
/// a script template, its variables and the inputs to run it with. Read by
/// hand by [`dts_model::submit::from_json`] (which refuses unknown fields),
/// so this type only describes it; the tests check every accepted request
/// against it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
pub struct SubmitRequest {
    /// The script template; `{{name}}` is replaced by the variable `name`,
    /// and the item's input is `$1`.
    template_function: String,
    /// The inputs, one item each (strings, or `{"base64": ...}` for bytes).
    #[schema(value_type = Vec<BytesJson>)]
    input_list: Vec<serde_json::Value>,
    /// The template's variables by name (strings, numbers, booleans), or
    /// a string holding that object as JSON (as the seed sent it).
    #[schema(schema_with = variables_schema)]
    variable_json: Option<serde_json::Value>,
    /// A name for people.
    name: Option<String>,
    /// The program that runs the rendered script (default `bash`).
    interpreter: Option<String>,
    /// Each item's time limit, in seconds.
    timeout_secs: Option<u64>,
    /// How many times a failed item is tried again.
    retries: Option<u32>,
    /// The whole task's time limit from its submission, in seconds.
    deadline_secs: Option<u64>,
    /// Memory per item, in MiB.
    memory_mb: Option<u64>,
    /// CPUs per item (0.5, 2).
    cpus: Option<f64>,
    /// Higher runs first.
    priority: Option<i32>,
    /// The task's share of slots against tasks of the same priority.
    weight: Option<u32>,
    /// Items of the task that may run at once.
    max_concurrency: Option<u32>,
    /// Labels a worker must have to run the task.
    requires: Option<BTreeMap<String, String>>,
    /// Whether a straggling item may run a second time elsewhere.
    speculation: Option<bool>,
    /// GNU parallel's `--halt` (`now,fail=1`, `soon,fail=10%`).
    halt: Option<String>,
    /// Ids of tasks that must end first; the task is `WAITING` until they
    /// have, and `SKIPPED` if one ends otherwise than `afterStatus` asks.
    /// Each must exist (400 naming `after[i]` otherwise); at most 100.
    after: Option<Vec<String>>,
    /// How the tasks in `after` must end: `COMPLETED` (the default) or
    /// `ENDED` (however they end).
    after_status: Option<dts_model::AfterStatus>,
    /// A script that runs once after every item has its result, reading
    /// the results as JSON lines on stdin in index order; its result ends
    /// the task (`REDUCING` until then).
    reduce: Option<ReduceRequest>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    id: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    status: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    chunks_to_execute: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    chunks_executed: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    items_total: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    items_succeeded: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    items_failed: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    created_at: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    started_at: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    finished_at: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    error: Option<serde_json::Value>,
    /// Ignored: a task's own field, accepted so a seed client may send a task back.
    #[schema(schema_with = ignored_schema)]
    version: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `(method, path)` of each `.route("path", get(..).post(..))` in the
    /// crate's sources: the routes the router serves, but the dashboard's
    /// (`src/ui/`): pages, assets and the pages' own feed, for a browser,
    /// described in docs/dashboard.md rather than in the API's document.
    fn routes_in_sources() -> BTreeSet<(String, String)> {
        let mut files = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut routes = BTreeSet::new();
        // ends: each turn takes one entry of a finite source tree.
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).unwrap() {
                    files.push(entry.unwrap().path());
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs")
                || path.parent().is_some_and(|p| p.ends_with("ui"))
            {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for (at, _) in source.match_indices(".route(") {
                let line_start = source[..at].rfind('\n').map_or(0, |i| i + 1);
                if source[line_start..at].trim_start().starts_with("//") {
                    continue;
                }
                let rest = source[at + ".route(".len()..].trim_start();
                let Some(rest) = rest.strip_prefix('"') else {
                    continue;
                };
                let (route, rest) = rest.split_once('"').unwrap();
                // The method router: up to the `)` closing `.route(`.
                let mut depth = 1;
                let end = rest
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '(' => 1,
                            ')' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map_or(rest.len(), |(i, _)| i);
                let methods = &rest[..end];
                for method in ["get", "post", "put", "delete", "patch"] {
                    let call = format!("{method}(");
                    for (at, _) in methods.match_indices(&call) {
                        let before = methods[..at].chars().next_back();
                        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                            routes.insert((method.to_string(), route.to_string()));
                        }
                    }
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_the_router_serves_is_in_the_document() {
        let routes = routes_in_sources();
        assert!(
            routes.contains(&("get".into(), "/v1/tasks/{id}".into()))
                && routes.contains(&("delete".into(), "/v1/tasks/{id}".into())),
            "the scan finds the router's routes: {routes:?}"
        );
        let json: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let documented: BTreeSet<(String, String)> = json["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let undocumented: Vec<_> = routes.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "routes not in the OpenAPI document (see openapi.rs on how to add them): {undocumented:?}"
        );
        let unserved: Vec<_> = documented.difference(&routes).collect();
        assert!(
            unserved.is_empty(),
            "documented but not routed: {unserved:?}"
        );
    }

    #[test]
    fn the_documented_submission_has_exactly_the_fields_the_server_reads() {
        // The server names the fields it takes when it refuses an unknown one.
        let refusal = dts_model::submit::from_json(
            &serde_json::json!({"templateFunction": "x", "inputList": [], "unknownOne": 1}),
            &dts_model::SubmitLimits::default(),
        )
        .unwrap_err();
        let taken: BTreeSet<String> = refusal
            .message
            .split_once("expected one of ")
            .unwrap()
            .1
            .trim_end_matches(')')
            .split(", ")
            .map(str::to_string)
            .collect();
        let json: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let schema = &json["components"]["schemas"]["SubmitRequest"];
        let documented: BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, property)| property["readOnly"] != true)
            .map(|(name, _)| name.clone())
            .collect();
        assert_eq!(documented, taken);
        assert_eq!(
            schema["required"],
            serde_json::json!(["templateFunction", "inputList"])
        );
        assert_eq!(schema["additionalProperties"], false);
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_error_shape_on_every_error() {
        let json: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        let mut errors = 0;
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        errors += 1;
                        assert_eq!(
                            response["content"]["application/json"]["schema"]["$ref"],
                            "#/components/schemas/ErrorBody",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
        assert!(errors > 50, "{errors} error responses");
    }
}
