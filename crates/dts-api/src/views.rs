//! How tasks, results, workers and errors look in JSON: the v1 shape (the
//! seed's field names plus dts's own in camelCase) and the seed's
//! `MasterTask` shape.
//!
//! The v1 views deserialize too, so clients (the `dts` CLI) read the same
//! types the server writes instead of indexing untyped JSON.

use dts_model::{
    AfterStatus, Bytes, Isolation, ItemResult, PastAttempt, ReduceResult, ReduceWhen, Scheduling,
    Task, TaskStatus, WorkerInfo, WorkerKind, format_millis,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A task in the v1 API, and the data of each `task` event of
/// `GET /v1/tasks/{id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// The task's id.
    pub id: String,
    /// The name the client gave, if any.
    pub name: Option<String>,
    /// Where the task is in its life.
    pub status: TaskStatus,
    /// The script template, as submitted.
    pub template_function: String,
    /// Left out of lists and events unless asked for (`?full=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub variable_json: Option<Value>,
    /// The program that runs the rendered script (`bash` by default).
    pub interpreter: String,
    /// Each item's time limit.
    pub timeout_secs: u64,
    /// How many times a failed item is tried again.
    pub retries: u32,
    /// The whole task's time limit from its submission, if any.
    pub deadline_secs: Option<u64>,
    /// Memory per item, in MiB; null for no limit.
    pub memory_mb: Option<u64>,
    /// CPUs per item (0.5, 2); null for no limit.
    pub cpus: Option<f64>,
    /// Higher runs first. The scheduling fields default when absent, so a
    /// client reads a server from before them.
    #[serde(default)]
    pub priority: i32,
    /// The task's share of slots against tasks of the same priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Items of the task that may run at once; null for no limit.
    #[serde(default)]
    pub max_concurrency: Option<u32>,
    /// Labels a worker must have to run the task; `{}` for any worker.
    #[serde(default)]
    pub requires: BTreeMap<String, String>,
    /// Whether a straggling item may run a second time elsewhere.
    #[serde(default = "default_speculation")]
    pub speculation: bool,
    /// GNU parallel's `--halt` as submitted (`now,fail=1`); null when the
    /// task runs every item whatever fails.
    #[serde(default)]
    pub halt: Option<String>,
    /// The tasks this one waits for (`WAITING` until they end as
    /// `afterStatus` asks); `[]` for a task that runs at once.
    #[serde(default)]
    pub after: Vec<String>,
    /// How the tasks in `after` must end: `COMPLETED` or `ENDED`; null
    /// when `after` is empty.
    #[serde(default)]
    pub after_status: Option<AfterStatus>,
    /// Left out of summaries, lists and events unless asked for. Each
    /// input as `inputList` takes it: a string, or `{"base64": ...}` when
    /// it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::openapi::BytesJson>>)]
    pub input_list: Option<Vec<Bytes>>,
    /// Items in the task.
    pub items_total: u64,
    /// Items that exited 0.
    pub items_succeeded: u64,
    /// Items that failed after their retries.
    pub items_failed: u64,
    /// Shards planned (the seed's name).
    pub chunks_to_execute: u32,
    /// Shards completed (the seed's name).
    pub chunks_executed: u32,
    /// When it was submitted (RFC 3339).
    pub created_at: String,
    /// When it was planned.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Why it failed or was ended, when dts knows.
    pub error: Option<String>,
    /// Why a task that has not ended and runs no item cannot run anywhere
    /// now: `no live worker`, or `no live worker has labels gpu=a100`. Left
    /// out when some live worker could run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_reason: Option<String>,
    /// The task's reduce step and, once recorded, its result; absent for
    /// a task without one (docs/workflows.md, "Reduce").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduce: Option<ReduceView>,
}

fn default_weight() -> u32 {
    Scheduling::default().weight
}

fn default_speculation() -> bool {
    Scheduling::default().speculation
}

impl TaskView {
    /// The task with its variables; `inputs` is left out of summaries
    /// (progress polling).
    pub fn new(task: Task, inputs: Option<Vec<Bytes>>) -> Self {
        let variables = task.variables.to_json();
        TaskView {
            variable_json: Some(variables),
            ..TaskView::brief(task)
        }
        .with_inputs(inputs)
    }

