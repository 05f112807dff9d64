//! What only the SQLite store promises: a file that outlives the process, the
//! WAL journal, several stores sharing one file, and clear errors when the
//! file cannot be opened or read.

use dts_model::{
    Bytes, Isolation, ItemResult, Scheduling, Task, TaskStatus, WorkerInfo, WorkerKind, now_millis,
};
use dts_store::{
    CopyClaim, DynStore, PlanOutcome, ReadyClaim, ResultFilter, ShardClaim, SqliteStore, Store,
    StoreError,
};
use rusqlite::Connection;

mod fixtures;
use fixtures::{inputs, ok, shards, task};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn open(path: &Path) -> DynStore {
    Arc::new(SqliteStore::open(path).expect("open store"))
}

/// What each schema version from 2 on added, undone: `UNDO[v - 2]` takes a
/// file of version `v` back to version `v - 1`.
const UNDO: [&str; 16] = [
    "DROP TABLE shard_leases; DROP TABLE item_starts;",
    "ALTER TABLE tasks DROP COLUMN deadline_secs;",
    "ALTER TABLE tasks DROP COLUMN version; \
     ALTER TABLE tasks DROP COLUMN memory_mb; \
     ALTER TABLE tasks DROP COLUMN milli_cpus; \
     ALTER TABLE workers DROP COLUMN kind; \
     ALTER TABLE workers DROP COLUMN isolation;",
    "DROP TABLE ready_shards;",
    "ALTER TABLE tasks DROP COLUMN priority; \
     ALTER TABLE tasks DROP COLUMN weight; \
     ALTER TABLE tasks DROP COLUMN max_concurrency; \
     ALTER TABLE tasks DROP COLUMN requires; \
     ALTER TABLE tasks DROP COLUMN speculation;",
    "ALTER TABLE workers DROP COLUMN labels;",
    // Pages back into one array per task, as versions before 8 stored inputs.
    "INSERT INTO task_inputs (task_key, inputs) \
     SELECT task_key, json_group_array(value) FROM \
       (SELECT p.task_key, j.value FROM task_input_pages p, json_each(p.inputs) j \
        ORDER BY p.task_key, p.start, j.key) \
     GROUP BY task_key; \
     INSERT INTO task_inputs (task_key, inputs) \
     SELECT key, '[]' FROM tasks WHERE key NOT IN (SELECT task_key FROM task_inputs); \
     DROP TABLE task_input_pages;",
    "ALTER TABLE shard_leases DROP COLUMN claimed_at; \
     ALTER TABLE shard_leases DROP COLUMN copied;",
    "ALTER TABLE results DROP COLUMN stdout_bytes; \
     ALTER TABLE results DROP COLUMN stderr_bytes;",
    "DROP TABLE item_history;",
    "ALTER TABLE tasks DROP COLUMN halt;",
    "DROP TABLE task_worker_counts; DROP TABLE task_throughput; DROP TABLE store_throughput; \
     DROP TABLE store_counters; ALTER TABLE workers DROP COLUMN shards_held; \
     ALTER TABLE workers DROP COLUMN running_by_task;",
    "DROP TRIGGER completion_outbox_on_end; DROP TABLE completion_outbox;",
    "ALTER TABLE tasks DROP COLUMN after_tasks;",
    "DROP TABLE schedules;",
    "ALTER TABLE tasks DROP COLUMN reduce; \
     ALTER TABLE tasks DROP COLUMN reduce_result; \
     ALTER TABLE tasks DROP COLUMN reduce_owner; \
     ALTER TABLE tasks DROP COLUMN reduce_attempts;",
];

/// Makes a current file look like what a dts writing schema `version` left,
/// by dropping what every later version added.
fn rewind(path: &Path, version: usize) {
    let raw = Connection::open(path).unwrap();
    for undo in UNDO[version - 1..].iter().rev() {
        raw.execute_batch(undo).unwrap();
    }
    raw.pragma_update(None, "user_version", version).unwrap();
}

