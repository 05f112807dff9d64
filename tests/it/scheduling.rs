//! Scheduling with real processes (docs/scheduling.md): free slots claim
//! shards, so items follow cores; a worker that joins mid-task takes work at
//! once; a small or a higher-priority task does not wait behind a big one;
//! `maxConcurrency` caps a task's running items across the cluster.
//!
//! Items cannot see which worker runs them: the results' `worker` field says
//! it. What items saw at the same time (start times, how many ran at once)
//! they write into a marker directory every user may write to.
//! A matching worker that joins late is shown in waiting.rs.

use crate::common::{Api, DEADLINE, DtsUp, items, shared_dir, task};
use crate::distributed::{Cluster, wait_for_workers};
use dts_testkit::wait_for;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Half a second per item: long enough for slots to overlap and for the
/// order of starts to be plain, short enough to keep these tests quick.
const SLOW_ITEM: &str = "sleep 0.5; echo \"$1\"";

/// The task completed, every item has exactly one result, in its own index,
/// and none of them needed a second attempt (a slot that gives its shard
/// back leaves the attempt unchanged). Returns the results in index order.
async fn completed_exactly(api: &Api, id: &str, total: usize) -> Vec<Value> {
    let done = api.wait_ended(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["itemsTotal"], total as u64, "{done}");
    assert_eq!(done["itemsSucceeded"], total as u64, "{done}");
    assert_eq!(done["itemsFailed"], 0, "{done}");
    assert_eq!(done["chunksExecuted"], done["chunksToExecute"], "{done}");
    let results = api.all_results(id, "").await;
    assert_eq!(results.len(), total, "one result per item");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i as u64, "each index once, in order: {r}");
        assert_eq!(r["attempt"], 1, "{r}");
    }
    results
}

/// How many of the results each worker ran.
fn items_per_worker(results: &[Value]) -> BTreeMap<String, usize> {
    let mut ran = BTreeMap::new();
    for r in results {
        let worker = r["worker"].as_str().unwrap_or("?").to_string();
        *ran.entry(worker).or_insert(0) += 1;
    }
    ran
}

/// The task's items succeeded so far.
async fn succeeded(api: &Api, id: &str) -> u64 {
    let task = api.task(id).await;
    task["itemsSucceeded"]
        .as_u64()
        .unwrap_or_else(|| panic!("no itemsSucceeded: {task}"))
}

/// Now, in seconds since the epoch, as `date +%s.%N` prints it in an item.
fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past the epoch")
        .as_secs_f64()
}

/// The start times that items wrote, sorted. Items write the time to a
/// hidden file and rename it to `DIR/PREFIX-$1`, so a marker is never seen
/// half written (a plain `>` creates the file empty before `date` runs).
fn start_times(dir: &Path, prefix: &str) -> Vec<f64> {
    let mut times: Vec<f64> = std::fs::read_dir(dir)
        .expect("read the marker directory")
        .map(|e| e.expect("a marker").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")))
        })
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read a marker");
            text.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", p.display()))
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_core_worker_runs_several_times_the_items_of_a_one_core_worker() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _one = cluster.worker("one-core", 1);
    let _four = cluster.worker("four-cores", 4);
    wait_for_workers(&server, 2).await;

    let id = server.submit(task(SLOW_ITEM, &items(40))).await;
    let results = completed_exactly(&server, &id, 40).await;
    let ran = items_per_worker(&results);
    eprintln!("items per worker: {ran:?}");
    let one = ran.get("one-core").copied().unwrap_or(0);
    let four = ran.get("four-cores").copied().unwrap_or(0);
    assert_eq!(one + four, 40, "only these two workers ran items: {ran:?}");
    assert!(one >= 1, "the one-core worker ran nothing: {ran:?}");
    // Four slots against one would give 4x; 2.5x leaves room for the
    // guided plan's last single-item shards landing unevenly.
    assert!(
        four as f64 >= 2.5 * one as f64,
        "items should follow cores: {ran:?}"
    );
}