    /// The task without its variables and inputs, whose size only the
    /// limits bound: what lists and events show unless asked for more.
    pub fn brief(task: Task) -> Self {
        TaskView {
            variable_json: None,
            memory_mb: task.memory_mb,
            cpus: task.milli_cpus.map(|milli| f64::from(milli) / 1000.0),
            priority: task.scheduling.priority,
            weight: task.scheduling.weight,
            max_concurrency: task.scheduling.max_concurrency,
            requires: task.scheduling.requires,
            speculation: task.scheduling.speculation,
            halt: task.halt.map(|h| h.to_string()),
            after_status: task.after.as_ref().map(|after| after.status),
            after: task.after.map(|after| after.tasks).unwrap_or_default(),
            created_at: format_millis(task.created_at),
            started_at: task.started_at.map(format_millis),
            finished_at: task.finished_at.map(format_millis),
            id: task.id,
            name: task.name,
            status: task.status,
            template_function: task.template_function,
            interpreter: task.interpreter,
            timeout_secs: task.timeout_secs,
            retries: task.retries,
            deadline_secs: task.deadline_secs,
            input_list: None,
            items_total: task.items_total,
            items_succeeded: task.items_succeeded,
            items_failed: task.items_failed,
            chunks_to_execute: task.chunks_to_execute,
            chunks_executed: task.chunks_executed,
            error: task.error,
            waiting_reason: None,
            reduce: task.reduce.map(|reduce| ReduceView {
                template_function: reduce.template_function,
                interpreter: reduce.interpreter,
                timeout_secs: reduce.timeout_secs,
                when: reduce.when,
                result: task.reduce_result.map(ReduceResultView::from),
            }),
        }
    }

    /// The view with its `waitingReason` (see [`crate::waiting`]).
    pub fn with_waiting_reason(self, waiting_reason: Option<String>) -> Self {
        TaskView {
            waiting_reason,
            ..self
        }
    }

    fn with_inputs(self, inputs: Option<Vec<Bytes>>) -> Self {
        TaskView {
            input_list: inputs,
            ..self
        }
    }
}

/// A task as the seed's `MasterTask`: `variableJson` is a string.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedTaskView {
    /// The task's id.
    pub id: String,
    /// The script template.
    pub template_function: String,
    /// The variables, as one JSON string (the seed's shape).
    pub variable_json: String,
    /// The inputs (each a string, or `{"base64": ...}` when not UTF-8).
    #[schema(value_type = Vec<crate::openapi::BytesJson>)]
    pub input_list: Vec<Bytes>,
    /// The task's status.
    pub status: TaskStatus,
    /// Shards planned.
    pub chunks_to_execute: u32,
    /// Shards completed.
    pub chunks_executed: u32,
}

impl SeedTaskView {
    /// The seed's view of `task` with its `inputs`.
    pub fn new(task: Task, inputs: Vec<Bytes>) -> Self {
        SeedTaskView {
            variable_json: task.variables.to_json_string(),
            id: task.id,
            template_function: task.template_function,
            input_list: inputs,
            status: task.status,
            chunks_to_execute: task.chunks_to_execute,
            chunks_executed: task.chunks_executed,
        }
    }
}

/// One item's result, with `succeeded` spelled out.
///
/// Output is bytes, and JSON has none: `stdout` and `stderr` are the text
/// when it is valid UTF-8. When it is not, they are the text with U+FFFD for
/// each invalid sequence (for people), and `stdoutBase64` / `stderrBase64`
/// carry the exact bytes (for programs); they are absent otherwise.
/// `stdoutBytes` / `stderrBytes` count every byte written, past the cap too.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultView {
    /// The recorded result.
    pub result: ItemResult,
    /// Whether the item exited 0.
    pub succeeded: bool,
}

// A [`ResultView`] as JSON, borrowed for writing. Its schema is the
// result's in the OpenAPI document, so the document shows what is written.
/// One item's result. `stdout`, `stderr` and `input` are text, with U+FFFD
/// for bytes that are not UTF-8; then the `...Base64` field beside holds
/// the exact bytes (absent otherwise).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ResultView)]
struct ResultJson<'a> {
    /// The item's position in the task's input list, from 0.
    index: u64,
    /// The input the script ran with.
    input: std::borrow::Cow<'a, str>,
    /// The input's exact bytes, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_base64: Option<String>,
    /// The script's exit code; null when a signal ended it or it never ran.
    exit_code: Option<i32>,
    /// The signal that ended the script, if one did.
    signal: Option<i32>,
    /// The item ran past its timeout and was killed.
    timed_out: bool,
    /// What the script wrote to stdout, up to the cap.
    stdout: std::borrow::Cow<'a, str>,
    /// Stdout's exact bytes, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout_base64: Option<String>,
    /// What the script wrote to stderr, up to the cap.
    stderr: std::borrow::Cow<'a, str>,
    /// Stderr's exact bytes, when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_base64: Option<String>,
    /// More stdout was written than the cap kept.
    stdout_truncated: bool,
    /// More stderr was written than the cap kept.
    stderr_truncated: bool,
    /// Bytes written to stdout in all, past the cap too.
    stdout_bytes: u64,
    /// Bytes written to stderr in all, past the cap too.
    stderr_bytes: u64,
    /// How long the attempt ran, in milliseconds.
    duration_ms: u64,
    /// The worker that ran it.
    worker: &'a str,
    /// The attempt of the item this result is (1 for the first).
    attempt: u32,
    /// Why the item could not run or was stopped, when that is the case.
    error: Option<&'a str>,
    /// Whether the item exited 0.
    succeeded: bool,
}