/// The schema version the file at `path` says it has.
fn schema_version(path: &Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_results_and_workers_survive_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let t = task(4);
    let plan = shards(4, 2);
    let worker = WorkerInfo {
        id: "w-1".to_string(),
        hostname: "box".to_string(),
        cores: 8,
        running_items: 2,
        last_heartbeat: now_millis(),
        kind: WorkerKind::Dts,
        isolation: Some(Isolation {
            containment: "subreaper".to_string(),
            run_as: None,
            private_workdir: true,
            limits: vec!["memoryMb".to_string()],
        }),
        labels: [("gpu".to_string(), "a100".to_string())].into(),
        shards_held: 2,
        running_by_task: [("t1".to_string(), 3)].into(),
    };
    let (after_shard, results) = {
        let store = open(&path);
        store.insert_task(&t, &inputs(4)).await.unwrap();
        store.save_plan(&t.id, &plan).await.unwrap();
        let done = store
            .complete_shard(&t.id, 1, &[ok(2), ok(3)])
            .await
            .unwrap();
        store
            .heartbeat(&worker, Duration::from_secs(600))
            .await
            .unwrap();
        let results = store
            .results(&t.id, ResultFilter::All, 0, 10)
            .await
            .unwrap();
        (done.task, results)
    }; // the last handle drops here and closes the file

    let store = open(&path);
    assert_eq!(store.task(&t.id).await.unwrap(), Some(after_shard.clone()));
    assert_eq!(store.inputs(&t.id).await.unwrap(), Some(inputs(4)));
    assert_eq!(
        store.save_plan(&t.id, &shards(4, 1)).await.unwrap(),
        PlanOutcome::Existing {
            task: after_shard,
            shards: plan
        }
    );
    assert_eq!(store.completed_shards(&t.id).await.unwrap(), vec![1]);
    assert_eq!(
        store
            .results(&t.id, ResultFilter::All, 0, 10)
            .await
            .unwrap(),
        results
    );
    assert_eq!(store.live_workers().await.unwrap(), vec![worker]);

    // And the reopened store carries on from there.
    let done = store
        .complete_shard(&t.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert!(done.finished_task);
    assert_eq!(done.task.status, TaskStatus::Completed);
    assert_eq!(done.task.items_succeeded, 4);
}

#[tokio::test]
async fn opening_creates_missing_parent_directories_and_uses_the_wal_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("dts.sqlite");
    let store = open(&path);
    store.insert_task(&task(0), &[]).await.unwrap();
    assert!(path.is_file());

    let raw = Connection::open(&path).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
}

#[test]
fn a_directory_that_cannot_be_created_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a regular file where a directory should go").unwrap();
    let wanted = blocker.join("data");
    let err = SqliteStore::open(&wanted.join("dts.sqlite")).unwrap_err();
    match &err {
        StoreError::Backend { op, source } => {
            assert_eq!(
                *op,
                format!("create directory {} for the sqlite store", wanted.display())
            );
            assert!(source.is::<std::io::Error>(), "{source:?}");
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(!err.is_retryable());
}

#[test]
fn a_path_that_is_a_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err();
    let opening = format!("sqlite open {}", dir.path().display());
    assert!(
        matches!(&err, StoreError::Backend { op, source } if *op == opening && source.is::<rusqlite::Error>()),
        "{err:?}"
    );
}

#[test]
fn a_file_from_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::UnsupportedSchema {
                found: 99,
                supported: 17,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_file_from_schema_version_1_gains_the_lease_tables_the_deadline_limits_versions_and_ready_queue_and_keeps_its_tasks()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let t = task(4);
    {
        let store = open(&path);
        store.insert_task(&t, &inputs(4)).await.unwrap();
        store.save_plan(&t.id, &shards(4, 2)).await.unwrap();
    }
    // What a dts from before leases wrote.
    rewind(&path, 1);
    let store = open(&path);
    let read = store.task(&t.id).await.unwrap().expect("the task is kept");
    assert_eq!(read.chunks_to_execute, 2);
    assert_eq!(
        (read.version, read.memory_mb, read.milli_cpus),
        (0, None, None),
        "what the old file did not have reads as unset"
    );
    assert_eq!(read.scheduling, Scheduling::default());
    assert_eq!(
        store.inputs_range(&t.id, 1, 2).await.unwrap(),
        Some(inputs(4)[1..3].to_vec()),
        "its inputs read by range from the array it was stored with"
    );
    let runnable = store.runnable_tasks(10).await.unwrap();
    assert_eq!(
        runnable
            .iter()
            .map(|r| (r.task.id.as_str(), r.ready, r.held))
            .collect::<Vec<_>>(),
        vec![(t.id.as_str(), 2, 0)],
        "the task in progress gained its ready queue"
    );
    let changed = store
        .transition(&t.id, TaskStatus::Cancelled, None)
        .await
        .unwrap();
    assert_eq!(changed.version, 1);
    assert_eq!(
        store
            .claim_shard(&t.id, 0, "w-a", Duration::from_secs(60))
            .await
            .unwrap(),
        ShardClaim::Acquired { attempt: 1 }
    );
    assert_eq!(store.mark_item_started(&t.id, 0).await.unwrap(), 1);
    drop(store);
    assert_eq!(schema_version(&path), 17);
}

