//! What a cancel's answer promises in distributed mode: once
//! `POST /v1/tasks/{id}/cancel` answered, no item of the task starts, even
//! on a worker that was frozen while the task was cancelled (issue 14, the
//! chaos soak's rule 5).

use crate::common::{DEADLINE, DtsUp, shared_dir};
use crate::distributed::{Cluster, wait_for_workers};
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

/// A task whose items log their start (ms since the epoch, then the input)
/// to `log` and sleep `secs`.
fn logged_task(log: &Path, inputs: usize, secs: &str) -> serde_json::Value {
    json!({
        "templateFunction": "echo \"$(date +%s%3N) $1\" >> {{log}}; sleep {{secs}}",
        "variableJson": {"log": log.display().to_string(), "secs": secs},
        "inputList": (0..inputs).map(|i| format!("item-{i}")).collect::<Vec<_>>(),
    })
}

/// The start times logged to `log`.
fn starts(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').next()?.parse().ok())
        .collect()
}

async fn wait_for_starts(log: &Path, n: usize) {
    dts_testkit::wait_until(DEADLINE, &format!("{n} items to start"), || async {
        starts(log).len() >= n
    })
    .await;
}

/// Submits tasks of many short items and cancels each while its items
/// run on every slot; no item may log a start after the cancel answered.
async fn no_start_after_cancels(server: &DtsUp) {
    let dir = shared_dir();
    // Several rounds: the race between a slot's next start and the cancel
    // shows in one of them when it is there.
    for round in 0..4 {
        let log = dir.path().join(format!("starts-{round}.log"));
        let id = server.submit(logged_task(&log, 2000, "0.05")).await;
        wait_for_starts(&log, 20 + round * 5).await;
        let (status, body) = server
            .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answered = now_ms();
        // Time for a wrongly started item to log its start.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let late: Vec<u64> = starts(&log)
            .into_iter()
            .filter(|at| *at > answered)
            .map(|at| at - answered)
            .collect();
        assert_eq!(
            late,
            Vec::<u64>::new(),
            "round {round}: items started this many ms after the cancel answered"
        );
        assert_eq!(server.task(&id).await["status"], "CANCELLED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_item_starts_after_the_cancel_answered_on_two_busy_workers() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _w1 = cluster.worker("w1", 2);
    let _w2 = cluster.worker("w2", 2);
    wait_for_workers(&server, 2).await;
    no_start_after_cancels(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_item_starts_after_the_cancel_answered_in_dts_up() {
    let up = DtsUp::start(&["--cores", "4"]);
    no_start_after_cancels(&up).await;
}

/// `CLIENT PAUSE ms ALL`: Redis answers no client for `ms`.
fn pause_redis(port: u16, ms: u32) {
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &port.to_string(),
            "CLIENT",
            "PAUSE",
            &ms.to_string(),
            "ALL",
        ])
        .output()
        .expect("run redis-cli");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "OK",
        "CLIENT PAUSE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_while_its_task_was_cancelled_starts_none_of_its_items_when_it_thaws() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let worker = cluster.worker("frozen", 2);
    wait_for_workers(&server, 1).await;
    let dir = shared_dir();
    let log = dir.path().join("starts.log");
    // Items that fail at once and are retried after a growing backoff: at
    // any moment the slots are most likely waiting to retry, and when the
    // worker thaws, the retries that came due while it was frozen start
    // without asking the store anything (what the chaos soak saw).
    let mut body = logged_task(&log, 200, "0");
    body["templateFunction"] = json!("echo \"$(date +%s%3N) $1\" >> {{log}}; exit 1");
    body["retries"] = json!(5);
    let id = server.submit(body).await;
    wait_for_starts(&log, 4).await;

    worker.signal(libc::SIGSTOP);
    let (status, body) = server
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answered = now_ms();
    // The frozen worker's lease (3 s) lapses meanwhile; its running items end.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_thaw = starts(&log).len();
    // Redis holds every command for 3 s from now, so the thawed worker
    // cannot learn of the cancel from the store before its retries come
    // due: only its own clock can tell it the lease may have lapsed.
    pause_redis(cluster.redis.port(), 3000);
    worker.signal(libc::SIGCONT);
    // Time for the thawed worker to start what it would start, during the
    // pause and after it.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let all = starts(&log);
    assert_eq!(
        all.len(),
        before_thaw,
        "the thawed worker started items of the cancelled task"
    );
    assert_eq!(
        all.iter().filter(|at| **at > answered).count(),
        0,
        "items started after the cancel answered"
    );
    assert_eq!(server.task(&id).await["status"], "CANCELLED");
}
