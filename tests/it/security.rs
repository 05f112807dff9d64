//! Safe by default: each test does what an attacker did against `dts up`
//! with its defaults, and checks that it no longer works.

use crate::common::{DEADLINE, DtsUp, dts_binary, items, task, wait_for};
use crate::seed_api::urlencode;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of a node's API.
fn authority(up: &DtsUp) -> String {
    up.base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Sends `head` (and `body`) on a new connection naming `host`, and
/// returns the status and the JSON body of the answer.
async fn raw_request(up: &DtsUp, head: &str, body: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(authority(up)).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("an answer within the deadline")
        .expect("read");
    let text = String::from_utf8_lossy(&response).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A form post as a page of another site makes the browser send it.
fn form_post(host: &str, origin: Option<&str>, form: &str) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /schedule/create HTTP/1.1\r\nHost: {host}\r\n{origin}\
         Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        form.len()
    )
}

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// The workers `GET /v1/workers` lists.
pub async fn workers(up: &DtsUp) -> Vec<Value> {
    let (status, workers) = up.get("/v1/workers").await;
    assert_eq!(status, StatusCode::OK, "{workers}");
    workers.as_array().expect("a list").clone()
}

/// The first worker listed, once there is one (a node's own worker).
pub async fn wait_for_a_dts_worker(up: &DtsUp) -> Value {
    wait_for("the local worker's heartbeat", || async {
        !workers(up).await.is_empty()
    })
    .await;
    workers(up).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_post_from_a_foreign_page_runs_nothing() {
    let dir = crate::common::shared_dir();
    let marker = dir.path().join("pwned");
    let up = DtsUp::start(&[]);
    let own = authority(&up);
    let form = format!(
        "templateFunction={}&inputList=a",
        urlencode(&format!("touch {}", marker.display()))
    );

    // The attack as measured: a foreign Origin, and a rebound Host.
    let attempts = [
        (
            own.as_str(),
            Some("http://evil.example"),
            403,
            "forbidden_origin",
        ),
        (own.as_str(), Some("null"), 403, "forbidden_origin"),
        (
            "attacker.example",
            Some("http://attacker.example"),
            421,
            "forbidden_host",
        ),
        ("attacker.example:30000", None, 421, "forbidden_host"),
    ];
    for (host, origin, status, code) in attempts {
        let (got, body) = raw_request(&up, &form_post(host, origin, &form), &form).await;
        assert_eq!(got, status, "Host {host}, Origin {origin:?}: {body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(up.task_count().await, 0, "no task was stored");

    // The node works: a task of its own page (same origin) and one without
    // an Origin run; the foreign ones never touched the marker.
    let check = dir.path().join("ran");
    let own_form = format!(
        "templateFunction={}&inputList=a",
        urlencode(&format!("touch {}", check.display()))
    );
    let origin = format!("http://{own}");
    let (status, created) =
        raw_request(&up, &form_post(&own, Some(&origin), &own_form), &own_form).await;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("an id").to_string();
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(check.exists(), "the same-origin task ran");
    assert!(!marker.exists(), "a foreign page's script ran");
    assert_eq!(up.task_count().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_cannot_read_tasks_and_loopback_names_still_can() {
    let up = DtsUp::start(&[]);
    let id = up.submit(task("echo secret-$1", &items(1))).await;
    up.wait_ended(&id).await;
    let port = authority(&up)
        .rsplit_once(':')
        .expect("a port")
        .1
        .to_string();

    for host in [
        "attacker.example",
        &format!("attacker.example:{port}"),
        "localhost:1",
    ] {
        let (status, body) = raw_request(&up, &get("/v1/tasks", host), "").await;
        assert_eq!(status, 421, "Host {host}: {body}");
        assert_eq!(body["error"]["code"], "forbidden_host");
        assert!(!body.to_string().contains(&id), "the task leaked: {body}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, body) = raw_request(&up, &get("/v1/tasks", &host), "").await;
        assert_eq!(status, 200, "Host {host}: {body}");
        assert_eq!(body[0]["id"], id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_of_node_beat_changes_nothing() {
    let up = DtsUp::start(&[]);
    let real = wait_for_a_dts_worker(&up).await;
    // What an <img src> would send.
    let (status, body) = up.get("/schedule/node-beat?nodeId=ghost&cores=4096").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("POST"),
        "{body}"
    );
    let (status, _) = up
        .get(&format!(
            "/schedule/node-beat?nodeId={}&cores=4096",
            real["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let now = workers(&up).await;
    assert_eq!(now.len(), 1, "no worker was added: {now:?}");
    assert_eq!(now[0]["id"], real["id"]);
    assert_eq!(now[0]["cores"], real["cores"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phantom_node_beat_workers_neither_change_planning_nor_replace_a_real_worker() {
    let up = DtsUp::start(&["--cores", "2"]);
    let real = wait_for_a_dts_worker(&up).await;
    assert_eq!(real["kind"], "dts", "{real}");

    // Enough items that 4096 phantom cores would plan one shard per item.
    let work = task("true", &items(200));
    let before = up.submit(work.clone()).await;
    let before = up
        .wait_task(&before, "planned", |t| t["chunksToExecute"] != 0)
        .await;

    let post = |path: String| {
        let up = &up;
        async move { up.request(Method::POST, &path, None, Vec::new()).await }
    };
    let (status, body) = post("/schedule/node-beat?nodeId=ghost&cores=4096".to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = workers(&up).await;
    assert!(
        listed
            .iter()
            .any(|w| w["id"] == "ghost" && w["kind"] == "node-beat" && w["cores"] == 4096),
        "{listed:?}"
    );

    let after = up.submit(work).await;
    let after = up
        .wait_task(&after, "planned", |t| t["chunksToExecute"] != 0)
        .await;
    assert_eq!(
        after["chunksToExecute"], before["chunksToExecute"],
        "the phantom's 4096 cores changed the plan"
    );

    // Nor can it take over the real worker's entry.
    let id = real["id"].as_str().unwrap();
    let (status, body) = post(format!(
        "/schedule/node-beat?nodeId={}&cores=4096",
        urlencode(id)
    ))
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "nodeId");
    let now = workers(&up).await;
    let entry = now
        .iter()
        .find(|w| w["id"] == real["id"])
        .expect("still listed");
    assert_eq!(
        (&entry["kind"], &entry["cores"]),
        (&json!("dts"), &real["cores"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_stalled_connections_are_closed_within_their_timeouts() {
    let up = DtsUp::start(&[
        "--set",
        "server.header-read-timeout-ms=500",
        "--set",
        "server.idle-timeout-ms=1000",
        "--set",
        "server.body-timeout-ms=500",
    ]);
    let host = authority(&up);
    let connect = || TcpStream::connect(host.clone());

    /// Reads until the server closes; fails at the deadline.
    async fn closed_by_server(mut stream: TcpStream, what: &str) -> Vec<u8> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(DEADLINE, async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "{what}: the server kept the connection open");
        got
    }

    // A connection that never sends a byte.
    let idle = connect().await.unwrap();
    // A request head that never ends (slowloris).
    let mut partial = connect().await.unwrap();
    partial
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    // A keep-alive connection left idle after one request.
    let mut kept = connect().await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // A body that stops half-way.
    let mut stalled = connect().await.unwrap();
    stalled
        .write_all(
            format!(
                "POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{\"templateFunction\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();

    let started = Instant::now();
    assert!(
        closed_by_server(idle, "an idle connection")
            .await
            .is_empty()
    );
    assert!(closed_by_server(partial, "a partial head").await.is_empty());
    let answered =
        String::from_utf8_lossy(&closed_by_server(kept, "a kept-alive connection").await)
            .to_string();
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    let refused =
        String::from_utf8_lossy(&closed_by_server(stalled, "a stalled body").await).to_string();
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains("unreadable_body"), "{refused}");
    println!(
        "all four closed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // An event stream outlives the idle timeout: it is busy, not idle.
    let id = up.submit(task("sleep 3; echo $1", &items(1))).await;
    let (_, events) = up.events(&format!("/v1/tasks/{id}/events")).await;
    let last = events.last().expect("events");
    assert_eq!(
        last["status"], "COMPLETED",
        "the stream ran to the end: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_cap_are_refused_at_once_and_the_server_recovers() {
    let up = DtsUp::start(&["--set", "server.max-connections=16"]);
    let host = authority(&up);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(&host).await.unwrap());
    }
    // Every connection beyond the cap is answered 503 or closed at once.
    for i in 0..50 {
        let mut surplus = TcpStream::connect(&host).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(DEADLINE, surplus.read_to_end(&mut answer)).await;
        assert!(read.is_ok(), "connection {i} over the cap was left open");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 503"),
            "connection {i}: {text}"
        );
    }
    drop(held);
    wait_for("/healthz answering once the surplus is gone", || async {
        match reqwest::get(format!("{}/healthz", up.base)).await {
            Ok(response) => {
                crate::contract::check_head(&Method::GET, &response);
                response.status() == StatusCode::OK
            }
            Err(_) => false,
        }
    })
    .await;
    let log = up.log_text();
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(!log.contains("cannot accept"), "accept errors: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_pauses_accepting_without_spinning_and_recovers() {
    let dir = crate::common::shared_dir();
    let log = dir.path().join("dts.log");
    let mut command = Command::new(dts_binary());
    command
        .args(["up", "--port", "0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("DTS_LOG", "info")
        .env_remove("DTS_AUTH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 96,
                rlim_max: 96,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start dts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads stdout to its end, so the node never writes into a closed pipe.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(base) = line.strip_prefix("dts listening on ") {
                let _ = tx.send(base.to_string());
            }
        }
    });
    let base = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!(
            "dts did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let host = base.trim_start_matches("http://").to_string();
    // More connections than the process has descriptors left.
    let mut held = Vec::new();
    for _ in 0..150 {
        match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(&host)).await {
            Ok(Ok(stream)) => held.push(stream),
            _ => break,
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(held);
    let client = reqwest::Client::new();
    wait_for("/healthz answering once descriptors are free", || async {
        match client.get(format!("{base}/healthz")).send().await {
            Ok(response) => {
                crate::contract::check_head(&Method::GET, &response);
                response.status() == StatusCode::OK
            }
            Err(_) => false,
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let warnings = text.matches("cannot accept connections").count();
    assert!(warnings >= 1, "the descriptors ran out: {text}");
    assert!(
        warnings <= 3,
        "the accept error was logged {warnings} times: a busy loop?\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_megabytes_of_variables_are_refused_naming_variable_json() {
    let up = DtsUp::start(&[]);
    let body = json!({
        "templateFunction": "echo $1",
        "inputList": ["a"],
        "variableJson": {"unused": "v".repeat(30_000_000)},
    });
    for path in ["/v1/tasks", "/schedule/create"] {
        let (status, answer) = up.post_json(path, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "too_large", "{answer}");
        assert_eq!(answer["error"]["field"], "variableJson", "{answer}");
    }
    assert_eq!(up.task_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_lists_and_events_leave_out_inputs_and_variables_unless_asked() {
    let up = DtsUp::start(&[]);
    let id = up
        .submit(json!({
            "templateFunction": "echo {{greeting}} $1",
            "variableJson": {"greeting": "hi"},
            "inputList": ["a", "b"],
        }))
        .await;
    up.wait_ended(&id).await;

    let (_, list) = up.get("/v1/tasks").await;
    assert_eq!(list[0]["id"], id.as_str());
    assert!(list[0].get("variableJson").is_none(), "{list}");
    assert!(list[0].get("inputList").is_none(), "{list}");
    let (_, full) = up.get("/v1/tasks?full=true").await;
    assert_eq!(full[0]["variableJson"], json!({"greeting": "hi"}));
    assert_eq!(full[0]["inputList"], json!(["a", "b"]));
    // One task keeps its whole shape.
    let (_, one) = up.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(one["variableJson"], json!({"greeting": "hi"}));
    assert_eq!(one["inputList"], json!(["a", "b"]));

    for (query, full) in [("", false), ("?full=true", true)] {
        let (_, events) = up.events(&format!("/v1/tasks/{id}/events{query}")).await;
        assert!(!events.is_empty(), "no event for {query:?}");
        for event in events {
            assert_eq!(event.get("variableJson").is_some(), full, "{event}");
            assert_eq!(event.get("inputList").is_some(), full, "{event}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_limits_are_kept_and_shown() {
    let up = DtsUp::start(&[]);
    let (status, created) = up
        .post_json(
            "/v1/tasks",
            &json!({"templateFunction": "true", "inputList": ["a"], "memoryMb": 256, "cpus": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(
        (&created["memoryMb"], &created["cpus"]),
        (&json!(256), &json!(0.5))
    );
    let id = created["id"].as_str().unwrap();
    let task = up.task(id).await;
    assert_eq!(
        (&task["memoryMb"], &task["cpus"]),
        (&json!(256), &json!(0.5))
    );
    let plain = up.submit(task_body()).await;
    let plain = up.task(&plain).await;
    assert_eq!(
        (&plain["memoryMb"], &plain["cpus"]),
        (&Value::Null, &Value::Null)
    );
}

fn task_body() -> Value {
    task("true", &items(1))
}

/// Runs `dts ARGS` that must fail at start-up; returns its standard error.
fn start_must_fail(args: &[&str], data_dir: &Path) -> String {
    let output = dts_testkit::output_within(
        Command::new(dts_binary())
            .args(["up", "--port", "0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env_remove("DTS_AUTH_TOKEN"),
        DEADLINE,
        &format!("dts up {args:?}, which must refuse to start"),
    );
    assert!(!output.status.success(), "dts {args:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_fifteen_byte_token_refuses_to_start_naming_its_key() {
    let dir = crate::common::shared_dir();
    let stderr = start_must_fail(
        &["--set", "server.auth-token=fifteen-bytes-x"],
        &dir.path().join("data"),
    );
    assert!(stderr.contains("server.auth-token"), "{stderr}");
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
    assert!(
        !stderr.contains("fifteen-bytes-x"),
        "the token leaked: {stderr}"
    );

    let missing = dir.path().join("no-such-token");
    let arg = format!("server.auth-token-file={}", missing.display());
    let stderr = start_must_fail(&["--set", &arg], &dir.path().join("data"));
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_works_and_the_bearer_scheme_is_read_in_any_case() {
    use std::os::unix::fs::PermissionsExt;
    let dir = crate::common::shared_dir();
    let token = "a-token-from-a-file-0123456789";
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let arg = format!("server.auth-token-file={}", file.display());
    let up = DtsUp::start(&["--set", &arg]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/tasks", up.base);

    let anonymous = client.get(&url).send().await.unwrap();
    let (status, _, _) = crate::contract::read_checked(&Method::GET, anonymous).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = client
            .get(&url)
            .header("Authorization", format!("{scheme} {token}"))
            .send()
            .await
            .unwrap();
        let (status, _, _) = crate::contract::read_checked(&Method::GET, response).await;
        assert_eq!(status, StatusCode::OK, "{scheme}");
    }
    let wrong = client
        .get(&url)
        .header("Authorization", format!("Bearer {token}x"))
        .send()
        .await
        .unwrap();
    let (status, _, _) = crate::contract::read_checked(&Method::GET, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        !std::fs::read_to_string(&up.log)
            .unwrap_or_default()
            .contains(token)
    );
}
