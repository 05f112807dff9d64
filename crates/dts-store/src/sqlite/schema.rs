//! Connection settings and the schema, created (or checked) when a store opens.
//!
//! The schema version lives in `PRAGMA user_version`, so a file written by a
//! newer dts is refused instead of misread.

use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::time::Duration;

/// The schema this code writes; bump it with a migration step in [`migrate`].
pub(super) const SCHEMA_VERSION: i64 = 17;

/// How long a statement waits for another connection's write lock before it
/// fails as busy (a retryable error).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Enough for every distinct statement this module runs.
const STATEMENT_CACHE: usize = 64;

const SCHEMA_V1: &str = "
CREATE TABLE tasks (
    -- Other tables refer to the task by this key, not by its 36-byte id;
    -- it also orders tasks created in the same millisecond.
    key INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT,
    status TEXT NOT NULL,
    template_function TEXT NOT NULL,
    variables TEXT NOT NULL,
    interpreter TEXT NOT NULL,
    timeout_secs INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    items_total INTEGER NOT NULL,
    chunks_to_execute INTEGER NOT NULL,
    chunks_executed INTEGER NOT NULL,
    items_succeeded INTEGER NOT NULL,
    items_failed INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    error TEXT,
    -- JSON list of shard ranges; NULL until planned.
    plan TEXT
);
CREATE INDEX tasks_by_created ON tasks (created_at);
CREATE INDEX tasks_by_status ON tasks (status, created_at);

-- The whole input list as one JSON array: one write even for a million items.
CREATE TABLE task_inputs (
    task_key INTEGER PRIMARY KEY,
    inputs TEXT NOT NULL
);

CREATE TABLE completed_shards (
    task_key INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    PRIMARY KEY (task_key, shard)
) WITHOUT ROWID;

-- A rowid table on purpose: rows carry captured output, too large for WITHOUT ROWID.
CREATE TABLE results (
    task_key INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    input TEXT NOT NULL,
    exit_code INTEGER,
    signal INTEGER,
    timed_out INTEGER NOT NULL,
    stdout TEXT NOT NULL,
    stderr TEXT NOT NULL,
    stdout_truncated INTEGER NOT NULL,
    stderr_truncated INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    worker TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (task_key, idx)
);
-- Counting and paging only the failed (or succeeded) results of a task.
CREATE INDEX results_by_outcome ON results (task_key, succeeded, idx);

CREATE TABLE workers (
    id TEXT PRIMARY KEY NOT NULL,
    hostname TEXT NOT NULL,
    cores INTEGER NOT NULL,
    running_items INTEGER NOT NULL,
    last_heartbeat INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
";

/// Version 2: shard leases and item start counts (`leases`).
const SCHEMA_V2: &str = "
-- One row per shard ever claimed, until the shard completes. `owner` is NULL
-- once released; `dirty` says the release was not clean (the next claim is a
-- new attempt). Times are milliseconds on the store's clock (now_millis).
CREATE TABLE shard_leases (
    task_key INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    owner TEXT,
    expires_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    dirty INTEGER NOT NULL,
    PRIMARY KEY (task_key, shard)
) WITHOUT ROWID;

-- How often each item was started, kept only for items of shards that lost a worker.
CREATE TABLE item_starts (
    task_key INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    starts INTEGER NOT NULL,
    PRIMARY KEY (task_key, idx)
) WITHOUT ROWID;
";

/// Version 3: a task's deadline (`deadlineSecs`), NULL when it has none.
const SCHEMA_V3: &str = "ALTER TABLE tasks ADD COLUMN deadline_secs INTEGER;";

/// Version 4: a task's change counter (`version`) and resource limits
/// (`memoryMb`, `cpus` as milli-CPUs); a worker's kind and isolation (JSON).
/// Rows written before read as version 0, no limits, dts workers.
const SCHEMA_V4: &str = "
ALTER TABLE tasks ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN memory_mb INTEGER;
ALTER TABLE tasks ADD COLUMN milli_cpus INTEGER;
ALTER TABLE workers ADD COLUMN kind TEXT NOT NULL DEFAULT 'dts';
ALTER TABLE workers ADD COLUMN isolation TEXT;
";

/// Version 5: the ready-shard queue free slots claim from (late binding).
/// A file from before gets the shards of its in-progress tasks that are
/// neither completed nor leased, so those tasks can be claimed from at once.
const SCHEMA_V5: &str = "
-- Per task in progress, the shards neither completed nor owned by a lease,
-- claimed lowest first. A shard whose owner's lease expired is ready too but
-- stays in shard_leases, not here: its owner may still renew it.
CREATE TABLE ready_shards (
    task_key INTEGER NOT NULL,
    shard INTEGER NOT NULL,
    PRIMARY KEY (task_key, shard)
) WITHOUT ROWID;

INSERT INTO ready_shards (task_key, shard)
SELECT t.key, s.key FROM tasks t, json_each(t.plan) s
WHERE t.status = 'INPROGRESS' AND t.plan IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM completed_shards c WHERE c.task_key = t.key AND c.shard = s.key)
  AND NOT EXISTS (SELECT 1 FROM shard_leases l
                  WHERE l.task_key = t.key AND l.shard = s.key AND l.owner IS NOT NULL);
