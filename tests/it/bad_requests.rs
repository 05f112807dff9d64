//! Bad requests: each gets the right 4xx with a JSON error naming the field,
//! and the store is left unchanged.

use crate::common::{DtsUp, items};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method: Method::POST,
        path,
        content_type: Some("application/json"),
        body: body.to_string().into_bytes(),
        status: StatusCode::from_u16(status).unwrap(),
        code,
        field,
    }
}

// One row of the table: the request, then what must come back.
#[allow(clippy::too_many_arguments)]
fn raw(
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    body: &[u8],
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method,
        path,
        content_type,
        body: body.to_vec(),
        status: StatusCode::from_u16(status).unwrap(),
        code,
        field,
    }
}

#[tokio::test]
async fn bad_requests_get_a_clear_4xx_naming_the_field_and_change_nothing() {
    // Small limits so "too many" and "too large" are cheap to send.
    let up = DtsUp::start(&[
        "--set",
        "limits.max-items=100",
        "--set",
        "limits.max-body-bytes=65536",
        "--set",
        "limits.max-item-bytes=1000",
        "--set",
        "limits.max-template-bytes=2000",
    ]);
    let existing = up
        .submit(json!({"templateFunction": "true", "inputList": ["a"]}))
        .await;
    up.wait_ended(&existing).await;
    let tasks_before = up.task_count().await;

    let ok = |extra: Value| {
        let mut body = json!({"templateFunction": "echo $1", "inputList": ["a"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let many: Vec<String> = items(101);
    let cases = vec![
        raw(
            "malformed JSON",
            Method::POST,
            "/v1/tasks",
            Some("application/json"),
            b"{\"templateFunction\": ",
            400,
            "invalid_json",
            None,
        ),
        raw(
            "invalid UTF-8",
            Method::POST,
            "/v1/tasks",
            Some("application/json"),
            b"{\"templateFunction\": \"\xff\xfe\", \"inputList\": []}",
            400,
            "invalid_json",
            None,
        ),
        raw(
            "empty body",
            Method::POST,
            "/v1/tasks",
            Some("application/json"),
            b"",
            400,
            "invalid_json",
            None,
        ),
        raw(
            "deeply nested",
            Method::POST,
            "/v1/tasks",
            Some("application/json"),
            "[".repeat(10_000).as_bytes(),
            400,
            "invalid_json",
            None,
        ),
        case(
            "array body",
            "/v1/tasks",
            json!([1, 2]),
            400,
            "invalid_body",
            None,
        ),
        case(
            "missing template",
            "/v1/tasks",
            json!({"inputList": []}),
            400,
            "missing_field",
            Some("templateFunction"),
        ),
        case(
            "null template",
            "/v1/tasks",
            json!({"templateFunction": null, "inputList": []}),
            400,
            "missing_field",
            Some("templateFunction"),
        ),
        case(
            "template wrong type",
            "/v1/tasks",
            json!({"templateFunction": ["echo"], "inputList": []}),
            400,
            "invalid_field",
            Some("templateFunction"),
        ),
        case(
            "missing inputs",
            "/v1/tasks",
            json!({"templateFunction": "echo"}),
            400,
            "missing_field",
            Some("inputList"),
        ),
        case(
            "inputs wrong type",
            "/v1/tasks",
            json!({"templateFunction": "echo", "inputList": "a,b"}),
            400,
            "invalid_field",
            Some("inputList"),
        ),
        case(
            "nested item",
            "/v1/tasks",
            json!({"templateFunction": "echo", "inputList": ["a", ["b"]]}),
            400,
            "invalid_field",
            Some("inputList[1]"),
        ),
        case(
            "null item",
            "/v1/tasks",
            json!({"templateFunction": "echo", "inputList": [null]}),
            400,
            "invalid_field",
            Some("inputList[0]"),
        ),
        case(
            "missing variables",
            "/v1/tasks",
            json!({"templateFunction": "echo {{a}} {{b}}", "variableJson": {"a": 1}, "inputList": []}),
            400,
            "missing_variables",
            Some("variableJson"),
        ),
        case(
            "nested variable",
            "/v1/tasks",
            ok(json!({"variableJson": {"v": {"x": 1}}})),
            400,
            "invalid_field",
            Some("variableJson.v"),
        ),
        case(
            "variables not an object",
            "/v1/tasks",
            ok(json!({"variableJson": [1]})),
            400,
            "invalid_field",
            Some("variableJson"),
        ),
        case(
            "unknown field",
            "/v1/tasks",
            ok(json!({"timeoutSec": 5})),
            400,
            "unknown_field",
            Some("timeoutSec"),
        ),
        case(
            "negative timeout",
            "/v1/tasks",
            ok(json!({"timeoutSecs": -1})),
            400,
            "invalid_field",
            Some("timeoutSecs"),
        ),
        case(
            "zero timeout",
            "/v1/tasks",
            ok(json!({"timeoutSecs": 0})),
            400,
            "invalid_field",
            Some("timeoutSecs"),
        ),
        case(
            "enormous timeout",
            "/v1/tasks",
            ok(json!({"timeoutSecs": 99999999999u64})),
            400,
            "invalid_field",
            Some("timeoutSecs"),
        ),
        case(
            "retries as text",
            "/v1/tasks",
            ok(json!({"retries": "3"})),
            400,
            "invalid_field",
            Some("retries"),
        ),
        case(
            "too many retries",
            "/v1/tasks",
            ok(json!({"retries": 1000})),
            400,
            "invalid_field",
            Some("retries"),
        ),
        case(
            "interpreter with arguments",
            "/v1/tasks",
            ok(json!({"interpreter": "bash -x"})),
            400,
            "invalid_field",
            Some("interpreter"),
        ),
        case(
            "too many items",
            "/v1/tasks",
            json!({"templateFunction": "echo", "inputList": many}),
            400,
            "too_many_items",
            Some("inputList"),
        ),
        case(
            "item too large",
            "/v1/tasks",
            json!({"templateFunction": "echo", "inputList": ["x".repeat(1001)]}),
            400,
            "too_large",
            Some("inputList[0]"),
        ),
        case(
            "template too large",
            "/v1/tasks",
            json!({"templateFunction": "x".repeat(2001), "inputList": []}),
            400,
            "too_large",
            Some("templateFunction"),
        ),
        case(
            "NUL in an item",
            "/v1/tasks",
            json!({"templateFunction": "echo", "inputList": ["a\u{0}b"]}),
            400,
            "invalid_field",
            Some("inputList[0]"),
        ),
        raw(
            "body too large",
            Method::POST,
            "/v1/tasks",
            Some("application/json"),
            &vec![b' '; 70_000],
            413,
            "too_large_body",
            None,
        ),
        raw(
            "wrong content type",
            Method::POST,
            "/v1/tasks",
            Some("text/plain"),
            b"{}",
            415,
            "unsupported_media_type",
            None,
        ),
        raw(
            "no content type",
            Method::POST,
            "/v1/tasks",
            None,
            b"{}",
            415,
            "unsupported_media_type",
            None,
        ),
        raw(
            "form on v1",
            Method::POST,
            "/v1/tasks",
            Some("application/x-www-form-urlencoded"),
            b"templateFunction=echo",
            415,
            "unsupported_media_type",
            None,
        ),
        raw(
            "seed form, repeated field",
            Method::POST,
            "/schedule/create",
            Some("application/x-www-form-urlencoded"),
            b"templateFunction=a&templateFunction=b&inputList=x",
            400,
            "repeated_field",
            Some("templateFunction"),
        ),
        raw(
            "seed form, missing inputs",
            Method::POST,
            "/schedule/create",
            Some("application/x-www-form-urlencoded"),
            b"templateFunction=echo",
            400,
            "missing_field",
            Some("inputList"),
        ),
        raw(
            "seed form, invalid UTF-8",
            Method::POST,
            "/schedule/create",
            Some("application/x-www-form-urlencoded"),
            b"templateFunction=%ff&inputList=a",
            400,
            "invalid_form",
            Some("templateFunction"),
        ),
        raw(
            "seed form, bad retries",
            Method::POST,
            "/schedule/create",
            Some("application/x-www-form-urlencoded"),
            b"templateFunction=echo&inputList=a&retries=many",
            400,
            "invalid_field",
            Some("retries"),
        ),
        raw(
            "seed JSON, broken",
            Method::POST,
            "/schedule/create",
            Some("application/json"),
            b"{",
            400,
            "invalid_json",
            None,
        ),
        raw(
            "seed, wrong content type",
            Method::POST,
            "/schedule/create",
            Some("text/csv"),
            b"a,b",
            415,
            "unsupported_media_type",
            None,
        ),
        raw(
            "path traversal id",
            Method::GET,
            "/v1/tasks/..%2F..%2Fetc%2Fpasswd",
            None,
            b"",
            400,
            "invalid_field",
            Some("id"),
        ),
        raw(
            "malformed id",
            Method::GET,
            "/v1/tasks/not-a-task",
            None,
            b"",
            400,
            "invalid_field",
            Some("id"),
        ),
        raw(
            "unknown id",
            Method::GET,
            "/v1/tasks/6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10",
            None,
            b"",
            404,
            "not_found",
            Some("id"),
        ),
        raw(
            "results of unknown id",
            Method::GET,
            "/v1/tasks/6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10/results",
            None,
            b"",
            404,
            "not_found",
            Some("id"),
        ),
        raw(
            "cancel unknown id",
            Method::POST,
            "/v1/tasks/6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10/cancel",
            None,
            b"",
            404,
            "not_found",
            Some("id"),
        ),
        raw(
            "bad results filter",
            Method::GET,
            "/v1/tasks/6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10/results?status=maybe",
            None,
            b"",
            404,
            "not_found",
            Some("id"),
        ),
        raw(
            "bad list status",
            Method::GET,
            "/v1/tasks?status=DONE",
            None,
            b"",
            400,
            "invalid_field",
            Some("status"),
        ),
        raw(
            "bad list limit",
            Method::GET,
            "/v1/tasks?limit=-1",
            None,
            b"",
            400,
            "invalid_field",
            Some("limit"),
        ),
        raw(
            "unknown route",
            Method::GET,
            "/v2/tasks",
            None,
            b"",
            404,
            "no_route",
            None,
        ),
        raw(
            "wrong method",
            Method::DELETE,
            "/v1/tasks",
            None,
            b"",
            405,
            "method_not_allowed",
            None,
        ),
    ];

    let count = cases.len();
    for c in cases {
        let (status, body) = up
            .request(c.method.clone(), c.path, c.content_type, c.body.clone())
            .await;
        assert_eq!(status, c.status, "{}: {body}", c.what);
        assert_eq!(body["error"]["code"], c.code, "{}: {body}", c.what);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}: {body}",
            c.what
        );
        match c.field {
            Some(field) => assert_eq!(body["error"]["field"], field, "{}: {body}", c.what),
            None => assert!(body["error"].get("field").is_none(), "{}: {body}", c.what),
        }
    }
    assert!(count >= 40);

    // Nothing was stored, and the server is still up and working.
    assert_eq!(up.task_count().await, tasks_before);
    let (status, _) = up.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (_, results) = up
        .get(&format!("/v1/tasks/{existing}/results?status=maybe"))
        .await;
    assert_eq!(results["error"]["field"], "status");
}

#[tokio::test]
async fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let output = std::process::Command::new(crate::common::dts_binary())
        .args(["up", "--port", "0", "--bind", "0.0.0.0", "--data-dir"])
        .arg(dir.path())
        .env_remove("DTS_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without an auth token"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[tokio::test]
async fn with_a_token_every_endpoint_but_health_and_ping_needs_it() {
    let dir = tempfile::TempDir::new().unwrap();
    let up = DtsUp::start_in(
        &dir.path().join("data"),
        &["--bind", "0.0.0.0"],
        &[("DTS_AUTH_TOKEN", "s3cret")],
    );
    // The harness sends the token: this works.
    let id = up
        .submit(json!({"templateFunction": "true", "inputList": ["a"]}))
        .await;
    up.wait_ended(&id).await;

    let anonymous = reqwest::Client::new();
    let local = up.base.replace("0.0.0.0", "127.0.0.1");
    for path in [
        "/v1/tasks",
        &format!("/v1/tasks/{id}"),
        "/v1/workers",
        "/schedule/node-beat?nodeId=x",
    ] {
        let response = anonymous
            .get(format!("{local}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let wrong = anonymous
        .get(format!("{local}/v1/tasks"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/schedule/ping"] {
        let response = anonymous
            .get(format!("{local}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}
