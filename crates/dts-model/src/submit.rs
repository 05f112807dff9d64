//! Turning a submitted task (JSON or the seed's form) into a [`NewTask`], or
//! into a [`ValidationError`] that names the field to blame.
//!
//! Validation renders the template once, so a task whose placeholders lack
//! values is refused at the door instead of failing on a worker later.

use super::Bytes;
use super::after::{After, AfterStatus, MAX_PREREQUISITES};
use super::plan::{input_encoded_len, json_escaped_len};
use super::reduce::{Reduce, ReduceWhen};
use super::scheduling::{self, Scheduling};
use super::template::{self, MissingVariables};
use super::variables::Variables;
use super::{Halt, Task, TaskStatus, is_valid_task_id, new_task_id};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Bounds on what one submission may contain (all configurable). Item and
/// script sizes count bytes once JSON-escaped, as they travel in shard
/// messages, so a task that is accepted always fits the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmitLimits {
    /// Inputs per task.
    pub max_items: usize,
    /// Bytes per input.
    pub max_item_bytes: usize,
    /// Bytes of the template.
    pub max_template_bytes: usize,
    /// The largest per-item timeout.
    pub max_timeout_secs: u64,
    /// The per-item timeout when the request gives none.
    pub default_timeout_secs: u64,
    /// The most extra attempts per item.
    pub max_retries: u32,
    /// All of `variableJson`, in bytes once JSON-encoded.
    pub max_variables_bytes: usize,
    /// The largest `memoryMb` a task may ask for.
    pub max_memory_mb: u64,
    /// The largest `cpus` a task may ask for, in whole CPUs.
    pub max_cpus: u32,
}

impl Default for SubmitLimits {
    fn default() -> Self {
        SubmitLimits {
            max_items: 1_000_000,
            max_item_bytes: 64 * 1024,
            max_template_bytes: 64 * 1024,
            max_timeout_secs: 7 * 24 * 3600,
            default_timeout_secs: 3600,
            max_retries: 10,
            max_variables_bytes: 64 * 1024,
            max_memory_mb: 1024 * 1024,
            max_cpus: 1024,
        }
    }
}

/// A request the API must refuse: a 4xx with a machine-readable `code`, a
/// sentence for people, and the field to blame when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// Machine-readable reason (`invalid_field`, `too_large_body`, ...).
    pub code: &'static str,
    /// The request field to blame, when one is.
    pub field: Option<String>,
    /// A sentence for people.
    pub message: String,
}

impl ValidationError {
    /// An error one request field is to blame for.
    pub fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError {
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about the request as a whole.
    pub fn general(code: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            code,
            field: None,
            message: message.into(),
        }
    }
}

/// A validated task, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// A fresh id.
    pub id: String,
    /// `name`, when given.
    pub name: Option<String>,
    /// `templateFunction`, as submitted.
    pub template_function: String,
    /// `variableJson`, checked.
    pub variables: Variables,
    /// `interpreter`.
    pub interpreter: String,
    /// `timeoutSecs` (the default when not given).
    pub timeout_secs: u64,
    /// `retries`.
    pub retries: u32,
    /// `deadlineSecs`, when given.
    pub deadline_secs: Option<u64>,
    /// The inputs, in order: any bytes but NUL.
    pub inputs: Vec<Bytes>,
    /// `memoryMb`: memory each item may use, in MiB.
    pub memory_mb: Option<u64>,
    /// `cpus` in thousandths of a CPU, rounded up.
    pub milli_cpus: Option<u32>,
    /// `priority`, `weight`, `maxConcurrency`, `requires`, `speculation`
    /// (each its default when not given).
    pub scheduling: Scheduling,
    /// `halt`, when given and not `never`.
    pub halt: Option<Halt>,
    /// `after` and `afterStatus`, when `after` names any task. Whether
    /// those tasks exist is the engine's to check: it needs the store.
    pub after: Option<After>,
    /// `reduce`, when given: its template renders with the task's
    /// variables.
    pub reduce: Option<Reduce>,
}

impl NewTask {
    /// The task as first stored: `QUEUED` (`WAITING` when it waits for
    /// other tasks), nothing planned or run yet.
    pub fn to_task(&self, created_at: u64) -> Task {
        Task {
            id: self.id.clone(),
            name: self.name.clone(),
            status: if self.after.is_some() {
                TaskStatus::Waiting
            } else {
                TaskStatus::Queued
            },
            template_function: self.template_function.clone(),
            variables: self.variables.clone(),
            interpreter: self.interpreter.clone(),
            timeout_secs: self.timeout_secs,
            retries: self.retries,
            deadline_secs: self.deadline_secs,
            items_total: self.inputs.len() as u64,
            chunks_to_execute: 0,
            chunks_executed: 0,
            items_succeeded: 0,
            items_failed: 0,
            created_at,
            started_at: None,
            finished_at: None,
            error: None,
            memory_mb: self.memory_mb,
            milli_cpus: self.milli_cpus,
            scheduling: self.scheduling.clone(),
            halt: self.halt,
            after: self.after.clone(),
            reduce: self.reduce.clone(),
            reduce_result: None,
            version: 0,
        }
    }
}

/// Fields a client may send back from a task it read (the seed's client sends
/// its whole `MasterTask`); they are set by dts, so their values are ignored.
const READ_ONLY_FIELDS: &[&str] = &[
    "id",
    "status",
    "chunksToExecute",
    "chunksExecuted",
    "itemsTotal",
    "itemsSucceeded",
    "itemsFailed",
    "createdAt",
    "startedAt",
    "finishedAt",
    "error",
    "version",
];

const FIELDS: &[&str] = &[
    "templateFunction",
    "inputList",
    "variableJson",
    "name",
    "interpreter",
    "timeoutSecs",
    "retries",
    "deadlineSecs",
    "memoryMb",
    "cpus",
    "priority",
    "weight",
    "maxConcurrency",
    "requires",
    "speculation",
    "halt",
    "after",
    "afterStatus",
    "reduce",
];

