//! What only the Redis store promises: key prefixes that keep installations
//! apart, the retention TTL on ended tasks, heartbeats that Redis itself
//! expires, riding out a restart or a hung server, failing fast when Redis is
//! not there, and clear errors for unreadable data.
//!
//! Every test starts its own `redis-server` on a free port (dts-testkit).

use dts_model::{Bytes, ItemResult, Task, TaskStatus, WorkerInfo};
use dts_store::redis::CALL_TIMEOUT;
use dts_store::{
    PlanOutcome, ReadyClaim, RedisSettings, RedisStore, ResultFilter, Store, StoreError,
    StoreResult,
};
use dts_testkit::RedisServer;

mod fixtures;
use fixtures::{failed, inputs, ok, shards, task, worker};
use redis::aio::MultiplexedConnection;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3_600);

/// Room a loaded 2-core machine may need beyond a bound the store promises
/// (its call timeout); the bound itself is asserted as a lower bound where
/// it matters.
const SLACK: Duration = Duration::from_secs(10);

async fn server() -> RedisServer {
    tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis-server")
}

async fn connect(server: &RedisServer, prefix: &str, retention: Duration) -> RedisStore {
    RedisStore::connect(RedisSettings {
        url: server.url(),
        key_prefix: prefix.to_string(),
        retention,
        sentinel: None,
    })
    .await
    .expect("connect to redis")
}

