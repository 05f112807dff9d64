//! A shard's work: the [`ShardMessage`] a worker runs, built the one way both
//! paths use. The scheduler builds it for every shard it publishes; a slot
//! that claimed a shard from the store (late binding, docs/scheduling.md)
//! builds the same message from the stored task and
//! [`Store::inputs_range`](dts_store::Store::inputs_range), with no bus
//! message at all.

use dts_model::template::{self, MissingVariables};
use dts_model::{Bytes, ShardMessage, ShardRange, Task};

/// Why a shard's work cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardWorkError {
    /// The template names a variable the task has no value for: the task can
    /// never run.
    #[error("task {task}: cannot render its template")]
    Render {
        /// The task id.
        task: String,
        /// Which variables are missing.
        #[source]
        source: MissingVariables,
    },
    /// The inputs given are not the shard's range: the stored list is shorter
    /// than the plan says (a bug or a hand-edited store).
    #[error("task {task} shard {shard}: {got} inputs for a range of {expected}")]
    ItemsMismatch {
        /// The task id.
        task: String,
        /// The shard.
        shard: u32,
        /// The range's length.
        expected: u64,
        /// The inputs given.
        got: usize,
    },
}

/// A task with its template rendered: rendered once, then any number of its
/// shards' messages built from it.
#[derive(Debug, Clone)]
pub struct ShardWork<'a> {
    task: &'a Task,
    script: String,
}

impl<'a> ShardWork<'a> {
    /// Renders the task's template with its variables.
    pub fn new(task: &'a Task) -> Result<ShardWork<'a>, ShardWorkError> {
        let script =
            template::render(&task.template_function, &task.variables).map_err(|source| {
                ShardWorkError::Render {
                    task: task.id.clone(),
                    source,
                }
            })?;
        Ok(ShardWork { task, script })
    }

    /// The rendered script.
    pub fn script(&self) -> &str {
        &self.script
    }

    /// The message for shard `shard_index` of `shard_count`, covering `range`,
    /// whose inputs are `items`. Every per-item setting comes from the task,
    /// so a shard runs alike however it reached its worker.
    pub fn message(
        &self,
        shard_index: u32,
        shard_count: u32,
        range: ShardRange,
        items: Vec<Bytes>,
    ) -> Result<ShardMessage, ShardWorkError> {
        if items.len() as u64 != range.len {
            return Err(ShardWorkError::ItemsMismatch {
                task: self.task.id.clone(),
                shard: shard_index,
                expected: range.len,
                got: items.len(),
            });
        }
        let task = self.task;
        Ok(ShardMessage {
            task_id: task.id.clone(),
            shard_index,
            shard_count,
            start: range.start,
            script: self.script.clone(),
            interpreter: task.interpreter.clone(),
            timeout_secs: task.timeout_secs,
            retries: task.retries,
            deadline_at: task.deadline_at(),
            items,
            memory_mb: task.memory_mb,
            milli_cpus: task.milli_cpus,
        })
    }
}

/// The message for one shard of `task` (its plan has `shard_count` shards),
/// covering `range` with inputs `items`: what a slot that claimed the shard
/// runs. Renders the template each call; [`ShardWork`] renders once for many.
pub fn shard_message(
    task: &Task,
    shard_index: u32,
    shard_count: u32,
    range: ShardRange,
    items: Vec<Bytes>,
) -> Result<ShardMessage, ShardWorkError> {
    ShardWork::new(task)?.message(shard_index, shard_count, range, items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dts_model::{NewTask, Variables};

    fn task(template: &str, variables: serde_json::Value) -> Task {
        NewTask {
            id: dts_model::new_task_id(),
            name: None,
            template_function: template.into(),
            variables: Variables::from_json(&variables).unwrap(),
            interpreter: "bash".into(),
            timeout_secs: 30,
            retries: 1,
            deadline_secs: Some(60),
            memory_mb: Some(100),
            milli_cpus: None,
            scheduling: Default::default(),
            halt: None,
            after: None,
            reduce: None,
            inputs: vec!["a".into(), "b".into(), "c".into()],
        }
        .to_task(1_000)
    }

    #[test]
    fn a_shard_message_carries_the_rendered_script_its_range_and_every_task_setting() {
        let task = task("echo {{who}} \"$1\"", serde_json::json!({"who": "you"}));
        let range = ShardRange { start: 1, len: 2 };
        let message = shard_message(&task, 1, 2, range, vec!["b".into(), "c".into()]).unwrap();
        assert_eq!(
            message,
            ShardMessage {
                task_id: task.id.clone(),
                shard_index: 1,
                shard_count: 2,
                start: 1,
                script: "echo you \"$1\"".into(),
                interpreter: "bash".into(),
                timeout_secs: 30,
                retries: 1,
                deadline_at: Some(61_000),
                items: vec!["b".into(), "c".into()],
                memory_mb: Some(100),
                milli_cpus: None,
            }
        );
    }

    #[test]
    fn a_template_with_a_missing_variable_cannot_become_a_shard() {
        let task = task("echo {{who}} {{what}}", serde_json::json!({"who": "you"}));
        let range = ShardRange { start: 0, len: 1 };
        let err = shard_message(&task, 0, 1, range, vec!["a".into()]).unwrap_err();
        assert_eq!(
            err,
            ShardWorkError::Render {
                task: task.id.clone(),
                source: MissingVariables(vec!["what".into()]),
            }
        );
    }

    #[test]
    fn inputs_shorter_than_the_range_are_refused_not_run_short() {
        let task = task("echo \"$1\"", serde_json::json!({}));
        let range = ShardRange { start: 2, len: 3 };
        let err = shard_message(&task, 1, 2, range, vec!["c".into()]).unwrap_err();
        assert_eq!(
            err,
            ShardWorkError::ItemsMismatch {
                task: task.id.clone(),
                shard: 1,
                expected: 3,
                got: 1,
            }
        );
    }
}
