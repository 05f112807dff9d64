//! Model types to Redis values and back.
//!
//! A task is a hash of text fields named as in the task's JSON (camelCase),
//! so `HGETALL` in `redis-cli` reads like the API; absent optional fields
//! (`name`, `startedAt`, `finishedAt`, `error`, `maxConcurrency`, an empty
//! `requires`, `halt`, `after`, `reduce`, `reduceResult`) are absent from
//! the hash, and scheduling fields a task stored before they existed lacks
//! read as their defaults. `reduce` and `reduceResult` are JSON; a task with
//! a reduce also has `reduceWhen` (its `when`, which `complete_shard.lua`
//! and `save_plan.lua` look the last-shard rule up with).
//! The store adds `member` (the task's entry in the list indexes), `plan`
//! (the shard ranges as JSON, once planned) and, once a worker claimed the
//! reduce, `reduceOwner` (that worker) and `reduceAttempts` (claims so far;
//! `lua/claim_reduce.lua`). Heartbeats are JSON, and so
//! are results: in full for tasks of results layout 1, compact (defaults
//! left out, the worker as a number) for layout 2 (see [`ResultForm`]).

use crate::{Cause, StoreError, StoreResult};
use dts_model::{Bytes, ItemResult, Scheduling, Task, TaskStatus, WorkerInfo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::str::FromStr;

/// The hash fields of a new task, as field/value pairs.
pub(super) fn task_fields(task: &Task) -> StoreResult<Vec<(&'static str, String)>> {
    let variables = encode("variables", &task.variables)?;
    let scheduling = &task.scheduling;
    let requires = if scheduling.requires.is_empty() {
        None
    } else {
        Some(encode("requires", &scheduling.requires)?)
    };
    let after = match &task.after {
        Some(after) => Some(encode("after", after)?),
        None => None,
    };
    let reduce = match &task.reduce {
        Some(reduce) => Some(encode("reduce", reduce)?),
        None => None,
    };
    let reduce_result = match &task.reduce_result {
        Some(result) => Some(encode("reduce result", result)?),
        None => None,
    };
    let mut fields = vec![
        ("id", task.id.clone()),
        ("status", task.status.as_str().to_string()),
        ("templateFunction", task.template_function.clone()),
        ("variables", variables),
        ("interpreter", task.interpreter.clone()),
        ("timeoutSecs", task.timeout_secs.to_string()),
        ("retries", task.retries.to_string()),
        ("itemsTotal", task.items_total.to_string()),
        ("chunksToExecute", task.chunks_to_execute.to_string()),
        ("chunksExecuted", task.chunks_executed.to_string()),
        ("itemsSucceeded", task.items_succeeded.to_string()),
        ("itemsFailed", task.items_failed.to_string()),
        ("createdAt", task.created_at.to_string()),
        ("version", task.version.to_string()),
        ("priority", scheduling.priority.to_string()),
        ("weight", scheduling.weight.to_string()),
        ("speculation", scheduling.speculation.to_string()),
    ];
    let optional = [
        ("name", task.name.clone()),
        ("startedAt", task.started_at.map(|t| t.to_string())),
        ("finishedAt", task.finished_at.map(|t| t.to_string())),
        ("error", task.error.clone()),
        ("deadlineSecs", task.deadline_secs.map(|s| s.to_string())),
        ("memoryMb", task.memory_mb.map(|m| m.to_string())),
        ("milliCpus", task.milli_cpus.map(|c| c.to_string())),
        (
            "maxConcurrency",
            scheduling.max_concurrency.map(|n| n.to_string()),
        ),
        ("requires", requires),
        // The halt as written, and the failures that cross it, which the
        // scripts recording results compare `itemsFailed` with.
        ("halt", task.halt.map(|h| h.to_string())),
        (
            "haltAfter",
            task.halt
                .map(|h| h.failures_to_halt(task.items_total).to_string()),
        ),
        // The prerequisites and how they must end, as JSON.
        ("after", after),
        // The reduce as JSON, and its `when`, which the scripts applying
        // the last-shard rule read (see results.rs).
        ("reduce", reduce),
        (
            "reduceWhen",
            task.reduce.as_ref().map(|r| r.when.to_string()),
        ),
        ("reduceResult", reduce_result),
    ];
    fields.extend(
        optional
            .into_iter()
            .filter_map(|(field, value)| value.map(|value| (field, value))),
    );
    Ok(fields)
}

/// A task hash as read back, field by field.
pub(super) struct TaskHash {
    id: String,
    fields: HashMap<String, String>,
}

impl TaskHash {
    /// From `HGETALL`'s flat field/value list (as the scripts return it).
    pub(super) fn from_pairs(id: &str, flat: &[String]) -> TaskHash {
        let fields = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        TaskHash {
            id: id.to_string(),
            fields,
        }
    }

    pub(super) fn from_map(id: &str, fields: HashMap<String, String>) -> TaskHash {
        TaskHash {
            id: id.to_string(),
            fields,
        }
    }

    /// The task's entry in the list indexes.
    pub(super) fn member(&self) -> Option<&str> {
        self.fields.get("member").map(String::as_str)
    }

    /// The task the hash describes; [`StoreError::Corrupt`] names the first
    /// field that is missing or unreadable.
    pub(super) fn decode(&self) -> StoreResult<Task> {
        Ok(Task {
            id: self.text("id")?.to_string(),
            name: self.optional_text("name"),
            status: self.parsed("status")?,
            template_function: self.text("templateFunction")?.to_string(),
            variables: serde_json::from_str(self.text("variables")?)
                .map_err(|e| self.corrupt("variables", e))?,
            interpreter: self.text("interpreter")?.to_string(),
            timeout_secs: self.parsed("timeoutSecs")?,
            retries: self.parsed("retries")?,
            items_total: self.parsed("itemsTotal")?,
            chunks_to_execute: self.parsed("chunksToExecute")?,
            chunks_executed: self.parsed("chunksExecuted")?,
            items_succeeded: self.parsed("itemsSucceeded")?,
            items_failed: self.parsed("itemsFailed")?,
            created_at: self.parsed("createdAt")?,
            started_at: self.optional_parsed("startedAt")?,
            finished_at: self.optional_parsed("finishedAt")?,
            error: self.optional_text("error"),
            deadline_secs: self.optional_parsed("deadlineSecs")?,
            memory_mb: self.optional_parsed("memoryMb")?,
            milli_cpus: self.optional_parsed("milliCpus")?,
            scheduling: self.scheduling()?,
            halt: self.halt()?,
            after: self.optional_json("after")?,
            reduce: self.optional_json("reduce")?,
            reduce_result: self.optional_json("reduceResult")?,
            // Tasks stored before versions existed start from 0.
            version: self.optional_parsed("version")?.unwrap_or(0),
        })
    }

    /// `halt`; a task stored before it existed has none.
    fn halt(&self) -> StoreResult<Option<dts_model::Halt>> {
        match self.fields.get("halt") {
            None => Ok(None),
            Some(text) => dts_model::Halt::parse(text).map_err(|e| self.corrupt("halt", e)),
        }
    }

    /// The scheduling fields; a task stored before they existed has none
    /// and reads as the defaults it was in effect run with.
    fn scheduling(&self) -> StoreResult<Scheduling> {
        let defaults = Scheduling::default();
        let requires = match self.fields.get("requires") {
            Some(json) => serde_json::from_str(json).map_err(|e| self.corrupt("requires", e))?,
            None => defaults.requires,
        };
        Ok(Scheduling {
            priority: self
                .optional_parsed("priority")?
                .unwrap_or(defaults.priority),
            weight: self.optional_parsed("weight")?.unwrap_or(defaults.weight),
            max_concurrency: self.optional_parsed("maxConcurrency")?,
            requires,
            speculation: self
                .optional_parsed("speculation")?
                .unwrap_or(defaults.speculation),
        })
    }

    /// The JSON in `field`, decoded; `None` when the field is absent.
    fn optional_json<T: serde::de::DeserializeOwned>(&self, field: &str) -> StoreResult<Option<T>> {
        self.fields
            .get(field)
            .map(|json| serde_json::from_str(json).map_err(|e| self.corrupt(field, e)))
            .transpose()
    }

    fn text(&self, field: &str) -> StoreResult<&str> {
        self.fields
            .get(field)
            .map(String::as_str)
            .ok_or_else(|| self.corrupt(field, "missing"))
    }

    fn optional_text(&self, field: &str) -> Option<String> {
        self.fields.get(field).cloned()
    }

    fn parsed<T: FromStr>(&self, field: &str) -> StoreResult<T>
    where
        T::Err: Into<Cause>,
    {
        let text = self.text(field)?;
        text.parse()
            .map_err(|e| self.corrupt(&format!("{field} {text:?}"), e))
    }

    fn optional_parsed<T: FromStr>(&self, field: &str) -> StoreResult<Option<T>>
    where
        T::Err: Into<Cause>,
    {
        match self.fields.get(field) {
            Some(_) => self.parsed(field).map(Some),
            None => Ok(None),
        }
    }

    fn corrupt(&self, field: &str, detail: impl Into<Cause>) -> StoreError {
        StoreError::corrupt(format!("task {} {field}", self.id), detail)
    }
}

/// A status name as a script returned it.
pub(super) fn status(id: &str, text: &str) -> StoreResult<TaskStatus> {
    text.parse()
        .map_err(|e| StoreError::corrupt(format!("task {id} status"), e))
}

pub(super) use crate::encode;

/// JSON read back from Redis; `what` names it in the error.
pub(super) fn decode<T: serde::de::DeserializeOwned>(what: String, json: &str) -> StoreResult<T> {
    serde_json::from_str(json).map_err(|e| StoreError::corrupt(what, e))
}

/// How results travel to the scripts, one form per results layout (see
/// `lua/results_prelude.lua`); a script refuses the form that does not fit
/// the task, and the caller sends the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResultForm {
    /// Layout 1: index, `1` if it succeeded, the full result JSON.
    Full,
    /// Layout 2: index, `1` if it succeeded, worker, input, then the
    /// [`CompactFields`] JSON; the script adds the worker's number and the
    /// input (when it is not the task's own) to the stored value.
    Compact,
}