/// A plain connection, to look at the keys behind the store's back.
async fn raw(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn keys(conn: &mut MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(pattern)
        .query_async(conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

async fn pttl(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap()
}

/// A stored task of `items` items planned in shards of `per_shard`.
async fn planned(store: &RedisStore, items: usize, per_shard: u64) -> Task {
    let t = task(items);
    store.insert_task(&t, &inputs(items)).await.unwrap();
    match store
        .save_plan(&t.id, &shards(items as u64, per_shard))
        .await
        .unwrap()
    {
        PlanOutcome::Created(t) => t,
        other => panic!("expected a new plan, got {other:?}"),
    }
}

/// Retries `call` until it succeeds or `within` passes.
async fn eventually<T, F, Fut>(within: Duration, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_retryable(), "only retryable errors while waiting: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("still failing after {within:?}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_with_different_prefixes_share_one_redis_without_seeing_each_other() {
    let server = server().await;
    let (a, b) = (
        connect(&server, "alpha", HOUR).await,
        connect(&server, "beta", HOUR).await,
    );
    let t = planned(&a, 4, 2).await;
    a.heartbeat(&worker("w-a"), HOUR).await.unwrap();
    b.heartbeat(&worker("w-b"), HOUR).await.unwrap();

    assert_eq!(b.task(&t.id).await.unwrap(), None);
    assert_eq!(b.inputs(&t.id).await.unwrap(), None);
    assert!(b.list_tasks(None, 10).await.unwrap().is_empty());
    assert!(b.unfinished_task_ids().await.unwrap().is_empty());
    assert!(matches!(
        b.complete_shard(&t.id, 0, &[ok(0)]).await,
        Err(StoreError::NoSuchTask { .. })
    ));
    let ids = |workers: Vec<WorkerInfo>| workers.into_iter().map(|w| w.id).collect::<Vec<_>>();
    assert_eq!(ids(a.live_workers().await.unwrap()), vec!["w-a"]);
    assert_eq!(ids(b.live_workers().await.unwrap()), vec!["w-b"]);

    // The same id in the other installation is a different task.
    let mut twin = task(1);
    twin.id = t.id.clone();
    b.insert_task(&twin, &inputs(1)).await.unwrap();
    assert_eq!(a.task(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(a.list_tasks(None, 10).await.unwrap(), vec![t]);

    let mut conn = raw(&server).await;
    for key in keys(&mut conn, "*").await {
        assert!(
            key.starts_with("alpha:") || key.starts_with("beta:"),
            "{key} is outside both prefixes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_an_ended_task_gets_the_retention_ttl_and_not_before() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let t = planned(&store, 4, 2).await;
    store
        .complete_shard(&t.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();

    let pattern = format!("dts:task:{}*", t.id);
    let task_keys = keys(&mut conn, &pattern).await;
    assert_eq!(
        task_keys.len(),
        11,
        "hash, inputs, shards, result bucket 0, result counts, workers and failures, results by worker and \
         by time, ready queue and ranges: {task_keys:?}"
    );
    for key in &task_keys {
        assert_eq!(
            pttl(&mut conn, key).await,
            -1,
            "{key} expires before the task ends"
        );
    }

    let done = store
        .complete_shard(&t.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Failed);
    // The last completion emptied the ready queue, and Redis drops an empty set.
    let ready = format!("dts:task:{}:ready", t.id);
    let task_keys: Vec<String> = task_keys.into_iter().filter(|k| *k != ready).collect();
    assert_eq!(keys(&mut conn, &pattern).await, task_keys);
    for key in &task_keys {
        let ttl = pttl(&mut conn, key).await;
        assert!(
            ttl > 0 && ttl <= HOUR.as_millis() as i64,
            "{key} has TTL {ttl} ms"
        );
    }
    assert!(store.unfinished_task_ids().await.unwrap().is_empty());
    // Listing still finds it while its keys live.
    assert_eq!(
        store
            .list_tasks(Some(TaskStatus::Failed), 10)
            .await
            .unwrap(),
        vec![done.task]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_recorded_after_a_cancel_expire_with_the_task() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let t = planned(&store, 4, 2).await;
    store
        .transition(&t.id, TaskStatus::Cancelled, Some("by user"))
        .await
        .unwrap();
    // A worker that had not heard of the cancel yet.
    store
        .complete_shard(&t.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    let task_keys = keys(&mut conn, &format!("dts:task:{}*", t.id)).await;
    assert_eq!(task_keys.len(), 11, "{task_keys:?}");
    for key in &task_keys {
        assert!(
            pttl(&mut conn, key).await > 0,
            "{key} would outlive its task"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_start_keys_get_the_retention_ttl_when_the_task_ends() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let t = planned(&store, 4, 2).await;
    let (leases, starts, ready, held) = (
        format!("dts:task:{}:leases", t.id),
        format!("dts:task:{}:starts", t.id),
        format!("dts:task:{}:ready", t.id),
        format!("dts:task:{}:held", t.id),
    );
    store.claim_shard(&t.id, 0, "w-a", HOUR).await.unwrap();
    store.claim_shard(&t.id, 1, "w-a", HOUR).await.unwrap();
    store.mark_item_started(&t.id, 1).await.unwrap();
    // Renewing and releasing rewrite fields of a live task: still no TTL.
    store
        .renew_leases("w-a", &[(t.id.clone(), 0)], HOUR)
        .await
        .unwrap();
    store.release_shard(&t.id, 1, "w-a", false).await.unwrap();
    for key in [&leases, &starts, &ready, &held] {
        assert_eq!(pttl(&mut conn, key).await, -1, "{key} expires early");
    }

    store
        .transition(&t.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let within_retention = |ttl: i64| ttl > 0 && ttl <= HOUR.as_millis() as i64;
    for key in [&leases, &starts, &ready, &held] {
        let ttl = pttl(&mut conn, key).await;
        assert!(within_retention(ttl), "{key} has TTL {ttl} ms");
    }
    // Writes after the end (a worker that has not heard of the cancel)
    // keep the TTL, and keys they create get it too.
    store
        .renew_leases("w-a", &[(t.id.clone(), 0)], HOUR)
        .await
        .unwrap();
    store.release_shard(&t.id, 0, "w-a", true).await.unwrap();
    store.mark_item_started(&t.id, 2).await.unwrap();
    // (Releasing shard 0 emptied the held set, which Redis then dropped.)
    for key in [&leases, &starts, &ready] {
        let ttl = pttl(&mut conn, key).await;
        assert!(within_retention(ttl), "{key} lost its TTL: {ttl} ms");
    }

    let late = planned(&store, 4, 2).await;
    store
        .transition(&late.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    store.claim_shard(&late.id, 0, "w-a", HOUR).await.unwrap();
    store.mark_item_started(&late.id, 0).await.unwrap();
    for key in [
        format!("dts:task:{}:leases", late.id),
        format!("dts:task:{}:starts", late.id),
        format!("dts:task:{}:held", late.id),
    ] {
        let ttl = pttl(&mut conn, &key).await;
        assert!(
            within_retention(ttl),
            "{key} would outlive its task: {ttl} ms"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_with_an_expired_tasks_id_starts_with_no_leases_or_start_counts() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let t = planned(&store, 4, 2).await;
    store.claim_shard(&t.id, 0, "w-a", HOUR).await.unwrap();
    store.mark_item_started(&t.id, 0).await.unwrap();
    store
        .record_results(&t.id, &[ok(1), failed(3)])
        .await
        .unwrap();
    // The task hash expired before its other keys (as if retention ran out
    // between two of them).
    redis::cmd("DEL")
        .arg(format!("dts:task:{}", t.id))
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    store.insert_task(&t_like(&t), &inputs(4)).await.unwrap();
    store.save_plan(&t.id, &shards(4, 2)).await.unwrap();
    assert_eq!(
        store.claim_shard(&t.id, 0, "w-b", HOUR).await.unwrap(),
        dts_store::ShardClaim::Acquired { attempt: 1 }
    );
    assert_eq!(store.mark_item_started(&t.id, 0).await.unwrap(), 1);
    assert_eq!(
        store
            .results(&t.id, ResultFilter::All, 0, 10)
            .await
            .unwrap(),
        (0, vec![])
    );
    assert!(
        store
            .recorded_indices(&t.id, 0, 4)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .results(&t.id, ResultFilter::Failed, 0, 10)
            .await
            .unwrap(),
        (0, vec![])
    );
}

/// A new `QUEUED` task with the same id as `t`.
fn t_like(t: &Task) -> Task {
    Task {
        id: t.id.clone(),
        ..task(4)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_task_is_skipped_and_pruned_from_every_listing() {
    let server = server().await;
    let store = connect(&server, "dts", Duration::from_millis(200)).await;
    let mut conn = raw(&server).await;
    let gone = task(2);
    store.insert_task(&gone, &inputs(2)).await.unwrap();
    store
        .transition(&gone.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let kept = task(2);
    store.insert_task(&kept, &inputs(2)).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while store.task(&gone.id).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "a 200 ms retention lasted 10 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        keys(&mut conn, &format!("dts:task:{}*", gone.id))
            .await
            .is_empty()
    );
    assert_eq!(store.inputs(&gone.id).await.unwrap(), None);
    assert!(
        store
            .list_tasks(Some(TaskStatus::Cancelled), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let listed = store.list_tasks(None, 10).await.unwrap();
    assert_eq!(
        listed.into_iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![kept.id.clone()]
    );
    assert_eq!(store.unfinished_task_ids().await.unwrap(), vec![kept.id]);
    for (index, entries) in [
        ("dts:tasks", 1),
        ("dts:tasks:CANCELLED", 0),
        ("dts:tasks:QUEUED", 1),
        ("dts:ended", 0),
    ] {
        let count: u64 = redis::cmd("ZCARD")
            .arg(index)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(count, entries, "{index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_keeps_the_data_and_the_same_store_works_again() {
    let mut server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let t = planned(&store, 4, 2).await;
    let half = store
        .complete_shard(&t.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap()
        .task;
    store.heartbeat(&worker("w-1"), HOUR).await.unwrap();

    tokio::task::block_in_place(|| server.stop());
    for _ in 0..3 {
        let began = Instant::now();
        let err = store.task(&t.id).await.unwrap_err();
        let address = format!("127.0.0.1:{}", server.port());
        assert!(
            matches!(&err, StoreError::Unavailable { op, .. } if op.ends_with(&address)),
            "while redis is down: {err:?}"
        );
        // Refused connections fail at once, not after the call timeout.
        assert!(
            began.elapsed() < CALL_TIMEOUT,
            "took {:?}, as long as a hung server",
            began.elapsed()
        );
    }
    let err = store
        .complete_shard(&t.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");

    tokio::task::block_in_place(|| server.restart());
    let back = eventually(Duration::from_secs(15), || store.task(&t.id)).await;
    assert_eq!(back, Some(half), "the data survived the restart (AOF)");
    assert_eq!(store.inputs(&t.id).await.unwrap(), Some(inputs(4)));
    assert_eq!(store.completed_shards(&t.id).await.unwrap(), vec![0]);
    assert_eq!(store.live_workers().await.unwrap().len(), 1);

    // Scripts were forgotten with the restart; they load again by themselves.
    let done = store
        .complete_shard(&t.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap();
    assert!(done.finished_task);
    assert_eq!(
        (done.task.status, done.task.items_succeeded),
        (TaskStatus::Completed, 4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_gives_unavailable_within_the_call_timeout() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let t = planned(&store, 2, 1).await;
    let mut conn = raw(&server).await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    let pid = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .expect("INFO names the process")
        .trim()
        .to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };

    signal("-STOP");
    let began = Instant::now();
    // Without its call timeout the store would wait for the stopped server
    // for good; the test gives up after the timeout plus the slack.
    let outcome = tokio::time::timeout(CALL_TIMEOUT + SLACK, store.task(&t.id)).await;
    let waited = began.elapsed();
    signal("-CONT");
    let outcome = outcome.unwrap_or_else(|_| panic!("a call to a hung Redis waited {waited:?}"));
    let err = outcome.unwrap_err();
    // The client's response timeout and the call's deadline are the same:
    // either may report it.
    assert!(
        matches!(
            err,
            StoreError::TimedOut { .. } | StoreError::Unavailable { .. }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    // It was the call timeout that ended the call (the lower bound, which
    // no load can break), and nothing much longer.
    assert!(
        waited >= CALL_TIMEOUT - Duration::from_secs(1) && waited < CALL_TIMEOUT + SLACK,
        "waited {waited:?}"
    );

    let back = eventually(Duration::from_secs(10), || store.task(&t.id)).await;
    assert_eq!(back, Some(t));
}

#[tokio::test]
async fn connecting_where_nothing_listens_fails_fast_naming_the_address() {
    let port = dts_testkit::free_port();
    let began = Instant::now();
    let err = RedisStore::connect(RedisSettings {
        url: format!("redis://127.0.0.1:{port}/"),
        key_prefix: "dts".to_string(),
        retention: HOUR,
        sentinel: None,
    })
    .await
    .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(6),
        "took {:?}",
        began.elapsed()
    );
    let address = format!("127.0.0.1:{port}");
    assert!(
        matches!(&err, StoreError::Unavailable { op, .. } if *op == format!("redis connect at {address}")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_malformed_url_or_a_zero_retention_is_refused_at_once() {
    let settings = |url: &str, retention| RedisSettings {
        url: url.to_string(),
        key_prefix: "dts".to_string(),
        retention,
        sentinel: None,
    };
    let err = RedisStore::connect(settings("http://:hunter2@localhost/", HOUR))
        .await
        .unwrap_err();
    match &err {
        StoreError::InvalidUrl { url, .. } => assert_eq!(url, "http://***@localhost/"),
        other => panic!("expected an invalid url, got {other:?}"),
    }
    // The whole chain, as `dts` prints it, keeps the password out.
    let mut chain = err.to_string();
    let mut cause = std::error::Error::source(&err);
    // ends: an error's chain of sources is finite.
    while let Some(e) = cause {
        chain.push_str(&format!(": {e}"));
        cause = e.source();
    }
    assert!(!chain.contains("hunter2"), "the password leaked: {chain}");

    let err = RedisStore::connect(settings("redis://127.0.0.1:1/", Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ZeroRetention), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_inputs_round_trip() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let many: Vec<Bytes> = (0..1_000_000).map(|i| Bytes::from(i.to_string())).collect();
    let t = task(many.len());
    store.insert_task(&t, &many).await.unwrap();
    assert_eq!(store.inputs(&t.id).await.unwrap(), Some(many));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_bigger_than_one_script_call_still_counts_every_item_once() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let t = planned(&store, 5_000, 2_500).await;
    let first: Vec<ItemResult> = (0..2_500)
        .map(|i| if i % 100 == 0 { failed(i) } else { ok(i) })
        .collect();

    // A shard the plan does not have records nothing, even from a big batch.
    assert!(store.complete_shard(&t.id, 2, &first).await.is_err());
    assert!(
        store
            .recorded_indices(&t.id, 0, 5_000)
            .await
            .unwrap()
            .is_empty()
    );

    store.record_results(&t.id, &first).await.unwrap();
    let done = store.complete_shard(&t.id, 0, &first).await.unwrap();
    assert!(done.newly_completed);
    assert_eq!(
        (done.task.items_succeeded, done.task.items_failed),
        (2_475, 25)
    );

    let second: Vec<ItemResult> = (2_500..5_000).map(ok).collect();
    let done = store.complete_shard(&t.id, 1, &second).await.unwrap();
    assert!(done.finished_task);
    assert_eq!(
        (
            done.task.status,
            done.task.items_succeeded,
            done.task.items_failed
        ),
        (TaskStatus::Failed, 4_975, 25)
    );
    let (total, page) = store
        .results(&t.id, ResultFilter::Failed, 20, 10)
        .await
        .unwrap();
    assert_eq!(total, 25);
    assert_eq!(
        page.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![2_000, 2_100, 2_200, 2_300, 2_400]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_expire_in_redis_itself_and_every_store_sees_the_same_workers() {
    let server = server().await;
    let (one, two) = (
        connect(&server, "dts", HOUR).await,
        connect(&server, "dts", HOUR).await,
    );
    let w = worker("w-1");
    one.heartbeat(&w, Duration::from_millis(300)).await.unwrap();
    assert_eq!(two.live_workers().await.unwrap(), vec![w]);

    let mut conn = raw(&server).await;
    let ttl = pttl(&mut conn, "dts:worker:w-1").await;
    assert!(
        ttl > 0 && ttl <= 300,
        "the key carries the heartbeat's TTL: {ttl}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !keys(&mut conn, "dts:worker:*").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "redis kept the heartbeat for 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(two.live_workers().await.unwrap().is_empty());
    let listed: u64 = redis::cmd("ZCARD")
        .arg("dts:workers")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed, 0, "the expired id left the index");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_stored_before_labels_existed_reads_as_a_worker_without_labels() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let w = worker("w-old");
    store.heartbeat(&w, HOUR).await.unwrap();
    let mut conn = raw(&server).await;
    // The JSON a dts from before labels wrote: the same fields, no `labels`.
    let old = serde_json::json!({
        "id": "w-old",
        "hostname": w.hostname,
        "cores": w.cores,
        "runningItems": w.running_items,
        "lastHeartbeat": w.last_heartbeat,
        "kind": "dts",
    });
    redis::cmd("SET")
        .arg("dts:worker:w-old")
        .arg(old.to_string())
        .arg("KEEPTTL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.live_workers().await.unwrap(), vec![w]);

    // And a worker's labels are stored in the same JSON.
    let labelled = WorkerInfo {
        labels: [("gpu".to_string(), "a100".to_string())].into(),
        ..worker("w-new")
    };
    store.heartbeat(&labelled, HOUR).await.unwrap();
    let json: String = redis::cmd("GET")
        .arg("dts:worker:w-new")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(stored["labels"], serde_json::json!({"gpu": "a100"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_stored_data_is_reported_as_corrupt() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let (a, b) = (planned(&store, 2, 1).await, planned(&store, 2, 1).await);
    let edit = |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd
    };
    let (key_a, key_b) = (format!("dts:task:{}", a.id), format!("dts:task:{}", b.id));
    let inputs_a = format!("dts:task:{}:inputs", a.id);
    for cmd in [
        edit(&["HSET", &key_a, "plan", "[{\"start\":"]),
        edit(&["SET", &inputs_a, "[1, 2]"]),
        edit(&["HSET", &key_b, "status", "DONE"]),
    ] {
        cmd.query_async::<()>(&mut conn).await.unwrap();
    }
    let corrupt = |what: &str, result: Result<(), StoreError>| match result {
        Err(StoreError::Corrupt { what: w, .. }) => assert!(w.contains(what), "{w}"),
        Err(other) => panic!("expected corrupt {what}, got {other}"),
        Ok(()) => panic!("expected corrupt {what}, got a value"),
    };
    corrupt("plan", store.save_plan(&a.id, &[]).await.map(|_| ()));
    corrupt("inputs", store.inputs(&a.id).await.map(|_| ()));
    corrupt("status", store.task(&b.id).await.map(|_| ()));
    corrupt("status", store.list_tasks(None, 10).await.map(|_| ()));

    edit(&["HSET", &key_a, "variables", "{not json"])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    corrupt("variables", store.task(&a.id).await.map(|_| ()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_inputs_were_stored_as_one_json_string_reads_by_range() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let all: Vec<Bytes> = (0..50)
        .map(|i| Bytes::from(format!("quo\"te\nline {i} \u{0} é😀")))
        .collect();
    let t = task(all.len());
    store.insert_task(&t, &all).await.unwrap();
    let key = format!("dts:task:{}:inputs", t.id);
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "list", "new tasks keep their inputs as a list");

    // What a dts from before input lists stored.
    redis::cmd("SET")
        .arg(&key)
        .arg(serde_json::to_string(&all).unwrap())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(store.inputs(&t.id).await.unwrap().as_ref(), Some(&all));
    assert_eq!(
        store.inputs_range(&t.id, 10, 5).await.unwrap().as_deref(),
        Some(&all[10..15])
    );
    assert_eq!(
        store.inputs_range(&t.id, 45, 10).await.unwrap().as_deref(),
        Some(&all[45..50])
    );
    assert_eq!(
        store.inputs_range(&t.id, 50, 1).await.unwrap(),
        Some(Vec::new())
    );
}

/// Runs one raw command given as words.
async fn command(conn: &mut MultiplexedConnection, words: &[&str]) {
    let mut cmd = redis::cmd(words[0]);
    for word in &words[1..] {
        cmd.arg(*word);
    }
    cmd.query_async::<()>(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_a_task_stored_in_the_old_layout_still_read_and_record() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let t = planned(&store, 6, 3).await;
    // What a dts from before results layouts left: no `resultsLayout`, each
    // result's full JSON in one hash, its index in sorted sets by outcome.
    let key = |suffix: &str| format!("dts:task:{}{suffix}", t.id);
    command(&mut conn, &["HDEL", &key(""), "resultsLayout"]).await;
    let old = [ok(0), failed(1), ok(4)];
    for r in &old {
        let (index, json) = (r.index.to_string(), serde_json::to_string(r).unwrap());
        command(&mut conn, &["HSET", &key(":results"), &index, &json]).await;
        command(&mut conn, &["ZADD", &key(":results:all"), &index, &index]).await;
        let outcome = if r.succeeded() {
            ":results:succeeded"
        } else {
            ":results:failed"
        };
        command(&mut conn, &["ZADD", &key(outcome), &index, &index]).await;
    }
    command(
        &mut conn,
        &["HSET", &key(""), "itemsSucceeded", "2", "itemsFailed", "1"],
    )
    .await;

    assert_eq!(
        store
            .results(&t.id, ResultFilter::All, 0, 10)
            .await
            .unwrap(),
        (3, old.to_vec())
    );
    assert_eq!(
        store.recorded_indices(&t.id, 0, 6).await.unwrap(),
        vec![0, 1, 4]
    );

    // New results go into the same layout; item 1 now succeeds.
    let retried = ItemResult {
        attempt: 2,
        ..ok(1)
    };
    store
        .record_results(&t.id, &[retried.clone(), failed(2)])
        .await
        .unwrap();
    let done = store
        .complete_shard(&t.id, 1, &[ok(3), ok(4), failed(5)])
        .await
        .unwrap();
    assert_eq!((done.task.items_succeeded, done.task.items_failed), (4, 2));
    let page = |filter| {
        let store = store.clone();
        let id = t.id.clone();
        async move {
            let (total, page) = store.results(&id, filter, 0, 10).await.unwrap();
            (total, page.into_iter().map(|r| r.index).collect::<Vec<_>>())
        }
    };
    assert_eq!(page(ResultFilter::All).await, (6, vec![0, 1, 2, 3, 4, 5]));
    assert_eq!(page(ResultFilter::Succeeded).await, (4, vec![0, 1, 3, 4]));
    assert_eq!(page(ResultFilter::Failed).await, (2, vec![2, 5]));
    assert_eq!(
        store
            .results(&t.id, ResultFilter::All, 1, 1)
            .await
            .unwrap()
            .1,
        vec![retried]
    );
    // Written as the old layout has it: full JSON, no result buckets.
    let json: String = redis::cmd("HGET")
        .arg(key(":results"))
        .arg("5")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<ItemResult>(&json).unwrap(),
        failed(5)
    );
    assert!(keys(&mut conn, &key(":results:[0-9]*")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_of_typical_results_is_stored_in_redis_compact_hash_encoding() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let t = planned(&store, 300, 300).await;
    let typical = |i: u64| ItemResult {
        stdout: Default::default(),
        stdout_bytes: 0,
        worker: "a-rather-long-hostname.example.internal-12345-abcdef".to_string(),
        ..ok(i)
    };
    let results: Vec<ItemResult> = (0..300).map(typical).collect();
    store.complete_shard(&t.id, 0, &results).await.unwrap();
    for bucket in 0..3 {
        let key = format!("dts:task:{}:results:{bucket}", t.id);
        let encoding: String = redis::cmd("OBJECT")
            .arg("ENCODING")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(encoding, "listpack", "{key}");
    }
    let value: String = redis::cmd("HGET")
        .arg(format!("dts:task:{}:results:1", t.id))
        .arg("2")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(value, r#"{"worker":1,"durationMs":5}"#, "result 130");
    assert_eq!(
        store
            .results(&t.id, ResultFilter::All, 0, 300)
            .await
            .unwrap(),
        (300, results)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_bucket_of_an_ended_task_gets_the_retention_ttl() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    let t = planned(&store, 20_000, 20_000).await;
    store
        .record_results(&t.id, &[ok(0), ok(200), failed(16_500)])
        .await
        .unwrap();
    let pattern = format!("dts:task:{}:results:*", t.id);
    let before = keys(&mut conn, &pattern).await;
    assert_eq!(
        before.len(),
        8,
        "3 buckets, counts, workers, failures, by worker, by time: {before:?}"
    );
    store
        .transition(&t.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    // A worker that had not heard of the cancel writes into a new bucket.
    store.record_results(&t.id, &[ok(19_999)]).await.unwrap();
    let after = keys(&mut conn, &pattern).await;
    assert_eq!(after.len(), 9, "{after:?}");
    for key in &after {
        let ttl = pttl(&mut conn, key).await;
        assert!(
            ttl > 0 && ttl <= HOUR.as_millis() as i64,
            "{key} has TTL {ttl} ms"
        );
    }
}

/// Every key under `dts:` with its type and its whole content (the
/// sequence counter's value left out: it only grows), sorted.
async fn snapshot(conn: &mut MultiplexedConnection) -> Vec<(String, String)> {
    let mut all = Vec::new();
    // The store-wide activity counts (`dts:stats:*`) are a history of what
    // ran: deleting a task does not take its results back out of them.
    for key in keys(conn, "dts:*").await {
        if key.starts_with("dts:stats:") {
            continue;
        }
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(conn)
            .await
            .unwrap();
        let content = match kind.as_str() {
            "zset" => {
                let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .query_async(conn)
                    .await
                    .unwrap();
                format!("{members:?}")
            }
            "hash" => {
                let fields: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(conn)
                    .await
                    .unwrap();
                format!("{fields:?}")
            }
            "list" => {
                let items: Vec<String> = redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(conn)
                    .await
                    .unwrap();
                format!("{items:?}")
            }
            "set" => {
                let mut members: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(conn)
                    .await
                    .unwrap();
                members.sort();
                format!("{members:?}")
            }
            _ if key == "dts:seq" => String::new(),
            _ => {
                let value: Option<String> =
                    redis::cmd("GET").arg(&key).query_async(conn).await.unwrap();
                format!("{value:?}")
            }
        };
        all.push((key, format!("{kind} {content}")));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_task_leaves_redis_exactly_as_it_was_before_the_task_was_stored() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let mut conn = raw(&server).await;
    // Another task, ended, whose keys and index entries must stay.
    let kept = planned(&store, 4, 2).await;
    store
        .complete_shard(&kept.id, 0, &[ok(0), failed(1)])
        .await
        .unwrap();
    store
        .transition(&kept.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let before = snapshot(&mut conn).await;

    // Results in three buckets of two groups, a failure, a lease, a start
    // count, a completed shard, a ready queue, held shards and ranges.
    let doomed = planned(&store, 20_001, 10_000).await;
    store
        .record_results(&doomed.id, &[ok(0), failed(200), ok(20_000)])
        .await
        .unwrap();
    store
        .claim_shard(&doomed.id, 1, "w1", Duration::from_secs(60))
        .await
        .unwrap();
    store.mark_item_started(&doomed.id, 5).await.unwrap();
    store
        .complete_shard(&doomed.id, 2, &[ok(20_000)])
        .await
        .unwrap();
    store
        .transition(&doomed.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    let doomed_keys = keys(&mut conn, &format!("dts:task:{}*", doomed.id)).await;
    assert_eq!(doomed_keys.len(), 16, "{doomed_keys:?}");

    store.delete_task(&doomed.id).await.unwrap();
    assert_eq!(snapshot(&mut conn).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_stored_before_the_id_index_existed_are_found_by_an_id_prefix_after_a_reconnect() {
    let server = server().await;
    let store = connect(&server, "old", HOUR).await;
    let t = planned(&store, 2, 1).await;
    // What a dts from before the id index left: the task, no index entry.
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("DEL")
        .arg("old:ids")
        .arg("old:ids-filled")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = &t.id[..8];
    assert!(
        store
            .task_ids_with_prefix(prefix, 10)
            .await
            .unwrap()
            .is_empty(),
        "the setup removed the index entry"
    );

    let reconnected = connect(&server, "old", HOUR).await;
    assert_eq!(
        reconnected.task_ids_with_prefix(prefix, 10).await.unwrap(),
        vec![t.id.clone()]
    );
    // Once filled, a later connection does not walk the list again: an
    // entry removed by hand stays removed.
    let _: () = redis::cmd("ZREM")
        .arg("old:ids")
        .arg(&t.id)
        .query_async(&mut conn)
        .await
        .unwrap();
    let again = connect(&server, "old", HOUR).await;
    assert!(
        again
            .task_ids_with_prefix(prefix, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_acknowledged_results_were_lost_runs_again_for_just_those_items() {
    let server = server().await;
    let store = connect(&server, "dts", HOUR).await;
    let t = planned(&store, 4, 2).await;
    store.claim_shard(&t.id, 0, "w-a", HOUR).await.unwrap();
    // The worker recorded item 0 on a primary that then failed over to a
    // replica without it, and completes the shard with item 1 on the new one.
    let done = store.complete_shard(&t.id, 0, &[ok(1)]).await.unwrap();
    assert!(!done.newly_completed);
    assert!(!done.finished_task);
    assert_eq!(done.task.chunks_executed, 0);
    assert_eq!(done.task.items_succeeded, 1);
    assert_eq!(
        store.completed_shards(&t.id).await.unwrap(),
        Vec::<u32>::new()
    );
    assert_eq!(store.recorded_indices(&t.id, 0, 2).await.unwrap(), vec![1]);

    // The shard is ready again, as the same attempt, and its next run
    // completes it with the missing item: each item counted once.
    match store
        .claim_ready_shard(&t.id, "w-b", HOUR, None)
        .await
        .unwrap()
    {
        ReadyClaim::Claimed { shard, attempt, .. } => assert_eq!((shard, attempt), (0, 1)),
        other => panic!("expected shard 0 ready again, got {other:?}"),
    }
    let done = store.complete_shard(&t.id, 0, &[ok(0)]).await.unwrap();
    assert!(done.newly_completed);
    assert_eq!(done.task.chunks_executed, 1);
    assert_eq!(done.task.items_succeeded, 2);
    assert_eq!(store.completed_shards(&t.id).await.unwrap(), vec![0]);
}