";

/// Version 6: a task's scheduling fields (`priority`, `weight`,
/// `maxConcurrency`, `requires` as a JSON object, `speculation`), as
/// columns so a claim can check `max_concurrency` in the same statement.
/// Rows written before read as the defaults they ran with.
const SCHEMA_V6: &str = "
ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN max_concurrency INTEGER;
ALTER TABLE tasks ADD COLUMN requires TEXT;
ALTER TABLE tasks ADD COLUMN speculation INTEGER NOT NULL DEFAULT 1;
";

/// Version 7: a worker's labels (a JSON object); NULL, as in rows written
/// before, means none.
const SCHEMA_V7: &str = "ALTER TABLE workers ADD COLUMN labels TEXT;";

/// Version 8: a new task's inputs in pages, so a claimed shard reads only
/// the pages its range covers. Tasks written before keep their one array in
/// `task_inputs` and are read from there.
const SCHEMA_V8: &str = "
-- A page holds the inputs from index `start` on, as a JSON array; pages of a
-- task follow each other without gaps. A rowid table: pages are large rows.
CREATE TABLE task_input_pages (
    task_key INTEGER NOT NULL,
    start INTEGER NOT NULL,
    inputs TEXT NOT NULL,
    PRIMARY KEY (task_key, start)
);
";

/// Version 9: straggler speculation. When the owner claimed a lease
/// (`claimed_at`, ms on the store's clock) and whether a copy of the shard
/// was handed out (`copied`). Leases written before read as claimed at 0
/// and never copied.
const SCHEMA_V9: &str = "
ALTER TABLE shard_leases ADD COLUMN claimed_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shard_leases ADD COLUMN copied INTEGER NOT NULL DEFAULT 0;
";

/// Version 10: output is bytes. How many bytes each stream wrote in all
/// (`stdoutBytes`, `stderrBytes`), past the cap too, so a cut can be told by
/// how much. Rows written before read as 0, which reading raises to the bytes
/// kept. (Output that is not UTF-8 is stored as a BLOB in the TEXT columns
/// `stdout` and `stderr`; that needs no change to the table.)
const SCHEMA_V10: &str = "
ALTER TABLE results ADD COLUMN stdout_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN stderr_bytes INTEGER NOT NULL DEFAULT 0;
";

/// Version 11: retries. The earlier attempts of an item that a retry ran
/// again, as a JSON array of `PastAttempt`s, oldest first.
const SCHEMA_V11: &str = "
CREATE TABLE item_history (
    task_key INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    attempts TEXT NOT NULL,
    PRIMARY KEY (task_key, idx)
) WITHOUT ROWID;
";

/// Version 12: `halt`, GNU parallel's `--halt` as written (`now,fail=1`).
/// Rows written before have none: they never halt.
const SCHEMA_V12: &str = "
ALTER TABLE tasks ADD COLUMN halt TEXT;
";

/// Version 13: what the dashboard and `/v1/overview` summarise, kept as
/// results are recorded so no page counts a million results: per task, the
/// results each worker recorded and the results recorded per 10-second
/// bucket; over the store, every result recorded and the recent buckets; per
/// worker, the shards it holds and its running items by task. A file from
/// before gets its counts from the results it holds (no buckets: their times
/// were never kept).
const SCHEMA_V13: &str = "
CREATE TABLE task_worker_counts (
    task_key INTEGER NOT NULL,
    worker TEXT NOT NULL,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    PRIMARY KEY (task_key, worker)
) WITHOUT ROWID;
-- `bucket`: the bucket's start, milliseconds since the epoch.
CREATE TABLE task_throughput (
    task_key INTEGER NOT NULL,
    bucket INTEGER NOT NULL,
    items INTEGER NOT NULL,
    PRIMARY KEY (task_key, bucket)
) WITHOUT ROWID;
CREATE TABLE store_throughput (
    bucket INTEGER PRIMARY KEY NOT NULL,
    items INTEGER NOT NULL
);
CREATE TABLE store_counters (
    name TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
);
INSERT INTO store_counters (name, value) SELECT 'items_finished', COUNT(*) FROM results;
INSERT INTO task_worker_counts (task_key, worker, succeeded, failed)
SELECT task_key, worker, SUM(succeeded), SUM(1 - succeeded) FROM results GROUP BY task_key, worker;
ALTER TABLE workers ADD COLUMN shards_held INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN running_by_task TEXT;
";

