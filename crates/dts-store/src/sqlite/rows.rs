//! Rows to model types and back, and the error type the synchronous
//! operations in this module use.
//!
//! Every operation reads a task through [`load_task`] and writes its mutable
//! fields back through [`save_state`] inside the same transaction, so the
//! status rules live in Rust, next to the model, instead of in SQL.

use crate::StoreError;
use dts_model::{
    Bytes, Isolation, ItemResult, Scheduling, Task, TaskStatus, WorkerInfo, WorkerKind,
};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, named_params};
use std::collections::BTreeMap;

/// An error inside a blocking operation: SQLite's own (classified later,
/// with the operation's name) or one the operation decided on.
#[derive(Debug)]
pub(super) enum DbError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError::Store(e)
    }
}

pub(super) type DbResult<T> = Result<T, DbError>;

/// Turns a SQLite error into a [`StoreError`] naming `op`: busy or locked
/// (another connection holds the write lock past the busy timeout) may
/// succeed later, and so may a write to a full disk once space is freed;
/// anything else will not.
pub(super) fn classify(op: &str, e: rusqlite::Error) -> StoreError {
    let op = format!("sqlite {op}");
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Unavailable {
            op,
            source: e.into(),
        },
        Some(ErrorCode::DiskFull) => StoreError::Full {
            op,
            source: e.into(),
        },
        _ => StoreError::Backend {
            op,
            source: e.into(),
        },
    }
}

/// The columns [`task_from_row`] reads, in its order.
pub(super) const TASK_COLUMNS: &str = "key, id, name, status, template_function, variables, \
     interpreter, timeout_secs, retries, items_total, chunks_to_execute, chunks_executed, \
     items_succeeded, items_failed, created_at, started_at, finished_at, error, deadline_secs, \
     memory_mb, milli_cpus, version, priority, weight, max_concurrency, requires, speculation, halt, \
     after_tasks, reduce, reduce_result";

/// A task row as SQLite gives it; [`RawTask::decode`] checks the text fields.
pub(super) struct RawTask {
    key: i64,
    status: String,
    variables: String,
    requires: Option<String>,
    halt: Option<String>,
    after: Option<String>,
    reduce: Option<String>,
    reduce_result: Option<String>,
    task: Task,
}

/// Reads a row selected with [`TASK_COLUMNS`].
pub(super) fn task_from_row(row: &Row<'_>) -> rusqlite::Result<RawTask> {
    Ok(RawTask {
        key: row.get(0)?,
        status: row.get(3)?,
        variables: row.get(5)?,
        requires: row.get(25)?,
        halt: row.get(27)?,
        after: row.get(28)?,
        reduce: row.get(29)?,
        reduce_result: row.get(30)?,
        task: Task {
            id: row.get(1)?,
            name: row.get(2)?,
            status: TaskStatus::Queued,
            template_function: row.get(4)?,
            variables: Default::default(),
            interpreter: row.get(6)?,
            timeout_secs: row.get(7)?,
            retries: row.get(8)?,
            items_total: row.get(9)?,
            chunks_to_execute: row.get(10)?,
            chunks_executed: row.get(11)?,
            items_succeeded: row.get(12)?,
            items_failed: row.get(13)?,
            created_at: row.get(14)?,
            started_at: row.get(15)?,
            finished_at: row.get(16)?,
            error: row.get(17)?,
            deadline_secs: row.get(18)?,
            memory_mb: row.get(19)?,
            milli_cpus: row.get(20)?,
            version: row.get(21)?,
            scheduling: Scheduling {
                priority: row.get(22)?,
                weight: row.get(23)?,
                max_concurrency: row.get(24)?,
                requires: Default::default(),
                speculation: row.get(26)?,
            },
            halt: None,
            after: None,
            reduce: None,
            reduce_result: None,
        },
    })
}