/// How long a worker that joins mid-task may take to show a result. The
/// promise is running items within 2 s of its first heartbeat; results carry
/// no start time, so this is measured from starting the process to reading
/// its first recorded result (process start, one 0.5 s item and the result's
/// write included), with room for a loaded machine.
const JOIN_BOUND: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_joins_mid_task_runs_items_soon_after_it_starts() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _first = cluster.worker("first", 1);
    wait_for_workers(&server, 1).await;
    // About 15 s of work for the one core.
    let id = server.submit(task(SLOW_ITEM, &items(30))).await;
    server
        .wait_task(&id, "started", |t| {
            t["itemsSucceeded"].as_u64().unwrap_or(0) >= 1
        })
        .await;

    let started = Instant::now();
    let _joiner = cluster.worker("joiner", 2);
    let first_result_after = wait_for(DEADLINE, "a result from the joining worker", || async {
        let ran = items_per_worker(&server.all_results(&id, "").await);
        if ran.contains_key("joiner") {
            Ok(started.elapsed())
        } else {
            Err(ran)
        }
    })
    .await;
    eprintln!(
        "the joining worker's first result was recorded {:.1} s after it started",
        first_result_after.as_secs_f64()
    );
    assert!(
        first_result_after < JOIN_BOUND,
        "took {first_result_after:?}"
    );

    let results = completed_exactly(&server, &id, 30).await;
    let ran = items_per_worker(&results);
    eprintln!("items per worker: {ran:?}");
    let first = ran.get("first").copied().unwrap_or(0);
    let joiner = ran.get("joiner").copied().unwrap_or(0);
    assert_eq!(
        first + joiner,
        30,
        "only these two workers ran items: {ran:?}"
    );
    assert!(joiner >= 8, "the joining worker ran too little: {ran:?}");
}

/// Plans one shard per slot of the at least 8 the scheduler plans for,
/// instead of two: a task's first shards then hold several seconds of slow
/// items, so a slot that kept its shard to the end, instead of giving it
/// back between items, would keep the next task waiting that long, and the
/// tests below would see it.
const LARGE_SHARDS: [&str; 2] = ["--set", "scheduler.oversplit=1"];

/// How many of a big task's items may finish between submitting a small task
/// and its completion. The promise is that the small task starts within
/// about one item of the big task's (one per slot); this allows three per
/// slot for a loaded machine. Slots that kept their shards (8 and 7 items)
/// to the end would let about ten through.
const OVERTAKEN_BOUND: u64 = 6;