const MAX_NAME_CHARS: usize = 200;
const MAX_INTERPRETER_BYTES: usize = 256;

/// Validates a JSON submission.
pub fn from_json(body: &Value, limits: &SubmitLimits) -> Result<NewTask, ValidationError> {
    let Value::Object(fields) = body else {
        return Err(ValidationError::general(
            "invalid_body",
            format!(
                "the request body must be a JSON object, not {}",
                kind_of(body)
            ),
        ));
    };
    for key in fields.keys() {
        if !FIELDS.contains(&key.as_str()) && !READ_ONLY_FIELDS.contains(&key.as_str()) {
            return Err(ValidationError::field(
                "unknown_field",
                key.as_str(),
                format!(
                    "unknown field `{key}` (expected one of {})",
                    FIELDS.join(", ")
                ),
            ));
        }
    }

    let template_function = template_field(fields, limits)?;
    let inputs = input_list(fields, limits)?;
    let variables = Variables::from_json(fields.get("variableJson").unwrap_or(&Value::Null))
        .map_err(|e| ValidationError::field("invalid_field", e.field, e.message))?;
    let variables_size = variables.encoded_len();
    if variables_size > limits.max_variables_bytes {
        return Err(ValidationError::field(
            "too_large",
            "variableJson",
            format!(
                "variableJson is {variables_size} bytes (JSON-encoded), more than the {}-byte limit",
                limits.max_variables_bytes
            ),
        ));
    }
    let name = optional_string(fields, "name")?;
    if let Some(name) = &name {
        if name.chars().count() > MAX_NAME_CHARS {
            return Err(ValidationError::field(
                "too_large",
                "name",
                format!("name is longer than {MAX_NAME_CHARS} characters"),
            ));
        }
    }
    let interpreter = interpreter_field(fields)?;
    let timeout_secs = integer_field(fields, "timeoutSecs", 1, limits.max_timeout_secs)?
        .unwrap_or(limits.default_timeout_secs);
    let retries =
        integer_field(fields, "retries", 0, u64::from(limits.max_retries))?.unwrap_or(0) as u32;
    let deadline_secs = integer_field(fields, "deadlineSecs", 1, limits.max_timeout_secs)?;
    let memory_mb = integer_field(fields, "memoryMb", 1, limits.max_memory_mb)?;
    let milli_cpus = cpus_field(fields, limits.max_cpus)?;
    let scheduling = scheduling_fields(fields)?;
    let halt = halt_field(fields)?;
    let after = after_fields(fields)?;
    let reduce = reduce_field(fields, limits, &variables)?;

    let rendered =
        template::render(&template_function, &variables).map_err(|MissingVariables(names)| {
            ValidationError::field(
                "missing_variables",
                "variableJson",
                format!("{} (add them to variableJson)", MissingVariables(names)),
            )
        })?;
    let size = json_escaped_len(&rendered);
    if size > limits.max_template_bytes {
        return Err(ValidationError::field(
            "too_large",
            "variableJson",
            format!(
                "the rendered script is {size} bytes (JSON-escaped), more than the {}-byte limit",
                limits.max_template_bytes
            ),
        ));
    }

    Ok(NewTask {
        id: new_task_id(),
        name,
        template_function,
        variables,
        interpreter,
        timeout_secs,
        retries,
        deadline_secs,
        inputs,
        memory_mb,
        milli_cpus,
        scheduling,
        halt,
        after,
        reduce,
    })
}

/// `after` (task ids, each once) and `afterStatus`. An empty list is no
/// wait. A task cannot wait for itself: a body that carries the `id` it
/// was read with (the seed's client sends whole tasks back) must not name
/// that id.
fn after_fields(fields: &Map<String, Value>) -> Result<Option<After>, ValidationError> {
    let status = match optional_string(fields, "afterStatus")? {
        None => None,
        Some(text) => Some(
            text.parse::<AfterStatus>()
                .map_err(|e| ValidationError::field("invalid_field", "afterStatus", e))?,
        ),
    };
    let ids: &[Value] = match fields.get("after") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(ids)) => ids,
        Some(other) => {
            return Err(ValidationError::field(
                "invalid_field",
                "after",
                format!("after must be an array of task ids, not {}", kind_of(other)),
            ));
        }
    };
    if ids.len() > MAX_PREREQUISITES {
        return Err(ValidationError::field(
            "too_large",
            "after",
            format!(
                "after names {} tasks, more than the limit of {MAX_PREREQUISITES}",
                ids.len()
            ),
        ));
    }
    let own_id = fields.get("id").and_then(Value::as_str);
    let mut tasks: Vec<String> = Vec::with_capacity(ids.len());
    for (position, id) in ids.iter().enumerate() {
        let field = format!("after[{position}]");
        let Some(id) = id.as_str().filter(|id| is_valid_task_id(id)) else {
            return Err(ValidationError::field(
                "invalid_field",
                field,
                format!("after[{position}] must be a task id (a UUID), not {id}"),
            ));
        };
        if own_id == Some(id) {
            return Err(ValidationError::field(
                "invalid_field",
                field,
                format!(
                    "after[{position}] is this task's own id {id}: a task cannot wait for itself"
                ),
            ));
        }
        if !tasks.iter().any(|seen| seen == id) {
            tasks.push(id.to_string());
        }
    }
    if tasks.is_empty() {
        return match status {
            Some(_) => Err(ValidationError::field(
                "invalid_field",
                "afterStatus",
                "afterStatus needs after: the tasks to wait for",
            )),
            None => Ok(None),
        };
    }
    Ok(Some(After {
        tasks,
        status: status.unwrap_or_default(),
    }))
}

/// `halt`: the text GNU parallel's `--halt` takes (`now,fail=1`).
/// The fields of `reduce`.
const REDUCE_FIELDS: &[&str] = &["templateFunction", "interpreter", "timeoutSecs", "when"];

