//! Live logs of running items (`dts logs`, `GET /v1/tasks/{id}/items/{index}/log`,
//! `GET /v1/tasks/{id}/log`), in both modes: `dts up`, and `dts server` +
//! `dts worker` over real Redis and a Kafka-protocol broker.

use crate::common::{Api, DEADLINE, DtsUp, dts_binary, task, text, wait_for};
use crate::distributed::{Cluster, Worker, wait_for_workers};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Ten lines, a second apart: an item that runs long enough to be watched.
const TEN_LINES: &str = "for i in 1 2 3 4 5 6 7 8 9 10; do echo line-$i; sleep 1; done";

/// A server and one single-core worker over real Redis and a broker.
struct Distributed {
    cluster: Cluster,
    server: DtsUp,
    _worker: Worker,
}

async fn distributed() -> Distributed {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let worker = cluster.worker("w1", 1);
    wait_for_workers(&server, 1).await;
    Distributed {
        cluster,
        server,
        _worker: worker,
    }
}

/// Waits until item `index` of task `id` has a live tail containing `text`.
async fn wait_for_tail(api: &Api, id: &str, index: u64, text: &str) -> String {
    let path = format!("/v1/tasks/{id}/items/{index}/log");
    dts_testkit::wait_for(
        DEADLINE,
        &format!("the live tail of item {index} to show {text:?}"),
        || async {
            match api.get(&path).await {
                (StatusCode::OK, Value::String(tail)) if tail.contains(text) => Ok(tail),
                other => Err(other),
            }
        },
    )
    .await
}

