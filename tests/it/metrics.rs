//! `/metrics`: what `promtool` makes of it, and whether its counters tell
//! the truth about a task that ran, on `dts up` and on a distributed worker.

use crate::common::{Api, DEADLINE, DtsUp, task};
use crate::distributed::Cluster;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

const TOKEN: &str = "metrics-token-0123456789";

/// Seven items; the three `bad-*` ones exit 3.
fn seven_with_three_failing() -> Value {
    let inputs: Vec<String> = ["a", "bad-1", "b", "bad-2", "c", "bad-3", "d"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    task("case \"$1\" in bad-*) exit 3;; esac; echo ok", &inputs)
}

/// The body of `GET /metrics` from `api`, which must answer 200.
async fn scrape(api: &Api) -> String {
    let (status, body) = api.get("/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    match body {
        Value::String(text) => text,
        other => panic!("/metrics is not text: {other}"),
    }
}

/// The value of the sample `series` (name and labels exactly as rendered,
/// labels in alphabetical order), or `None` if there is no such line.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().expect("a number"))
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/install-test-deps.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let output = dts_testkit::finish_within(&mut child, DEADLINE, "promtool check metrics");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_finds_nothing_wrong_with_the_metrics_of_a_dts_up_that_ran_a_task() {
    let up = DtsUp::start(&["--cores", "2"]);
    let id = up.submit(seven_with_three_failing()).await;
    up.wait_ended(&id).await;
    let text = scrape(&up).await;
    // Every kind of family is there to be checked: counters, gauges with
    // labels, histograms with labels.
    for family in [
        "dts_items_started_total",
        "dts_worker_slots{",
        "dts_item_duration_seconds_bucket{",
        "dts_http_request_duration_seconds_bucket{",
        "dts_tasks{",
        "dts_shards_waiting ",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed: {said}\n{text}");
    assert_eq!(said, "", "promtool had remarks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_task_the_item_counters_of_dts_up_equal_its_real_counts() {
    let dir = tempfile::TempDir::new().unwrap();
    let up = DtsUp::start_in(
        &dir.path().join("data"),
        &["--cores", "2"],
        &[("DTS_AUTH_TOKEN", TOKEN)],
    );
    let id = up.submit(seven_with_three_failing()).await;
    let ended = up.wait_ended(&id).await;
    assert_eq!(
        (
            ended["itemsSucceeded"].as_u64(),
            ended["itemsFailed"].as_u64()
        ),
        (Some(4), Some(3))
    );

    let before = scrape(&up).await;
    assert_eq!(value(&before, "dts_items_started_total"), 7.0);
    assert_eq!(value(&before, "dts_items_succeeded_total"), 4.0);
    assert_eq!(value(&before, "dts_items_failed_total"), 3.0);
    assert_eq!(value(&before, "dts_item_duration_seconds_count"), 7.0);
    assert_eq!(value(&before, "dts_tasks_submitted_total"), 1.0);
    assert_eq!(
        value(&before, "dts_task_first_item_latency_seconds_count"),
        1.0
    );
    // From the store: the one task in its final status, nothing queued.
    let status = ended["status"].as_str().expect("a status");
    assert_eq!(
        value(&before, &format!("dts_tasks{{status=\"{status}\"}}")),
        1.0
    );
    assert_eq!(value(&before, r#"dts_tasks{status="INPROGRESS"}"#), 0.0);
    assert_eq!(value(&before, "dts_shards_waiting"), 0.0);
    let (_, workers) = up.get("/v1/workers").await;
    let worker = workers[0]["id"].as_str().expect("the worker's id");
    assert_eq!(
        value(&before, &format!("dts_worker_slots{{worker=\"{worker}\"}}")),
        2.0
    );
    assert_eq!(
        value(
            &before,
            &format!("dts_worker_slots_busy{{worker=\"{worker}\"}}")
        ),
        0.0
    );
    assert_eq!(
        value(
            &before,
            r#"dts_http_requests_total{method="POST",route="/v1/tasks",status="202"}"#
        ),
        1.0
    );

    // Requests counted by their route template, never their path: three
    // reads of the task, one of a task that is not there, one path no
    // route matches, and one without the token. (`no-such-task-0` cannot
    // be an id: 400.)
    for _ in 0..3 {
        assert_eq!(up.get(&format!("/v1/tasks/{id}")).await.0, StatusCode::OK);
    }
    assert_eq!(
        up.get("/v1/tasks/no-such-task-0").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        up.get(&format!("/no/such/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    let anonymous = reqwest::get(format!("{}/metrics", up.base)).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let after = scrape(&up).await;
    let grew = |series: &str| value(&after, series) - sample(&before, series).unwrap_or(0.0);
    assert_eq!(
        grew(r#"dts_http_requests_total{method="GET",route="/v1/tasks/{id}",status="200"}"#),
        3.0
    );
    assert_eq!(
        grew(r#"dts_http_requests_total{method="GET",route="/v1/tasks/{id}",status="400"}"#),
        1.0
    );
    assert_eq!(
        grew(r#"dts_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        grew(r#"dts_http_requests_total{method="GET",route="/metrics",status="200"}"#),
        1.0
    );
    assert_eq!(
        grew(r#"dts_http_requests_total{method="GET",route="/metrics",status="401"}"#),
        1.0
    );
    assert_eq!(
        grew(r#"dts_http_request_duration_seconds_count{method="GET",route="/v1/tasks/{id}"}"#),
        4.0
    );
    assert!(!after.contains(&id), "a task id became a label:\n{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_distributed_worker_serves_its_own_metrics_on_its_metrics_port() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let port = dts_testkit::free_port();
    let mut args = cluster.node_args();
    args.extend(["--set".to_string(), format!("worker.metrics-port={port}")]);
    let _worker = cluster.worker_with("metered", 2, args, &[]);
    crate::distributed::wait_for_workers(&server, 1).await;

    let id = server.submit(seven_with_three_failing()).await;
    server.wait_ended(&id).await;

    let worker = scrape(&Api::at(format!("http://127.0.0.1:{port}"))).await;
    assert_eq!(value(&worker, r#"dts_worker_slots{worker="metered"}"#), 2.0);
    assert_eq!(
        value(&worker, r#"dts_worker_slots_busy{worker="metered"}"#),
        0.0
    );
    assert_eq!(value(&worker, "dts_items_started_total"), 7.0);
    assert_eq!(value(&worker, "dts_items_succeeded_total"), 4.0);
    assert_eq!(value(&worker, "dts_items_failed_total"), 3.0);
    assert_eq!(value(&worker, "dts_item_duration_seconds_count"), 7.0);
    assert_eq!(
        value(&worker, "dts_task_first_item_latency_seconds_count"),
        1.0
    );
    // The submission was the server's: each process counts its own.
    assert_eq!(value(&worker, "dts_tasks_submitted_total"), 0.0);
    let (ok, said) = promtool_check(&worker);
    assert!(ok, "promtool check metrics failed: {said}\n{worker}");

    let server_text = scrape(&server).await;
    assert_eq!(value(&server_text, "dts_tasks_submitted_total"), 1.0);
    assert_eq!(value(&server_text, "dts_items_started_total"), 0.0);
    assert_eq!(
        sample(&server_text, r#"dts_worker_slots{worker="metered"}"#),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_metrics_count_its_store_errors_while_redis_is_down() {
    let mut cluster = Cluster::start();
    let server = cluster.server("server");
    let port = dts_testkit::free_port();
    let mut args = cluster.node_args();
    args.extend(["--set".to_string(), format!("worker.metrics-port={port}")]);
    let _worker = cluster.worker_with("cut-off", 1, args, &[]);
    crate::distributed::wait_for_workers(&server, 1).await;
    let metrics = Api::at(format!("http://127.0.0.1:{port}"));
    let heartbeat_errors = r#"dts_store_errors_total{operation="heartbeat"}"#;
    assert_eq!(sample(&scrape(&metrics).await, heartbeat_errors), None);

    cluster.redis.stop();
    // The worker heartbeats every 500 ms (Cluster's settings); each one
    // fails while Redis is down.
    dts_testkit::wait_for(
        DEADLINE,
        "the worker to count a failed heartbeat",
        || async {
            let text = scrape(&metrics).await;
            match sample(&text, heartbeat_errors) {
                Some(n) if n >= 1.0 => Ok(()),
                _ => Err(text),
            }
        },
    )
    .await;
    cluster.redis.restart();
}
