//! Completion events: every end state reaches a consumer of the result
//! topic, and an end whose publisher was killed between the store write and
//! the publish is published anyway (the store's outbox, drained by every
//! server). Distributed mode is read with a real Kafka consumer; `dts up`'s
//! in-process bus is read through its log, which prints every event.

use crate::common::{DEADLINE, DtsUp, process_gone, task, wait_for};
use crate::distributed::Cluster;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Longer than the drainers' settle time (10 s) and a poll: an event a
/// drainer would publish a second time has arrived by then.
const LINGER: Duration = Duration::from_secs(15);

/// The failpoint between an end's store write and its publish.
const BEFORE_PUBLISH: (&str, &str) = ("DTS_FAILPOINT", "completion-before-publish");

/// One task per end state a test can reach, submitted to `api`; returns
/// (id, the status it must end in). The worker(s) need 4 free slots.
async fn submit_one_of_each_end(api: &crate::common::Api) -> Vec<(String, &'static str)> {
    let mut named = task("echo \"$1\"", &["a".into(), "b".into()]);
    named["name"] = json!("nightly");
    let completed = api.submit(named).await;
    let mut failing = task(
        "if [ \"$1\" = bad ]; then exit 3; fi; echo \"$1\"",
        &["good".into(), "bad".into()],
    );
    failing["retries"] = json!(0);
    let failed = api.submit(failing).await;
    let mut overdue = task("sleep 30", &["late".into()]);
    overdue["deadlineSecs"] = json!(2);
    let overdue = api.submit(overdue).await;
    let cancelled = api.submit(task("sleep 30", &["long".into()])).await;
    api.wait_task(&cancelled, "running", |t| t["status"] == "INPROGRESS")
        .await;
    let (status, body) = api
        .post_json(&format!("/v1/tasks/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Waits for the failing task, which ends FAILED: never runs.
    let mut waiting = task("echo \"$1\"", &["never".into()]);
    waiting["after"] = json!([failed]);
    let skipped = api.submit(waiting).await;
    vec![
        (completed, "COMPLETED"),
        (failed, "FAILED"),
        (overdue, "FAILED"),
        (cancelled, "CANCELLED"),
        (skipped, "SKIPPED"),
    ]
}

/// Reads the result topic as an outside consumer would (its own group,
/// plain client settings) until every task of `ids` has an event, then
/// [`LINGER`] more; returns the events by task id.
async fn kafka_events(cluster: &Cluster, ids: &[String]) -> BTreeMap<String, Vec<Value>> {
    let (bus, mut subscription) = cluster
        .outside_reader("distributed_task_completed", "outbox-test-reader")
        .await;
    let mut events: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let deadline = Instant::now() + DEADLINE;
    let mut until = deadline;
    // ends: every pass waits at most until `until`, which is at most the
    // deadline, and the loop stops there.
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(delivery) = tokio::time::timeout(left, subscription.next()).await else {
            break;
        };
        let delivery = delivery.expect("a delivery");
        let event: Value = serde_json::from_slice(&delivery.payload).expect("the event is JSON");
        delivery.ack().await.expect("ack");
        let id = event["taskId"].as_str().expect("taskId").to_string();
        events.entry(id).or_default().push(event);
        if until == deadline && ids.iter().all(|id| events.contains_key(id)) {
            until = Instant::now() + LINGER;
        }
    }
    bus.shutdown(Duration::from_secs(5)).await;
    events
}

/// `dts up`'s log lines for its completion events of task `id`: the status
/// each one gave.
fn logged_events(up: &DtsUp, id: &str) -> Vec<String> {
    let needle = format!("task={id}");
    up.log_text()
        .lines()
        .filter(|line| line.contains("task finished") && line.contains(&needle))
        .filter_map(|line| {
            let status = line.split("status=").nth(1)?;
            Some(status.split_whitespace().next()?.to_string())
        })
        .collect()
}

fn assert_one_event_each(ends: &[(String, &str)], events: &BTreeMap<String, Vec<Value>>) {
    for (id, status) in ends {
        let got = events.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), 1, "task {id}: {got:?}");
        assert_eq!(got[0]["status"], *status, "task {id}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_every_end_state_reaches_a_kafka_consumer_once_with_its_counts() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _worker = cluster.worker("w1", 4);
    let ends = submit_one_of_each_end(&server).await;
    let ids: Vec<String> = ends.iter().map(|(id, _)| id.clone()).collect();
    for id in &ids {
        server.wait_ended(id).await;
    }
    let events = kafka_events(&cluster, &ids).await;
    assert_one_event_each(&ends, &events);
    let event = |n: usize| &events[&ends[n].0][0];
    assert_eq!(
        (
            &event(0)["itemsTotal"],
            &event(0)["itemsSucceeded"],
            &event(0)["reason"]
        ),
        (&json!(2), &json!(2), &Value::Null)
    );
    assert_eq!(
        (&event(1)["itemsSucceeded"], &event(1)["itemsFailed"]),
        (&json!(1), &json!(1))
    );
    // The worker failed the late item itself: the task failed by its items.
    assert_eq!(
        (&event(2)["itemsFailed"], &event(2)["itemsTotal"]),
        (&json!(1), &json!(1))
    );
    // A cancel through the API records no reason.
    assert_eq!(event(3)["reason"], Value::Null, "{}", event(3));
    // A skipped task names the task it waited for.
    let waited_for = format!("prerequisite task {} ended FAILED", ends[1].0);
    assert!(
        event(4)["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains(&waited_for)),
        "{}",
        event(4)
    );
    assert_eq!(event(4)["itemsTotal"], json!(1), "{}", event(4));
    assert_eq!(event(0)["name"], "nightly", "{}", event(0));
    assert_eq!(event(1)["name"], Value::Null, "{}", event(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_an_end_whose_worker_died_before_publishing_still_reaches_the_consumer() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let mut worker = cluster.worker_with("doomed", 1, cluster.node_args(), &[BEFORE_PUBLISH]);
    let id = server.submit(task("echo \"$1\"", &["only".into()])).await;
    // The worker completes the task in the store, then kills itself before
    // it publishes.
    let ended = server.wait_ended(&id).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    wait_for("the worker to kill itself at the failpoint", || {
        let exited = worker.exited();
        async move { exited }
    })
    .await;
    let events = kafka_events(&cluster, std::slice::from_ref(&id)).await;
    assert_one_event_each(&[(id.clone(), "COMPLETED")], &events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_up_announces_every_end_state_once_with_the_tasks_name() {
    let up = DtsUp::start(&["--cores", "4"]);
    let ends = submit_one_of_each_end(&up).await;
    for (id, _) in &ends {
        up.wait_ended(id).await;
    }
    wait_for("an event for every task in the log", || {
        let all = ends
            .iter()
            .all(|(id, _)| !logged_events(&up, id).is_empty());
        async move { all }
    })
    .await;
    tokio::time::sleep(LINGER).await;
    for (id, status) in &ends {
        assert_eq!(
            logged_events(&up, id),
            vec![status.to_string()],
            "task {id}"
        );
    }
    let log = up.log_text();
    let line_of = |id: &str| {
        let needle = format!("task={id}");
        log.lines()
            .find(|line| line.contains("task finished") && line.contains(&needle))
            .unwrap_or_default()
            .to_string()
    };
    let named = line_of(&ends[0].0);
    assert!(named.contains(" name=nightly "), "{named}");
    let unnamed = line_of(&ends[1].0);
    assert!(unnamed.contains(" name=- "), "{unnamed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_up_killed_between_an_end_and_its_event_announces_it_after_a_restart() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let up = DtsUp::start_in(&data, &["--cores", "1"], &[BEFORE_PUBLISH]);
    let pid = up.pid() as i32;
    let id = up.submit(task("echo \"$1\"", &["only".into()])).await;
    wait_for("dts up to kill itself at the failpoint", || async move {
        process_gone(pid)
    })
    .await;
    drop(up);

    let up = DtsUp::start_in(&data, &["--cores", "1"], &[]);
    let ended = up.wait_ended(&id).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    wait_for("the owed event in the restarted node's log", || {
        let logged = !logged_events(&up, &id).is_empty();
        async move { logged }
    })
    .await;
    assert_eq!(logged_events(&up, &id), vec!["COMPLETED".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_submission_that_failed_is_announced_once_the_broker_is_back() {
    let cluster = Cluster::start();
    let mut args = cluster.node_args();
    for setting in [
        "pubsub.submit-attempts=2",
        "pubsub.kafka.message.timeout.ms=1000",
        "pubsub.submit-timeout-ms=1000",
    ] {
        args.extend(["--set".to_string(), setting.to_string()]);
    }
    let server = DtsUp::server(&args, &[], cluster.log("server"));
    cluster.broker.pause();
    let (status, accepted) = server
        .post_json("/v1/tasks", &task("echo", &["x".into()]))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_string();
    let failed = server.wait_ended(&id).await;
    assert_eq!(failed["status"], "SUBMISSION_FAILED", "{failed}");
    cluster.broker.resume();

    let events = kafka_events(&cluster, std::slice::from_ref(&id)).await;
    assert_one_event_each(&[(id.clone(), "SUBMISSION_FAILED")], &events);
    let reason = events[&id][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("attempt 2 of 2"), "{reason}");
}
