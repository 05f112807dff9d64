//! The task model and the rules that need no I/O: statuses and their
//! transitions, templates, variables, request validation and shard planning.
//!
//! Everything else (store, bus, scheduler, worker, API) is built on these types;
//! nothing in here touches the network, the disk or a clock other than
//! [`now_millis`] (and the [`Clock`] that wraps it so tests can replace it).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod after;
pub mod bytes;
pub mod clock;
pub mod halt;
pub mod plan;
pub mod reduce;
pub mod schedule;
pub mod scheduling;
pub mod status;
pub mod submit;
pub mod template;
pub mod variables;

pub use after::{After, AfterStatus};
pub use bytes::Bytes;
pub use clock::{Clock, DynClock, SystemClock, system_clock};
pub use halt::Halt;
pub use plan::{PlanError, PlanLimits, ShardRange};
pub use reduce::{Reduce, ReduceResult, ReduceWhen};
pub use scheduling::Scheduling;
pub use status::{ItemFailures, TaskStatus};
pub use submit::{NewTask, SubmitLimits, ValidationError};
pub use variables::Variables;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: every timestamp dts stores.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A timestamp as RFC 3339 text with milliseconds, as the API shows it.
pub fn format_millis(ms: u64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// Whether `id` looks like an id dts gives out (a UUID), so nothing else
/// (paths, very long strings) ever reaches a store key.
pub fn is_valid_task_id(id: &str) -> bool {
    id.len() == 36 && uuid::Uuid::parse_str(id).is_ok()
}

/// A fresh task id.
pub fn new_task_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A fresh token for a speculative copy of a shard: random, at least 2 (0
/// and 1 meant "never copied" and "copied" before copies had tokens) and
/// below 2^62, so it fits SQLite's signed integers.
pub fn new_copy_token() -> u64 {
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    (high >> 2).max(2)
}

/// A task as the store keeps it, without its (possibly huge) input list.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The task's id (a UUID).
    pub id: String,
    /// A name for people, when the submitter gave one.
    pub name: Option<String>,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// The template as submitted; the scheduler renders it.
    pub template_function: String,
    /// The values pasted into the template's placeholders.
    pub variables: Variables,
    /// The program that runs the rendered script (`bash`).
    pub interpreter: String,
    /// Per-item timeout.
    pub timeout_secs: u64,
    /// Extra attempts for a failed item.
    pub retries: u32,
    /// Seconds after creation by which every item must have ended; items
    /// not ended by then fail (`deadlineSecs`).
    pub deadline_secs: Option<u64>,
    /// Items in the input list.
    pub items_total: u64,
    /// Shards planned (0 until planned).
    pub chunks_to_execute: u32,
    /// Shards completed.
    pub chunks_executed: u32,
    /// Items whose last attempt succeeded.
    pub items_succeeded: u64,
    /// Items whose last attempt failed.
    pub items_failed: u64,
    /// When the task was stored, in ms since the epoch.
    pub created_at: u64,
    /// When it was planned (entered `INPROGRESS`).
    pub started_at: Option<u64>,
    /// When it reached a terminal status.
    pub finished_at: Option<u64>,
    /// Why the task could not be submitted or planned, when it could not.
    pub error: Option<String>,
    /// Memory each item may use, in MiB (`memoryMb`); `None` for no limit.
    pub memory_mb: Option<u64>,
    /// CPU each item may use, in thousandths of a CPU (`cpus` × 1000,
    /// rounded up); `None` for no limit.
    pub milli_cpus: Option<u32>,
    /// Which slots may run the task's items, how many at once, and how it
    /// ranks against other tasks (`priority`, `weight`, `maxConcurrency`,
    /// `requires`, `speculation`).
    pub scheduling: Scheduling,
    /// Stop at failures, as GNU parallel's `--halt` (`halt`); `None` runs
    /// every item whatever fails.
    pub halt: Option<Halt>,
    /// The tasks this one waits for, and how they must end (`after`,
    /// `afterStatus`); `None` for a task that runs at once.
    pub after: Option<After>,
    /// The script that runs once every item has its result (`reduce`);
    /// `None` for a task without one.
    pub reduce: Option<Reduce>,
    /// What the reduce's run did, once recorded.
    pub reduce_result: Option<ReduceResult>,
    /// Grows by one with every store operation that changes the task, so a
    /// watcher can tell a change without comparing the whole task.
    pub version: u64,
}

impl Task {
    /// When the task's deadline passes, in milliseconds since the epoch.
    pub fn deadline_at(&self) -> Option<u64> {
        self.deadline_secs
            .map(|secs| self.created_at.saturating_add(secs.saturating_mul(1000)))
    }

    /// Items with a final result so far.
    pub fn items_done(&self) -> u64 {
        self.items_succeeded + self.items_failed
    }
}

/// The outcome of running one item (its last attempt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemResult {
    /// Position of the item in the task's input list.
    pub index: u64,
    /// The input the script ran with, exactly (it may not be UTF-8). In
    /// JSON `input` is its text, lossy when it is not UTF-8, and then
    /// `inputBase64` holds the exact bytes.
    #[serde(flatten, with = "input_fields")]
    pub input: Bytes,
    /// The script's exit code; `None` when a signal ended it or it never ran.
    pub exit_code: Option<i32>,
    /// The signal that ended the script, if one did.
    pub signal: Option<i32>,
    /// The item ran past the task's per-item timeout and was killed.
    pub timed_out: bool,
    /// What the script wrote to stdout, up to the cap, byte for byte.
    pub stdout: Bytes,
    /// What the script wrote to stderr, up to the cap, byte for byte.
    pub stderr: Bytes,
    /// More output was written than the cap kept.
    pub stdout_truncated: bool,
    /// More stderr was written than the cap kept.
    pub stderr_truncated: bool,
    /// Bytes written to stdout in all, past the cap too, so a user can be
    /// told by how much it was cut. Absent in records stored before dts
    /// counted; see [`ItemResult::count_kept_output`].
    #[serde(default)]
    pub stdout_bytes: u64,
    /// Bytes written to stderr in all, past the cap too.
    #[serde(default)]
    pub stderr_bytes: u64,
    /// How long the attempt ran.
    pub duration_ms: u64,
    /// Id of the worker that ran the attempt.
    pub worker: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Why the item could not run or was stopped, when that is the case.
    pub error: Option<String>,
}