impl RawTask {
    /// The row's key (its rowid, which other tables refer to) and the task.
    pub(super) fn decode(self) -> Result<(i64, Task), StoreError> {
        let RawTask {
            key,
            status,
            variables,
            requires,
            halt,
            after,
            reduce,
            reduce_result,
            mut task,
        } = self;
        task.status = status
            .parse()
            .map_err(|e| StoreError::corrupt(format!("task {} status", task.id), e))?;
        task.variables = serde_json::from_str(&variables)
            .map_err(|e| StoreError::corrupt(format!("task {} variables", task.id), e))?;
        if let Some(requires) = requires {
            task.scheduling.requires = serde_json::from_str(&requires)
                .map_err(|e| StoreError::corrupt(format!("task {} requires", task.id), e))?;
        }
        if let Some(after) = after {
            task.after = Some(
                serde_json::from_str(&after)
                    .map_err(|e| StoreError::corrupt(format!("task {} after", task.id), e))?,
            );
        }
        if let Some(reduce) = reduce {
            task.reduce = Some(
                serde_json::from_str(&reduce)
                    .map_err(|e| StoreError::corrupt(format!("task {} reduce", task.id), e))?,
            );
        }
        if let Some(result) = reduce_result {
            task.reduce_result =
                Some(serde_json::from_str(&result).map_err(|e| {
                    StoreError::corrupt(format!("task {} reduce result", task.id), e)
                })?);
        }
        if let Some(halt) = halt {
            task.halt = dts_model::Halt::parse(&halt)
                .map_err(|e| StoreError::corrupt(format!("task {} halt", task.id), e))?;
        }
        Ok((key, task))
    }
}

/// The task `id` and its row key, or [`StoreError::NoSuchTask`].
pub(super) fn load_task(conn: &Connection, id: &str) -> DbResult<(i64, Task)> {
    find_task(conn, id)?.ok_or_else(|| StoreError::NoSuchTask { id: id.to_string() }.into())
}

/// The task `id` and its row key, if it exists.
pub(super) fn find_task(conn: &Connection, id: &str) -> DbResult<Option<(i64, Task)>> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
    let raw = conn
        .prepare_cached(&sql)?
        .query_row([id], task_from_row)
        .optional()?;
    Ok(raw.map(RawTask::decode).transpose()?)
}

/// The row key of task `id`, or [`StoreError::NoSuchTask`].
pub(super) fn task_key(conn: &Connection, id: &str) -> DbResult<i64> {
    conn.prepare_cached("SELECT key FROM tasks WHERE id = ?1")?
        .query_row([id], |row| row.get(0))
        .optional()?
        .ok_or_else(|| StoreError::NoSuchTask { id: id.to_string() }.into())
}

pub(super) use crate::no_shard;

/// Writes every field an operation may change (status, counters, times,
/// error, the reduce's result) of the task at `key`, and counts the change
/// in its `version` (here and in `task`). Operations that may change
/// nothing call it only when the task differs from what they read.
pub(super) fn save_state(conn: &Connection, key: i64, task: &mut Task) -> DbResult<()> {
    let reduce_result = reduce_result_json(task)?;
    task.version += 1;
    conn.prepare_cached(
        "UPDATE tasks SET status = :status, chunks_to_execute = :chunks_to_execute, \
         chunks_executed = :chunks_executed, items_succeeded = :items_succeeded, \
         items_failed = :items_failed, started_at = :started_at, finished_at = :finished_at, \
         error = :error, reduce_result = :reduce_result, version = :version WHERE key = :key",
    )?
    .execute(named_params! {
        ":reduce_result": reduce_result,
        ":key": key,
        ":version": task.version,
        ":status": task.status.as_str(),
        ":chunks_to_execute": task.chunks_to_execute,
        ":chunks_executed": task.chunks_executed,
        ":items_succeeded": task.items_succeeded,
        ":items_failed": task.items_failed,
        ":started_at": task.started_at,
        ":finished_at": task.finished_at,
        ":error": task.error,
    })?;
    Ok(())
}

/// The task's reduce result as the `reduce_result` column holds it: JSON,
/// or NULL when there is none.
pub(super) fn reduce_result_json(task: &Task) -> Result<Option<String>, StoreError> {
    task.reduce_result
        .as_ref()
        .map(|result| crate::encode("reduce result", result))
        .transpose()
}

/// The columns [`result_from_row`] reads, in its order.
pub(super) const RESULT_COLUMNS: &str = "idx, input, exit_code, signal, timed_out, stdout, \
     stderr, stdout_truncated, stderr_truncated, duration_ms, worker, attempt, error, \
     stdout_bytes, stderr_bytes";

