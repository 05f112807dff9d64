//! What the dashboard and `/v1/overview` summarise, counted by both backends
//! in the same write that records results, so reading a summary never walks
//! a task's results: per task, the results each worker recorded and the
//! results recorded per [`BUCKET_MS`]; over the store, every result recorded
//! and the recent buckets.
//!
//! A result counts each time one is written: an item a retry ran again
//! counts again, for the worker that ran it then, and the earlier attempt's
//! count stays with its worker.

use dts_model::TaskStatus;
use std::collections::BTreeMap;

/// The width of a throughput bucket: 10 seconds, in milliseconds.
pub const BUCKET_MS: u64 = 10_000;

/// How far back the store-wide buckets are kept: an hour (the overview
/// reads the last minute).
pub const STORE_BUCKETS_KEPT_MS: u64 = 3_600_000;

/// The most buckets [`Store::task_activity`](crate::Store::task_activity)
/// returns: the last hour of a task.
pub const TASK_BUCKETS_SHOWN: usize = 360;

/// The start of the bucket `millis` falls in.
pub fn bucket_start(millis: u64) -> u64 {
    millis - millis % BUCKET_MS
}

/// Store-wide counts: what `/v1/overview` shows besides the live workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Tasks in each status, every status of [`TaskStatus::ALL`] in its
    /// order, zeros included. Tasks past their retention are not counted.
    pub tasks_by_status: Vec<(TaskStatus, u64)>,
    /// Shards of in-progress tasks no worker holds a live lease on and not
    /// completed: the queue free slots claim from.
    pub shards_waiting: u64,
    /// Every item result recorded since the store was created (a store from
    /// before the count started from the results it then held).
    pub items_finished: u64,
    /// Results recorded in the last minute: the six buckets before the one
    /// now filling, so the figure does not sag at each bucket's start.
    pub items_last_minute: u64,
}

/// A task's activity: what its page shows besides its counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskActivity {
    /// Results each worker recorded, by worker id.
    pub per_worker: BTreeMap<String, WorkerCounts>,
    /// `(bucket start in ms, results recorded in it)`, oldest first, at most
    /// the last [`TASK_BUCKETS_SHOWN`]; buckets without results are absent.
    pub throughput: Vec<(u64, u64)>,
}

/// Results one worker recorded for a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    /// Results with success.
    pub succeeded: u64,
    /// Results without.
    pub failed: u64,
}

/// Counts a batch's written results by worker before they are added to the
/// store's summaries.
#[derive(Debug, Default)]
pub(crate) struct WorkerTally {
    counts: BTreeMap<String, WorkerCounts>,
}

impl WorkerTally {
    pub(crate) fn add(&mut self, worker: &str, ok: bool) {
        if !self.counts.contains_key(worker) {
            self.counts
                .insert(worker.to_string(), WorkerCounts::default());
        }
        if let Some(counts) = self.counts.get_mut(worker) {
            if ok {
                counts.succeeded += 1;
            } else {
                counts.failed += 1;
            }
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.values().map(|c| c.succeeded + c.failed).sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &WorkerCounts)> {
        self.counts
            .iter()
            .map(|(worker, counts)| (worker.as_str(), counts))
    }
}

/// The last [`TASK_BUCKETS_SHOWN`] of `buckets`, sorted oldest first.
pub(crate) fn last_buckets(mut buckets: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    buckets.sort_unstable();
    let skip = buckets.len().saturating_sub(TASK_BUCKETS_SHOWN);
    buckets.split_off(skip)
}

/// The six full buckets before the one `now` falls in, as `[from, to)` ms.
pub(crate) fn last_minute(now: u64) -> (u64, u64) {
    let current = bucket_start(now);
    (current.saturating_sub(6 * BUCKET_MS), current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_starts_on_a_multiple_of_ten_seconds() {
        assert_eq!(bucket_start(1_700_000_012_345), 1_700_000_010_000);
        assert_eq!(bucket_start(1_700_000_010_000), 1_700_000_010_000);
    }

    #[test]
    fn the_last_minute_is_the_six_buckets_before_the_one_filling() {
        assert_eq!(last_minute(125_000), (60_000, 120_000));
        assert_eq!(last_minute(5_000), (0, 0));
    }

    #[test]
    fn only_the_last_buckets_are_shown_oldest_first() {
        let buckets: Vec<(u64, u64)> = (0..400u64).rev().map(|b| (b * BUCKET_MS, b)).collect();
        let shown = last_buckets(buckets);
        assert_eq!(shown.len(), TASK_BUCKETS_SHOWN);
        assert_eq!(shown[0], (40 * BUCKET_MS, 40));
        assert_eq!(shown[TASK_BUCKETS_SHOWN - 1], (399 * BUCKET_MS, 399));
    }

    #[test]
    fn a_tally_counts_each_worker_apart() {
        let mut tally = WorkerTally::default();
        tally.add("w1", true);
        tally.add("w1", false);
        tally.add("w2", true);
        assert_eq!(tally.total(), 3);
        let counts: Vec<_> = tally.iter().map(|(w, c)| (w.to_string(), *c)).collect();
        assert_eq!(
            counts,
            vec![
                (
                    "w1".to_string(),
                    WorkerCounts {
                        succeeded: 1,
                        failed: 1
                    }
                ),
                (
                    "w2".to_string(),
                    WorkerCounts {
                        succeeded: 1,
                        failed: 0
                    }
                ),
            ]
        );
    }
}