#[tokio::test]
async fn a_file_from_schema_version_4_queues_exactly_the_open_unleased_shards_of_tasks_in_progress_and_gains_the_task_and_label_columns()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let lease = Duration::from_secs(600);
    let (running, cancelled) = (task(8), task(4));
    let worker = fixtures::worker("w-old");
    {
        let store = open(&path);
        store.heartbeat(&worker, lease).await.unwrap();
        store.insert_task(&running, &inputs(8)).await.unwrap();
        store.save_plan(&running.id, &shards(8, 2)).await.unwrap();
        store
            .complete_shard(&running.id, 0, &[ok(0), ok(1)])
            .await
            .unwrap();
        store
            .claim_shard(&running.id, 2, "w-a", lease)
            .await
            .unwrap();
        store.insert_task(&cancelled, &inputs(4)).await.unwrap();
        store.save_plan(&cancelled.id, &shards(4, 2)).await.unwrap();
        store
            .transition(&cancelled.id, TaskStatus::Cancelled, None)
            .await
            .unwrap();
    }
    // What a dts from before the ready queue wrote.
    rewind(&path, 4);
    let store = open(&path);
    let queued: Vec<(String, u32)> = {
        let raw = Connection::open(&path).unwrap();
        let mut stmt = raw
            .prepare(
                "SELECT t.id, r.shard FROM ready_shards r JOIN tasks t ON t.key = r.task_key \
                 ORDER BY t.key, r.shard",
            )
            .unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        queued,
        vec![(running.id.clone(), 1), (running.id.clone(), 3)],
        "neither the completed shard 0, the leased shard 2 nor the cancelled task"
    );
    let runnable = store.runnable_tasks(10).await.unwrap();
    assert_eq!(
        runnable
            .iter()
            .map(|r| (r.task.id.as_str(), r.ready, r.held))
            .collect::<Vec<_>>(),
        vec![(running.id.as_str(), 2, 1)]
    );
    assert_eq!(
        runnable[0].task.scheduling,
        Scheduling::default(),
        "the task columns of version 6 read as their defaults"
    );
    for shard in [1, 3] {
        assert_eq!(
            store
                .claim_ready_shard(&running.id, "w-b", lease, None)
                .await
                .unwrap(),
            ReadyClaim::Claimed {
                shard,
                range: shards(8, 2)[shard as usize],
                attempt: 1,
                first: true,
            }
        );
    }
    assert_eq!(
        store
            .claim_ready_shard(&running.id, "w-b", lease, None)
            .await
            .unwrap(),
        ReadyClaim::NoneReady
    );
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![worker.clone()],
        "the worker reads back with no labels"
    );
    let labelled = WorkerInfo {
        labels: [("zone".to_string(), "eu".to_string())].into(),
        ..worker
    };
    store.heartbeat(&labelled, lease).await.unwrap();
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![labelled],
        "the labels column of version 7 stores them"
    );
    drop(store);
    assert_eq!(schema_version(&path), 17);
}

