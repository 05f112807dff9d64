//! The OpenAPI document: served at `/openapi.json` without a token, valid
//! OpenAPI 3.1 by an independent validator, covering every route, and the
//! check of every response against it (`contract.rs`) really refuses what
//! does not match.

use crate::common::DtsUp;
use crate::contract::{self, check_accepted_request, check_response};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every route the router serves. A route added to the router must be added
/// here and documented: the test below then asks the server for it and
/// finds it in the document.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/tasks"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/{id}"),
    ("DELETE", "/v1/tasks/{id}"),
    ("GET", "/v1/tasks/{id}/results"),
    ("POST", "/v1/tasks/{id}/cancel"),
    ("POST", "/v1/tasks/{id}/retry"),
    ("GET", "/v1/tasks/{id}/events"),
    ("GET", "/v1/tasks/{id}/activity"),
    ("GET", "/v1/tasks/{id}/log"),
    ("GET", "/v1/tasks/{id}/items/{index}/log"),
    ("GET", "/v1/workers"),
    ("POST", "/v1/schedules"),
    ("GET", "/v1/schedules"),
    ("GET", "/v1/schedules/{name}"),
    ("DELETE", "/v1/schedules/{name}"),
    ("POST", "/v1/schedules/{name}/pause"),
    ("POST", "/v1/schedules/{name}/resume"),
    ("GET", "/v1/overview"),
    ("GET", "/schedule/ping"),
    ("POST", "/schedule/create"),
    ("GET", "/schedule/status"),
    ("POST", "/schedule/node-beat"),
    ("GET", "/schedule/node-beat"),
];

const TOKEN: &str = "openapi-token-openapi-token";