/// [`ResultView`] is written through `ResultJson`: it has its schema.
impl utoipa::PartialSchema for ResultView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <ResultJson<'static> as utoipa::PartialSchema>::schema()
    }
}

impl ToSchema for ResultView {
    fn name() -> std::borrow::Cow<'static, str> {
        <ResultJson<'static> as ToSchema>::name()
    }
}

/// A task's `reduce`: the step as submitted, and its run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReduceView {
    /// The reduce's script template.
    pub template_function: String,
    /// The program that runs it.
    pub interpreter: String,
    /// Its time limit, in seconds.
    pub timeout_secs: u64,
    /// When it runs: `success` (every item succeeded) or `always`.
    pub when: ReduceWhen,
    /// What its run did; absent until recorded.
    pub result: Option<ReduceResultView>,
}

/// What a task's reduce run did. `stdout` and `stderr` are text, with
/// U+FFFD for bytes that are not UTF-8; then the `...Base64` field beside
/// holds the exact bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReduceResultView {
    /// It exited 0.
    pub succeeded: bool,
    /// Its exit code; null when a signal ended it or it never ran.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// It ran past `timeoutSecs` and was killed.
    pub timed_out: bool,
    /// What it wrote to stdout, up to the worker's cap.
    pub stdout: String,
    /// Stdout's exact bytes, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_base64: Option<String>,
    /// What it wrote to stderr, up to the cap.
    pub stderr: String,
    /// Stderr's exact bytes, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_base64: Option<String>,
    /// More stdout was written than the cap kept.
    pub stdout_truncated: bool,
    /// More stderr was written than the cap kept.
    pub stderr_truncated: bool,
    /// How long it ran, in milliseconds.
    pub duration_ms: u64,
    /// The worker that ran it.
    pub worker: String,
    /// Which attempt it was: each worker that died running it cost one.
    pub attempt: u32,
    /// Why it could not run or was stopped, when that is the case.
    pub error: Option<String>,
}

impl From<ReduceResult> for ReduceResultView {
    fn from(r: ReduceResult) -> Self {
        ReduceResultView {
            succeeded: r.succeeded(),
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            stdout: r.stdout.to_string_lossy().into_owned(),
            stdout_base64: base64_unless_text(&r.stdout),
            stderr: r.stderr.to_string_lossy().into_owned(),
            stderr_base64: base64_unless_text(&r.stderr),
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            duration_ms: r.duration_ms,
            worker: r.worker,
            attempt: r.attempt,
            error: r.error,
        }
    }
}

/// The exact bytes, when the text form of `output` is not them.
fn base64_unless_text(output: &Bytes) -> Option<String> {
    output.as_str().is_none().then(|| output.to_base64())
}

impl Serialize for ResultView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = &self.result;
        ResultJson {
            index: r.index,
            input: r.input.to_string_lossy(),
            input_base64: base64_unless_text(&r.input),
            exit_code: r.exit_code,
            signal: r.signal,
            timed_out: r.timed_out,
            stdout: r.stdout.to_string_lossy(),
            stdout_base64: base64_unless_text(&r.stdout),
            stderr: r.stderr.to_string_lossy(),
            stderr_base64: base64_unless_text(&r.stderr),
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            duration_ms: r.duration_ms,
            worker: &r.worker,
            attempt: r.attempt,
            error: r.error.as_deref(),
            succeeded: self.succeeded,
        }
        .serialize(serializer)
    }
}