impl ItemResult {
    /// The result of item `index` with nothing in it yet: no exit code,
    /// signal, output, duration or error. A result that did not come from
    /// a process (an item that could not run) starts here, and so do tests.
    pub fn empty(index: u64, input: Bytes, worker: String, attempt: u32) -> ItemResult {
        ItemResult {
            index,
            input,
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: Bytes::default(),
            stderr: Bytes::default(),
            stdout_truncated: false,
            stderr_truncated: false,
            stdout_bytes: 0,
            stderr_bytes: 0,
            duration_ms: 0,
            worker,
            attempt,
            error: None,
        }
    }

    /// Exit code 0, in time, nothing went wrong.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.error.is_none()
    }

    /// Makes each stream's count at least the bytes kept. A record stored
    /// before dts counted output reads as 0 bytes written; it wrote at least
    /// what was kept, and a store reading it calls this so the count never
    /// says less than the output shown.
    pub fn count_kept_output(&mut self) {
        self.stdout_bytes = self.stdout_bytes.max(self.stdout.len() as u64);
        self.stderr_bytes = self.stderr_bytes.max(self.stderr.len() as u64);
    }
}

/// An earlier attempt of an item, kept when a retry of the task
/// (`POST /v1/tasks/{id}/retry`) runs the item again: what a user needs to
/// see why it failed, without its output (the output of the run that
/// counts is the item's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PastAttempt {
    /// The attempt's number in the item's whole history (1 for the first).
    pub attempt: u32,
    /// The script's exit code; `None` when a signal ended it or it never ran.
    pub exit_code: Option<i32>,
    /// The signal that ended the script, if one did.
    pub signal: Option<i32>,
    /// The attempt ran past the per-item timeout.
    pub timed_out: bool,
    /// How long the attempt ran.
    pub duration_ms: u64,
    /// Id of the worker that ran it.
    pub worker: String,
    /// Why the item could not run or was stopped, when that is the case.
    pub error: Option<String>,
}

impl PastAttempt {
    /// The most earlier attempts kept per item: a task retried again and
    /// again keeps its newest history, not an unbounded one.
    pub const KEPT: usize = 10;

    /// `result` as an earlier attempt numbered `attempt`.
    pub fn of(result: &ItemResult, attempt: u32) -> PastAttempt {
        PastAttempt {
            attempt,
            exit_code: result.exit_code,
            signal: result.signal,
            timed_out: result.timed_out,
            duration_ms: result.duration_ms,
            worker: result.worker.clone(),
            error: result.error.clone(),
        }
    }

