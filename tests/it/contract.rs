//! Every API response these tests receive is checked against the OpenAPI
//! document (`dts_api::openapi::document_json`, the one `GET /openapi.json`
//! serves), so the document cannot drift from what the server does: the
//! path and method must be documented, the status must be one of its
//! responses, the content type one that response has, and a JSON body must
//! validate against its schema (JSON Schema draft 2020-12, with
//! `#/components/schemas/...` resolved in the document). A JSON body of a
//! request the server accepted must validate against the request body's
//! schema too. A path or method that is not documented may only answer the
//! router's own 404 `no_route` or 405 `method_not_allowed` (or the checks in
//! front of it: 401, 403, 421), with an `ErrorBody`.
//!
//! Non-JSON bodies (server-sent events, text) are checked by status and
//! content type only.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The document as JSON, parsed once per test binary.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        serde_json::from_str(dts_api::openapi::document_json()).expect("the document is JSON")
    })
}

/// Compiled validators by the JSON pointer of their schema in the document.
fn validators() -> &'static Mutex<HashMap<String, Arc<jsonschema::Validator>>> {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    VALIDATORS.get_or_init(Default::default)
}

/// Escapes one JSON pointer segment.
fn segment(text: &str) -> String {
    text.replace('~', "~0").replace('/', "~1")
}

/// The validator of the schema at `pointer` in the document. The schema is
/// compiled with the document's `components` beside it, so its
/// `#/components/schemas/...` references resolve.
fn validator(pointer: &str) -> Arc<jsonschema::Validator> {
    let mut cache = validators().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = cache.get(pointer) {
        return found.clone();
    }
    let schema = document()
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no schema at {pointer} in the document"));
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "allOf": [schema],
        "components": document()["components"],
    });
    let compiled = Arc::new(
        jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}")),
    );
    cache.insert(pointer.to_string(), compiled.clone());
    compiled
}

/// Why `body` does not validate against the schema at `pointer`, if it does not.
pub fn schema_error(pointer: &str, body: &Value) -> Option<String> {
    let validator = validator(pointer);
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// The documented path template `path` (without its query) matches, if any.
fn documented_path(path: &str) -> Option<&'static str> {
    let paths = document()["paths"]
        .as_object()
        .expect("the document has paths");
    let wanted: Vec<&str> = path.split('/').collect();
    paths.keys().map(String::as_str).find(|template| {
        let parts: Vec<&str> = template.split('/').collect();
        parts.len() == wanted.len()
            && parts.iter().zip(&wanted).all(|(part, given)| {
                (part.starts_with('{') && part.ends_with('}') && !given.is_empty()) || part == given
            })
    })
}