#[tokio::test]
async fn a_file_from_schema_version_5_keeps_its_tasks_as_ordinary_ones_and_stores_scheduling_fields_from_then_on()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let old = task(2);
    {
        let store = open(&path);
        store.insert_task(&old, &inputs(2)).await.unwrap();
    }
    // What a dts from before scheduling fields wrote.
    rewind(&path, 5);
    let store = open(&path);
    let read = store
        .task(&old.id)
        .await
        .unwrap()
        .expect("the task is kept");
    assert_eq!(
        read,
        Task {
            scheduling: Scheduling::default(),
            halt: None,
            after: None,
            ..old
        },
        "only the scheduling fields and the halt are new, and they read as their defaults"
    );
    let new = task(2);
    store.insert_task(&new, &inputs(2)).await.unwrap();
    let read = store.task(&new.id).await.unwrap().expect("the new task");
    assert_ne!(new.scheduling, Scheduling::default());
    assert_eq!(read.scheduling, new.scheduling);
}

#[tokio::test]
async fn a_file_from_schema_version_6_keeps_its_live_workers_with_no_labels_and_then_stores_labels()
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let before = fixtures::worker("w-old");
    open(&path)
        .heartbeat(&before, Duration::from_secs(600))
        .await
        .unwrap();
    // What a dts from before labels wrote.
    rewind(&path, 6);
    let store = open(&path);
    assert_eq!(store.live_workers().await.unwrap(), vec![before.clone()]);
    let labelled = WorkerInfo {
        labels: [("zone".to_string(), "eu".to_string())].into(),
        ..before
    };
    store
        .heartbeat(&labelled, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(store.live_workers().await.unwrap(), vec![labelled]);
}