    /// The history of an item after its result `failed` moves into it: the
    /// result's attempt continues the numbering of `history` (a worker
    /// numbers attempts from 1 on every run), and only the newest
    /// [`PastAttempt::KEPT`] stay.
    pub fn push(mut history: Vec<PastAttempt>, failed: &ItemResult) -> Vec<PastAttempt> {
        let base = history.last().map_or(0, |last| last.attempt);
        history.push(PastAttempt::of(failed, base.saturating_add(failed.attempt)));
        let extra = history.len().saturating_sub(PastAttempt::KEPT);
        history.drain(..extra);
        history
    }
}

/// What kind of process sent a worker's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum WorkerKind {
    /// A dts worker: it consumes shards, so the scheduler plans with its cores.
    #[default]
    Dts,
    /// A node announced through the seed's `/schedule/node-beat`: listed,
    /// but it runs nothing, so it never counts in planning and never
    /// replaces a live dts worker's entry.
    NodeBeat,
}

/// How a worker isolates the items it runs, as it announces it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Isolation {
    /// How every descendant of an item is killed: "cgroup" or "subreaper".
    pub containment: String,
    /// The user items run as; `None` means the worker's own user.
    pub run_as: Option<String>,
    /// Each item runs in a fresh private directory.
    pub private_workdir: bool,
    /// Task limits this worker enforces: "memoryMb", "cpus".
    pub limits: Vec<String>,
}

/// A worker as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    /// The worker's id, unique in the installation.
    pub id: String,
    /// The machine it runs on.
    pub hostname: String,
    /// Items it runs at once.
    pub cores: u32,
    /// Items it was running at the heartbeat.
    pub running_items: u32,
    /// Milliseconds since the epoch.
    pub last_heartbeat: u64,
    /// Who sent the heartbeat; heartbeats stored before kinds existed are
    /// dts workers'.
    #[serde(default)]
    pub kind: WorkerKind,
    /// How the worker isolates items, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// The labels the worker announces (`--label gpu=a100`), by name;
    /// heartbeats stored before labels existed have none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Shards it held a lease on at the heartbeat; 0 from heartbeats that
    /// predate the count.
    #[serde(default)]
    pub shards_held: u32,
    /// Items it was running at the heartbeat, by task id (tasks with none
    /// are left out): how the dashboard counts a task's running items
    /// without a store write per item.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub running_by_task: BTreeMap<String, u32>,
}

/// On the task topic: "plan this task". The task itself is read from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMessage {
    /// The task to plan.
    pub task_id: String,
}

/// Everything a worker needs to run one shard, built from the stored task and
/// the shard's range when a slot claims it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardMessage {
    /// The task the shard belongs to.
    pub task_id: String,
    /// Which shard of the plan this is (from 0).
    pub shard_index: u32,
    /// Shards in the plan.
    pub shard_count: u32,
    /// Index of `items[0]` in the task's input list.
    pub start: u64,
    /// The rendered template.
    pub script: String,
    /// The program that runs `script`.
    pub interpreter: String,
    /// Per-item timeout.
    pub timeout_secs: u64,
    /// Extra attempts for a failed item.
    pub retries: u32,
    /// When the task's deadline passes (ms since the epoch), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_at: Option<u64>,
    /// The inputs of the shard's items, in order, as bytes: an input may
    /// be any bytes but NUL.
    pub items: Vec<Bytes>,
    /// The task's memory limit per item, in MiB, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// The task's CPU limit per item, in thousandths of a CPU, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milli_cpus: Option<u32>,
}

/// An item's input in JSON as two fields: `input`, text a person reads
/// (lossy when the bytes are not UTF-8), and `inputBase64`, present only
/// then, with the exact bytes. A reader that knows only `input` still gets
/// it as text; results stored before inputs were bytes have `input` alone.
mod input_fields {
    use super::Bytes;
    use serde::de::Error as _;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        input: &Bytes,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let exact = input.as_str().is_none();
        let mut map = serializer.serialize_map(Some(1 + usize::from(exact)))?;
        map.serialize_entry("input", &input.to_string_lossy())?;
        if exact {
            map.serialize_entry("inputBase64", &input.to_base64())?;
        }
        map.end()
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Fields {
        input: String,
        #[serde(default)]
        input_base64: Option<String>,
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Bytes, D::Error> {
        let fields = Fields::deserialize(deserializer)?;
        match fields.input_base64 {
            Some(encoded) => Bytes::from_base64(&encoded)
                .map_err(|e| D::Error::custom(format!("inputBase64 is not valid base64: {e}"))),
            None => Ok(Bytes::from(fields.input)),
        }
    }
}

/// On the result topic when a task ends, for any consumer to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletionEvent {
    /// The task that ended.
    pub task_id: String,
    /// Its terminal status.
    pub status: TaskStatus,
    /// Items in the task.
    pub items_total: u64,
    /// Items that succeeded.
    pub items_succeeded: u64,
    /// Items that failed.
    pub items_failed: u64,
    /// RFC 3339.
    pub finished_at: String,
    /// Why it failed or was cancelled (the task's `error`); `null` for a
    /// task that completed, or ended without one.
    #[serde(default)]
    pub reason: Option<String>,
    /// The task's name; `null` when it has none.
    #[serde(default)]
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_uuids_and_nothing_else() {
        assert!(is_valid_task_id(&new_task_id()));
        for bad in [
            "",
            "../../etc/passwd",
            "abc",
            &"a".repeat(36),
            "00000000-0000-0000-0000-00000000000%",
        ] {
            assert!(!is_valid_task_id(bad), "{bad}");
        }
    }

