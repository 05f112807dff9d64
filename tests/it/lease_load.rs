//! Lease renewal under load (issue 14, point 7): a burst of small tasks keeps
//! the workers' slots, the store and the broker busy, and no live worker may
//! lose a lease on a shard it is running because its renewal fell behind.

use crate::common::{Api, items, shared_dir};
use crate::distributed::{Cluster, wait_for_workers};
use futures::StreamExt;
use serde_json::json;
use std::time::Instant;

/// Tasks in the burst, and how many submissions are in flight at once.
const TASKS: usize = 1000;
const IN_FLIGHT: usize = 16;

/// Task `n` has 1 to 5 items.
fn items_of(n: usize) -> usize {
    n % 5 + 1
}

/// Each item appends one line to a file named after its task and index, so
/// an item that ran twice (a shard stopped and run again elsewhere) shows.
const APPEND_ITEM: &str = "echo \"$1\" >> \"{{dir}}/{{task}}-$1\"; echo \"$1\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_small_tasks_loses_no_lease_and_runs_every_item_once() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _w1 = cluster.worker("w1", 2);
    let _w2 = cluster.worker("w2", 2);
    wait_for_workers(&server, 2).await;
    let dir = shared_dir();

    let started = Instant::now();
    let base = server.base.clone();
    let dir_text = dir.path().display().to_string();
    let mut ids: Vec<(usize, String)> = futures::stream::iter(0..TASKS)
        .map(|n| {
            let api = Api::at(base.clone());
            let dir = dir_text.clone();
            async move {
                let id = api
                    .submit(json!({
                        "templateFunction": APPEND_ITEM,
                        "variableJson": {"dir": dir, "task": format!("t{n}")},
                        "inputList": items(items_of(n)),
                    }))
                    .await;
                (n, id)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    ids.sort();
    let submitted = started.elapsed();

    for (n, id) in &ids {
        let done = server.wait_ended(id).await;
        let total = items_of(*n) as u64;
        assert_eq!(done["status"], "COMPLETED", "task {n}: {done}");
        assert_eq!(done["itemsTotal"], total, "task {n}: {done}");
        assert_eq!(done["itemsSucceeded"], total, "task {n}: {done}");
        assert_eq!(done["itemsFailed"], 0, "task {n}: {done}");
        assert_eq!(done["chunksExecuted"], done["chunksToExecute"], "{done}");
    }
    eprintln!(
        "{TASKS} tasks submitted in {:.1} s, all completed in {:.1} s",
        submitted.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // Every item ran exactly once: one file per item, one line in each.
    let mut ran = 0;
    for (n, _) in &ids {
        for input in items(items_of(*n)) {
            let file = dir.path().join(format!("t{n}-{input}"));
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{} never ran: {e}", file.display()));
            assert_eq!(
                text,
                format!("{input}\n"),
                "{} ran other than once",
                file.display()
            );
            ran += 1;
        }
    }
    assert_eq!(ran, (0..TASKS).map(items_of).sum::<usize>());
    let files = std::fs::read_dir(dir.path())
        .expect("the side-effect dir")
        .count();
    assert_eq!(files, ran, "no item wrote a file it should not have");

    for worker in ["w1", "w2"] {
        let log = std::fs::read_to_string(cluster.log(worker)).expect("the worker's log");
        let lost: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("lost the lease"))
            .collect();
        assert!(
            lost.is_empty(),
            "live worker {worker} lost leases under the burst:\n{}",
            lost.join("\n")
        );
    }
}