/// `(METHOD, path)` of every operation in the document.
fn documented_operations() -> BTreeSet<(String, String)> {
    let paths = contract::document()["paths"].as_object().unwrap();
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// `GET /openapi.json` with no token at all.
async fn fetch_document(up: &DtsUp) -> (StatusCode, Option<String>, Value) {
    let response = reqwest::get(format!("{}/openapi.json", up.base))
        .await
        .expect("GET /openapi.json answered");
    let (status, headers, bytes) = contract::read_checked(&Method::GET, response).await;
    let body = serde_json::from_slice(&bytes).expect("the document is JSON");
    (status, contract::content_type(&headers), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_without_a_token_with_or_without_one_configured() {
    let open = DtsUp::start(&[]);
    let (status, content_type, body) = fetch_document(&open).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(&body, contract::document());
    assert_eq!(body["openapi"], "3.1.0");

    let dir = tempfile::TempDir::new().unwrap();
    let guarded = DtsUp::start_in(&dir.path().join("data"), &[], &[("DTS_AUTH_TOKEN", TOKEN)]);
    let (status, _, body) = fetch_document(&guarded).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(&body, contract::document());
    // The token is still asked for where there is data.
    let tasks = reqwest::get(format!("{}/v1/tasks", guarded.base))
        .await
        .unwrap();
    let (status, _, _) = contract::read_checked(&Method::GET, tasks).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_router_is_served_and_in_the_document_and_nothing_else_is() {
    let listed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(documented_operations(), listed);

    // Each listed route is one the server has: it answers something else
    // than the router's refusals (404 no_route, 405 without an Allow).
    let up = DtsUp::start(&[]);
    let id = up
        .submit(json!({"templateFunction": "true", "inputList": ["a"]}))
        .await;
    up.wait_ended(&id).await;
    for (method, template) in ROUTES {
        let path = template.replace("{id}", &id).replace("{name}", "nightly");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = reqwest::Client::new()
            .request(method.clone(), format!("{}{path}", up.base))
            .send()
            .await
            .unwrap();
        let allow = response.headers().get("allow").cloned();
        let (status, _, bytes) = contract::read_checked(&method, response).await;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let refused = (status == StatusCode::NOT_FOUND && body["error"]["code"] == "no_route")
            || (status == StatusCode::METHOD_NOT_ALLOWED && allow.is_none());
        assert!(!refused, "{method} {path}: {status} {body}");
    }
}

/// `openapi-spec-validator` (PyPI): on PATH, or where
/// scripts/install-test-deps.sh installs it (.tools/venv). `None` (the test
/// skips) only when it is absent and `DTS_TEST_REQUIRE_INTERPRETERS` is unset.
fn spec_validator() -> Option<PathBuf> {
    let tool = "openapi-spec-validator";
    let installed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/venv/bin")
        .join(tool);
    let found = [PathBuf::from(tool), installed]
        .into_iter()
        .find(|candidate| {
            Command::new(candidate)
                .arg("--help")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("DTS_TEST_REQUIRE_INTERPRETERS").is_none(),
            "{tool} is neither on PATH nor in .tools/venv, and DTS_TEST_REQUIRE_INTERPRETERS \
             says it must be there (scripts/install-test-deps.sh installs it)"
        );
        eprintln!("skipped: {tool} is not installed (scripts/install-test-deps.sh installs it)");
    }
    found
}

#[test]
fn the_document_is_valid_openapi_3_1_by_an_independent_validator() {
    let Some(tool) = spec_validator() else {
        return;
    };
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, dts_api::openapi::document_json()).unwrap();
    let output = crate::common::run_dts(Command::new(&tool).arg(&file));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), format!("{}: OK", file.display()), "{stderr}");
    assert_eq!(contract::document()["openapi"], "3.1.0");

    // The validator does refuse: the same document without its paths'
    // responses is not OpenAPI.
    let mut broken = contract::document().clone();
    broken["paths"]["/healthz"]["get"]["responses"] = json!("none");
    std::fs::write(&file, broken.to_string()).unwrap();
    let output = crate::common::run_dts(Command::new(&tool).arg(&file));
    assert!(!output.status.success(), "a broken document passed");
}

/// The panic message of `check`, which must panic.
fn refusal(check: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let failure = std::panic::catch_unwind(check).expect_err("the check accepted it");
    failure
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| failure.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_response_the_document_does_not_allow_fails_the_test_naming_what_is_wrong() {
    let ok = json!({"status": "ok"}).to_string();
    let json = Some("application/json");
    // What the server really answers passes.
    check_response(
        &Method::GET,
        "/healthz",
        StatusCode::OK,
        json,
        Some(ok.as_bytes()),
    );

    // A body that is not the schema's: a task without its counts.
    let task = json!({"id": "0b7e0a3c-4f55-4c43-9a55-3e8e1f0f9a11", "status": "DONE"}).to_string();
    let message = refusal(|| {
        check_response(
            &Method::GET,
            "/v1/tasks/0b7e0a3c-4f55-4c43-9a55-3e8e1f0f9a11?summary=true",
            StatusCode::OK,
            json,
            Some(task.as_bytes()),
        )
    });
    for part in [
        "GET /v1/tasks/0b7e0a3c-4f55-4c43-9a55-3e8e1f0f9a11 answered 200 OK",
        "the body does not match the schema",
        "\"DONE\"",
        "itemsTotal",
        &format!("body: {task}"),
    ] {
        assert!(message.contains(part), "{part:?} is not in: {message}");
    }

    // A status the operation does not document.
    let message = refusal(|| {
        check_response(
            &Method::GET,
            "/healthz",
            StatusCode::IM_A_TEAPOT,
            json,
            Some(ok.as_bytes()),
        )
    });
    assert!(
        message.contains("418 is not a documented response of GET /healthz"),
        "{message}"
    );

    // A content type the response does not have.
    let message = refusal(|| {
        check_response(
            &Method::GET,
            "/healthz",
            StatusCode::OK,
            Some("text/html"),
            Some(b"ok"),
        )
    });
    assert!(message.contains("\"text/html\" is not one of"), "{message}");

    // An answer of a route the document does not have.
    let message = refusal(|| {
        check_response(
            &Method::GET,
            "/v1/secret",
            StatusCode::OK,
            json,
            Some(ok.as_bytes()),
        )
    });
    assert!(
        message.contains("GET /v1/secret is not in the document"),
        "{message}"
    );

    // An error that is not an ErrorBody.
    let message = refusal(|| {
        check_response(
            &Method::GET,
            "/v1/tasks/nope",
            StatusCode::NOT_FOUND,
            json,
            Some(br#"{"message": "no"}"#),
        )
    });
    assert!(
        message.contains("the body does not match the schema"),
        "{message}"
    );

    // A request body the server accepted but the document refuses.
    let message = refusal(|| {
        check_accepted_request(
            &Method::POST,
            "/v1/tasks",
            "application/json",
            br#"{"templateFunction": "true", "inputList": ["a"], "colour": "red"}"#,
        )
    });
    assert!(message.contains("colour"), "{message}");
}

#[test]
fn bytes_that_are_not_utf8_are_documented_as_serde_writes_them() {
    let pointer = "/components/schemas/Bytes";
    assert_eq!(contract::schema_error(pointer, &json!("text")), None);
    assert_eq!(
        contract::schema_error(pointer, &json!({"base64": "/w=="})),
        None
    );
    for wrong in [
        json!(3),
        json!({"base64": 3}),
        json!({"hex": "ff"}),
        json!({}),
    ] {
        assert!(contract::schema_error(pointer, &wrong).is_some(), "{wrong}");
    }
    let written = serde_json::to_value(dts_model::Bytes::from(&b"\xff\xfe"[..])).unwrap();
    assert_eq!(contract::schema_error(pointer, &written), None, "{written}");
}