/// `reduce`: an object whose fields are checked as a task's own are
/// (`templateFunction`, `interpreter`, `timeoutSecs`), its errors naming
/// `reduce.<field>`; its template must render with the task's variables.
fn reduce_field(
    fields: &Map<String, Value>,
    limits: &SubmitLimits,
    variables: &Variables,
) -> Result<Option<Reduce>, ValidationError> {
    let reduce = match fields.get("reduce") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(reduce)) => reduce,
        Some(other) => {
            return Err(ValidationError::field(
                "invalid_field",
                "reduce",
                format!(
                    "reduce must be an object ({{\"templateFunction\": ...}}), not {}",
                    kind_of(other)
                ),
            ));
        }
    };
    let within = |e: ValidationError| ValidationError {
        field: Some(match e.field {
            Some(field) => format!("reduce.{field}"),
            None => "reduce".to_string(),
        }),
        message: format!("reduce: {}", e.message),
        ..e
    };
    for key in reduce.keys() {
        if !REDUCE_FIELDS.contains(&key.as_str()) {
            return Err(ValidationError::field(
                "unknown_field",
                format!("reduce.{key}"),
                format!(
                    "unknown field `reduce.{key}` (expected one of {})",
                    REDUCE_FIELDS.join(", ")
                ),
            ));
        }
    }
    let template_function = template_field(reduce, limits).map_err(within)?;
    template::render(&template_function, variables).map_err(|MissingVariables(names)| {
        ValidationError::field(
            "missing_variables",
            "reduce.templateFunction",
            format!(
                "reduce: {} (add them to variableJson)",
                MissingVariables(names)
            ),
        )
    })?;
    let interpreter = interpreter_field(reduce).map_err(within)?;
    let timeout_secs = integer_field(reduce, "timeoutSecs", 1, limits.max_timeout_secs)
        .map_err(within)?
        .unwrap_or(limits.default_timeout_secs);
    let when = match optional_string(reduce, "when").map_err(within)? {
        None => ReduceWhen::default(),
        Some(text) => text
            .parse()
            .map_err(|e: String| ValidationError::field("invalid_field", "reduce.when", e))?,
    };
    Ok(Some(Reduce {
        template_function,
        interpreter,
        timeout_secs,
        when,
    }))
}

fn halt_field(fields: &Map<String, Value>) -> Result<Option<Halt>, ValidationError> {
    match optional_string(fields, "halt")? {
        None => Ok(None),
        Some(text) => Halt::parse(&text)
            .map_err(|e| ValidationError::field("invalid_field", "halt", format!("halt: {e}"))),
    }
}

/// Validates the seed's `application/x-www-form-urlencoded` submission.
///
/// As Spring bound it: `inputList` may be repeated (one item each) or given
/// once as a comma-separated list; every other field may appear once.
pub fn from_form(
    pairs: &[(String, String)],
    limits: &SubmitLimits,
) -> Result<NewTask, ValidationError> {
    let mut object = Map::new();
    let mut inputs: Vec<&str> = Vec::new();
    for (key, value) in pairs {
        if key == "inputList" || key == "inputList[]" {
            inputs.push(value);
            continue;
        }
        if object.contains_key(key.as_str()) {
            return Err(ValidationError::field(
                "repeated_field",
                key.as_str(),
                format!("`{key}` is given more than once"),
            ));
        }
        let value = match key.as_str() {
            "timeoutSecs" | "retries" | "deadlineSecs" | "memoryMb" | "priority" | "weight"
            | "maxConcurrency" => match value.trim().parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::String(value.clone()),
            },
            // A number where the text is one (finite: NaN and inf stay text,
            // and are refused as not a number).
            "cpus" => match value.trim().parse::<f64>() {
                Ok(n) if n.is_finite() => Value::from(n),
                _ => Value::String(value.clone()),
            },
            "speculation" => match value.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(value.clone()),
            },
            // The labels as a JSON object, as `variableJson` is given in a form.
            "requires" => match serde_json::from_str::<Value>(value) {
                Ok(object @ Value::Object(_)) => object,
                _ => Value::String(value.clone()),
            },
            _ => Value::String(value.clone()),
        };
        object.insert(key.clone(), value);
    }
    let list: Vec<Value> = match inputs.as_slice() {
        [] => Vec::new(),
        [""] => Vec::new(),
        [single] => single
            .split(',')
            .map(|s| Value::String(s.to_string()))
            .collect(),
        many => many.iter().map(|s| Value::String(s.to_string())).collect(),
    };
    if !inputs.is_empty() {
        object.insert("inputList".into(), Value::Array(list));
    }
    from_json(&Value::Object(object), limits)
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn template_field(
    fields: &Map<String, Value>,
    limits: &SubmitLimits,
) -> Result<String, ValidationError> {
    let template = match fields.get("templateFunction") {
        None | Some(Value::Null) => {
            return Err(ValidationError::field(
                "missing_field",
                "templateFunction",
                "templateFunction is required: the script to run for each input",
            ));
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ValidationError::field(
                "invalid_field",
                "templateFunction",
                format!("templateFunction must be a string, not {}", kind_of(other)),
            ));
        }
    };
    if template.trim().is_empty() {
        return Err(ValidationError::field(
            "invalid_field",
            "templateFunction",
            "templateFunction is empty",
        ));
    }
    let size = json_escaped_len(template);
    if size > limits.max_template_bytes {
        return Err(ValidationError::field(
            "too_large",
            "templateFunction",
            format!(
                "templateFunction is {size} bytes (JSON-escaped), more than the {}-byte limit",
                limits.max_template_bytes
            ),
        ));
    }
    if template.contains('\0') {
        return Err(ValidationError::field(
            "invalid_field",
            "templateFunction",
            "templateFunction contains a NUL byte",
        ));
    }
    Ok(template.clone())
}