#[tokio::test]
async fn unreadable_stored_data_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let store = open(&path);
    let (a, b) = (task(2), task(2));
    for t in [&a, &b] {
        store.insert_task(t, &inputs(2)).await.unwrap();
        store.save_plan(&t.id, &shards(2, 1)).await.unwrap();
    }
    {
        // Hand-edited behind the store's back.
        let raw = Connection::open(&path).unwrap();
        raw.execute(
            "UPDATE tasks SET variables = '{not json', plan = '[{\"start\":' WHERE id = ?1",
            [&a.id],
        )
        .unwrap();
        raw.execute("UPDATE task_input_pages SET inputs = '[1, 2]'", [])
            .unwrap();
        raw.execute("UPDATE tasks SET status = 'DONE' WHERE id = ?1", [&b.id])
            .unwrap();
    }
    let corrupt = |what: &str, result: Result<_, StoreError>| match result {
        Err(StoreError::Corrupt { what: w, .. }) => assert!(w.contains(what), "{w}"),
        Err(other) => panic!("expected corrupt {what}, got {other}"),
        Ok(_) => panic!("expected corrupt {what}, got a value"),
    };
    corrupt("variables", store.task(&a.id).await.map(|_| ()));
    corrupt("variables", store.save_plan(&a.id, &[]).await.map(|_| ()));
    corrupt("inputs", store.inputs(&a.id).await.map(|_| ()));
    corrupt("status", store.task(&b.id).await.map(|_| ()));
    corrupt("status", store.list_tasks(None, 10).await.map(|_| ()));

    // The plan column is checked too once the task itself reads back.
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE tasks SET variables = '{}' WHERE id = ?1", [&a.id])
        .unwrap();
    corrupt("plan", store.save_plan(&a.id, &[]).await.map(|_| ()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_on_one_file_count_each_shard_once() {
    // Two processes sharing one data directory, as two `dts` commands might.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let (one, two) = (open(&path), open(&path));
    let t = task(100);
    one.insert_task(&t, &inputs(100)).await.unwrap();
    two.save_plan(&t.id, &shards(100, 10)).await.unwrap();

    let mut calls = Vec::new();
    for store in [&one, &two] {
        for shard in 0..10u32 {
            let (store, id) = (Arc::clone(store), t.id.clone());
            let results: Vec<ItemResult> = (u64::from(shard) * 10..u64::from(shard) * 10 + 10)
                .map(ok)
                .collect();
            calls.push(tokio::spawn(async move {
                store.complete_shard(&id, shard, &results).await
            }));
        }
    }
    let mut finished = 0;
    for call in calls {
        finished += usize::from(call.await.unwrap().unwrap().finished_task);
    }
    assert_eq!(finished, 1);
    let after = one.task(&t.id).await.unwrap().unwrap();
    assert_eq!(
        (after.status, after.chunks_executed, after.items_succeeded),
        (TaskStatus::Completed, 10, 100)
    );
}

#[tokio::test]
async fn a_million_inputs_round_trip() {
    let store = SqliteStore::in_memory().unwrap();
    let many: Vec<Bytes> = (0..1_000_000).map(|i| Bytes::from(i.to_string())).collect();
    let t = task(many.len());
    store.insert_task(&t, &many).await.unwrap();
    assert_eq!(
        store.inputs(&t.id).await.unwrap().map(|v| v.len()),
        Some(1_000_000)
    );
}

/// Set for the child process of the kill test: the file it writes to.
const CHILD_DB: &str = "DTS_STORE_TEST_CHILD_DB";
/// Set for the child process of the kill test: the task whose shards it completes.
const CHILD_TASK: &str = "DTS_STORE_TEST_CHILD_TASK";

/// Not a test of its own: the writer that
/// `a_process_killed_mid_write_leaves_only_whole_changes` starts and kills.
#[test]
#[ignore = "started as a child process by another test"]
fn child_completes_shards_until_killed() {
    let (Ok(path), Ok(id)) = (std::env::var(CHILD_DB), std::env::var(CHILD_TASK)) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = open(Path::new(&path));
        for shard in 0..1_000u64 {
            let results: Vec<ItemResult> = (shard * 100..shard * 100 + 100).map(ok).collect();
            store
                .complete_shard(&id, shard as u32, &results)
                .await
                .unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_write_leaves_only_whole_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let t = task(100_000);
    {
        let store = open(&path);
        store.insert_task(&t, &inputs(100_000)).await.unwrap();
        store.save_plan(&t.id, &shards(100_000, 100)).await.unwrap();
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_completes_shards_until_killed",
            "--ignored",
        ])
        .env(CHILD_DB, &path)
        .env(CHILD_TASK, &t.id)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();

    // Kill it (SIGKILL) while it is busy writing.
    let watcher = open(&path);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done = watcher.task(&t.id).await.unwrap().unwrap().chunks_executed;
        if done >= 20 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the writer exited before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the writer made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(watcher);

    let store = open(&path);
    let after = store.task(&t.id).await.unwrap().unwrap();
    let completed = store.completed_shards(&t.id).await.unwrap();
    let (recorded, _) = store.results(&t.id, ResultFilter::All, 0, 0).await.unwrap();
    assert!(
        after.chunks_executed >= 20 && after.chunks_executed < 1_000,
        "{after:?}"
    );
    assert_eq!(completed, (0..after.chunks_executed).collect::<Vec<_>>());
    assert_eq!(recorded, u64::from(after.chunks_executed) * 100);
    assert_eq!(after.items_succeeded, recorded);
    assert_eq!(after.status, TaskStatus::InProgress);
}

#[tokio::test]
async fn expiring_all_leases_lets_the_next_claim_take_over_as_a_new_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("dts.sqlite")).unwrap();
    let t = task(4);
    store.insert_task(&t, &inputs(4)).await.unwrap();
    store.save_plan(&t.id, &shards(4, 2)).await.unwrap();
    let lease = Duration::from_secs(600);
    assert_eq!(
        store.claim_shard(&t.id, 0, "dead", lease).await.unwrap(),
        ShardClaim::Acquired { attempt: 1 }
    );
    assert!(matches!(
        store
            .claim_shard(&t.id, 0, "restarted", lease)
            .await
            .unwrap(),
        ShardClaim::Held { .. }
    ));
    assert_eq!(store.expire_all_leases().await.unwrap(), 1);
    assert_eq!(
        store
            .claim_shard(&t.id, 0, "restarted", lease)
            .await
            .unwrap(),
        ShardClaim::Acquired { attempt: 2 }
    );
}