    #[test]
    fn success_needs_exit_zero_in_time() {
        let mut r = ItemResult {
            exit_code: Some(0),
            duration_ms: 1,
            ..ItemResult::empty(0, Bytes::default(), "w".into(), 1)
        };
        assert!(r.succeeded());
        r.timed_out = true;
        assert!(!r.succeeded());
        r.timed_out = false;
        r.exit_code = Some(1);
        assert!(!r.succeeded());
    }

    #[test]
    fn a_result_stored_before_output_was_counted_counts_at_least_what_it_kept() {
        let old = r#"{"index":0,"input":"a","exitCode":0,"signal":null,"timedOut":false,
            "stdout":"hello","stderr":"","stdoutTruncated":true,"stderrTruncated":false,
            "durationMs":1,"worker":"w","attempt":1,"error":null}"#;
        let mut read: ItemResult = serde_json::from_str(old).unwrap();
        assert_eq!((read.stdout_bytes, read.stderr_bytes), (0, 0));
        read.count_kept_output();
        assert_eq!((read.stdout_bytes, read.stderr_bytes), (5, 0));
    }

    #[test]
    fn output_that_is_not_utf8_survives_the_results_json() {
        let mut result: ItemResult = serde_json::from_str(
            r#"{"index":0,"input":"a","exitCode":0,"signal":null,"timedOut":false,
            "stdout":"","stderr":"","stdoutTruncated":false,"stderrTruncated":false,
            "durationMs":1,"worker":"w","attempt":1,"error":null}"#,
        )
        .unwrap();
        result.stdout = Bytes::new(b"caf\xe9\x00\x1f\x8b".to_vec());
        result.stdout_bytes = 7;
        let json = serde_json::to_string(&result).unwrap();
        assert_eq!(serde_json::from_str::<ItemResult>(&json).unwrap(), result);
    }

    #[test]
    fn a_failed_result_joins_its_history_numbered_after_it_and_only_ten_stay() {
        let failed = |attempt| ItemResult {
            exit_code: Some(2),
            duration_ms: 7,
            ..ItemResult::empty(4, "x".into(), "w1".into(), attempt)
        };
        let history = PastAttempt::push(Vec::new(), &failed(2));
        assert_eq!(history, [PastAttempt::of(&failed(2), 2)]);
        let history = PastAttempt::push(history, &failed(1));
        assert_eq!(
            history.iter().map(|p| p.attempt).collect::<Vec<_>>(),
            [2, 3]
        );
        let mut history = history;
        for _ in 0..12 {
            history = PastAttempt::push(history, &failed(1));
        }
        assert_eq!(
            history.iter().map(|p| p.attempt).collect::<Vec<_>>(),
            (6..=15).collect::<Vec<u32>>()
        );
    }

    #[test]
    fn a_result_shows_its_input_as_text_and_as_base64_when_it_is_not_utf8() {
        let mut result = ItemResult {
            exit_code: Some(0),
            duration_ms: 1,
            ..ItemResult::empty(0, Bytes::new(b"caf\xe9".to_vec()), "w".into(), 1)
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["input"], "caf\u{fffd}");
        assert_eq!(json["inputBase64"], "Y2Fm6Q==");
        assert_eq!(serde_json::from_value::<ItemResult>(json).unwrap(), result);

        result.input = Bytes::from("café");
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["input"], "café");
        assert_eq!(json.get("inputBase64"), None);
        assert_eq!(serde_json::from_value::<ItemResult>(json).unwrap(), result);
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
    }
}
