//! `waitingReason` with real processes: a task no live worker can run says
//! why in every v1 view of it and in `dts status`, and stops saying so once
//! a worker that can run it is there.

use crate::common::{Api, DEADLINE, DtsUp, dts_binary, items, run_dts, task};
use crate::distributed::Cluster;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Command;

const NO_GPU: &str = "no live worker has labels gpu=a100";

/// A task of `n` items that requires a worker labelled `gpu=a100`.
fn gpu_task(n: usize) -> Value {
    let mut body = task("echo $1", &items(n));
    body["requires"] = json!({"gpu": "a100"});
    body
}

/// How many results the task has recorded.
async fn result_count(api: &Api, id: &str) -> u64 {
    let (status, page) = api.get(&format!("/v1/tasks/{id}/results?limit=1")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["total"].as_u64().expect("total")
}

/// The workers that ran the task's items.
async fn workers_that_ran(api: &Api, id: &str) -> Vec<String> {
    let mut workers: Vec<String> = api
        .all_results(id, "")
        .await
        .iter()
        .filter_map(|r| r["worker"].as_str().map(String::from))
        .collect();
    workers.dedup();
    workers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_no_live_worker_can_run_says_why_in_the_api_and_in_dts_status() {
    let cluster = Cluster::start();
    let server = cluster.server("server");

    // No worker at all: the submission's own answer already says so.
    let (status, submitted) = server.post_json("/v1/tasks", &gpu_task(2)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{submitted}");
    assert_eq!(submitted["waitingReason"], NO_GPU, "{submitted}");
    let gpu = submitted["id"].as_str().expect("id").to_string();
    let plain = server.submit(task("echo $1", &items(2))).await;

    assert_eq!(server.task(&gpu).await["waitingReason"], NO_GPU);
    assert_eq!(server.task(&plain).await["waitingReason"], "no live worker");
    let (status, list) = server.get("/v1/tasks").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let reasons: Vec<(&str, &Value)> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| (t["id"].as_str().expect("id"), &t["waitingReason"]))
        .collect();
    assert_eq!(
        reasons,
        [
            (plain.as_str(), &json!("no live worker")),
            (gpu.as_str(), &json!(NO_GPU))
        ]
    );

    let out = run_dts(
        Command::new(dts_binary())
            .args(["status", &gpu, "--server", &server.base])
            .env_remove("DTS_AUTH_TOKEN"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("\nwaiting:   {NO_GPU}\n")),
        "{stdout}"
    );

    // A worker without labels runs the plain task, which then says nothing.
    let _plain_worker = cluster.worker("w-plain", 1);
    let done = server.wait_ended(&plain).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(done.get("waitingReason").is_none(), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dts_up_without_labels_a_task_requiring_one_waits_with_its_reason_and_runs_nothing() {
    let up = DtsUp::start(&["--cores", "1"]);
    let gpu = up.submit(gpu_task(2)).await;
    // Submitted after it, on the same single slot: once it has completed,
    // the worker has had every chance to take the gpu task.
    let plain = up.submit(task("echo $1", &items(2))).await;
    let done = up.wait_ended(&plain).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let waiting = up.task(&gpu).await;
    assert_eq!(waiting["waitingReason"], NO_GPU, "{waiting}");
    assert_eq!(waiting["itemsSucceeded"], 0, "{waiting}");
    assert_eq!(waiting["itemsFailed"], 0, "{waiting}");
    assert_eq!(result_count(&up, &gpu).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_task_runs_on_the_worker_with_its_labels_once_it_comes_and_stops_saying_why() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _plain_worker = cluster.worker("w-plain", 1);
    let gpu = server.submit(gpu_task(3)).await;
    let plain = server.submit(task("echo $1", &items(2))).await;
    let done = server.wait_ended(&plain).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let waiting = server.task(&gpu).await;
    assert_eq!(waiting["waitingReason"], NO_GPU, "{waiting}");
    assert_eq!(result_count(&server, &gpu).await, 0);

    // The event stream, opened while it waits, says why in its first event;
    // it ends when the task does, with a last event that no longer says so.
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/tasks/{gpu}/events", server.base))
        .send()
        .await
        .expect("events request sent");
    crate::contract::check_head(&reqwest::Method::GET, &stream);
    assert_eq!(stream.status(), StatusCode::OK);
    let mut text = String::new();
    let deadline = std::time::Instant::now() + DEADLINE;
    while !text.contains("\n\n") {
        assert!(
            std::time::Instant::now() < deadline,
            "no first event: {text:?}"
        );
        let chunk = tokio::time::timeout(DEADLINE, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no first event within {DEADLINE:?}: {text:?}"))
            .expect("event stream readable")
            .unwrap_or_else(|| panic!("the stream ended before its first event: {text:?}"));
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut args = cluster.node_args();
    args.extend(["--label", "gpu=a100"].map(String::from));
    let _gpu_worker = cluster.worker_with("w-gpu", 1, args, &[]);
    let rest = tokio::time::timeout(DEADLINE, stream.text())
        .await
        .unwrap_or_else(|_| panic!("the event stream did not end within {DEADLINE:?}"))
        .expect("event stream body");
    text.push_str(&rest);
    let events: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).expect("an event's data is JSON"))
        .collect();
    let first = events.first().expect("a first event");
    assert_eq!(first["waitingReason"], NO_GPU, "{first}");
    let last = events.last().expect("a last event");
    assert_eq!(last["status"], "COMPLETED", "{last}");
    assert!(last.get("waitingReason").is_none(), "{last}");

    let done = server.task(&gpu).await;
    assert_eq!(done["itemsSucceeded"], 3, "{done}");
    assert!(done.get("waitingReason").is_none(), "{done}");
    assert_eq!(workers_that_ran(&server, &gpu).await, ["w-gpu"]);
}