impl ResultForm {
    /// The form to try first (new tasks), then the other.
    pub(super) const IN_ORDER: [ResultForm; 2] = [ResultForm::Compact, ResultForm::Full];

    /// The form as the scripts name it: the layout it is for.
    pub(super) fn layout(self) -> &'static str {
        match self {
            ResultForm::Full => "1",
            ResultForm::Compact => "2",
        }
    }
}

/// A result as the scripts take it, in `form`. Bytes, not text: in the
/// compact form the input goes as it is, for the script to compare with
/// the task's own, and as JSON (text, or `{"base64"}` when not UTF-8) for
/// it to store when they differ.
pub(super) fn result_args(result: &ItemResult, form: ResultForm) -> StoreResult<Vec<Vec<u8>>> {
    let index = result.index.to_string().into_bytes();
    let ok = if result.succeeded() { "1" } else { "0" }.into();
    Ok(match form {
        ResultForm::Full => vec![index, ok, encode("item result", result)?.into_bytes()],
        ResultForm::Compact => vec![
            index,
            ok,
            result.worker.clone().into_bytes(),
            result.input.as_bytes().to_vec(),
            encode("item input", &result.input)?.into_bytes(),
            encode("item result", &CompactFields::of(result))?.into_bytes(),
        ],
    })
}