/// The media type without its parameters (`application/json; charset=utf-8`).
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Checks one response; panics naming the method, path, status, what is
/// wrong and the body. `body` is `None` when the test does not read it
/// (a stream): then only the status and content type are checked.
pub fn check_response(
    method: &Method,
    path: &str,
    status: StatusCode,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) {
    let path = path.split('?').next().unwrap_or_default();
    let fail = |why: String| -> ! {
        let shown = body.map(String::from_utf8_lossy).unwrap_or_default();
        panic!(
            "{method} {path} answered {status} that the OpenAPI document does not allow: {why}\nbody: {shown}"
        )
    };
    // HEAD is answered by GET's handler, without a body.
    let operation_method = if *method == Method::HEAD {
        "get".to_string()
    } else {
        method.as_str().to_ascii_lowercase()
    };
    let operation = documented_path(path).and_then(|template| {
        let found = document()["paths"][template].get(&operation_method)?;
        Some((template, found))
    });
    let Some((template, operation)) = operation else {
        // The router's own answers to what it does not serve.
        let allowed = [
            StatusCode::NOT_FOUND,
            StatusCode::METHOD_NOT_ALLOWED,
            StatusCode::UNAUTHORIZED,
            StatusCode::FORBIDDEN,
            StatusCode::MISDIRECTED_REQUEST,
        ];
        if !allowed.contains(&status) {
            fail(format!(
                "{method} {path} is not in the document, and {status} is not a router's refusal"
            ));
        }
        if let Some(why) = error_body_error(body, content_type) {
            fail(why);
        }
        return;
    };
    let code = status.as_u16().to_string();
    let Some(response) = operation["responses"].get(&code) else {
        fail(format!(
            "{code} is not a documented response of {} {template}",
            operation_method.to_uppercase()
        ));
    };
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        if body.is_some_and(|b| !b.is_empty()) {
            fail("the documented response has no body".into());
        }
        return;
    };
    let media = media_type(content_type.unwrap_or_default());
    if !content.contains_key(&media) {
        fail(format!(
            "its content type {media:?} is not one of {:?}",
            content.keys().collect::<Vec<_>>()
        ));
    }
    if media != "application/json" {
        return;
    }
    let Some(bytes) = body else {
        return;
    };
    let json: Value = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| fail(format!("the body is not JSON: {e}")));
    let pointer = format!(
        "/paths/{}/{operation_method}/responses/{code}/content/application~1json/schema",
        segment(template)
    );
    if let Some(error) = schema_error(&pointer, &json) {
        fail(format!("the body does not match the schema: {error}"));
    }
}

/// Why `body` is not a refusal of the router (an `ErrorBody`), if it is not.
fn error_body_error(body: Option<&[u8]>, content_type: Option<&str>) -> Option<String> {
    let bytes = body?;
    if media_type(content_type.unwrap_or_default()) != "application/json" {
        return Some("a refusal must be a JSON ErrorBody".into());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Err(e) => Some(format!("the body is not JSON: {e}")),
        Ok(json) => schema_error("/components/schemas/ErrorBody", &json)
            .map(|error| format!("the body is not an ErrorBody: {error}")),
    }
}

/// Checks a JSON request body the server accepted (a 2xx) against the
/// operation's documented request body, when it has one (the others never
/// read theirs).
pub fn check_accepted_request(method: &Method, path: &str, content_type: &str, body: &[u8]) {
    let path = path.split('?').next().unwrap_or_default();
    if media_type(content_type) != "application/json" {
        return;
    }
    let Some(template) = documented_path(path) else {
        return;
    };
    let operation_method = method.as_str().to_ascii_lowercase();
    let Some(documented) =
        document()["paths"][template][&operation_method]["requestBody"].get("content")
    else {
        // An operation without a request body ignores what is sent.
        return;
    };
    if documented.get("application/json").is_none() {
        panic!(
            "{method} {path} accepted a JSON body that its documented request body does not allow (it has {documented})"
        );
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        panic!("{method} {path} accepted a body that is not JSON");
    };
    let pointer = format!(
        "/paths/{}/{operation_method}/requestBody/content/application~1json/schema",
        segment(template)
    );
    if let Some(error) = schema_error(&pointer, &json) {
        panic!(
            "{method} {path} accepted a body its documented request schema refuses: {error}\nbody: {json}"
        );
    }
}

/// Reads `response` whole and checks it; returns its status, headers and body.
pub async fn read_checked(
    method: &Method,
    response: reqwest::Response,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let status = response.status();
    let path = response.url().path().to_string();
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: no whole body: {e}"))
        .to_vec();
    check_response(
        method,
        &path,
        status,
        content_type(&headers).as_deref(),
        Some(&bytes),
    );
    (status, headers, bytes)
}

/// Checks the status and content type of `response`, whose body the test
/// reads as a stream (or not at all).
pub fn check_head(method: &Method, response: &reqwest::Response) {
    check_response(
        method,
        response.url().path(),
        response.status(),
        content_type(response.headers()).as_deref(),
        None,
    );
}

/// The `Content-Type` header's value, when there is one.
pub fn content_type(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