/// A [`ResultView`] as JSON, read: the `...Base64` fields, when present,
/// are the bytes; the `...Bytes` counts are absent from older servers.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResultJsonOwned {
    #[serde(flatten)]
    result: ItemResult,
    #[serde(default)]
    stdout_base64: Option<String>,
    #[serde(default)]
    stderr_base64: Option<String>,
    succeeded: bool,
}

impl<'de> Deserialize<'de> for ResultView {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let json = ResultJsonOwned::deserialize(deserializer)?;
        let mut result = json.result;
        let exact = |field: &str, text: &str| {
            Bytes::from_base64(text)
                .map_err(|e| D::Error::custom(format!("{field} is not valid base64: {e}")))
        };
        if let Some(text) = &json.stdout_base64 {
            result.stdout = exact("stdoutBase64", text)?;
        }
        if let Some(text) = &json.stderr_base64 {
            result.stderr = exact("stderrBase64", text)?;
        }
        result.count_kept_output();
        Ok(ResultView {
            result,
            succeeded: json.succeeded,
        })
    }
}

/// An item in `GET /v1/tasks/{id}/results`: its result, and the attempts
/// of it that retries of the task ran before (oldest first, the last
/// [`PastAttempt::KEPT`]; absent when there were none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultItemView {
    /// The result, as `dts run --json` shows it too.
    #[serde(flatten)]
    pub view: ResultView,
    /// Earlier attempts, moved out of the result by `POST .../retry`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_attempts: Vec<PastAttempt>,
}

/// A page of `GET /v1/tasks/{id}/results`: `total` counts every result the
/// filter matches, `items` those from the page's offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ResultsPage {
    /// Results the filter matches, on every page.
    pub total: u64,
    /// This page's results, by index.
    pub items: Vec<ResultItemView>,
}

/// The answer to `POST /v1/tasks/{id}/retry`: the task, running again, and
/// what runs: `queued` items, `failed` of them had failed, `notRun` never ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryView {
    /// The task after the retry (`INPROGRESS`, or `REDUCING` when only its
    /// reduce runs again).
    pub task: TaskView,
    /// Items queued to run again.
    pub queued: u64,
    /// Of them, items whose last attempt had failed.
    pub failed: u64,
    /// Of them, items that had never run (the task was cancelled first).
    pub not_run: u64,
}

/// A live worker in `GET /v1/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    /// The worker's id.
    pub id: String,
    /// The machine it runs on.
    pub hostname: String,
    /// Items it runs at once.
    pub cores: u32,
    /// Its last heartbeat (RFC 3339).
    pub last_heartbeat: String,
    /// Items running at its last heartbeat.
    pub running_items: u32,
    /// `dts` (runs shards) or `node-beat` (announced through the seed's
    /// endpoint; runs nothing).
    pub kind: WorkerKind,
    /// How the worker isolates items; null when it does not say.
    pub isolation: Option<Isolation>,
    /// The labels it announces (`--label gpu=a100`), by name; `{}` when it
    /// has none, and from a server that predates labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Shards it held a lease on at its last heartbeat (0 from a worker
    /// that predates the count, and for `node-beat` entries).
    #[serde(default)]
    pub shards_held: u32,
}

impl From<WorkerInfo> for WorkerView {
    fn from(worker: WorkerInfo) -> Self {
        WorkerView {
            last_heartbeat: format_millis(worker.last_heartbeat),
            id: worker.id,
            hostname: worker.hostname,
            cores: worker.cores,
            running_items: worker.running_items,
            kind: worker.kind,
            isolation: worker.isolation,
            labels: worker.labels,
            shards_held: worker.shards_held,
        }
    }
}

/// The answer of `GET /healthz`: `{"status":"ok"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// Always `ok`: the store answered.
    pub status: String,
}

/// The answer of `POST /schedule/node-beat`: the heartbeat as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeBeatView {
    /// The node, as given.
    pub node_id: String,
    /// Its cores, as given or 1.
    pub cores: u32,
    /// Always true: a refused heartbeat is a 409.
    pub recorded: bool,
}