fn input_list(
    fields: &Map<String, Value>,
    limits: &SubmitLimits,
) -> Result<Vec<Bytes>, ValidationError> {
    let list = match fields.get("inputList") {
        None | Some(Value::Null) => {
            return Err(ValidationError::field(
                "missing_field",
                "inputList",
                "inputList is required: the inputs to run the script over (use [] for none)",
            ));
        }
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(ValidationError::field(
                "invalid_field",
                "inputList",
                format!(
                    "inputList must be an array of strings, not {}",
                    kind_of(other)
                ),
            ));
        }
    };
    if list.len() > limits.max_items {
        return Err(ValidationError::field(
            "too_many_items",
            "inputList",
            format!(
                "inputList has {} items, more than the limit of {}",
                list.len(),
                limits.max_items
            ),
        ));
    }
    let mut inputs = Vec::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let input = match value {
            Value::String(s) => Bytes::from(s.as_str()),
            // Spring coerced scalars to strings; so do we.
            Value::Number(n) => Bytes::from(n.to_string()),
            Value::Bool(b) => Bytes::from(b.to_string()),
            // An input that is not UTF-8 (a file name, say) comes as
            // {"base64": "..."}, the form dts writes such bytes in.
            Value::Object(_) => Bytes::deserialize(value).map_err(|e| {
                ValidationError::field(
                    "invalid_field",
                    format!("inputList[{i}]"),
                    format!("inputList[{i}]: {e}"),
                )
            })?,
            other => {
                return Err(ValidationError::field(
                    "invalid_field",
                    format!("inputList[{i}]"),
                    format!(
                        "inputList[{i}] must be a string, or {{\"base64\": \"...\"}} for bytes that are not UTF-8, not {}",
                        kind_of(other)
                    ),
                ));
            }
        };
        // What the input takes in a shard message, so an accepted task
        // always fits the bus: escaped text, or base64 when not UTF-8.
        let size = input_encoded_len(input.as_bytes());
        if size > limits.max_item_bytes {
            return Err(ValidationError::field(
                "too_large",
                format!("inputList[{i}]"),
                format!(
                    "inputList[{i}] is {size} bytes (JSON-escaped, or base64 when not UTF-8), more than the {}-byte limit",
                    limits.max_item_bytes
                ),
            ));
        }
        if input.as_bytes().contains(&0) {
            return Err(ValidationError::field(
                "invalid_field",
                format!("inputList[{i}]"),
                format!("inputList[{i}] contains a NUL byte, which cannot be passed to a process"),
            ));
        }
        inputs.push(input);
    }
    Ok(inputs)
}

fn optional_string(
    fields: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ValidationError> {
    match fields.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ValidationError::field(
            "invalid_field",
            field,
            format!("{field} must be a string, not {}", kind_of(other)),
        )),
    }
}

fn interpreter_field(fields: &Map<String, Value>) -> Result<String, ValidationError> {
    let Some(interpreter) = optional_string(fields, "interpreter")? else {
        return Ok("bash".to_string());
    };
    let bad = interpreter.is_empty()
        || interpreter.len() > MAX_INTERPRETER_BYTES
        || interpreter
            .chars()
            .any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(ValidationError::field(
            "invalid_field",
            "interpreter",
            "interpreter must be one word naming a program, such as bash, sh or python3",
        ));
    }
    Ok(interpreter)
}

fn integer_field(
    fields: &Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ValidationError> {
    let value = match fields.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let out_of_range = || {
        ValidationError::field(
            "invalid_field",
            field,
            format!("{field} must be a whole number from {min} to {max}"),
        )
    };
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(out_of_range()),
        },
        other => Err(ValidationError::field(
            "invalid_field",
            field,
            format!("{field} must be a whole number, not {}", kind_of(other)),
        )),
    }
}

/// `priority`, `weight`, `maxConcurrency`, `requires` and `speculation`,
/// each its default when absent or null.
fn scheduling_fields(fields: &Map<String, Value>) -> Result<Scheduling, ValidationError> {
    let defaults = Scheduling::default();
    let priority = signed_field(
        fields,
        "priority",
        i64::from(scheduling::MIN_PRIORITY),
        i64::from(scheduling::MAX_PRIORITY),
    )?
    // In range, so it fits.
    .map_or(defaults.priority, |p| p as i32);
    let weight = integer_field(fields, "weight", 1, u64::from(scheduling::MAX_WEIGHT))?
        .map_or(defaults.weight, |w| w as u32);
    let max_concurrency = integer_field(
        fields,
        "maxConcurrency",
        1,
        u64::from(scheduling::MAX_CONCURRENCY),
    )?
    .map(|n| n as u32);
    let speculation = match fields.get("speculation") {
        None | Some(Value::Null) => defaults.speculation,
        Some(Value::Bool(on)) => *on,
        Some(other) => {
            return Err(ValidationError::field(
                "invalid_field",
                "speculation",
                format!("speculation must be true or false, not {}", kind_of(other)),
            ));
        }
    };
    Ok(Scheduling {
        priority,
        weight,
        max_concurrency,
        requires: requires_field(fields)?,
        speculation,
    })
}

/// `requires`: an object of label names to string values, every label
/// valid, at most [`scheduling::MAX_REQUIRED_LABELS`] of them. A bad value
/// is blamed on `requires.<name>`; a bad name on `requires`, since the name
/// itself may not be fit to show as a path.
fn requires_field(
    fields: &Map<String, Value>,
) -> Result<BTreeMap<String, String>, ValidationError> {
    let object = match fields.get("requires") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(object)) => object,
        Some(other) => {
            return Err(ValidationError::field(
                "invalid_field",
                "requires",
                format!(
                    "requires must be an object of label names to values, such as {{\"gpu\": \"a100\"}}, not {}",
                    kind_of(other)
                ),
            ));
        }
    };
    if object.len() > scheduling::MAX_REQUIRED_LABELS {
        return Err(ValidationError::field(
            "too_large",
            "requires",
            format!(
                "requires has {} labels, more than the limit of {}",
                object.len(),
                scheduling::MAX_REQUIRED_LABELS
            ),
        ));
    }
    let mut requires = BTreeMap::new();
    for (name, value) in object {
        // The name first: a value's error names its label. The rule is the
        // one worker labels follow, so every valid requirement can be met.
        scheduling::check_label_name(name).map_err(|e| {
            ValidationError::field(
                "invalid_field",
                "requires",
                format!("in requires, label {name:?}: {e}"),
            )
        })?;
        let Value::String(value) = value else {
            return Err(ValidationError::field(
                "invalid_field",
                format!("requires.{name}"),
                format!("requires.{name} must be a string, not {}", kind_of(value)),
            ));
        };
        scheduling::check_label_value(value).map_err(|e| {
            ValidationError::field(
                "invalid_field",
                format!("requires.{name}"),
                format!("requires.{name}: {e}"),
            )
        })?;
        requires.insert(name.clone(), value.clone());
    }
    Ok(requires)
}

