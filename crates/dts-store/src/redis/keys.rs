//! Key names: every key the Redis store touches is built here, under the
//! installation's prefix, so the layout in the module docs has one source.

use crate::ResultFilter;
use dts_model::TaskStatus;

/// Builds key names under one prefix (`{prefix}:task:{id}`, …).
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// Stream: the chunks of task `id`'s live log published while watched
    /// (`live`).
    pub(super) fn live(&self, id: &str) -> String {
        format!("{}:live:{id}", self.prefix)
    }

    /// String with a short TTL: someone follows task `id`'s live log.
    pub(super) fn live_watch(&self, id: &str) -> String {
        format!("{}:live:{id}:watch", self.prefix)
    }

    /// Hash: schedule name -> the schedule as JSON (`schedules`).
    pub(super) fn schedules(&self) -> String {
        format!("{}:schedules", self.prefix)
    }

    /// Hash: schedule name -> the version its compare-and-set compares.
    pub(super) fn schedule_versions(&self) -> String {
        format!("{}:schedules:versions", self.prefix)
    }

    /// Hash of the task's fields (see `codec`).
    pub(super) fn task(&self, id: &str) -> String {
        format!("{}:task:{id}", self.prefix)
    }

    /// String: the input list as one JSON array.
    pub(super) fn inputs(&self, id: &str) -> String {
        format!("{}:task:{id}:inputs", self.prefix)
    }

    /// Set of completed shard indices.
    pub(super) fn shards(&self, id: &str) -> String {
        format!("{}:task:{id}:shards", self.prefix)
    }

    /// Layout 1: hash of item index -> result JSON. Layout 2: what the
    /// bucket, count and worker keys start with (`lua/results_prelude.lua`).
    pub(super) fn results(&self, id: &str) -> String {
        format!("{}:task:{id}:results", self.prefix)
    }

    /// Hash: item index -> JSON array of its earlier attempts, which a
    /// retry moved out of its result (`lua/retry_task.lua`).
    pub(super) fn history(&self, id: &str) -> String {
        format!("{}:task:{id}:results:history", self.prefix)
    }

    /// Sorted set of the indices recorded with the outcome `filter`, scored
    /// by index (layout 2 keeps only the failed one).
    pub(super) fn result_index(&self, id: &str, filter: ResultFilter) -> String {
        let which = match filter {
            ResultFilter::All => "all",
            ResultFilter::Succeeded => "succeeded",
            ResultFilter::Failed => "failed",
        };
        format!("{}:task:{id}:results:{which}", self.prefix)
    }

    /// Hash of the task's shard leases: `{shard}:owner`, `{shard}:expires`,
    /// `{shard}:attempts`, `{shard}:dirty` (see `lua/lease_prelude.lua`).
    pub(super) fn leases(&self, id: &str) -> String {
        format!("{}:task:{id}:leases", self.prefix)
    }

    /// Hash: item index -> how often the item was started.
    pub(super) fn starts(&self, id: &str) -> String {
        format!("{}:task:{id}:starts", self.prefix)
    }

    /// Sorted set of the shards neither completed nor owned by a lease,
    /// scored by shard index: the queue free slots claim from, lowest first.
    pub(super) fn ready(&self, id: &str) -> String {
        format!("{}:task:{id}:ready", self.prefix)
    }

    /// Sorted set of the shards owned by a lease, scored by when it expires
    /// (ms, Redis's clock): those at or below now count as ready.
    pub(super) fn held(&self, id: &str) -> String {
        format!("{}:task:{id}:held", self.prefix)
    }

    /// Hash: shard index -> its range as `start:len`, so a claim reads one
    /// field instead of decoding the whole plan.
    pub(super) fn ranges(&self, id: &str) -> String {
        format!("{}:task:{id}:ranges", self.prefix)
    }

    /// What every task key starts with: `runnable_tasks.lua` builds a
    /// task's keys from it and the task id (the ids are in the set it reads).
    pub(super) fn task_prefix(&self) -> String {
        format!("{}:task:", self.prefix)
    }

    /// Sorted set of the list members of in-progress tasks with a shard not
    /// yet completed, scored by `createdAt`.
    pub(super) fn runnable(&self) -> String {
        format!("{}:runnable", self.prefix)
    }

    /// Sorted set of every task's list member, scored by `createdAt`.
    pub(super) fn all_tasks(&self) -> String {
        format!("{}:tasks", self.prefix)
    }

    /// Sorted set of every task id, all scored 0: `ZRANGEBYLEX` finds the
    /// ids with a prefix without a scan.
    pub(super) fn ids(&self) -> String {
        format!("{}:ids", self.prefix)
    }

    /// String set once every task is in [`Keys::ids`] (`lua/fill_ids.lua`).
    pub(super) fn ids_filled(&self) -> String {
        format!("{}:ids-filled", self.prefix)
    }

    /// Sorted set of the list members of the tasks in `status`.
    pub(super) fn tasks_in(&self, status: TaskStatus) -> String {
        format!("{}:tasks:{}", self.prefix, status.as_str())
    }

    /// Sorted set of the list members of tasks not yet ended, by `createdAt`.
    pub(super) fn unfinished(&self) -> String {
        format!("{}:unfinished", self.prefix)
    }

    /// Sorted set of ended tasks' list members, scored by when their keys expire.
    pub(super) fn ended(&self) -> String {
        format!("{}:ended", self.prefix)
    }

    /// Counter that orders tasks created in the same millisecond.
    pub(super) fn sequence(&self) -> String {
        format!("{}:seq", self.prefix)
    }

    /// String: a worker's last heartbeat as JSON, with the heartbeat's TTL.
    pub(super) fn worker(&self, id: &str) -> String {
        format!("{}:worker:{id}", self.prefix)
    }

    /// Sorted set of worker ids, scored by when their heartbeat expires.
    pub(super) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Every list index a task's member can be in (for pruning).
    pub(super) fn list_indexes(&self) -> Vec<String> {
        let mut keys = vec![self.all_tasks(), self.unfinished(), self.runnable()];
        keys.extend(TaskStatus::ALL.map(|status| self.tasks_in(status)));
        keys
    }

    /// String: every result recorded, over the store (`activity.rs`).
    pub(super) fn items_finished(&self) -> String {
        format!("{}:stats:finished", self.prefix)
    }

    /// Sorted set: the completion outbox, task id -> when its entry was
    /// added or its claim expires (ms, Redis's clock) (`outbox.rs`).
    pub(super) fn completions(&self) -> String {
        format!("{}:completions", self.prefix)
    }

    /// Hash: task id -> the `finishedAt` of the end its outbox entry is for.
    pub(super) fn completion_ends(&self) -> String {
        format!("{}:completions:ends", self.prefix)
    }

    /// Hash: bucket start (ms) -> results recorded in that 10-second bucket,
    /// over the store, kept for an hour (`activity.rs`).
    pub(super) fn store_throughput(&self) -> String {
        format!("{}:stats:throughput", self.prefix)
    }

    /// Hash: `ok:{worker}` / `failed:{worker}` -> results the worker
    /// recorded for the task.
    pub(super) fn results_by_worker(&self, id: &str) -> String {
        format!("{}:task:{id}:results:by-worker", self.prefix)
    }

    /// Hash: bucket start (ms) -> the task's results recorded in it.
    pub(super) fn task_throughput(&self, id: &str) -> String {
        format!("{}:task:{id}:results:throughput", self.prefix)
    }

    /// The KEYS of a task script, in the order `lua/task_prelude.lua` expects.
    pub(super) fn task_script(&self, id: &str) -> Vec<String> {
        let mut keys = self.task_keys(id).to_vec();
        keys.extend([
            self.unfinished(),
            self.all_tasks(),
            self.ended(),
            self.sequence(),
            self.runnable(),
            self.ids(),
        ]);
        keys.extend(TaskStatus::ALL.map(|status| self.tasks_in(status)));
        keys.extend([self.items_finished(), self.store_throughput()]);
        keys.extend([self.completions(), self.completion_ends()]);
        keys
    }

    /// The fixed keys of task `id`, as task scripts get them; the scripts
    /// derive its layout 2 result keys from [`Keys::results`].
    pub(super) fn task_keys(&self, id: &str) -> [String; 12] {
        [
            self.task(id),
            self.inputs(id),
            self.shards(id),
            self.results(id),
            self.result_index(id, ResultFilter::All),
            self.result_index(id, ResultFilter::Succeeded),
            self.result_index(id, ResultFilter::Failed),
            self.leases(id),
            self.starts(id),
            self.ready(id),
            self.held(id),
            self.ranges(id),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_under_the_prefix() {
        let keys = Keys::new("dts-a");
        let mut all = keys.task_script("t1");
        all.extend(keys.list_indexes());
        all.extend([
            keys.worker("w"),
            keys.workers(),
            keys.task_prefix(),
            keys.ids(),
        ]);
        for key in all {
            assert!(key.starts_with("dts-a:"), "{key}");
        }
    }

    #[test]
    fn a_task_script_gets_its_keys_in_the_prelude_order() {
        let keys = Keys::new("p");
        let script = keys.task_script("t");
        assert_eq!(script.len(), 18 + TaskStatus::ALL.len() + 4);
        assert_eq!(script[script.len() - 4], "p:stats:finished");
        assert_eq!(script[script.len() - 3], "p:stats:throughput");
        assert_eq!(script[script.len() - 2], "p:completions");
        assert_eq!(script[script.len() - 1], "p:completions:ends");
        assert_eq!(script[0], "p:task:t");
        assert_eq!(script[6], "p:task:t:results:failed");
        assert_eq!(script[7], "p:task:t:leases");
        assert_eq!(script[8], "p:task:t:starts");
        assert_eq!(script[9], "p:task:t:ready");
        assert_eq!(script[10], "p:task:t:held");
        assert_eq!(script[11], "p:task:t:ranges");
        assert_eq!(script[15], "p:seq");
        assert_eq!(script[16], "p:runnable");
        assert_eq!(script[17], "p:ids");
        assert_eq!(script[18], "p:tasks:WAITING");
        assert_eq!(script[19], "p:tasks:QUEUED");
    }

    #[test]
    fn the_runnable_script_builds_the_same_task_keys_as_rust() {
        // runnable_tasks.lua appends the id, then ':held', to the prefix.
        let keys = Keys::new("p");
        let task = format!("{}t1", keys.task_prefix());
        assert_eq!(task, keys.task("t1"));
        assert_eq!(format!("{task}:held"), keys.held("t1"));
    }
}