/// The fields of a layout 2 result value the script does not add, named as
/// in the API but each left out when it has its usual value (exit code 0,
/// no signal, empty output, attempt 1...), which reading restores. The item's
/// index is the bucket field the value is stored under. Layout 2 exists to
/// keep values under Redis's compact-hash limit (64 bytes): a typical result
/// is `{"worker":1,"durationMs":52}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompactFields<'a> {
    #[serde(skip_serializing_if = "is_exit_zero")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "is_false")]
    timed_out: bool,
    #[serde(skip_serializing_if = "Bytes::is_empty")]
    stdout: &'a Bytes,
    #[serde(skip_serializing_if = "Bytes::is_empty")]
    stderr: &'a Bytes,
    #[serde(skip_serializing_if = "is_false")]
    stdout_truncated: bool,
    #[serde(skip_serializing_if = "is_false")]
    stderr_truncated: bool,
    /// Only when it is not the bytes kept (the output was cut).
    #[serde(skip_serializing_if = "Option::is_none")]
    stdout_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stderr_bytes: Option<u64>,
    #[serde(skip_serializing_if = "is_zero")]
    duration_ms: u64,
    #[serde(skip_serializing_if = "is_first_attempt")]
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl<'a> CompactFields<'a> {
    fn of(result: &'a ItemResult) -> CompactFields<'a> {
        CompactFields {
            exit_code: result.exit_code,
            signal: result.signal,
            timed_out: result.timed_out,
            stdout: &result.stdout,
            stderr: &result.stderr,
            stdout_truncated: result.stdout_truncated,
            stderr_truncated: result.stderr_truncated,
            stdout_bytes: beyond(result.stdout_bytes, &result.stdout),
            stderr_bytes: beyond(result.stderr_bytes, &result.stderr),
            duration_ms: result.duration_ms,
            attempt: result.attempt,
            error: result.error.as_deref(),
        }
    }
}

/// A stream's byte count when it says more than its kept bytes do: a count
/// equal to them is restored from them on reading.
fn beyond(total: u64, kept: &Bytes) -> Option<u64> {
    (total != kept.len() as u64).then_some(total)
}

/// A stored layout 2 value: [`CompactFields`] with the defaults restored,
/// plus the worker's number and the input if it was stored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompactValue {
    worker: u64,
    input: Option<Bytes>,
    #[serde(default = "exit_zero")]
    exit_code: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    stdout: Bytes,
    #[serde(default)]
    stderr: Bytes,
    #[serde(default)]
    stdout_truncated: bool,
    #[serde(default)]
    stderr_truncated: bool,
    #[serde(default)]
    stdout_bytes: Option<u64>,
    #[serde(default)]
    stderr_bytes: Option<u64>,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default = "first_attempt")]
    attempt: u32,
    #[serde(default)]
    error: Option<String>,
}