pub(super) fn result_from_row(row: &Row<'_>) -> rusqlite::Result<ItemResult> {
    let mut result = ItemResult {
        index: row.get(0)?,
        input: bytes_at(row, 1)?,
        exit_code: row.get(2)?,
        signal: row.get(3)?,
        timed_out: row.get(4)?,
        stdout: bytes_at(row, 5)?,
        stderr: bytes_at(row, 6)?,
        stdout_truncated: row.get(7)?,
        stderr_truncated: row.get(8)?,
        duration_ms: row.get(9)?,
        worker: row.get(10)?,
        attempt: row.get(11)?,
        error: row.get(12)?,
        stdout_bytes: row.get(13)?,
        stderr_bytes: row.get(14)?,
    };
    // Rows from before schema version 10 say 0 bytes written.
    result.count_kept_output();
    Ok(result)
}

/// Bytes (an input, captured output) as a column holds them: TEXT when
/// they are UTF-8 (as every value written before they were bytes is, and
/// readable in the sqlite3 shell), a BLOB otherwise. The columns have TEXT
/// affinity, which keeps a BLOB as it is.
pub(super) fn bytes_sql(bytes: &Bytes) -> ToSqlOutput<'_> {
    match bytes.as_str() {
        Some(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
        None => ToSqlOutput::Borrowed(ValueRef::Blob(bytes.as_bytes())),
    }
}

/// The bytes in column `index`, stored as TEXT or BLOB ([`bytes_sql`]).
pub(super) fn bytes_at(row: &Row<'_>, index: usize) -> rusqlite::Result<Bytes> {
    use rusqlite::types::FromSqlError;
    match row.get_ref(index)? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => Ok(Bytes::from(bytes)),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            index,
            other.data_type(),
            Box::new(FromSqlError::InvalidType),
        )),
    }
}

/// The columns [`worker_from_row`] reads, in its order.
pub(super) const WORKER_COLUMNS: &str = "id, hostname, cores, running_items, last_heartbeat, kind, isolation, labels, shards_held, \
     running_by_task";

/// A worker kind as the `kind` column holds it.
pub(super) fn kind_text(kind: WorkerKind) -> &'static str {
    match kind {
        WorkerKind::Dts => "dts",
        WorkerKind::NodeBeat => "node-beat",
    }
}

pub(super) fn worker_from_row(row: &Row<'_>) -> rusqlite::Result<WorkerInfo> {
    let kind: String = row.get(5)?;
    let kind = match kind.as_str() {
        "dts" => WorkerKind::Dts,
        "node-beat" => WorkerKind::NodeBeat,
        other => return Err(unreadable(5, format!("unknown worker kind {other:?}"))),
    };
    let isolation: Option<String> = row.get(6)?;
    let isolation = isolation
        .map(|json| serde_json::from_str::<Isolation>(&json))
        .transpose()
        .map_err(|e| unreadable(6, format!("worker isolation: {e}")))?;
    let labels: Option<String> = row.get(7)?;
    let labels = labels
        .map(|json| serde_json::from_str::<BTreeMap<String, String>>(&json))
        .transpose()
        .map_err(|e| unreadable(7, format!("worker labels: {e}")))?
        .unwrap_or_default();
    let running_by_task: Option<String> = row.get(9)?;
    let running_by_task = running_by_task
        .map(|json| serde_json::from_str::<BTreeMap<String, u32>>(&json))
        .transpose()
        .map_err(|e| unreadable(9, format!("worker running_by_task: {e}")))?
        .unwrap_or_default();
    Ok(WorkerInfo {
        id: row.get(0)?,
        hostname: row.get(1)?,
        cores: row.get(2)?,
        running_items: row.get(3)?,
        last_heartbeat: row.get(4)?,
        kind,
        isolation,
        labels,
        shards_held: row.get(8)?,
        running_by_task,
    })
}

/// A column whose text cannot be read back.
fn unreadable(column: usize, detail: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, detail.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    #[test]
    fn busy_and_locked_databases_are_worth_retrying() {
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED] {
            let e = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
            let err = classify("complete shard 3 of task t", e);
            assert!(err.is_retryable(), "{err}");
            match &err {
                StoreError::Unavailable { op, source } => {
                    assert_eq!(op, "sqlite complete shard 3 of task t");
                    assert!(source.is::<rusqlite::Error>(), "{source:?}");
                }
                other => panic!("expected unavailable, got {other:?}"),
            }
        }
    }

    #[test]
    fn other_sqlite_errors_are_not_worth_retrying() {
        let e = rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CORRUPT), None);
        let err = classify("read task t", e);
        assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
}
