//! The scheduling policy (docs/scheduling.md): every free slot gets work,
//! a small task is not stuck behind a big one, priorities, weights,
//! `maxConcurrency` and labels. Asserted from the recorded starts, in
//! simulated time.

use crate::harness::fake::Start;
use crate::harness::*;
use dts_model::{NewTask, TaskStatus};
use std::collections::BTreeMap;
use std::time::Duration;

/// How many of `starts` (items that each run `item_ms`) run at `at_ms`.
fn running_at(starts: &[Start], at_ms: u64, item_ms: u64) -> usize {
    starts
        .iter()
        .filter(|s| s.at_ms <= at_ms && at_ms < s.at_ms + item_ms)
        .count()
}

/// The most of `starts` (items that each run `item_ms`) ever running at once.
fn most_at_once(starts: &[Start], item_ms: u64) -> usize {
    starts
        .iter()
        .map(|s| running_at(starts, s.at_ms, item_ms))
        .max()
        .unwrap_or(0)
}

fn items_per_worker(starts: &[Start]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for start in starts {
        *counts.entry(start.worker.clone()).or_insert(0) += 1;
    }
    counts
}

fn first_start(starts: &[Start]) -> u64 {
    starts.iter().map(|s| s.at_ms).min().unwrap_or(u64::MAX)
}

fn last_start(starts: &[Start]) -> u64 {
    starts.iter().map(|s| s.at_ms).max().unwrap_or(0)
}

fn with_priority(priority: i32, task: NewTask) -> NewTask {
    let mut task = task;
    task.scheduling.priority = priority;
    task
}