fn is_exit_zero(code: &Option<i32>) -> bool {
    *code == Some(0)
}

fn exit_zero() -> Option<i32> {
    Some(0)
}

fn is_false(flag: &bool) -> bool {
    !flag
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_first_attempt(attempt: &u32) -> bool {
    *attempt == 1
}

fn first_attempt() -> u32 {
    1
}

/// A layout 2 result as `results_page.lua` returns it: the stored `value`,
/// the task's input at `index`, and the task's workers by number.
pub(super) fn decode_compact(
    id: &str,
    index: u64,
    value: &str,
    task_input: &[u8],
    workers: &HashMap<String, String>,
) -> StoreResult<ItemResult> {
    let what = || format!("task {id} result {index}");
    let stored: CompactValue = decode(what(), value)?;
    let worker = workers
        .get(&stored.worker.to_string())
        .ok_or_else(|| StoreError::corrupt(what(), format!("no worker {}", stored.worker)))?;
    let mut result = ItemResult {
        index,
        input: stored.input.unwrap_or_else(|| Bytes::from(task_input)),
        exit_code: stored.exit_code,
        signal: stored.signal,
        timed_out: stored.timed_out,
        stdout: stored.stdout,
        stderr: stored.stderr,
        stdout_truncated: stored.stdout_truncated,
        stderr_truncated: stored.stderr_truncated,
        stdout_bytes: stored.stdout_bytes.unwrap_or(0),
        stderr_bytes: stored.stderr_bytes.unwrap_or(0),
        duration_ms: stored.duration_ms,
        worker: worker.clone(),
        attempt: stored.attempt,
        error: stored.error,
    };
    result.count_kept_output();
    Ok(result)
}

pub(super) fn worker_json(worker: &WorkerInfo) -> StoreResult<String> {
    encode("worker", worker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dts_model::Variables;

    fn task() -> Task {
        Task {
            id: "t-1".to_string(),
            name: Some(String::new()),
            status: TaskStatus::InProgress,
            template_function: "echo \"$1\"".to_string(),
            variables: Variables::from_json(&serde_json::json!({"a": 1})).unwrap(),
            interpreter: "bash".to_string(),
            timeout_secs: 60,
            retries: 2,
            deadline_secs: Some(90),
            items_total: 10,
            chunks_to_execute: 3,
            chunks_executed: 1,
            items_succeeded: 4,
            items_failed: 1,
            created_at: 1_700_000_000_000,
            started_at: Some(1_700_000_000_100),
            finished_at: None,
            error: None,
            memory_mb: Some(2048),
            milli_cpus: Some(500),
            scheduling: Scheduling {
                priority: -7,
                weight: 3,
                max_concurrency: Some(4),
                requires: [("gpu", "a100"), ("zone", "")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                speculation: false,
            },
            halt: dts_model::Halt::parse("soon,fail=10%").unwrap(),
            after: Some(dts_model::After {
                tasks: vec!["t-0".to_string()],
                status: dts_model::AfterStatus::Ended,
            }),
            reduce: Some(dts_model::Reduce {
                template_function: "sort | uniq -c".to_string(),
                interpreter: "bash".to_string(),
                timeout_secs: 30,
                when: dts_model::ReduceWhen::Always,
            }),
            reduce_result: Some(dts_model::ReduceResult {
                exit_code: None,
                signal: Some(9),
                timed_out: true,
                stdout: Bytes::from("partial\n"),
                stderr: Bytes::new(b"caf\xe9".to_vec()),
                stdout_truncated: true,
                stderr_truncated: false,
                duration_ms: 30_000,
                worker: "w-2".to_string(),
                attempt: 2,
                error: None,
            }),
            version: 7,
        }
    }

    fn hash_of(task: &Task) -> TaskHash {
        let fields = task_fields(task)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        TaskHash::from_map(&task.id, fields)
    }

    #[test]
    fn a_task_round_trips_through_its_hash_fields() {
        let task = task();
        assert_eq!(hash_of(&task).decode().unwrap(), task);
        let bare = Task {
            name: None,
            started_at: None,
            error: Some("why".to_string()),
            memory_mb: None,
            milli_cpus: None,
            scheduling: Scheduling::default(),
            halt: None,
            after: None,
            reduce: None,
            reduce_result: None,
            ..task
        };
        assert_eq!(hash_of(&bare).decode().unwrap(), bare);
        let fields = task_fields(&bare).unwrap();
        assert!(
            !fields.iter().any(|(k, _)| [
                "maxConcurrency",
                "requires",
                "halt",
                "haltAfter",
                "after",
                "reduce",
                "reduceWhen",
                "reduceResult"
            ]
            .contains(k)),
            "{fields:?}"
        );
    }

    #[test]
    fn a_reduce_is_stored_with_its_when_for_the_scripts() {
        let fields = task_fields(&task()).unwrap();
        let when = fields.iter().find(|(k, _)| *k == "reduceWhen");
        assert_eq!(when.map(|(_, v)| v.as_str()), Some("always"));
        let mut hash = hash_of(&task());
        hash.fields
            .insert("reduceResult".to_string(), "{}".to_string());
        match hash.decode() {
            Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "task t-1 reduceResult"),
            other => panic!("expected reduceResult corrupt, got {other:?}"),
        }
    }

    #[test]
    fn a_task_stored_before_scheduling_fields_reads_as_their_defaults() {
        let mut hash = hash_of(&task());
        for field in [
            "priority",
            "weight",
            "maxConcurrency",
            "requires",
            "speculation",
        ] {
            assert!(hash.fields.remove(field).is_some(), "{field} was stored");
        }
        assert_eq!(hash.decode().unwrap().scheduling, Scheduling::default());
    }

    #[test]
    fn a_halt_is_stored_as_written_with_the_failures_that_reach_it() {
        let fields = task_fields(&task()).unwrap();
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        // 10% of 10 items: the first failure.
        assert_eq!(
            (get("halt"), get("haltAfter")),
            (Some("soon,fail=10%"), Some("1"))
        );
        let mut hash = hash_of(&task());
        hash.fields
            .insert("halt".to_string(), "now,done=1".to_string());
        match hash.decode() {
            Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "task t-1 halt"),
            other => panic!("expected halt corrupt, got {other:?}"),
        }
    }

    #[test]
    fn unreadable_scheduling_fields_are_corrupt_and_named() {
        for (field, bad, named) in [
            ("priority", "high", "task t-1 priority \"high\""),
            ("speculation", "1", "task t-1 speculation \"1\""),
            ("requires", "[]", "task t-1 requires"),
        ] {
            let mut hash = hash_of(&task());
            hash.fields.insert(field.to_string(), bad.to_string());
            match hash.decode() {
                Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, named),
                other => panic!("expected {field} corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn an_unreadable_field_is_corrupt_and_named() {
        let mut hash = hash_of(&task());
        hash.fields
            .insert("chunksExecuted".to_string(), "-1".to_string());
        match hash.decode() {
            Err(StoreError::Corrupt { what, .. }) => {
                assert_eq!(what, "task t-1 chunksExecuted \"-1\"")
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
        hash.fields.remove("status");
        match hash.decode() {
            Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "task t-1 status"),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    fn typical() -> ItemResult {
        ItemResult {
            exit_code: Some(0),
            duration_ms: 52,
            ..ItemResult::empty(130, "item-130".into(), "host-12345-abcdef".into(), 1)
        }
    }

    /// The value `apply_results` stores from the compact arguments, built
    /// the same way: the worker's number and the input first.
    /// The value the script stores from a sextuple's last two arguments.
    fn stored_value(rest: &[u8], input_json: Option<&[u8]>) -> String {
        let rest = std::str::from_utf8(rest).unwrap();
        let mut value = "{\"worker\":1".to_string();
        if let Some(input) = input_json {
            value += &format!(",\"input\":{}", std::str::from_utf8(input).unwrap());
        }
        match rest {
            "{}" => value + "}",
            _ => value + "," + &rest[1..],
        }
    }

    fn workers() -> HashMap<String, String> {
        [("1".to_string(), "host-12345-abcdef".to_string())].into()
    }

    #[test]
    fn a_typical_result_is_stored_as_its_duration_alone() {
        let args = result_args(&typical(), ResultForm::Compact).unwrap();
        assert_eq!(
            args,
            [
                &b"130"[..],
                b"1",
                b"host-12345-abcdef",
                b"item-130",
                br#""item-130""#,
                br#"{"durationMs":52}"#
            ]
        );
        let value = stored_value(&args[5], None);
        assert_eq!(value, r#"{"worker":1,"durationMs":52}"#);
        assert_eq!(
            decode_compact("t", 130, &value, b"item-130", &workers()).unwrap(),
            typical()
        );
    }

    #[test]
    fn every_unusual_value_survives_the_compact_form() {
        let unusual = [
            ItemResult {
                exit_code: None,
                signal: Some(15),
                timed_out: true,
                stdout: Bytes::from("out \"quoted\"\n"),
                stderr: Bytes::new(b"caf\xe9\x00\x1f\x8b".to_vec()),
                stdout_truncated: true,
                stderr_truncated: true,
                stdout_bytes: 588_895,
                stderr_bytes: 70_000,
                duration_ms: 0,
                attempt: 0,
                error: Some(String::new()),
                ..typical()
            },
            ItemResult {
                stdout: Bytes::from("whole\n"),
                stdout_bytes: 6,
                ..typical()
            },
            ItemResult {
                exit_code: Some(-1),
                attempt: 2,
                input: Bytes::default(),
                ..typical()
            },
            ItemResult {
                input: Bytes::new(b"caf\xe9".to_vec()),
                ..typical()
            },
        ];
        for result in unusual {
            let args = result_args(&result, ResultForm::Compact).unwrap();
            assert_eq!(args[3], result.input.as_bytes());
            let value = stored_value(&args[5], Some(&args[4]));
            let back = decode_compact("t", 130, &value, b"item-130", &workers()).unwrap();
            assert_eq!(back, result, "{value}");
        }
        let no_exit = result_args(
            &ItemResult {
                exit_code: None,
                ..typical()
            },
            ResultForm::Compact,
        )
        .unwrap();
        assert_eq!(no_exit[5], br#"{"exitCode":null,"durationMs":52}"#);
    }

    #[test]
    fn the_full_form_is_the_api_json_for_old_tasks() {
        let args = result_args(&typical(), ResultForm::Full).unwrap();
        assert_eq!(args[..2], [&b"130"[..], b"1"]);
        let back: ItemResult = serde_json::from_slice(&args[2]).unwrap();
        assert_eq!(back, typical());
    }

    #[test]
    fn a_compact_value_naming_an_unknown_worker_is_corrupt() {
        let value = r#"{"worker":7}"#;
        match decode_compact("t", 3, value, b"x", &workers()) {
            Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "task t result 3"),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn the_flat_hgetall_list_reads_as_pairs() {
        let flat: Vec<String> = ["id", "t", "member", "0001:t"].map(String::from).to_vec();
        let hash = TaskHash::from_pairs("t", &flat);
        assert_eq!(hash.member(), Some("0001:t"));
    }
}
