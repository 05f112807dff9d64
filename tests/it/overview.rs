//! `GET /v1/overview` and `GET /v1/tasks/{id}/activity`: the dashboard's
//! summaries count exactly what ran, and show items while they run, in
//! embedded and in distributed mode; a `dts server` serves the dashboard.

use crate::common::{Api, DtsUp, items, task, wait_for};
use crate::distributed::{Cluster, wait_for_workers};
use reqwest::StatusCode;
use serde_json::Value;

/// Six items; `item-3` fails with exit 4.
fn one_failing_of_six() -> Value {
    task(
        "case \"$1\" in item-3) echo bad >&2; exit 4 ;; esac\necho \"ok $1\"",
        &items(6),
    )
}

fn number(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{value} is not a count"))
}

/// Runs the six items to their end on `api` and checks both summaries
/// against them; `cores` is what the live workers have in all.
async fn check_counts(api: &Api, cores: u64) {
    let id = api.submit(one_failing_of_six()).await;
    let ended = api.wait_ended(&id).await;
    assert_eq!(ended["status"], "FAILED", "{ended}");

    let (status, overview) = api.get("/v1/overview").await;
    assert_eq!(status, StatusCode::OK, "{overview}");
    assert_eq!(overview["tasks"]["FAILED"], 1, "{overview}");
    assert_eq!(overview["tasks"]["INPROGRESS"], 0, "{overview}");
    assert_eq!(overview["tasks"]["COMPLETED"], 0, "{overview}");
    assert_eq!(overview["itemsFinished"], 6, "{overview}");
    assert_eq!(overview["shardsWaiting"], 0, "{overview}");
    assert_eq!(overview["slots"]["total"], cores, "{overview}");
    assert!(overview["itemsPerSecond"].is_number(), "{overview}");

    let (status, activity) = api.get(&format!("/v1/tasks/{id}/activity")).await;
    assert_eq!(status, StatusCode::OK, "{activity}");
    let per_worker = activity["perWorker"].as_array().expect("perWorker");
    let succeeded: u64 = per_worker.iter().map(|w| number(&w["succeeded"])).sum();
    let failed: u64 = per_worker.iter().map(|w| number(&w["failed"])).sum();
    assert_eq!((succeeded, failed), (5, 1), "{activity}");
    let finished: u64 = activity["throughput"]
        .as_array()
        .expect("throughput")
        .iter()
        .map(|b| number(&b["items"]))
        .sum();
    assert_eq!(finished, 6, "{activity}");
    assert_eq!(activity["running"], 0, "{activity}");

    let (status, unknown) = api
        .get("/v1/tasks/00000000-0000-4000-8000-000000000000/activity")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
}

/// Two items that sleep until cancelled: the task's activity, the worker
/// and the overview show them running, then the task is cancelled.
async fn check_running(api: &Api) {
    let id = api.submit(task("sleep 60", &items(2))).await;
    let path = format!("/v1/tasks/{id}/activity");
    wait_for("the activity to show 2 running items", || async {
        api.get(&path).await.1["running"] == 2
    })
    .await;
    wait_for(
        "the overview to show 2 busy slots and the worker a held shard",
        || async {
            let overview = api.get("/v1/overview").await.1;
            let workers = api.get("/v1/workers").await.1;
            let held: u64 = workers
                .as_array()
                .map(|all| all.iter().filter_map(|w| w["shardsHeld"].as_u64()).sum())
                .unwrap_or(0);
            overview["slots"]["busy"] == 2 && overview["tasks"]["INPROGRESS"] == 1 && held >= 1
        },
    )
    .await;
    let (status, body) = api
        .post_json(&format!("/v1/tasks/{id}/cancel"), &Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for("the cancelled items to stop running", || async {
        api.get(&path).await.1["running"] == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_a_tasks_activity_count_exactly_what_ran_in_embedded_mode() {
    let up = DtsUp::start(&["--set", "worker.cores=2"]);
    check_counts(&up, 2).await;
    check_running(&up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_and_a_tasks_activity_count_exactly_what_ran_in_distributed_mode() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _w1 = cluster.worker("w1", 1);
    let _w2 = cluster.worker("w2", 2);
    wait_for_workers(&server, 2).await;
    check_counts(&server, 3).await;
    check_running(&server).await;

    // A `dts server` serves the dashboard too (the browser tests drive it
    // on `dts up`, through the same router).
    for page in ["/", "/ui/tasks", "/ui/schedules", "/ui/workers"] {
        let response = reqwest::get(format!("{}{page}", server.base))
            .await
            .expect("page request sent");
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let kind = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(kind.starts_with("text/html"), "{page}: {kind}");
        let html = response.text().await.expect("page body");
        assert!(html.contains("/ui/assets/app.js"), "{page}: {html}");
    }
}