/// `dts logs -f ID 0` prints `line-1` while the item (and the task) still
/// runs, and ends after `line-10`, when the item ends.
async fn logs_follow_shows_lines_before_the_item_ends(api: &Api) {
    let id = api.submit(task(TEN_LINES, &["a".to_string()])).await;
    api.wait_task(&id, "INPROGRESS", |t| t["status"] == "INPROGRESS")
        .await;
    let mut child = Command::new(dts_binary())
        .args(["logs", "-f", &id, "0", "--server", &api.base])
        .env_remove("DTS_AUTH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dts logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let first = seen
        .recv_timeout(DEADLINE)
        .expect("dts logs -f printed a first line");
    assert_eq!(first, "line-1");
    // The item prints for ten seconds: its first line came while it ran.
    assert_eq!(api.task(&id).await["status"], "INPROGRESS");
    let output = dts_testkit::finish_within(&mut child, DEADLINE, "dts logs -f");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let rest: Vec<String> = seen.try_iter().collect();
    let expected: Vec<String> = (2..=10).map(|i| format!("line-{i}")).collect();
    assert_eq!(rest, expected);
    let ended = api.wait_ended(&id).await;
    assert_eq!(ended["status"], "COMPLETED");
}

#[tokio::test]
async fn dts_logs_follow_shows_a_running_items_lines_before_it_ends_on_dts_up() {
    let up = DtsUp::start(&[]);
    logs_follow_shows_lines_before_the_item_ends(&up).await;
}

#[tokio::test]
async fn dts_logs_follow_shows_a_running_items_lines_before_it_ends_on_a_distributed_cluster() {
    let cluster = distributed().await;
    logs_follow_shows_lines_before_the_item_ends(&cluster.server).await;
}

/// The item's events, exactly: its tail, the chunks after it, its end.
async fn follow_events_are_the_tail_then_each_chunk_then_the_end(api: &Api) {
    let script = "echo one; sleep 0.5; echo two >&2; sleep 4; echo three";
    let id = api.submit(task(script, &["a".to_string()])).await;
    wait_for_tail(api, &id, 0, "two").await;
    let (content_type, events) = api
        .events(&format!("/v1/tasks/{id}/items/0/log?follow=true"))
        .await;
    assert_eq!(content_type, "text/event-stream");
    assert_eq!(
        events,
        [
            json!({"index": 0, "stream": "stdout", "text": "one\n"}),
            json!({"index": 0, "stream": "stderr", "text": "two\n"}),
            json!({"index": 0, "stream": "stdout", "text": "three\n"}),
            json!({"index": 0}),
        ]
    );
    // Once it ended, the log is its recorded output: stdout, then stderr.
    api.wait_ended(&id).await;
    assert_eq!(
        api.get(&format!("/v1/tasks/{id}/items/0/log")).await,
        (StatusCode::OK, json!("one\nthree\ntwo\n"))
    );
}

#[tokio::test]
async fn an_items_log_follow_sends_its_tail_new_chunks_and_its_end_as_events_on_dts_up() {
    let up = DtsUp::start(&[]);
    follow_events_are_the_tail_then_each_chunk_then_the_end(&up).await;
}

#[tokio::test]
async fn an_items_log_follow_sends_its_tail_new_chunks_and_its_end_as_events_on_a_distributed_cluster()
 {
    let cluster = distributed().await;
    follow_events_are_the_tail_then_each_chunk_then_the_end(&cluster.server).await;
}

#[tokio::test]
async fn a_task_log_follow_tags_every_running_item_and_ends_with_the_task() {
    let up = DtsUp::start(&["--cores", "2"]);
    let script = "echo start-$1; sleep 3; echo done-$1";
    let id = up
        .submit(task(script, &["a".to_string(), "b".to_string()]))
        .await;
    wait_for_tail(&up, &id, 1, "start-b").await;
    wait_for_tail(&up, &id, 0, "start-a").await;
    // Without follow: each running item's tail, after its index and a TAB.
    let (status, tails) = up.get(&format!("/v1/tasks/{id}/log")).await;
    assert_eq!(
        (status, tails),
        (StatusCode::OK, json!("0\tstart-a\n1\tstart-b\n"))
    );
    let output = dts_testkit::output_within(
        Command::new(dts_binary())
            .args(["logs", "--follow", &id, "--server", &up.base])
            .env_remove("DTS_AUTH_TOKEN"),
        DEADLINE,
        "dts logs --follow of the task",
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let mut lines: Vec<String> = text(&output.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["a\tdone-a", "a\tstart-a", "b\tdone-b", "b\tstart-b"]
    );
    assert_eq!(up.task(&id).await["status"], "COMPLETED");
    // Nothing runs any more: said on stderr, not an empty silence.
    let idle = crate::common::dts_client(&up, &["logs", &id]);
    assert!(idle.status.success(), "{}", text(&idle.stderr));
    assert_eq!(text(&idle.stdout), "");
    assert_eq!(
        text(&idle.stderr),
        format!(
            "dts: no item of task {id} is running now (the task is COMPLETED); \
             `dts results {id}` shows what ended\n"
        )
    );
}

#[tokio::test]
async fn an_item_writing_a_megabyte_keeps_only_the_live_log_bound_in_its_tail() {
    let up = DtsUp::start(&["--set", "executor.live-log-bytes=65536"]);
    let script = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo END; sleep 60";
    let id = up.submit(task(script, &["a".to_string()])).await;
    let tail = wait_for_tail(&up, &id, 0, "END").await;
    assert_eq!(tail.len(), 65536);
    assert!(tail.ends_with("x\nEND\n"), "{}", &tail[tail.len() - 20..]);
    let (status, _) = up
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn log_requests_name_the_unknown_task_the_index_out_of_range_and_the_item_not_started() {
    let up = DtsUp::start(&["--cores", "1"]);
    let id = up
        .submit(task("sleep 60", &["a".to_string(), "b".to_string()]))
        .await;
    wait_for("item 0 to run", || async {
        up.get(&format!("/v1/tasks/{id}/items/0/log")).await.0 == StatusCode::OK
    })
    .await;
    let unknown = "0b7e0a3c-4f55-4c43-9a55-3e8e1f0f9a11";
    assert_eq!(
        up.get(&format!("/v1/tasks/{unknown}/items/0/log")).await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "not_found", "field": "id",
                "message": format!("no task with id {unknown:?}")}})
        )
    );
    assert_eq!(
        up.get(&format!("/v1/tasks/{id}/items/2/log?follow=true"))
            .await,
        (
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "not_found", "field": "index",
                "message": format!("task {id} has no item 2: it has 2 item(s), indices 0 to 1")}})
        )
    );
    let (status, body) = up.get(&format!("/v1/tasks/{id}/items/1/log")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body["error"]["message"],
        format!(
            "item 1 of task {id} is not running and has no result yet: it has not started \
             (or it just ended and its result is on the way); follow it with ?follow=true \
             to wait for its output"
        )
    );
    let (status, body) = up.get(&format!("/v1/tasks/{id}/items/x/log")).await;
    assert_eq!(
        (status, &body["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("index"))
    );
    let (status, body) = up.get(&format!("/v1/tasks/{id}/log?follw=true")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::BAD_REQUEST, &json!("unknown_parameter"))
    );
    let refused = crate::common::dts_client(&up, &["logs", unknown]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        text(&refused.stderr),
        format!("dts: error: no task with id {unknown:?} (field: id; HTTP 404)\n")
    );
    let json = crate::common::dts_client(&up, &["logs", "--json", &id]);
    assert_eq!(json.status.code(), Some(2));
    assert_eq!(
        text(&json.stderr),
        "dts: error: dts logs prints the items' output as they wrote it and has no --json; \
         GET /v1/tasks/{id}/log?follow=true gives it as JSON events\n"
    );
    up.post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
}

/// The live-log keys in the cluster's Redis.
fn live_keys(cluster: &Cluster) -> Vec<String> {
    let output = dts_testkit::output_within(
        Command::new("redis-cli").args([
            "-p",
            &cluster.redis.port().to_string(),
            "--scan",
            "--pattern",
            "dts:live:*",
        ]),
        DEADLINE,
        "redis-cli --scan",
    );
    let mut keys: Vec<String> = text(&output.stdout).lines().map(String::from).collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_worker_publishes_nothing_to_redis_while_nobody_watches_and_a_capped_stream_when_watched()
{
    let cluster = distributed().await;
    let api = &cluster.server;
    let id = api
        .submit(task(
            "for i in 1 2 3; do echo x-$i; sleep 1; done",
            &["a".to_string()],
        ))
        .await;
    api.wait_ended(&id).await;
    assert_eq!(live_keys(&cluster.cluster), Vec::<String>::new());
    // The same item watched: its chunks go through Redis.
    let id = api
        .submit(task(
            "for i in 1 2 3; do echo y-$i; sleep 1; done",
            &["a".to_string()],
        ))
        .await;
    wait_for_tail(api, &id, 0, "y-1").await;
    let (_, events) = api
        .events(&format!("/v1/tasks/{id}/items/0/log?follow=true"))
        .await;
    assert_eq!(events.last(), Some(&json!({"index": 0})));
    assert_eq!(
        live_keys(&cluster.cluster),
        [format!("dts:live:{id}"), format!("dts:live:{id}:watch")]
    );
}
