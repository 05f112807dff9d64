//! Tasks that wait for other tasks (`after`, `afterStatus`), over HTTP on
//! `dts up` and on a distributed cluster, and from `dts submit --after`.

use crate::common::{Api, DtsUp, dts_client, shared_dir, task, text};
use crate::distributed::{Cluster, wait_for_workers};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

/// A task of one item that appends `name` to `dir/ran`, then exits `code`.
fn step(dir: &Path, name: &str, code: i32) -> Value {
    task(
        &format!(
            "sleep 0.5; echo {name} >> '{}'/ran; exit {code}",
            dir.display()
        ),
        &["x".to_string()],
    )
}

fn ran(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ran")).unwrap_or_default()
}

/// first → middle (fails) → last: the middle runs after the first, and the
/// last is skipped, naming the middle, and never runs.
async fn a_chain_whose_middle_fails_skips_the_last(api: &Api, dir: &Path) {
    let first = api.submit(step(dir, "first", 0)).await;
    let mut middle = step(dir, "middle", 3);
    middle["after"] = json!([first]);
    let middle = api.submit(middle).await;
    let mut last = step(dir, "last", 0);
    last["after"] = json!([middle]);
    let last = api.submit(last).await;
    let waiting = api.task(&last).await;
    assert_eq!(waiting["status"], "WAITING", "{waiting}");
    assert_eq!(waiting["after"], json!([middle]));
    assert_eq!(waiting["afterStatus"], "COMPLETED");
    assert_eq!(
        waiting["waitingReason"],
        format!("waiting for task {middle} to complete")
    );

    let skipped = api.wait_ended(&last).await;
    assert_eq!(skipped["status"], "SKIPPED", "{skipped}");
    let reason = skipped["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("task {middle} ended FAILED")),
        "{reason}"
    );
    assert_eq!(api.wait_ended(&first).await["status"], "COMPLETED");
    assert_eq!(api.wait_ended(&middle).await["status"], "FAILED");
    assert_eq!(
        ran(dir),
        "first\nmiddle\n",
        "in order, and the last never ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dts_up_a_chain_whose_middle_task_fails_skips_the_last() {
    let dir = shared_dir();
    let up = DtsUp::start(&["--cores", "2"]);
    a_chain_whose_middle_fails_skips_the_last(&up, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_chain_whose_middle_task_fails_skips_the_last() {
    let dir = shared_dir();
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _worker = cluster.worker("w1", 2);
    wait_for_workers(&server, 1).await;
    a_chain_whose_middle_fails_skips_the_last(&server, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_after_is_refused_naming_the_field_and_stores_nothing() {
    let up = DtsUp::start(&["--cores", "1"]);
    bad_afters_are_refused(&up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_bad_after_is_refused_naming_the_field_and_stores_nothing() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _worker = cluster.worker("w1", 1);
    wait_for_workers(&server, 1).await;
    bad_afters_are_refused(&server).await;
}

/// An unknown, malformed or own id in `after`, and `afterStatus` with a
/// wrong value: each a 400 naming the field, and nothing stored.
async fn bad_afters_are_refused(up: &Api) {
    let known = up.submit(task("true", &["x".to_string()])).await;
    let unknown = "00000000-0000-4000-8000-000000000000";
    let before = up.task_count().await;
    for (after, extra, field, code, says) in [
        (
            json!([known, unknown]),
            json!({}),
            "after[1]",
            "unknown_task",
            format!("no task with id {unknown}"),
        ),
        (
            json!(["nope"]),
            json!({}),
            "after[0]",
            "invalid_field",
            "must be a task id".to_string(),
        ),
        (
            json!([unknown]),
            json!({"id": unknown}),
            "after[0]",
            "invalid_field",
            "cannot wait for itself".to_string(),
        ),
        (
            json!([known]),
            json!({"afterStatus": "FAILED"}),
            "afterStatus",
            "invalid_field",
            "COMPLETED or ENDED".to_string(),
        ),
    ] {
        let mut body = task("true", &["x".to_string()]);
        body["after"] = after;
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, answer) = up.post_json("/v1/tasks", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&says), "{message}");
    }
    assert_eq!(
        up.task_count().await,
        before,
        "a refused task is not stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_submit_after_waits_for_the_task_and_after_status_ended_runs_after_a_failure() {
    let dir = shared_dir();
    let up = DtsUp::start(&["--cores", "2"]);
    let failing = up.submit(step(dir.path(), "failing", 1)).await;
    let log = dir.path().join("ran");
    let template = format!("echo \"$1\" >> '{}'", log.display());
    let out = dts_client(
        &up,
        &[
            "submit",
            "--after",
            &failing,
            "--after-status",
            "ended",
            "--wait",
            "--json",
            &template,
            ":::",
            "cleanup",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("--json prints the task");
    assert_eq!(shown["status"], "COMPLETED");
    assert_eq!(shown["after"], json!([failing]));
    assert_eq!(shown["afterStatus"], "ENDED");
    assert_eq!(ran(dir.path()), "failing\ncleanup\n");

    let out = dts_client(
        &up,
        &[
            "submit", "--after", &failing, "--wait", "--json", "true", ":::", "x",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "a skipped task is no success");
    let skipped: Value = serde_json::from_slice(&out.stdout).expect("--json prints the task");
    assert_eq!(skipped["status"], "SKIPPED", "{skipped}");
    let id = skipped["id"].as_str().unwrap_or_default();
    let out = dts_client(&up, &["results", id]);
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "dts: task {id} was skipped, so none of its 1 item ran: prerequisite task {failing} ended FAILED, \
             and this task runs only after it is COMPLETED (afterStatus)"
        )
    );

    let out = dts_client(
        &up,
        &[
            "submit",
            "--after",
            &failing,
            "--after-status",
            "done",
            "true",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("afterStatus must be COMPLETED or ENDED"),
        "{}",
        text(&out.stderr)
    );
}
