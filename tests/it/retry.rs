//! `dts retry` and `POST /v1/tasks/{id}/retry`: only the failed and
//! never-run items run again, as the same task, in embedded and in
//! distributed mode.

use crate::common::{Api, DtsUp, dts_client, items, shared_dir, task, text};
use crate::distributed::Cluster;
use reqwest::StatusCode;
use serde_json::Value;
use std::path::Path;

/// Ten items that each append their input to their own log in `dir`; items
/// 3 and 7 fail (exit 3) unless `dir/marker` exists.
fn flaky_task(dir: &Path) -> Value {
    let dir = dir.display();
    task(
        &format!(
            "echo \"$1\" >> '{dir}'/\"$1\".log\n\
             case \"$1\" in item-3|item-7) [ -e '{dir}/marker' ] || exit 3 ;; esac\n\
             echo \"ok $1\""
        ),
        &items(10),
    )
}

/// How often each item ran, by the lines of its log.
fn runs(dir: &Path) -> Vec<usize> {
    (0..10)
        .map(|i| {
            std::fs::read_to_string(dir.join(format!("item-{i}.log")))
                .map(|log| log.lines().count())
                .unwrap_or(0)
        })
        .collect()
}

/// Runs the flaky task to its failure on `api`, checking the counts.
async fn failed_once(api: &Api, dir: &Path) -> String {
    let id = api.submit(flaky_task(dir)).await;
    let ended = api.wait_ended(&id).await;
    assert_eq!(ended["status"], "FAILED", "{ended}");
    assert_eq!(
        (
            ended["itemsSucceeded"].as_u64(),
            ended["itemsFailed"].as_u64()
        ),
        (Some(8), Some(2))
    );
    assert_eq!(runs(dir), [1; 10]);
    id
}

/// After the retry: every item succeeded once in all, items 3 and 7 ran
/// twice and show attempt 2 with their failed first attempt.
async fn check_retried(api: &Api, dir: &Path, id: &str) {
    let done = api.task(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        (
            done["itemsSucceeded"].as_u64(),
            done["itemsFailed"].as_u64()
        ),
        (Some(10), Some(0))
    );
    assert_eq!(runs(dir), [1, 1, 1, 2, 1, 1, 1, 2, 1, 1]);
    let results = api.all_results(id, "").await;
    assert_eq!(results.len(), 10);
    for (index, item) in results.iter().enumerate() {
        assert_eq!(item["index"], index as u64, "{item}");
        assert_eq!(item["succeeded"], true, "{item}");
        if index == 3 || index == 7 {
            assert_eq!(item["attempt"], 2, "{item}");
            let past = item["previousAttempts"]
                .as_array()
                .expect("previousAttempts");
            assert_eq!(past.len(), 1, "{item}");
            assert_eq!(past[0]["attempt"], 1, "{item}");
            assert_eq!(past[0]["exitCode"], 3, "{item}");
            assert!(past[0]["worker"].is_string(), "{item}");
        } else {
            assert_eq!(item["attempt"], 1, "{item}");
            assert_eq!(item.get("previousAttempts"), None, "{item}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_retry_wait_runs_only_the_failed_items_again_and_results_show_their_earlier_attempt() {
    let dir = shared_dir();
    let up = DtsUp::start(&[]);
    let id = failed_once(&up, dir.path()).await;

    std::fs::write(dir.path().join("marker"), "").unwrap();
    let out = dts_client(&up, &["retry", "--wait", &id[..8]]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "retrying task {id}: 2 items queued (2 failed, 0 never ran)"
        )),
        "{stderr}"
    );
    check_retried(&up, dir.path(), &id).await;

    let out = dts_client(&up, &["results", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let item3: Vec<&str> = shown
        .lines()
        .skip_while(|line| !line.starts_with("#3 "))
        .take(3)
        .collect();
    assert!(item3[0].starts_with("#3 \"item-3\" [ok] "), "{shown}");
    assert!(item3[0].contains(", attempt 2, on "), "{shown}");
    assert_eq!(item3[1], "  stdout| ok item-3", "{shown}");
    assert!(
        item3[2].starts_with("  earlier: attempt 1 [exit 3] "),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_running_completed_or_unknown_task_is_refused_with_its_reason_and_exit_2() {
    let up = DtsUp::start(&[]);
    let done = up.submit(task("echo \"$1\"", &items(2))).await;
    assert_eq!(up.wait_ended(&done).await["status"], "COMPLETED");
    let running = up.submit(task("sleep 30", &items(1))).await;
    up.wait_task(&running, "running", |t| t["status"] == "INPROGRESS")
        .await;

    let (status, error) = up
        .post_json(&format!("/v1/tasks/{running}/retry"), &Value::Null)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"]["code"], "conflict");
    let out = dts_client(&up, &["retry", &running]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "task {running}: the task is still running (INPROGRESS); retry it after it ends (HTTP 409)"
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(up.task(&running).await["status"], "INPROGRESS");

    let out = dts_client(&up, &["retry", "--wait", &done]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "task {done}: nothing to retry: every item succeeded (HTTP 409)"
        )),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.stdout, b"");

    let out = dts_client(&up, &["retry", "0000dead"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no task with id \"0000dead\""),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_in_distributed_mode_runs_only_the_failed_items_on_the_workers() {
    let dir = shared_dir();
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _worker = cluster.worker("w1", 2);
    let id = failed_once(&server, dir.path()).await;

    std::fs::write(dir.path().join("marker"), "").unwrap();
    let (status, retried) = server
        .post_json(&format!("/v1/tasks/{id}/retry"), &Value::Null)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(
        (&retried["queued"], &retried["failed"], &retried["notRun"]),
        (&Value::from(2), &Value::from(2), &Value::from(0))
    );
    assert_eq!(retried["task"]["id"], id.as_str());
    assert_eq!(retried["task"]["status"], "INPROGRESS");
    assert_eq!(retried["task"]["itemsFailed"], 0);
    server.wait_ended(&id).await;
    check_retried(&server, dir.path(), &id).await;
}
