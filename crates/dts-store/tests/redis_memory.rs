//! How much Redis memory one stored item result costs, measured: a task of
//! 20,000 items gets 20,000 typical results (exit 0, a worker id like a real
//! one, attempt 1), and `INFO memory`'s `used_memory` before and after gives
//! the bytes per result. Ignored by default (it is a measurement, slow in a
//! debug build); run it with
//! `cargo nextest run -p dts-store --test redis_memory --run-ignored all --no-capture`.
//!
//! Each variant also asserts a ceiling, so a change that makes results
//! fatter again fails here instead of going unnoticed.

use dts_model::{Bytes, ItemResult, ShardRange};
use dts_store::{PlanOutcome, RedisSettings, RedisStore, ResultFilter, Store};
use dts_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use std::time::Duration;

mod fixtures;

const ITEMS: u64 = 20_000;

/// Results per write, as a worker batches them.
const BATCH: u64 = 500;

async fn used_memory(conn: &mut MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .expect("INFO memory has used_memory")
        .trim()
        .parse()
        .expect("used_memory is a number")
}

fn typical(index: u64, stdout: &str) -> ItemResult {
    ItemResult {
        index,
        input: Bytes::from(format!("item-{index}")),
        exit_code: Some(0),
        signal: None,
        timed_out: false,
        stdout: stdout.into(),
        stderr: Default::default(),
        stdout_truncated: false,
        stderr_truncated: false,
        stdout_bytes: stdout.len() as u64,
        stderr_bytes: 0,
        duration_ms: 50 + index % 7,
        worker: "host-12345-abcdef".to_string(),
        attempt: 1,
        error: None,
    }
}

/// Bytes of Redis memory per result of a fresh task whose results carry
/// `stdout`; checks that every result reads back.
async fn bytes_per_result(stdout: &str) -> f64 {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("start redis-server");
    let store = RedisStore::connect(RedisSettings {
        url: server.url(),
        key_prefix: "dts".to_string(),
        retention: Duration::from_secs(3_600),
        sentinel: None,
    })
    .await
    .expect("connect to redis");
    let mut conn = redis::Client::open(server.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");

    let task = fixtures::task(ITEMS as usize);
    let inputs: Vec<Bytes> = (0..ITEMS)
        .map(|i| Bytes::from(format!("item-{i}")))
        .collect();
    store.insert_task(&task, &inputs).await.expect("insert");
    let plan = [ShardRange {
        start: 0,
        len: ITEMS,
    }];
    let PlanOutcome::Created(_) = store.save_plan(&task.id, &plan).await.expect("plan") else {
        panic!("the plan of a new task is created");
    };
    // One result first, so script loading and the task's first result keys
    // are not counted.
    store
        .record_results(&task.id, &[typical(0, stdout)])
        .await
        .expect("first result");
    let before = used_memory(&mut conn).await;
    for start in (1..ITEMS).step_by(BATCH as usize) {
        let batch: Vec<ItemResult> = (start..(start + BATCH).min(ITEMS))
            .map(|i| typical(i, stdout))
            .collect();
        store
            .record_results(&task.id, &batch)
            .await
            .expect("record a batch");
    }
    let after = used_memory(&mut conn).await;

    let (total, page) = store
        .results(&task.id, ResultFilter::All, ITEMS - 3, 10)
        .await
        .expect("read the last page");
    assert_eq!(total, ITEMS);
    assert_eq!(
        page,
        (ITEMS - 3..ITEMS)
            .map(|i| typical(i, stdout))
            .collect::<Vec<_>>()
    );
    (after - before) as f64 / (ITEMS - 1) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it explicitly"]
async fn a_typical_result_with_empty_output_costs_under_a_hundred_bytes_of_redis_memory() {
    let bytes = bytes_per_result("").await;
    println!("bytes of Redis memory per result, empty output: {bytes:.1}");
    assert!(bytes < 100.0, "{bytes:.1} bytes per result");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it explicitly"]
async fn a_result_with_a_hundred_bytes_of_output_costs_under_three_hundred_bytes() {
    let stdout = format!("{}\n", "x".repeat(99));
    let bytes = bytes_per_result(&stdout).await;
    println!("bytes of Redis memory per result, 100 bytes of stdout: {bytes:.1}");
    assert!(bytes < 300.0, "{bytes:.1} bytes per result");
}