/// Submits a big task of slow items and, once it runs, a small one: the
/// small one completes while the big one still runs, within a few of its
/// items. Returns the big task's id.
async fn a_small_task_completes_while_a_big_one_runs(api: &Api) -> String {
    let big = api.submit(task(SLOW_ITEM, &items(60))).await;
    api.wait_task(&big, "running", |t| {
        t["itemsSucceeded"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let before = succeeded(api, &big).await;

    let small = api.submit(task("echo \"$1\"", &items(2))).await;
    let small_done = api.wait_ended(&small).await;
    let big_then = api.task(&big).await;
    assert_eq!(small_done["status"], "COMPLETED", "{small_done}");
    assert_eq!(small_done["itemsSucceeded"], 2, "{small_done}");
    assert_eq!(big_then["status"], "INPROGRESS", "{big_then}");
    let overtaken = big_then["itemsSucceeded"]
        .as_u64()
        .unwrap_or_else(|| panic!("no itemsSucceeded: {big_then}"))
        - before;
    eprintln!("the big task finished {overtaken} items while the small one ran");
    assert!(
        overtaken <= OVERTAKEN_BOUND,
        "the small task waited behind {overtaken} of the big task's items"
    );

    let results = api.all_results(&small, "").await;
    assert_eq!(results.len(), 2);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["stdout"], format!("item-{i}\n"), "{r}");
    }
    big
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dts_up_a_small_task_completes_while_a_big_one_is_still_running() {
    let mut args = vec!["--cores", "2"];
    args.extend(LARGE_SHARDS);
    let up = DtsUp::start(&args);
    let big = a_small_task_completes_while_a_big_one_runs(&up).await;

    // The shards the slots gave back then must not lose or repeat items;
    // the cluster test waits for that, and the priority test below too, so
    // this one saves the time and cancels.
    let (status, cancelled) = up
        .post_json(&format!("/v1/tasks/{big}/cancel"), &json!({}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{cancelled}");
    let ended = up.wait_ended(&big).await;
    assert_eq!(ended["status"], "CANCELLED", "{ended}");
    let results = up.all_results(&big, "").await;
    let mut indices: Vec<u64> = results
        .iter()
        .map(|r| {
            r["index"]
                .as_u64()
                .unwrap_or_else(|| panic!("no index: {r}"))
        })
        .collect();
    indices.dedup();
    assert_eq!(indices.len(), results.len(), "each index at most once");
    assert!(results.iter().all(|r| r["attempt"] == 1), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_small_task_completes_while_a_big_one_is_still_running() {
    let cluster = Cluster::start();
    let mut args = cluster.node_args();
    args.extend(LARGE_SHARDS.map(String::from));
    let server = DtsUp::server(&args, &[], cluster.log("server"));
    let _worker = cluster.worker("w", 2);
    wait_for_workers(&server, 1).await;
    // Until the scheduler's consumers have joined their group, a new task
    // waits on the bus for the group to settle, seconds that have nothing
    // to do with how slots pick tasks.
    crate::common::wait_for("the scheduler's consumers to join their group", || async {
        server
            .log_text()
            .contains("scheduler consumers joined their group")
    })
    .await;
    let big = a_small_task_completes_while_a_big_one_runs(&server).await;
    completed_exactly(&server, &big, 60).await;
}

/// How many low-priority items may start between submitting the
/// high-priority task and the start of its last item. Ideally none (the
/// low items then running started before); this allows two per slot for
/// the time the task takes to be planned on a loaded machine. Slots that
/// kept their shards (5 items each) to the end would start about eight.
const LOW_STARTS_BOUND: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_task_starts_its_items_before_the_waiting_items_of_a_lower_one() {
    let mut args = vec!["--cores", "2"];
    args.extend(LARGE_SHARDS);
    let up = DtsUp::start(&args);
    let dir = shared_dir();
    let marker = |prefix: &str| {
        json!({
            "templateFunction": format!(
                "date +%s.%N > \"{{{{dir}}}}/.{prefix}-$1\" && \
                 mv \"{{{{dir}}}}/.{prefix}-$1\" \"{{{{dir}}}}/{prefix}-$1\"; sleep 0.5"
            ),
            "variableJson": {"dir": dir.path().display().to_string()},
        })
    };
    // 40 low items, so that their first shards hold 5 each (LARGE_SHARDS).
    let mut low = marker("low");
    low["inputList"] = json!(items(40));
    let low = up.submit(low).await;
    wait_for(DEADLINE, "the low task's first item to start", || async {
        let started = start_times(dir.path(), "low").len();
        if started >= 1 { Ok(()) } else { Err(started) }
    })
    .await;

    let mut high = marker("high");
    high["inputList"] = json!(items(4));
    high["priority"] = json!(10);
    let submitted_at = now_secs();
    let high = up.submit(high).await;
    completed_exactly(&up, &high, 4).await;
    completed_exactly(&up, &low, 40).await;

    let lows = start_times(dir.path(), "low");
    let highs = start_times(dir.path(), "high");
    assert_eq!((lows.len(), highs.len()), (40, 4), "one marker per item");
    let last_high = highs[3];
    let low_before_last_high = lows.iter().filter(|t| **t < last_high).count();
    let low_after_submit = lows
        .iter()
        .filter(|t| **t > submitted_at && **t < last_high)
        .count();
    eprintln!(
        "low items started before the last high one: {low_before_last_high}, \
         of which after the high task's submission: {low_after_submit}"
    );
    // Every high item started before the last 30 low ones.
    assert!(
        low_before_last_high <= 10,
        "the last 30 low items should start after every high one: {lows:?} {highs:?}"
    );
    assert!(
        low_after_submit <= LOW_STARTS_BOUND,
        "low items kept starting after the high task came: {lows:?} {highs:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_caps_a_tasks_running_items_across_workers_and_is_reached() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _a = cluster.worker("a", 4);
    let _b = cluster.worker("b", 4);
    wait_for_workers(&server, 2).await;
    let dir = shared_dir();
    // Each item counts the running markers right after making its own and
    // again just before removing it; a marker exists only while its item
    // runs, so no count can exceed the items running at once.
    let script = r#"touch "{{dir}}/running.$1"
ls "{{dir}}" | grep -c '^running\.' >> "{{dir}}/counts"
sleep 0.5
ls "{{dir}}" | grep -c '^running\.' >> "{{dir}}/counts"
rm "{{dir}}/running.$1""#;
    let id = server
        .submit(json!({
            "templateFunction": script,
            "variableJson": {"dir": dir.path().display().to_string()},
            "inputList": items(12),
            "maxConcurrency": 2,
        }))
        .await;
    completed_exactly(&server, &id, 12).await;

    let text = std::fs::read_to_string(dir.path().join("counts")).expect("read the counts");
    let counts: Vec<u32> = text
        .lines()
        .map(|l| l.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(counts.len(), 24, "two counts per item: {counts:?}");
    let most = counts.iter().copied().max().unwrap_or(0);
    assert_eq!(most, 2, "at most 2 at once, and 2 reached: {counts:?}");
    let markers_left = std::fs::read_dir(dir.path())
        .expect("read the marker directory")
        .count();
    assert_eq!(markers_left, 1, "only the counts file is left");
}

/// Items of the speculation test: where the worker's environment has SLOW
/// (let through `executor.env-allow`), an item sleeps far past any wait of
/// the test, so only a copy can finish it. Each run leaves a marker
/// `INPUT.fast` or `INPUT.slow`.
const SLOW_HERE_ITEM: &str = "tag=fast; [ -n \"$SLOW\" ] && tag=slow; \
     touch \"{{dir}}/$1.$tag\"; [ $tag = slow ] && sleep 300; sleep 0.2; echo \"$1 $tag\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_workers_shards_are_copied_and_each_item_counts_once_from_the_copy() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _fast = cluster.worker("fast", 2);
    let mut slow_args = cluster.node_args();
    slow_args.extend([
        "--set".to_string(),
        "executor.env-allow=PATH,HOME,LANG,LC_ALL,LC_CTYPE,TZ,TMPDIR,USER,LOGNAME,SLOW".to_string(),
    ]);
    let _slow = cluster.worker_with("slow", 2, slow_args, &[("SLOW", "1")]);
    wait_for_workers(&server, 2).await;

    let dir = shared_dir();
    let id = server
        .submit(json!({
            "templateFunction": SLOW_HERE_ITEM,
            "variableJson": {"dir": dir.path().display().to_string()},
            "inputList": items(20),
        }))
        .await;
    let results = completed_exactly(&server, &id, 20).await;
    for r in &results {
        assert_eq!(r["worker"], "fast", "only copies could finish: {r}");
        assert_eq!(
            r["stdout"],
            format!("{} fast\n", r["input"].as_str().unwrap_or("?")),
            "{r}"
        );
    }
    let ran = |input: &str, tag: &str| dir.path().join(format!("{input}.{tag}")).exists();
    let started_on_slow: Vec<String> = items(20).into_iter().filter(|i| ran(i, "slow")).collect();
    assert!(
        !started_on_slow.is_empty(),
        "the slow worker should have claimed shards"
    );
    for input in &started_on_slow {
        assert!(ran(input, "fast"), "{input} ran on the slow worker only");
    }
    // The slow worker's runs were stopped once the copies completed their
    // shards: the completion took its leases, and the last one ended the
    // task. The worker stops its items at whichever it sees first, the lost
    // lease or the ended task (a CI run saw the task's end first, 2026-12-02).
    let slow_log = cluster.log("slow");
    wait_for(
        DEADLINE,
        "the slow worker to stop its copied items",
        || async {
            let text = std::fs::read_to_string(&slow_log).unwrap_or_default();
            if text.contains("lost the lease on a running shard")
                || text.contains("task ended while its shard ran")
            {
                Ok(())
            } else {
                Err(text.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
            }
        },
    )
    .await;
}