#[tokio::test]
async fn expiring_all_leases_makes_every_held_shard_ready_as_a_new_attempt() {
    let store = SqliteStore::in_memory().unwrap();
    let lease = Duration::from_secs(600);
    let t = task(8);
    let plan = shards(8, 2);
    store.insert_task(&t, &inputs(8)).await.unwrap();
    store.save_plan(&t.id, &plan).await.unwrap();
    for shard in 0..3 {
        assert_eq!(
            store
                .claim_ready_shard(&t.id, "dead", lease, None)
                .await
                .unwrap(),
            ReadyClaim::Claimed {
                shard,
                range: plan[shard as usize],
                attempt: 1,
                first: true,
            }
        );
    }
    let counts = |runnable: Vec<dts_store::RunnableTask>| {
        runnable
            .into_iter()
            .map(|r| (r.ready, r.held))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(store.runnable_tasks(10).await.unwrap()),
        vec![(1, 3)]
    );
    assert_eq!(store.expire_all_leases().await.unwrap(), 3);
    assert_eq!(
        counts(store.runnable_tasks(10).await.unwrap()),
        vec![(4, 0)]
    );
    // The restarted process takes them back lowest first, each as attempt 2.
    for (shard, attempt) in [(0, 2), (1, 2), (2, 2), (3, 1)] {
        assert_eq!(
            store
                .claim_ready_shard(&t.id, "restarted", lease, Some(4))
                .await
                .unwrap(),
            ReadyClaim::Claimed {
                shard,
                range: plan[shard as usize],
                attempt,
                first: attempt == 1,
            }
        );
    }
    assert_eq!(
        counts(store.runnable_tasks(10).await.unwrap()),
        vec![(0, 4)]
    );
}