/// Version 14: the completion outbox (`outbox.rs`). A trigger adds a row
/// whenever a task's `finished_at` is set — entering any end state sets it,
/// whichever operation did (a transition, the last shard, a halt, a
/// deadline), and a new end state such as SKIPPED gets it by setting
/// `finished_at` too — in the transaction that changed the status, so no
/// path can end a task without its event. `at` (ms, the store's clock) is
/// when the entry was added or its claim expires; `finished_at` tells an
/// entry of a later end (after a retry) from the one a drainer claimed.
/// Tasks that ended before have their events published already: no rows.
const SCHEMA_V14: &str = "
CREATE TABLE completion_outbox (
    task_key INTEGER PRIMARY KEY NOT NULL,
    finished_at INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX completion_outbox_by_at ON completion_outbox (at);
CREATE TRIGGER completion_outbox_on_end AFTER UPDATE OF finished_at ON tasks
WHEN NEW.finished_at IS NOT NULL AND NEW.finished_at IS NOT OLD.finished_at
BEGIN
    INSERT OR REPLACE INTO completion_outbox (task_key, finished_at, at)
    VALUES (NEW.key, NEW.finished_at, NEW.finished_at);
END;
";

/// Version 15: `after`, the tasks a task waits for and how they must end,
/// as JSON. Rows written before have none: they never waited.
const SCHEMA_V15: &str = "
ALTER TABLE tasks ADD COLUMN after_tasks TEXT;
";

/// Version 16: schedules, each as its JSON, with the version its
/// compare-and-set compares.
const SCHEMA_V16: &str = "
CREATE TABLE schedules (
    name    TEXT PRIMARY KEY,
    body    TEXT NOT NULL,
    version INTEGER NOT NULL
);
";

/// Version 17: `reduce`, the script that runs once every item has its
/// result, and `reduce_result`, what its run did, both as JSON; and the
/// claim on the reduce: the worker running it (`reduce_owner`, whose
/// heartbeat in `workers` keeps the claim) and the claims made so far
/// (`reduce_attempts`, the attempt of the latest). Rows written before have
/// no reduce, and never had a claim.
const SCHEMA_V17: &str = "
ALTER TABLE tasks ADD COLUMN reduce TEXT;
ALTER TABLE tasks ADD COLUMN reduce_result TEXT;
ALTER TABLE tasks ADD COLUMN reduce_owner TEXT;
ALTER TABLE tasks ADD COLUMN reduce_attempts INTEGER NOT NULL DEFAULT 0;
";

/// Every migration step in order: step `n` upgrades version `n` to `n + 1`.
const STEPS: [&str; 17] = [
    SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8,
    SCHEMA_V9, SCHEMA_V10, SCHEMA_V11, SCHEMA_V12, SCHEMA_V13, SCHEMA_V14, SCHEMA_V15, SCHEMA_V16,
    SCHEMA_V17,
];
const _: () = assert!(STEPS.len() as i64 == SCHEMA_VERSION, "one step per version");

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetupError {
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(
        "schema version {found} is not one this dts can read (it writes version {SCHEMA_VERSION}); was the file written by a newer dts?"
    )]
    Unsupported { found: i64 },
}

/// Applies the connection settings. `file` is false for an in-memory store,
/// which has no journal to put in WAL mode.
pub(super) fn configure(conn: &Connection, file: bool) -> Result<(), SetupError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    if file {
        // WAL: readers never block the writer; NORMAL: a commit survives a
        // process crash (kill -9), only an OS crash can lose the last ones.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "sqlite store could not switch to WAL journal mode");
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    }
    Ok(())
}

/// Creates the schema in a new database, or checks an existing one's version.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), SetupError> {
    let tx = Transaction::new(conn, TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    // Each step upgrades from the version before it, so a new file runs
    // them all and an old one only those it misses.
    match usize::try_from(found) {
        Ok(done) if done <= STEPS.len() => {
            for step in &STEPS[done..] {
                tx.execute_batch(step)?;
            }
        }
        _ => return Err(SetupError::Unsupported { found }),
    }
    if found != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}