/// A whole number that may be negative, from `min` to `max`.
fn signed_field(
    fields: &Map<String, Value>,
    field: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ValidationError> {
    let value = match fields.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(ValidationError::field(
                "invalid_field",
                field,
                format!("{field} must be a whole number from {min} to {max}"),
            )),
        },
        other => Err(ValidationError::field(
            "invalid_field",
            field,
            format!("{field} must be a whole number, not {}", kind_of(other)),
        )),
    }
}

/// `cpus`: a JSON number above 0 and at most `max` CPUs, as thousandths of
/// a CPU rounded up (0.0005 is 1; 1.1 is 1100, not 1101 from the product's
/// binary error).
fn cpus_field(fields: &Map<String, Value>, max: u32) -> Result<Option<u32>, ValidationError> {
    let value = match fields.get("cpus") {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let Value::Number(number) = value else {
        return Err(ValidationError::field(
            "invalid_field",
            "cpus",
            format!(
                "cpus must be a number such as 0.5 or 2, not {}",
                kind_of(value)
            ),
        ));
    };
    let out_of_range = || {
        ValidationError::field(
            "invalid_field",
            "cpus",
            format!("cpus must be a number above 0 and at most {max}"),
        )
    };
    let cpus = number.as_f64().ok_or_else(out_of_range)?;
    if !(cpus > 0.0 && cpus <= f64::from(max)) {
        return Err(out_of_range());
    }
    // The tolerance absorbs the product's rounding error, far below a milli-CPU.
    let milli = (cpus * 1000.0 - 1e-9).ceil();
    if milli < 1.0 {
        return Err(out_of_range());
    }
    // At most max × 1000, which fits: max is a u32 of CPUs only in theory.
    u32::try_from(milli as u64)
        .map(Some)
        .map_err(|_| out_of_range())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn limits() -> SubmitLimits {
        SubmitLimits {
            max_items: 5,
            max_item_bytes: 10,
            max_template_bytes: 100,
            max_variables_bytes: 300,
            max_memory_mb: 1024,
            max_cpus: 8,
            ..SubmitLimits::default()
        }
    }

    fn field_of(body: Value) -> (String, Option<String>) {
        let err = from_json(&body, &limits()).unwrap_err();
        (err.code.to_string(), err.field)
    }

    #[test]
    fn a_minimal_task_gets_defaults() {
        let task = from_json(
            &json!({"templateFunction": "echo $1", "inputList": ["a"]}),
            &limits(),
        )
        .unwrap();
        assert_eq!(task.interpreter, "bash");
        assert_eq!(task.retries, 0);
        assert_eq!(
            task.timeout_secs,
            SubmitLimits::default().default_timeout_secs
        );
        assert_eq!(task.inputs, vec!["a"]);
        assert!(crate::is_valid_task_id(&task.id));
    }

    #[test]
    fn halt_is_kept_as_parsed_and_never_or_absent_is_no_halt() {
        let task = |halt: Value| {
            from_json(
                &json!({"templateFunction": "x", "inputList": ["a"], "halt": halt}),
                &limits(),
            )
            .unwrap()
            .halt
        };
        assert_eq!(task(json!("now,fail=1")), Some(Halt::count(true, 1)));
        assert_eq!(
            task(json!("soon,fail=10%")).map(|h| h.to_string()),
            Some("soon,fail=10%".to_string())
        );
        assert_eq!(task(json!("never")), None);
        assert_eq!(task(Value::Null), None);
    }

    #[test]
    fn after_keeps_each_prerequisite_once_in_order_and_makes_the_task_wait() {
        let (a, b) = (crate::new_task_id(), crate::new_task_id());
        let new = from_json(
            &json!({"templateFunction": "x", "inputList": ["a"], "after": [a, b, a], "afterStatus": "ended"}),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            new.after,
            Some(After {
                tasks: vec![a.clone(), b.clone()],
                status: AfterStatus::Ended
            })
        );
        assert_eq!(new.to_task(1).status, TaskStatus::Waiting);
        let plain = from_json(
            &json!({"templateFunction": "x", "inputList": ["a"], "after": []}),
            &limits(),
        )
        .unwrap();
        assert_eq!(plain.after, None);
        assert_eq!(plain.to_task(1).status, TaskStatus::Queued);
        let default = from_json(
            &json!({"templateFunction": "x", "inputList": ["a"], "after": [a]}),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            default.after.map(|after| after.status),
            Some(AfterStatus::Completed)
        );
    }

    #[test]
    fn a_bad_after_is_refused_naming_the_field() {
        let own = crate::new_task_id();
        let too_many: Vec<String> = (0..=MAX_PREREQUISITES)
            .map(|_| crate::new_task_id())
            .collect();
        for (body, field, says) in [
            (
                json!({"after": "x"}),
                "after",
                "after must be an array of task ids, not a string",
            ),
            (json!({"after": ["../x"]}), "after[0]", "must be a task id"),
            (json!({"after": [own, 7]}), "after[1]", "not 7"),
            (
                json!({"after": too_many}),
                "after",
                "more than the limit of 100",
            ),
            (
                json!({"id": own, "after": [own]}),
                "after[0]",
                "a task cannot wait for itself",
            ),
            (
                json!({"afterStatus": "ENDED"}),
                "afterStatus",
                "afterStatus needs after",
            ),
            (
                json!({"after": [own], "afterStatus": "FAILED"}),
                "afterStatus",
                "COMPLETED or ENDED",
            ),
        ] {
            let mut fields = body.as_object().unwrap().clone();
            fields.insert("templateFunction".into(), json!("x"));
            fields.insert("inputList".into(), json!(["a"]));
            let err = from_json(&Value::Object(fields), &limits()).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{body}: {}", err.message);
            assert!(err.message.contains(says), "{body}: {}", err.message);
        }
    }

    #[test]
    fn a_bad_halt_is_refused_naming_the_field_and_the_value() {
        for (halt, says) in [
            (json!("now,success=1"), "\"success=1\" in \"now,success=1\""),
            (json!("soon,done=50%"), "\"done=50%\" in \"soon,done=50%\""),
            (json!("now,fail=0"), "\"0\" in \"now,fail=0\""),
            (json!("sometime"), "\"sometime\""),
            (json!(1), "halt must be a string, not a number"),
        ] {
            let err = from_json(
                &json!({"templateFunction": "x", "inputList": ["a"], "halt": halt}),
                &limits(),
            )
            .unwrap_err();
            assert_eq!(err.code, "invalid_field");
            assert_eq!(err.field.as_deref(), Some("halt"));
            assert!(err.message.contains(says), "{halt}: {}", err.message);
        }
    }

    #[test]
    fn seed_clients_may_send_read_only_fields() {
        let body = json!({
            "id": "whatever", "status": "DONE", "chunksToExecute": 9, "chunksExecuted": 9,
            "templateFunction": "echo {{x}}", "variableJson": "{\"x\": 1}", "inputList": ["a", 2, true]
        });
        let task = from_json(&body, &limits()).unwrap();
        assert_ne!(task.id, "whatever");
        assert_eq!(task.inputs, vec!["a", "2", "true"]);
    }

    #[test]
    fn an_input_that_is_not_utf8_comes_as_base64_and_is_kept_exactly() {
        // "Y2Fm6Q==" is caf\xe9, "//4=" is \xff\xfe.
        let task = from_json(
            &json!({"templateFunction": "x", "inputList": ["a", {"base64": "Y2Fm6Q=="}, {"base64": "//4="}]}),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            task.inputs,
            vec![
                Bytes::from("a"),
                Bytes::new(b"caf\xe9".to_vec()),
                Bytes::new(b"\xff\xfe".to_vec())
            ]
        );
    }

    #[test]
    fn a_bad_or_nul_input_given_as_base64_is_refused_naming_its_index() {
        for (input, says) in [
            (json!({"hex": "00"}), "unexpected key"),
            (json!({"base64": "!!"}), "not valid standard base64"),
            (json!({"base64": "YQBi"}), "contains a NUL byte"),
        ] {
            let err = from_json(
                &json!({"templateFunction": "x", "inputList": ["a", input]}),
                &limits(),
            )
            .unwrap_err();
            assert_eq!(err.field.as_deref(), Some("inputList[1]"), "{err}");
            assert!(err.message.starts_with("inputList[1]"), "{err}");
            assert!(err.message.contains(says), "{err}");
        }
    }

    #[test]
    fn an_input_that_is_not_utf8_is_measured_in_its_base64_form() {
        // 7 bytes take 12 in base64, over the 10-byte limit; 6 take 8.
        let long = from_json(
            &json!({"templateFunction": "x", "inputList": [{"base64": "/////////w=="}]}),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(long.field.as_deref(), Some("inputList[0]"));
        assert_eq!(long.code, "too_large");
        from_json(
            &json!({"templateFunction": "x", "inputList": [{"base64": "////////"}]}),
            &limits(),
        )
        .unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                json!({"inputList": []}),
                "missing_field",
                "templateFunction",
            ),
            (
                json!({"templateFunction": "x"}),
                "missing_field",
                "inputList",
            ),
            (
                json!({"templateFunction": 5, "inputList": []}),
                "invalid_field",
                "templateFunction",
            ),
            (
                json!({"templateFunction": " ", "inputList": []}),
                "invalid_field",
                "templateFunction",
            ),
            (
                json!({"templateFunction": "x".repeat(101), "inputList": []}),
                "too_large",
                "templateFunction",
            ),
            (
                json!({"templateFunction": "x", "inputList": "a"}),
                "invalid_field",
                "inputList",
            ),
            (
                json!({"templateFunction": "x", "inputList": ["a", {}]}),
                "invalid_field",
                "inputList[1]",
            ),
            (
                json!({"templateFunction": "x", "inputList": [null]}),
                "invalid_field",
                "inputList[0]",
            ),
            (
                json!({"templateFunction": "x", "inputList": ["a", "a", "a", "a", "a", "a"]}),
                "too_many_items",
                "inputList",
            ),
            (
                json!({"templateFunction": "x", "inputList": ["x".repeat(11)]}),
                "too_large",
                "inputList[0]",
            ),
            (
                json!({"templateFunction": "x", "inputList": ["a\u{0}"]}),
                "invalid_field",
                "inputList[0]",
            ),
            (
                json!({"templateFunction": "{{a}}", "inputList": []}),
                "missing_variables",
                "variableJson",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "variableJson": {"a": [1]}}),
                "invalid_field",
                "variableJson.a",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "variableJson": 3}),
                "invalid_field",
                "variableJson",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "timeoutSecs": 0}),
                "invalid_field",
                "timeoutSecs",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "timeoutSecs": -5}),
                "invalid_field",
                "timeoutSecs",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "timeoutSecs": 1.5}),
                "invalid_field",
                "timeoutSecs",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "timeoutSecs": 1e300}),
                "invalid_field",
                "timeoutSecs",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "timeoutSecs": "5"}),
                "invalid_field",
                "timeoutSecs",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "retries": 11}),
                "invalid_field",
                "retries",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "interpreter": "bash -e"}),
                "invalid_field",
                "interpreter",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "name": 1}),
                "invalid_field",
                "name",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "inputlist": []}),
                "unknown_field",
                "inputlist",
            ),
            (
                json!({"templateFunction": "{{a}}", "inputList": [], "variableJson": {"a": "y".repeat(200)}}),
                "too_large",
                "variableJson",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "variableJson": {"unused": "y".repeat(300)}}),
                "too_large",
                "variableJson",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "memoryMb": 0}),
                "invalid_field",
                "memoryMb",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "memoryMb": 1.5}),
                "invalid_field",
                "memoryMb",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "memoryMb": 1025}),
                "invalid_field",
                "memoryMb",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "cpus": 0}),
                "invalid_field",
                "cpus",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "cpus": -1}),
                "invalid_field",
                "cpus",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "cpus": "2"}),
                "invalid_field",
                "cpus",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "cpus": 8.5}),
                "invalid_field",
                "cpus",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "priority": 1001}),
                "invalid_field",
                "priority",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "priority": -1001}),
                "invalid_field",
                "priority",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "priority": 1.5}),
                "invalid_field",
                "priority",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "priority": "high"}),
                "invalid_field",
                "priority",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "priority": 9223372036854775808u64}),
                "invalid_field",
                "priority",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "weight": 0}),
                "invalid_field",
                "weight",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "weight": -1}),
                "invalid_field",
                "weight",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "weight": 1001}),
                "invalid_field",
                "weight",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "weight": "2"}),
                "invalid_field",
                "weight",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "maxConcurrency": 0}),
                "invalid_field",
                "maxConcurrency",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "maxConcurrency": 1000001}),
                "invalid_field",
                "maxConcurrency",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "maxConcurrency": true}),
                "invalid_field",
                "maxConcurrency",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "speculation": "false"}),
                "invalid_field",
                "speculation",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "speculation": 0}),
                "invalid_field",
                "speculation",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": "gpu=a100"}),
                "invalid_field",
                "requires",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": [["gpu", "a100"]]}),
                "invalid_field",
                "requires",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"": "a100"}}),
                "invalid_field",
                "requires",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"g pu": "a100"}}),
                "invalid_field",
                "requires",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"gpu": 100}}),
                "invalid_field",
                "requires.gpu",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"gpu": null}}),
                "invalid_field",
                "requires.gpu",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"gpu": "a\n100"}}),
                "invalid_field",
                "requires.gpu",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"gpu": "v".repeat(64)}}),
                "invalid_field",
                "requires.gpu",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"gpu": "a100,h100"}}),
                "invalid_field",
                "requires.gpu",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"gpu": " a100"}}),
                "invalid_field",
                "requires.gpu",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": {"n".repeat(64): "a100"}}),
                "invalid_field",
                "requires",
            ),
            (
                json!({"templateFunction": "x", "inputList": [], "requires": (0..17).map(|i| (format!("l{i}"), json!("v"))).collect::<Map<String, Value>>()}),
                "too_large",
                "requires",
            ),
        ];
        for (body, code, field) in cases {
            assert_eq!(
                field_of(body.clone()),
                (code.to_string(), Some(field.to_string())),
                "{body}"
            );
        }
    }

    #[test]
    fn sizes_are_counted_as_the_bytes_travel_json_escaped() {
        // Six newlines are six bytes raw but twelve in a shard message.
        let err = from_json(
            &json!({"templateFunction": "x", "inputList": ["\n".repeat(6)]}),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            ("too_large", Some("inputList[0]"))
        );
        assert!(
            from_json(
                &json!({"templateFunction": "x", "inputList": ["\n".repeat(5)]}),
                &limits()
            )
            .is_ok()
        );
    }

    #[test]
    fn resource_limits_are_optional_and_cpus_become_milli_cpus_rounded_up() {
        let bare = from_json(
            &json!({"templateFunction": "x", "inputList": []}),
            &limits(),
        )
        .unwrap();
        assert_eq!((bare.memory_mb, bare.milli_cpus), (None, None));
        for (cpus, milli) in [
            (json!(0.5), 500),
            (json!(2), 2000),
            (json!(1.1), 1100),
            (json!(0.0001), 1),
            (json!(8), 8000),
        ] {
            let task = from_json(
                &json!({"templateFunction": "x", "inputList": [], "cpus": cpus, "memoryMb": 512}),
                &limits(),
            )
            .unwrap();
            assert_eq!(task.milli_cpus, Some(milli), "{cpus}");
            assert_eq!(task.memory_mb, Some(512));
        }
        let form = from_form(
            &pairs(&[
                ("templateFunction", "x"),
                ("inputList", "a"),
                ("cpus", "0.25"),
                ("memoryMb", "64"),
            ]),
            &limits(),
        )
        .unwrap();
        assert_eq!((form.memory_mb, form.milli_cpus), (Some(64), Some(250)));
        for bad in ["NaN", "inf", "lots", "-0.5"] {
            let err = from_form(
                &pairs(&[("templateFunction", "x"), ("inputList", "a"), ("cpus", bad)]),
                &limits(),
            )
            .unwrap_err();
            assert_eq!(err.field.as_deref(), Some("cpus"), "{bad}");
        }
    }

    #[test]
    fn scheduling_fields_default_to_an_ordinary_task_that_may_run_anywhere() {
        let bare = from_json(
            &json!({"templateFunction": "x", "inputList": []}),
            &limits(),
        )
        .unwrap();
        assert_eq!(bare.scheduling, Scheduling::default());
        assert_eq!(
            (
                bare.scheduling.priority,
                bare.scheduling.weight,
                bare.scheduling.max_concurrency,
                bare.scheduling.requires.len(),
                bare.scheduling.speculation,
            ),
            (0, 1, None, 0, true)
        );
        let nulls = from_json(
            &json!({"templateFunction": "x", "inputList": [], "priority": null, "weight": null,
                    "maxConcurrency": null, "requires": null, "speculation": null}),
            &limits(),
        )
        .unwrap();
        assert_eq!(nulls.scheduling, Scheduling::default());
    }

    #[test]
    fn scheduling_fields_are_kept_as_given_up_to_their_bounds() {
        let task = from_json(
            &json!({"templateFunction": "x", "inputList": [], "priority": -1000, "weight": 1000,
                    "maxConcurrency": 1_000_000, "speculation": false,
                    "requires": {"gpu": "a100", "example.com/zone": "", "rack_2": "v".repeat(63)}}),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            task.scheduling,
            Scheduling {
                priority: -1000,
                weight: 1000,
                max_concurrency: Some(1_000_000),
                requires: [
                    ("gpu", "a100".to_string()),
                    ("example.com/zone", String::new()),
                    ("rack_2", "v".repeat(63)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                speculation: false,
            }
        );
        assert_eq!(task.to_task(0).scheduling, task.scheduling);
        let top = from_json(
            &json!({"templateFunction": "x", "inputList": [], "priority": 1000, "maxConcurrency": 1}),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            (top.scheduling.priority, top.scheduling.max_concurrency),
            (1000, Some(1))
        );
    }

    #[test]
    fn the_seeds_form_takes_scheduling_fields_too() {
        let task = from_form(
            &pairs(&[
                ("templateFunction", "x"),
                ("inputList", "a"),
                ("priority", "-3"),
                ("weight", "2"),
                ("maxConcurrency", "4"),
                ("speculation", "false"),
                ("requires", r#"{"gpu":"a100"}"#),
            ]),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            (
                task.scheduling.priority,
                task.scheduling.weight,
                task.scheduling.max_concurrency,
                task.scheduling.speculation,
                task.scheduling.requires.get("gpu").map(String::as_str),
            ),
            (-3, 2, Some(4), false, Some("a100"))
        );
        for (field, bad) in [
            ("speculation", "no"),
            ("requires", "gpu=a100"),
            ("weight", "two"),
        ] {
            let err = from_form(
                &pairs(&[("templateFunction", "x"), ("inputList", "a"), (field, bad)]),
                &limits(),
            )
            .unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{bad}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        for body in [json!([]), json!("x"), json!(null), json!(1)] {
            let err = from_json(&body, &limits()).unwrap_err();
            assert_eq!(err.code, "invalid_body");
        }
    }

    #[test]
    fn missing_variables_are_all_listed() {
        let err = from_json(
            &json!({"templateFunction": "{{a}} {{b}}", "inputList": []}),
            &limits(),
        )
        .unwrap_err();
        assert!(
            err.message.contains("{{a}}") && err.message.contains("{{b}}"),
            "{}",
            err.message
        );
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn form_input_list_is_repeated_or_comma_separated() {
        let one = from_form(
            &pairs(&[("templateFunction", "echo"), ("inputList", "a,b,c")]),
            &limits(),
        )
        .unwrap();
        assert_eq!(one.inputs, vec!["a", "b", "c"]);
        let many = from_form(
            &pairs(&[
                ("templateFunction", "echo"),
                ("inputList", "a,b"),
                ("inputList", "c"),
            ]),
            &limits(),
        )
        .unwrap();
        assert_eq!(many.inputs, vec!["a,b", "c"]);
        let none = from_form(
            &pairs(&[("templateFunction", "echo"), ("inputList", "")]),
            &limits(),
        )
        .unwrap();
        assert!(none.inputs.is_empty());
    }

    #[test]
    fn form_fields_are_typed_and_not_repeated() {
        let task = from_form(
            &pairs(&[
                ("templateFunction", "echo {{x}}"),
                ("variableJson", r#"{"x":"1"}"#),
                ("inputList", "a"),
                ("timeoutSecs", "30"),
                ("retries", "2"),
            ]),
            &limits(),
        )
        .unwrap();
        assert_eq!((task.timeout_secs, task.retries), (30, 2));
        let err = from_form(
            &pairs(&[
                ("templateFunction", "a"),
                ("templateFunction", "b"),
                ("inputList", "x"),
            ]),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            ("repeated_field", Some("templateFunction"))
        );
        let err = from_form(
            &pairs(&[
                ("templateFunction", "a"),
                ("inputList", "x"),
                ("retries", "lots"),
            ]),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("retries"));
        let err = from_form(&pairs(&[("templateFunction", "a")]), &limits()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("inputList"));
    }

    proptest! {
        #[test]
        fn form_decoding_never_panics(list in proptest::collection::vec(("[a-zA-Z\\[\\]]{0,16}", "\\PC{0,20}"), 0..8)) {
            let _ = from_form(&list, &limits());
        }

        #[test]
        fn validation_never_panics(text in "\\PC{0,200}") {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                let _ = from_json(&value, &limits());
            }
        }
    }
}

#[cfg(test)]
mod reduce_tests {
    use super::*;
    use serde_json::json;

    fn body(reduce: Value) -> Value {
        json!({
            "templateFunction": "wc -w < \"$1\"",
            "variableJson": {"unit": "words"},
            "inputList": ["a", "b"],
            "reduce": reduce,
        })
    }

    #[test]
    fn a_reduce_reads_with_its_defaults() {
        let new = from_json(
            &body(json!({"templateFunction": "echo {{unit}}"})),
            &SubmitLimits::default(),
        )
        .expect("valid");
        let reduce = new.reduce.clone().expect("a reduce");
        assert_eq!(reduce.interpreter, "bash");
        assert_eq!(
            reduce.timeout_secs,
            SubmitLimits::default().default_timeout_secs
        );
        assert_eq!(reduce.when, ReduceWhen::Success);
        assert_eq!(new.to_task(0).reduce, Some(reduce));
    }

    #[test]
    fn each_bad_reduce_field_is_named() {
        for (reduce, field) in [
            (json!("sum"), "reduce"),
            (json!({}), "reduce.templateFunction"),
            (
                json!({"templateFunction": "echo {{missing}}"}),
                "reduce.templateFunction",
            ),
            (
                json!({"templateFunction": "x", "timeoutSecs": 0}),
                "reduce.timeoutSecs",
            ),
            (
                json!({"templateFunction": "x", "interpreter": "a b"}),
                "reduce.interpreter",
            ),
            (
                json!({"templateFunction": "x", "when": "never"}),
                "reduce.when",
            ),
            (json!({"templateFunction": "x", "every": 1}), "reduce.every"),
        ] {
            let e =
                from_json(&body(reduce.clone()), &SubmitLimits::default()).expect_err("refused");
            assert_eq!(e.field.as_deref(), Some(field), "{reduce}: {e}");
        }
    }
}