/// Inputs whose JSON and text forms differ: escapes, NUL, unicode, empties.
fn awkward_inputs(n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| match i % 4 {
            0 => Bytes::default(),
            1 => Bytes::from(format!("quo\"te\nline {i} \u{0} é😀")),
            2 => Bytes::from(format!("[\"{i}\"]")),
            _ => Bytes::from(format!("item-{i}")),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stored_before_input_pages_reads_by_range_from_its_one_array() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let all = awkward_inputs(2_500);
    let (old, empty) = (task(all.len()), task(0));
    {
        let store = open(&path);
        store.insert_task(&old, &all).await.unwrap();
        store.insert_task(&empty, &[]).await.unwrap();
    }
    // What a dts from before input pages wrote: one JSON array per task.
    rewind(&path, 7);
    let pages: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM task_inputs", [], |row| row.get(0))
        .unwrap();
    assert_eq!(pages, 2, "both tasks' inputs are one array each");

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    assert_eq!(store.inputs(&old.id).await.unwrap().as_ref(), Some(&all));
    for (start, len) in [(0, 1), (3, 4), (1_023, 3), (2_400, 100), (2_490, 50)] {
        let end = (start + len).min(all.len());
        assert_eq!(
            store
                .inputs_range(&old.id, start as u64, len as u64)
                .await
                .unwrap()
                .as_deref(),
            Some(&all[start..end]),
            "inputs {start}+{len}"
        );
    }
    assert_eq!(
        store.inputs_range(&empty.id, 0, 5).await.unwrap(),
        Some(Vec::new())
    );

    // A task stored now uses the pages, next to the old one.
    let new = task(all.len());
    store.insert_task(&new, &all).await.unwrap();
    assert_eq!(
        store
            .inputs_range(&new.id, 1_020, 10)
            .await
            .unwrap()
            .as_deref(),
        Some(&all[1_020..1_030])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_before_speculation_existed_reads_as_claimed_long_ago_and_copies_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let t = task(2);
    {
        let store = open(&path);
        store.insert_task(&t, &inputs(2)).await.unwrap();
        store.save_plan(&t.id, &shards(2, 2)).await.unwrap();
        let claim = store
            .claim_ready_shard(&t.id, "worker-a", Duration::from_secs(600), None)
            .await
            .unwrap();
        assert!(
            matches!(claim, ReadyClaim::Claimed { shard: 0, .. }),
            "{claim:?}"
        );
    }
    // What a dts from before straggler speculation wrote.
    rewind(&path, 8);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    let hour = Duration::from_secs(3_600);
    let copy = store
        .claim_copy(&t.id, "worker-b", hour, hour)
        .await
        .unwrap();
    assert!(
        matches!(
            copy,
            CopyClaim::Copied {
                shard: 0,
                attempt: 1,
                ..
            }
        ),
        "{copy:?}"
    );
    let again = store
        .claim_copy(&t.id, "worker-b", hour, hour)
        .await
        .unwrap();
    assert_eq!(again, CopyClaim::NoStraggler, "copied once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stored_before_output_was_counted_read_as_the_bytes_kept_and_bytes_are_stored_from_then_on()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let t = task(3);
    let cut = ItemResult {
        stdout: "x".repeat(10).into(),
        stdout_truncated: true,
        stdout_bytes: 70_000,
        stderr: "warn\n".into(),
        stderr_bytes: 5,
        ..ok(1)
    };
    {
        let store = open(&path);
        store.insert_task(&t, &inputs(3)).await.unwrap();
        store.save_plan(&t.id, &shards(3, 3)).await.unwrap();
        store
            .record_results(&t.id, &[ok(0), cut.clone()])
            .await
            .unwrap();
    }
    // What a dts from before output was counted wrote: text, no counts.
    rewind(&path, 9);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    let (_, old) = store
        .results(&t.id, ResultFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!(old[0], ok(0), "a whole output counts as its bytes");
    assert_eq!(
        (
            old[1].stdout.as_bytes(),
            old[1].stdout_bytes,
            old[1].stderr_bytes
        ),
        (&b"xxxxxxxxxx"[..], 10, 5),
        "a cut output counts at least what was kept"
    );

    // From now on output is bytes and counted in full.
    let binary = ItemResult {
        stdout: dts_model::Bytes::from(&b"\x1f\x8b\x08\x00caf\xe9"[..]),
        stdout_bytes: 8,
        ..ok(2)
    };
    store
        .record_results(&t.id, &[binary.clone(), cut.clone()])
        .await
        .unwrap();
    let (_, now) = store
        .results(&t.id, ResultFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!(now[1..], [cut, binary]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stored_before_halt_existed_never_halts_and_a_new_one_keeps_its_halt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let old = Task {
        halt: None,
        after: None,
        ..task(2)
    };
    {
        let store = open(&path);
        store.insert_task(&old, &inputs(2)).await.unwrap();
        store.save_plan(&old.id, &shards(2, 1)).await.unwrap();
    }
    // What a dts from before `halt` wrote.
    rewind(&path, 11);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    assert_eq!(store.task(&old.id).await.unwrap().unwrap().halt, None);
    let failed = ItemResult {
        exit_code: Some(1),
        ..ok(0)
    };
    let status = store
        .record_results(&old.id, std::slice::from_ref(&failed))
        .await
        .unwrap();
    assert_eq!(
        status,
        TaskStatus::InProgress,
        "a task without a halt runs on"
    );

    let new = Task {
        halt: dts_model::Halt::parse("now,fail=1").unwrap(),
        ..task(2)
    };
    store.insert_task(&new, &inputs(2)).await.unwrap();
    store.save_plan(&new.id, &shards(2, 1)).await.unwrap();
    assert_eq!(store.task(&new.id).await.unwrap().unwrap().halt, new.halt);
    let status = store.record_results(&new.id, &[failed]).await.unwrap();
    assert_eq!(status, TaskStatus::Failed);
}

#[tokio::test]
async fn a_file_from_before_the_activity_counts_gets_them_from_the_results_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let old = task(3);
    {
        let store = open(&path);
        store.insert_task(&old, &inputs(3)).await.unwrap();
        store.save_plan(&old.id, &shards(3, 3)).await.unwrap();
        let by = |worker: &str, result: ItemResult| ItemResult {
            worker: worker.to_string(),
            ..result
        };
        let failed = ItemResult {
            exit_code: Some(2),
            ..ok(1)
        };
        store
            .complete_shard(
                &old.id,
                0,
                &[by("w1", ok(0)), by("w2", failed), by("w1", ok(2))],
            )
            .await
            .unwrap();
    }
    // What a dts from before the activity counts wrote.
    rewind(&path, 12);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    assert_eq!(store.stats().await.unwrap().items_finished, 3);
    let activity = store.task_activity(&old.id).await.unwrap().unwrap();
    let counts = |worker: &str| {
        let c = activity.per_worker[worker];
        (c.succeeded, c.failed)
    };
    assert_eq!((counts("w1"), counts("w2")), ((2, 0), (0, 1)));
    assert_eq!(
        activity.throughput,
        vec![],
        "the old results' times were never kept"
    );
}

#[tokio::test]
async fn a_file_from_before_the_outbox_owes_no_old_events_and_records_every_new_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let (old, new) = (task(1), task(1));
    {
        let store = open(&path);
        for task in [&old, &new] {
            store.insert_task(task, &inputs(1)).await.unwrap();
            store.save_plan(&task.id, &shards(1, 1)).await.unwrap();
        }
        store.complete_shard(&old.id, 0, &[ok(0)]).await.unwrap();
    }
    // What a dts from before the outbox wrote: the old task's event went
    // out (or was lost) back then.
    rewind(&path, 13);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    assert_eq!(store.pending_completions().await.unwrap(), 0);
    store.complete_shard(&new.id, 0, &[ok(0)]).await.unwrap();
    let claimed = store
        .claim_completions(10, Duration::ZERO, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|t| (t.id.as_str(), t.status))
            .collect::<Vec<_>>(),
        vec![(new.id.as_str(), TaskStatus::Completed)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stored_before_after_existed_waits_for_nothing_and_a_new_one_keeps_its_wait() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let old = Task {
        after: None,
        ..task(2)
    };
    {
        let store = open(&path);
        store.insert_task(&old, &inputs(2)).await.unwrap();
    }
    // What a dts from before `after` wrote.
    rewind(&path, 14);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    assert_eq!(store.task(&old.id).await.unwrap().unwrap(), old);
    let new = Task {
        id: dts_model::new_task_id(),
        status: TaskStatus::Waiting,
        ..task(2)
    };
    assert!(new.after.is_some(), "the fixture waits for a task");
    store.insert_task(&new, &inputs(2)).await.unwrap();
    assert_eq!(store.task(&new.id).await.unwrap().unwrap(), new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_before_schedules_keeps_its_tasks_and_stores_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let old = task(2);
    {
        let store = open(&path);
        store.insert_task(&old, &inputs(2)).await.unwrap();
    }
    // What a dts from before schedules wrote.
    rewind(&path, 15);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    assert_eq!(store.task(&old.id).await.unwrap().unwrap(), old);
    assert!(store.schedules().await.unwrap().is_empty());
    let body = serde_json::json!({
        "name": "nightly",
        "cron": "0 2 * * *",
        "task": {"templateFunction": "true", "inputList": ["x"]},
    });
    let schedule =
        dts_model::schedule::from_json(&body, &Default::default(), now_millis()).unwrap();
    store.insert_schedule(&schedule).await.unwrap();
    assert_eq!(store.schedule("nightly").await.unwrap(), Some(schedule));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stored_before_reduce_existed_ends_by_its_last_shard_and_a_new_one_reduces() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dts.sqlite");
    let old = task(2);
    {
        let store = open(&path);
        store.insert_task(&old, &inputs(2)).await.unwrap();
        store.save_plan(&old.id, &shards(2, 2)).await.unwrap();
    }
    // What a dts from before `reduce` wrote.
    rewind(&path, 16);

    let store = open(&path);
    assert_eq!(schema_version(&path), 17);
    let read = store.task(&old.id).await.unwrap().unwrap();
    assert_eq!((read.reduce, read.reduce_result), (None, None));
    let done = store
        .complete_shard(&old.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Completed);

    let new = Task {
        reduce: Some(dts_model::Reduce {
            template_function: "wc -l".to_string(),
            interpreter: "bash".to_string(),
            timeout_secs: 60,
            when: dts_model::ReduceWhen::Success,
        }),
        ..task(2)
    };
    store.insert_task(&new, &inputs(2)).await.unwrap();
    assert_eq!(store.task(&new.id).await.unwrap().unwrap(), new);
    store.save_plan(&new.id, &shards(2, 2)).await.unwrap();
    let done = store
        .complete_shard(&new.id, 0, &[ok(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(done.task.status, TaskStatus::Reducing);
    assert_eq!(
        store.claim_reduce(&new.id, "w").await.unwrap(),
        dts_store::ReduceClaim::Claimed { attempt: 1 }
    );
}