/// The body of every error response:
/// `{"error":{"code":"...","message":"...","field":"..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// An error's code, message, and the request field to blame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// For programs: `not_found`, `invalid_field`, `unauthorized`...
    /// Empty when whatever answered (a proxy) gave none.
    #[serde(default)]
    pub code: String,
    /// For people.
    pub message: String,
    /// The request field (or query parameter) to blame, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `ambiguous_id`: the task ids the prefix starts, the first few.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use dts_model::{SubmitLimits, submit};
    use serde_json::json;

    fn task() -> Task {
        let new = submit::from_json(
            &json!({"templateFunction": "echo {{x}} $1", "variableJson": {"x": 1}, "inputList": ["a"]}),
            &SubmitLimits::default(),
        )
        .unwrap();
        new.to_task(1_700_000_000_000)
    }

    fn result_with(stdout: &[u8], stderr: &[u8]) -> ResultView {
        let result: ItemResult = serde_json::from_value(json!({
            "index": 3, "input": "big.txt", "exitCode": 0, "signal": null, "timedOut": false,
            "stdout": "", "stderr": "", "stdoutTruncated": true, "stderrTruncated": false,
            "stdoutBytes": 588_895, "durationMs": 5, "worker": "w", "attempt": 1, "error": null
        }))
        .unwrap();
        ResultView {
            result: ItemResult {
                stdout: Bytes::from(stdout),
                stderr: Bytes::from(stderr),
                stderr_bytes: stderr.len() as u64,
                ..result
            },
            succeeded: true,
        }
    }

    #[test]
    fn output_that_is_not_utf8_is_lossy_text_for_people_and_exact_base64_for_programs() {
        let view = result_with(b"caf\xe9", b"\x1f\x8b\x08\x00");
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["stdout"], "caf\u{fffd}");
        assert_eq!(json["stdoutBase64"], "Y2Fm6Q==");
        assert_eq!(json["stderr"], "\u{1f}\u{fffd}\u{8}\u{0}");
        assert_eq!(json["stderrBase64"], "H4sIAA==");
        assert_eq!(
            (&json["stdoutBytes"], &json["stderrBytes"]),
            (&json!(588_895), &json!(4))
        );
        let read: ResultView = serde_json::from_value(json).unwrap();
        assert_eq!(read, view);
    }

    #[test]
    fn output_that_is_text_is_shown_as_it_is_with_no_base64_field() {
        let view = result_with("café\n".as_bytes(), b"");
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["stdout"], "café\n");
        assert_eq!(json["stderr"], "");
        let object = json.as_object().unwrap();
        assert!(!object.contains_key("stdoutBase64"), "{json}");
        assert!(!object.contains_key("stderrBase64"), "{json}");
        let read: ResultView = serde_json::from_value(json).unwrap();
        assert_eq!(read, view);
    }

    #[test]
    fn a_result_from_a_server_that_did_not_count_output_counts_what_it_kept() {
        let mut json = serde_json::to_value(result_with(b"hello", b"")).unwrap();
        let object = json.as_object_mut().unwrap();
        object.remove("stdoutBytes");
        object.remove("stderrBytes");
        let read: ResultView = serde_json::from_value(json).unwrap();
        assert_eq!((read.result.stdout_bytes, read.result.stderr_bytes), (5, 0));
    }

    #[test]
    fn a_client_reads_back_exactly_the_task_view_the_server_writes() {
        for view in [
            TaskView::new(task(), Some(vec!["a".into()])),
            TaskView::new(task(), None),
            TaskView::brief(task()),
        ] {
            let json = serde_json::to_string(&view).unwrap();
            let read: TaskView = serde_json::from_str(&json).unwrap();
            assert_eq!(read, view, "{json}");
        }
    }

    #[test]
    fn the_task_view_shows_its_halt_as_written_or_null() {
        let plain = serde_json::to_value(TaskView::brief(task())).unwrap();
        assert_eq!(plain["halt"], Value::Null);
        let new = submit::from_json(
            &json!({"templateFunction": "x", "inputList": [], "halt": "soon,fail=10%"}),
            &SubmitLimits::default(),
        )
        .unwrap();
        let set = serde_json::to_value(TaskView::brief(new.to_task(0))).unwrap();
        assert_eq!(set["halt"], json!("soon,fail=10%"));
    }

    #[test]
    fn the_task_view_shows_what_it_waits_for_or_nothing() {
        let plain = serde_json::to_value(TaskView::brief(task())).unwrap();
        assert_eq!(
            (&plain["after"], &plain["afterStatus"]),
            (&json!([]), &Value::Null)
        );
        let first = dts_model::new_task_id();
        let new = submit::from_json(
            &json!({"templateFunction": "x", "inputList": [], "after": [first], "afterStatus": "ENDED"}),
            &SubmitLimits::default(),
        )
        .unwrap();
        let waiting = serde_json::to_value(TaskView::brief(new.to_task(0))).unwrap();
        assert_eq!(waiting["after"], json!([first]));
        assert_eq!(waiting["afterStatus"], json!("ENDED"));
        assert_eq!(waiting["status"], json!("WAITING"));
    }

    #[test]
    fn the_v1_task_shows_its_scheduling_fields_in_camel_case() {
        let plain = serde_json::to_value(TaskView::brief(task())).unwrap();
        assert_eq!(
            [
                &plain["priority"],
                &plain["weight"],
                &plain["maxConcurrency"],
                &plain["requires"],
                &plain["speculation"],
            ],
            [&json!(0), &json!(1), &Value::Null, &json!({}), &json!(true)]
        );
        let new = submit::from_json(
            &json!({"templateFunction": "x", "inputList": [], "priority": -2, "weight": 3,
                    "maxConcurrency": 4, "requires": {"gpu": "a100"}, "speculation": false}),
            &SubmitLimits::default(),
        )
        .unwrap();
        let set = serde_json::to_value(TaskView::brief(new.to_task(0))).unwrap();
        assert_eq!(
            [
                &set["priority"],
                &set["weight"],
                &set["maxConcurrency"],
                &set["requires"],
                &set["speculation"],
            ],
            [
                &json!(-2),
                &json!(3),
                &json!(4),
                &json!({"gpu": "a100"}),
                &json!(false)
            ]
        );
    }

    #[test]
    fn a_task_view_from_a_server_without_scheduling_fields_reads_as_their_defaults() {
        let view = TaskView::brief(task());
        let mut json = serde_json::to_value(&view).unwrap();
        let object = json.as_object_mut().unwrap();
        for field in [
            "priority",
            "weight",
            "maxConcurrency",
            "requires",
            "speculation",
        ] {
            assert!(object.remove(field).is_some(), "{field} is written");
        }
        let read: TaskView = serde_json::from_value(json).unwrap();
        assert_eq!(read, view);
    }

    #[test]
    fn the_waiting_reason_is_on_the_wire_only_when_there_is_one() {
        let plain = serde_json::to_value(TaskView::brief(task())).unwrap();
        assert!(plain.get("waitingReason").is_none(), "{plain}");
        let waiting = TaskView::brief(task())
            .with_waiting_reason(Some("no live worker has labels gpu=a100".into()));
        let json = serde_json::to_value(&waiting).unwrap();
        assert_eq!(json["waitingReason"], "no live worker has labels gpu=a100");
        let read: TaskView = serde_json::from_value(json).unwrap();
        assert_eq!(read, waiting);
    }

    #[test]
    fn a_brief_task_view_leaves_variables_and_inputs_off_the_wire() {
        let json = serde_json::to_value(TaskView::brief(task())).unwrap();
        assert!(json.get("variableJson").is_none(), "{json}");
        assert!(json.get("inputList").is_none(), "{json}");
        assert_eq!(json["status"], "QUEUED");
    }

    fn worker(labels: &[(&str, &str)]) -> WorkerInfo {
        WorkerInfo {
            id: "w-1".into(),
            hostname: "box".into(),
            cores: 4,
            running_items: 1,
            last_heartbeat: 1_700_000_000_000,
            kind: WorkerKind::Dts,
            isolation: None,
            labels: labels
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            shards_held: 0,
            running_by_task: Default::default(),
        }
    }

    #[test]
    fn a_worker_view_shows_its_labels_as_an_object_and_an_empty_one_without_labels() {
        let json =
            serde_json::to_value(WorkerView::from(worker(&[("zone", "eu"), ("gpu", "a100")])))
                .unwrap();
        assert_eq!(json["labels"], json!({"gpu": "a100", "zone": "eu"}));
        let json = serde_json::to_value(WorkerView::from(worker(&[]))).unwrap();
        assert_eq!(json["labels"], json!({}));
    }

    #[test]
    fn a_client_reads_a_worker_view_from_a_server_without_labels_as_having_none() {
        let mut json = serde_json::to_value(WorkerView::from(worker(&[("gpu", "a100")]))).unwrap();
        let read: WorkerView = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read, WorkerView::from(worker(&[("gpu", "a100")])));
        json.as_object_mut().unwrap().remove("labels");
        let read: WorkerView = serde_json::from_value(json).unwrap();
        assert!(read.labels.is_empty(), "{read:?}");
    }

    #[test]
    fn an_error_without_a_code_from_something_else_than_dts_still_reads() {
        let body: ErrorBody =
            serde_json::from_value(json!({"error": {"message": "no such thing"}})).unwrap();
        assert_eq!(body.error.code, "");
        assert_eq!(body.error.message, "no such thing");
        assert_eq!(body.error.field, None);
    }
}