#[tokio::test(start_paused = true)]
async fn workers_with_one_and_four_cores_get_items_by_their_cores_and_finish_together() {
    let h = Harness::new().workers(&[1, 4]).start().await;
    let task = h.submit(task_of(80, "1s")).await;

    let ended = h.wait_until_ended(&task.id).await;

    assert_eq!(ended.items_succeeded, 80);
    let starts = h.starts_of(&task.id);
    let per_worker = items_per_worker(&starts);
    assert_eq!(
        (per_worker[&h.worker_id(0)], per_worker[&h.worker_id(1)]),
        (16, 64),
        "every slot ran one item after another"
    );
    // 80 item-seconds on 5 slots: the last items start 15 s after the first.
    assert_eq!(last_start(&starts) - first_start(&starts), 15_000);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_joins_mid_task_runs_items_at_once_and_takes_its_share() {
    let mut h = Harness::new().workers(&[1]).start().await;
    let task = h.submit(task_of(40, "1s")).await;
    h.run_until(
        |s| s.starts_of(&task.id).len() >= 5,
        "five items of the lone worker to start",
    )
    .await;
    let joined_at = h.now_ms();
    let newcomer = h.add_worker(4).await;

    h.wait_until_ended(&task.id).await;

    let starts = h.starts_of(&task.id);
    let theirs: Vec<Start> = starts
        .iter()
        .filter(|s| s.worker == h.worker_id(newcomer))
        .cloned()
        .collect();
    assert!(
        first_start(&theirs) <= joined_at + 2_000,
        "the new worker's first item started at {} ms, it joined at {joined_at} ms",
        first_start(&theirs)
    );
    assert!(
        theirs.len() >= 27,
        "the 4-core worker ran {} of the 35 items left",
        theirs.len()
    );
}

#[tokio::test(start_paused = true)]
async fn a_small_task_behind_a_big_one_starts_after_one_item_and_ends_within_a_second() {
    let h = Harness::new().workers(&[2]).start().await;
    let big = h.submit(task_of(100, "1s")).await;
    h.run_until(|s| s.starts_of(&big.id).len() == 2, "the big task to start")
        .await;
    h.idle(Duration::from_millis(500)).await;
    let submitted = h.now_ms();
    let small = h.submit(task_of(2, "100ms")).await;

    let ended = h.wait_until_ended(&small.id).await;

    assert_eq!(ended.items_succeeded, 2);
    let starts = h.starts_of(&small.id);
    assert!(
        first_start(&starts) <= submitted + 1_000 + 250,
        "the small task's first item started {} ms after it was submitted, with 1 s items ahead",
        first_start(&starts) - submitted
    );
    assert!(
        last_start(&starts) + 100 <= submitted + 1_000,
        "the small task ended {} ms after it was submitted",
        last_start(&starts) + 100 - submitted
    );
    assert_eq!(h.task(&big.id).await.status, TaskStatus::InProgress);
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_tasks_items_all_start_before_any_more_of_a_lower_ones() {
    let h = Harness::new().workers(&[2]).start().await;
    let low = h.submit(task_of(20, "1s")).await;
    h.run_until(|s| s.starts_of(&low.id).len() == 2, "the low task to start")
        .await;
    h.idle(Duration::from_millis(500)).await;
    let high = h.submit(with_priority(10, task_of(6, "1s"))).await;

    h.wait_until_ended(&low.id).await;

    let high_starts = h.starts_of(&high.id);
    assert_eq!(high_starts.len(), 6);
    let (first_high, last_high) = (first_start(&high_starts), last_start(&high_starts));
    let low_in_between: Vec<u64> = h
        .starts_of(&low.id)
        .iter()
        .filter(|s| s.at_ms > first_high && s.at_ms < last_high + 1_000)
        .map(|s| s.at_ms)
        .collect();
    assert!(
        low_in_between.is_empty(),
        "low-priority items started at {low_in_between:?} while the high task (from {first_high} ms to {last_high} ms) had items waiting"
    );
    assert!(
        first_high <= h.starts_of(&low.id)[2].at_ms,
        "the running low items were not stopped, but the next slot went to the high task"
    );
}

#[tokio::test(start_paused = true)]
async fn two_tasks_share_the_slots_by_their_weights() {
    let h = Harness::new().workers(&[4]).start().await;
    let mut light = task_of(40, "1s");
    light.scheduling.weight = 1;
    let mut heavy = task_of(40, "1s");
    heavy.scheduling.weight = 3;
    let light = h.submit(light).await;
    let heavy = h.submit(heavy).await;

    h.wait_until_ended(&light.id).await;

    let (light_starts, heavy_starts) = (h.starts_of(&light.id), h.starts_of(&heavy.id));
    let begin = first_start(&light_starts).min(first_start(&heavy_starts));
    // From the first item boundary, and while both have items waiting, the
    // heavy task gets three item starts for the light one's one, and no
    // slot idles. Slots of one worker decide one at a time, but items that
    // end in the same instant can leave a share one slot off until the next
    // item boundary, so the count is over ten seconds, not each instant.
    let window = (begin + 1_000)..(begin + 11_000);
    let in_window = |starts: &[Start]| starts.iter().filter(|s| window.contains(&s.at_ms)).count();
    let (light_count, heavy_count) = (in_window(&light_starts), in_window(&heavy_starts));
    assert_eq!(light_count + heavy_count, 40, "4 slots busy for 10 s");
    assert!(
        (8..=12).contains(&light_count),
        "the light task started {light_count} items and the heavy one {heavy_count}, for 10 and 30"
    );
}

#[tokio::test(start_paused = true)]
async fn max_concurrency_caps_a_tasks_running_items_across_workers_and_the_rest_go_elsewhere() {
    let h = Harness::new().workers(&[4, 4]).start().await;
    let mut capped = task_of(30, "1s");
    capped.scheduling.max_concurrency = Some(3);
    let capped = h.submit(capped).await;
    let free = h.submit(task_of(50, "1s")).await;

    let ended = h.wait_until_ended(&capped.id).await;
    h.wait_until_ended(&free.id).await;

    assert_eq!(ended.items_succeeded, 30);
    let (capped_starts, free_starts) = (h.starts_of(&capped.id), h.starts_of(&free.id));
    assert_eq!(most_at_once(&capped_starts, 1_000), 3);
    // While the capped task runs, the slots its cap leaves run the other:
    // no slot idles.
    let begin = first_start(&capped_starts).min(first_start(&free_starts));
    for second in 0..8 {
        let at = begin + second * 1_000 + 500;
        let (capped_now, free_now) = (
            running_at(&capped_starts, at, 1_000),
            running_at(&free_starts, at, 1_000),
        );
        assert_eq!(
            capped_now + free_now,
            8,
            "items running at {at} ms: {capped_now} capped, {free_now} free"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_requiring_labels_waits_for_a_worker_that_has_them_and_runs_only_there() {
    let mut h = Harness::new().workers(&[2]).start().await;
    let mut gpu = task_of(4, "1s");
    gpu.scheduling
        .requires
        .insert("gpu".to_string(), "a100".to_string());
    let gpu = h.submit(gpu).await;
    let plain = h.submit(task_of(4, "1s")).await;
    h.wait_until_ended(&plain.id).await;
    h.idle(Duration::from_secs(30)).await;
    assert!(
        h.starts_of(&gpu.id).is_empty(),
        "no worker has gpu=a100, yet the task ran"
    );
    assert!(!h.task(&gpu.id).await.status.is_terminal());

    let labelled = h.add_labelled_worker(1, &[("gpu", "a100")]).await;
    let ended = h.wait_until_ended(&gpu.id).await;

    assert_eq!(ended.items_succeeded, 4);
    let per_worker = items_per_worker(&h.starts_of(&gpu.id));
    assert_eq!(
        per_worker.into_iter().collect::<Vec<_>>(),
        vec![(h.worker_id(labelled), 4)]
    );
}
