//! Hostile input: a table of malformed and hostile requests (`cases.rs`)
//! against the v1 and the seed endpoints, run against embedded `dts up` and a
//! distributed `dts server`, both with default limits. Each must get the right
//! 4xx and a JSON error `{"error":{"code","message","field"}}` naming the field
//! to blame; the node must stay up (healthz after each request) and its store
//! must not change (every task, the ended task's results and the workers,
//! compared before and after).

mod cases;

use crate::common::{Api, DEADLINE, DtsUp};
use crate::distributed::Cluster;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// One request, sent through reqwest or, when the path must reach the server
/// exactly as written (`..` segments), over a raw socket.
struct Request {
    method: Method,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
    raw: bool,
    /// Extra headers (an `Origin`, say).
    headers: Vec<(String, String)>,
    /// The `Host` a raw request names instead of the server's address.
    host: Option<String>,
}

impl Request {
    fn new(method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request {
        Request {
            method,
            path: path.to_string(),
            content_type: content_type.map(String::from),
            body,
            raw: false,
            headers: Vec::new(),
            host: None,
        }
    }
    fn json(path: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new(Method::POST, path, Some(JSON), body.into())
    }
    fn value(path: &str, body: &Value) -> Request {
        Request::json(path, body.to_string())
    }
    fn form(body: impl Into<Vec<u8>>) -> Request {
        Request::new(Method::POST, "/schedule/create", Some(FORM), body.into())
    }
    fn get(path: &str) -> Request {
        Request::new(Method::GET, path, None, Vec::new())
    }
    /// Sent byte for byte, so no client normalizes the path.
    fn raw(method: Method, path: &str) -> Request {
        Request {
            raw: true,
            ..Request::new(method, path, None, Vec::new())
        }
    }
    /// With one more header.
    fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// Sent raw, naming `host` as its Host.
    fn with_host(self, host: &str) -> Request {
        Request {
            raw: true,
            host: Some(host.to_string()),
            ..self
        }
    }
}

/// A row: what is sent and what must come back.
struct Case {
    what: String,
    request: Request,
    status: u16,
    code: String,
    field: Option<String>,
}

#[derive(Default)]
struct Table(Vec<Case>);

impl Table {
    /// Adds a row; `expect` is `"STATUS CODE"` or `"STATUS CODE FIELD"`
    /// (everything after the second space is the field, which may be empty).
    fn add(&mut self, what: impl Into<String>, request: Request, expect: &str) {
        let mut parts = expect.splitn(3, ' ');
        let status = parts.next().and_then(|s| s.parse().ok()).expect("a status");
        let code = parts.next().expect("a code").to_string();
        let field = parts.next().map(String::from);
        self.0.push(Case {
            what: what.into(),
            request,
            status,
            code,
            field,
        });
    }
}

/// Sends a request over a plain socket, exactly as written, and returns the
/// status and the body as JSON.
async fn send_raw(base: &str, request: &Request) -> (StatusCode, Value) {
    let authority = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(authority)
        .await
        .expect("connect");
    let host = request.host.as_deref().unwrap_or(authority);
    let mut extra = String::new();
    if let Some(ct) = &request.content_type {
        extra.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (name, value) in &request.headers {
        extra.push_str(&format!("{name}: {value}\r\n"));
    }
    let head = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nContent-Length: {}\r\n\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&request.body).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .unwrap_or_else(|_| panic!("{}: no whole answer within {DEADLINE:?}", request.path))
        .expect("read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let status = StatusCode::from_u16(status).unwrap();
    let content_type = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-type")
            .then(|| value.trim().to_string())
    });
    let method = reqwest::Method::from_bytes(request.method.as_str().as_bytes())
        .expect("a method the table wrote");
    crate::contract::check_response(
        &method,
        &request.path,
        status,
        content_type.as_deref(),
        Some(body.as_bytes()),
    );
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, json)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    // ends: each turn consumes a chunk of the finite body.
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// What must not change: every task (with its counters and timestamps) and
/// the live workers (ids and cores; heartbeat times move on by themselves).
async fn store_snapshot(api: &Api) -> (Value, Vec<(String, u64)>) {
    let (status, tasks) = api.get("/v1/tasks?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{tasks}");
    let (status, workers) = api.get("/v1/workers").await;
    assert_eq!(status, StatusCode::OK, "{workers}");
    let mut workers: Vec<(String, u64)> = workers
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| {
            (
                w["id"].as_str().unwrap_or("?").to_string(),
                w["cores"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    workers.sort();
    (tasks, workers)
}

/// Sends every hostile request, checks each answer and that the node stays
/// up with its store unchanged; returns how many were tried.
async fn run_table(api: &Api, mode: &str) -> usize {
    // One ended task, so there is something to leave untouched.
    let existing = api
        .submit(json!({"templateFunction": "echo \"$1\"", "inputList": ["a", "b"]}))
        .await;
    let done = api.wait_ended(&existing).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let (_, results_before) = api.get(&format!("/v1/tasks/{existing}/results")).await;
    let before = store_snapshot(api).await;
    let count_before = api.task_count().await;
    assert!(
        !before.1.is_empty(),
        "a worker is registered: {:?}",
        before.1
    );

    let table = cases::all(&existing);

    let started = Instant::now();
    let tried = table.0.len();
    let mut failures = Vec::new();
    for case in table.0 {
        let r = &case.request;
        let (status, body) = if r.raw {
            send_raw(&api.base, r).await
        } else {
            let headers: Vec<(&str, &str)> = r
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            api.request_with(
                r.method.clone(),
                &r.path,
                r.content_type.as_deref(),
                &headers,
                r.body.clone(),
            )
            .await
        };
        let error = &body["error"];
        let message_ok = error["message"].as_str().is_some_and(|m| !m.is_empty());
        let field_ok = match &case.field {
            Some(field) => error["field"] == field.as_str(),
            None => error.get("field").is_none(),
        };
        let only_error = body.as_object().is_some_and(|o| o.len() == 1);
        if status.as_u16() != case.status
            || error["code"] != case.code.as_str()
            || !message_ok
            || !field_ok
            || !only_error
        {
            let shown: String = body.to_string().chars().take(400).collect();
            failures.push(format!(
                "{}: expected {} {} field {:?}, got {status} {shown}",
                case.what, case.status, case.code, case.field
            ));
        }
        let (health, answer) = api.get("/healthz").await;
        assert_eq!(
            health,
            StatusCode::OK,
            "{mode}: not healthy after {}: {answer}",
            case.what
        );
    }
    assert!(
        failures.is_empty(),
        "{mode}: {} of {tried} hostile requests were answered wrongly:\n{}",
        failures.len(),
        failures.join("\n")
    );

    let after = store_snapshot(api).await;
    assert_eq!(after.0, before.0, "{mode}: the task list changed");
    assert_eq!(
        api.task_count().await,
        count_before,
        "{mode}: tasks were added"
    );
    assert_eq!(after.1, before.1, "{mode}: the workers changed");
    let (_, results_after) = api.get(&format!("/v1/tasks/{existing}/results")).await;
    assert_eq!(results_after, results_before, "{mode}: results changed");
    println!(
        "{mode}: {tried} hostile requests tried in {:.1} s; every one answered with the right 4xx and field; \
         server healthy after each; store unchanged",
        started.elapsed().as_secs_f64()
    );
    assert!(tried >= 30);
    tried
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_to_dts_up_get_a_clear_4xx_and_change_nothing() {
    let up = DtsUp::start(&[]);
    run_table(&up, "embedded dts up").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_to_a_distributed_server_get_a_clear_4xx_and_change_nothing() {
    let cluster = Cluster::start();
    let server = cluster.server("hostile-server");
    let _worker = cluster.worker("hostile-worker", 1);
    crate::distributed::wait_for_workers(&server, 1).await;
    run_table(&server, "distributed dts server").await;
}
