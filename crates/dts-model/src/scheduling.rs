//! Which task a free slot runs next: the scheduling policy, as one pure
//! function both modes call (no I/O, no clock), and the task fields it reads.
//!
//! # How work reaches a slot
//!
//! Binding is late: a worker's slot asks for work when it frees, instead of
//! being handed a queue in advance. It reads a small snapshot of the runnable
//! tasks ([`Candidate`]s: their fields, how many of their items run across
//! the cluster, whether they have a shard no one holds), asks [`pick`] which
//! one to take, and claims a shard of it in the store. The claim re-checks
//! `maxConcurrency` atomically; a slot that loses a race reads a new snapshot
//! and asks again. No policy lives in the stores' scripts or SQL, so the
//! Redis and SQLite modes cannot drift apart.
//!
//! # The order
//!
//! [`pick`] first keeps the tasks the slot may run (eligibility), then ranks
//! them by four keys, each deciding only when the ones before it tie:
//!
//! 1. **Eligible.** The task has a shard no one holds (`ready`); every label
//!    it `requires` is one of the worker's, with an equal value; and fewer of
//!    its items run than its `maxConcurrency`. Anything else would either
//!    find nothing to claim or break a promise the task was given.
//! 2. **Higher `priority` first.** Priorities are strict: a slot never runs a
//!    lower-priority task while a higher one it may run is waiting. Running
//!    items are not preempted; a slot changes task only between items (see
//!    below).
//! 3. **Fair share: the fewest running items per unit of `weight`.** Compared
//!    as `running_a × weight_b < running_b × weight_a`, in integers, so equal
//!    shares are equal and never a rounding away. A task with no running item
//!    has share 0, so every ready task gets a slot before any task gets a
//!    second one, whatever the weights: a small task submitted behind a big
//!    one starts as soon as a slot frees. The price is that with many tasks
//!    and few slots the counts follow the weights only roughly; what always
//!    holds is that no task could take a slot from another and still have
//!    the smaller share (each is fair "up to one slot").
//! 4. **Oldest submission, then task id.** Only to make the order total, so
//!    the same snapshot always gives the same answer on every worker.
//!
//! # Giving a slot back
//!
//! A slot that holds a shard would keep its task until the shard ends, which
//! may be long after a new task arrives. So after every item it asks
//! [`should_yield`]: counting its own item out of its task, is another task
//! it may run strictly ahead, by priority or by share? If so it hands its
//! shard's remaining items back and asks [`pick`] again. Ties never move a
//! slot (only a strictly smaller share does), so two equal tasks never pass a
//! slot back and forth. Give each running slot the level `k / weight` where
//! it is its task's `k`-th (from 0): a move takes the slot at level
//! `(running - 1) / weight` from one task and adds one at a strictly lower
//! level to another, so the sum of all levels falls with every move and the
//! moves stop. This is what makes a small task start within one
//! item-duration of a big one holding every slot.

use crate::Task;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The lowest `priority` a task may have.
pub const MIN_PRIORITY: i32 = -1000;
/// The highest `priority` a task may have.
pub const MAX_PRIORITY: i32 = 1000;
/// The largest `weight` a task may have.
pub const MAX_WEIGHT: u32 = 1000;
/// The largest `maxConcurrency` a task may ask for (more is unlimited in
/// practice; the bound keeps products of counts far from overflow).
pub const MAX_CONCURRENCY: u32 = 1_000_000;
/// The most labels a task may require.
pub const MAX_REQUIRED_LABELS: usize = 16;
/// The longest label name, in characters.
pub const MAX_LABEL_NAME_CHARS: usize = 63;
/// The longest label value, in characters.
pub const MAX_LABEL_VALUE_CHARS: usize = 63;

/// A task's scheduling fields, as submitted (`priority`, `weight`,
/// `maxConcurrency`, `requires`, `speculation`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduling {
    /// Higher runs first; 0 by default.
    pub priority: i32,
    /// The task's share of slots against tasks of the same priority; 1 by
    /// default.
    pub weight: u32,
    /// At most this many items of the task run at once across the cluster;
    /// `None` for no limit.
    pub max_concurrency: Option<u32>,
    /// Labels (name → value) a worker must have to run the task.
    pub requires: BTreeMap<String, String>,
    /// Whether a straggling item may be run a second time on another slot;
    /// off for scripts with side effects.
    pub speculation: bool,
}

impl Default for Scheduling {
    fn default() -> Self {
        Scheduling {
            priority: 0,
            weight: 1,
            max_concurrency: None,
            requires: BTreeMap::new(),
            speculation: true,
        }
    }
}

/// Why a label breaks the one rule a worker's labels and a task's
/// `requires` share: a task can only require a label a worker can have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The name is empty or longer than [`MAX_LABEL_NAME_CHARS`].
    #[error("a label name has 1 to {MAX_LABEL_NAME_CHARS} characters, this one has {0}")]
    NameLength(usize),
    /// The name has a character outside `A-Z a-z 0-9 _ . - /`.
    #[error("a label name may only hold letters, digits, `_`, `.`, `-` and `/`, not {0:?}")]
    NameCharacter(char),
    /// The value is longer than [`MAX_LABEL_VALUE_CHARS`].
    #[error("a label value has at most {MAX_LABEL_VALUE_CHARS} characters, this one has {0}")]
    ValueLength(usize),
    /// The value holds a control character, or a comma (which separates
    /// labels in the one-line form `gpu=a100,zone=eu` of `worker.labels`).
    #[error("a label value must be printable and hold no comma, not {0:?}")]
    ValueCharacter(char),
    /// The value starts or ends with a blank, which every form of
    /// `worker.labels` drops, so no worker could match it.
    #[error("a label value may not start or end with a blank")]
    ValueBlankEdge,
}

impl LabelError {
    /// Whether the name, not the value, breaks the rule.
    pub fn in_name(&self) -> bool {
        matches!(
            self,
            LabelError::NameLength(_) | LabelError::NameCharacter(_)
        )
    }
}

/// Checks a label's name: restricted so it reads the same in a
/// `--label name=value` flag, a config file and a JSON key.
pub fn check_label_name(name: &str) -> Result<(), LabelError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_LABEL_NAME_CHARS {
        return Err(LabelError::NameLength(chars));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        Some(bad) => Err(LabelError::NameCharacter(bad)),
        None => Ok(()),
    }
}

/// Checks a label's value: any printable text without a comma, empty
/// included, and without blanks at its ends.
pub fn check_label_value(value: &str) -> Result<(), LabelError> {
    let chars = value.chars().count();
    if chars > MAX_LABEL_VALUE_CHARS {
        return Err(LabelError::ValueLength(chars));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control() || *c == ',') {
        return Err(LabelError::ValueCharacter(bad));
    }
    if value.trim() != value {
        return Err(LabelError::ValueBlankEdge);
    }
    Ok(())
}

/// Checks one label, the name first.
pub fn check_label(name: &str, value: &str) -> Result<(), LabelError> {
    check_label_name(name)?;
    check_label_value(value)
}

/// What the policy knows of one runnable task when a slot asks for work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The task's id.
    pub task_id: String,
    /// Higher runs first.
    pub priority: i32,
    /// Share of slots against tasks of the same priority (0 counts as 1).
    pub weight: u32,
    /// At most this many items running at once; `None` for no limit.
    pub max_concurrency: Option<u32>,
    /// Labels a worker must have to run the task.
    pub requires: BTreeMap<String, String>,
    /// Items of the task running across the cluster now, counting the slots
    /// that hold one of its shards between two items.
    pub running: u32,
    /// The task has a shard no one holds, so a claim can succeed.
    pub ready: bool,
    /// When the task was submitted (ms since the epoch): older first on a tie.
    pub created_at: u64,
}

impl Candidate {
    /// The candidate for `task` with `running` items running and, if
    /// `ready`, a shard no one holds.
    pub fn of(task: &Task, running: u32, ready: bool) -> Candidate {
        Candidate {
            task_id: task.id.clone(),
            priority: task.scheduling.priority,
            weight: task.scheduling.weight,
            max_concurrency: task.scheduling.max_concurrency,
            requires: task.scheduling.requires.clone(),
            running,
            ready,
            created_at: task.created_at,
        }
    }

    /// Whether a worker with `labels` has every label the task requires,
    /// with an equal value.
    pub fn placeable_on(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requires
            .iter()
            .all(|(name, value)| labels.get(name) == Some(value))
    }

    /// Whether one more item of the task may start under its
    /// `maxConcurrency`.
    pub fn has_room(&self) -> bool {
        self.max_concurrency.is_none_or(|cap| self.running < cap)
    }

    fn weight(&self) -> u64 {
        u64::from(self.weight.max(1))
    }
}

/// The free slot asking for work: what it offers a task.
#[derive(Debug, Clone, Copy)]
pub struct SlotOffer<'a> {
    /// The labels of the worker the slot belongs to.
    pub labels: &'a BTreeMap<String, String>,
}

/// Whether the slot may run `candidate` now: it is ready, placeable on the
/// slot's worker, and under its `maxConcurrency`.
pub fn eligible(offer: SlotOffer<'_>, candidate: &Candidate) -> bool {
    candidate.ready && candidate.placeable_on(offer.labels) && candidate.has_room()
}

/// The task a free slot should claim a shard of, or `None` when it may run
/// none of them (see the module docs for the order).
pub fn pick<'c>(offer: SlotOffer<'_>, candidates: &'c [Candidate]) -> Option<&'c Candidate> {
    candidates
        .iter()
        .filter(|c| eligible(offer, c))
        .min_by(|a, b| rank(a, a.running, b, b.running))
}

/// Whether a slot that has just finished an item of `current_task` should
/// hand the slot to another task instead of running the next item of its
/// shard.
///
/// The slot's own item is counted out of `current_task`: it yields when an
/// eligible other task has a higher priority than `current_task`, or the
/// same priority and a strictly smaller share than `current_task` would
/// have without this slot (`running - 1` against its weight). Equal shares
/// do not yield, so a slot never moves for the age or id tie-break and two
/// equal tasks never pass it back and forth; with a fixed set of ready
/// tasks, once every task is fair up to one slot nothing yields again.
///
/// `current_task` itself needs no shard of its own free (the slot holds
/// one) nor room under its cap (its item is already counted). If it is not
/// among `candidates` (it is no longer runnable), the slot yields to any
/// task it may run.
pub fn should_yield(offer: SlotOffer<'_>, current_task: &str, candidates: &[Candidate]) -> bool {
    let Some(current) = candidates.iter().find(|c| c.task_id == current_task) else {
        return pick(offer, candidates).is_some();
    };
    let without_slot = current.running.saturating_sub(1);
    candidates
        .iter()
        .filter(|c| c.task_id != current_task && eligible(offer, c))
        .any(|other| ahead_by_priority_or_share(other, other.running, current, without_slot))
}

/// Whether a slot that found nothing to [`pick`] may run a speculative copy
/// of a straggling shard of `candidate` (docs/scheduling.md, "Stragglers"):
/// the task asks for it (`speculation`), every shard of it not completed is
/// held (nothing `ready`, so every remaining item is running), the slot's
/// worker has the labels it requires, and its `maxConcurrency` leaves room
/// for one more running item. The store decides which shard straggles.
pub fn may_copy(offer: SlotOffer<'_>, candidate: &Candidate, speculation: bool) -> bool {
    speculation
        && !candidate.ready
        && candidate.running > 0
        && candidate.placeable_on(offer.labels)
        && candidate.has_room()
}

/// How many recent item times [`ItemTimes`] keeps per task.
const ITEM_TIMES_KEPT: usize = 63;

/// The recent item times one worker saw for one task, for straggler
/// speculation: a worker judges a straggler by the items its own slots ran,
/// so it needs no one else's clock or state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemTimes {
    recent: std::collections::VecDeque<u64>,
}

impl ItemTimes {
    /// Counts one finished item that took `millis`; only the last
    /// 63 are kept, so a task whose items change pace is
    /// judged by its recent ones.
    pub fn record(&mut self, millis: u64) {
        if self.recent.len() == ITEM_TIMES_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(millis);
    }

    /// The median of the times kept (the upper one of an even count); `None`
    /// before the first.
    pub fn median(&self) -> Option<u64> {
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied()
    }

    /// How long an item may run before it straggles: `factor` × the median,
    /// in milliseconds. `None` before the first item, or when `factor` is 0
    /// (speculation off).
    pub fn straggler_after(&self, factor: u32) -> Option<u64> {
        if factor == 0 {
            return None;
        }
        Some(self.median()?.max(1).saturating_mul(u64::from(factor)))
    }
}

/// Why `candidate` cannot run anywhere now, for its `waitingReason`: no
/// live worker at all, or none with the labels it requires.
/// `live_worker_labels` holds the labels of each live worker that runs
/// items. `None` when some live worker could run it.
pub fn waiting_reason(
    candidate: &Candidate,
    live_worker_labels: &[BTreeMap<String, String>],
) -> Option<String> {
    if live_worker_labels
        .iter()
        .any(|labels| candidate.placeable_on(labels))
    {
        return None;
    }
    if candidate.requires.is_empty() {
        return Some("no live worker".to_string());
    }
    let mut wanted = String::new();
    for (i, (name, value)) in candidate.requires.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        // Writing to a String cannot fail.
        let _ = write!(wanted, "{sep}{name}={value}");
    }
    Some(format!("no live worker has labels {wanted}"))
}

/// The policy's order: `Less` when `a` (with `a_running` items running)
/// goes before `b` (with `b_running`).
fn rank(a: &Candidate, a_running: u32, b: &Candidate, b_running: u32) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| share_order(a, a_running, b, b_running))
        .then_with(|| a.created_at.cmp(&b.created_at))
        .then_with(|| a.task_id.cmp(&b.task_id))
}

/// `a_running / a.weight` against `b_running / b.weight`, cross-multiplied:
/// exact, and u32 × u32 always fits a u64.
fn share_order(a: &Candidate, a_running: u32, b: &Candidate, b_running: u32) -> Ordering {
    (u64::from(a_running) * b.weight()).cmp(&(u64::from(b_running) * a.weight()))
}

/// Whether `a` is strictly ahead of `b` on priority or share alone.
fn ahead_by_priority_or_share(
    a: &Candidate,
    a_running: u32,
    b: &Candidate,
    b_running: u32,
) -> bool {
    match a.priority.cmp(&b.priority) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => share_order(a, a_running, b, b_running) == Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A ready, uncapped task of priority 0 and weight 1, submitted at `created_at`.
    fn task(id: &str, created_at: u64) -> Candidate {
        Candidate {
            task_id: id.to_string(),
            priority: 0,
            weight: 1,
            max_concurrency: None,
            requires: BTreeMap::new(),
            running: 0,
            ready: true,
            created_at,
        }
    }

    #[test]
    fn a_copy_is_only_for_a_task_with_nothing_ready_and_items_running() {
        let none = labels(&[]);
        let offer = SlotOffer { labels: &none };
        let tail = Candidate {
            ready: false,
            running: 2,
            ..task("t", 1)
        };
        assert!(may_copy(offer, &tail, true));
        assert!(!may_copy(offer, &tail, false), "speculation off");
        assert!(
            !may_copy(
                offer,
                &Candidate {
                    ready: true,
                    ..tail.clone()
                },
                true
            ),
            "claim instead"
        );
        assert!(
            !may_copy(
                offer,
                &Candidate {
                    running: 0,
                    ..tail.clone()
                },
                true
            ),
            "nothing runs"
        );
        assert!(
            !may_copy(
                offer,
                &Candidate {
                    max_concurrency: Some(2),
                    ..tail.clone()
                },
                true
            ),
            "a copy would pass maxConcurrency"
        );
        let gpu = Candidate {
            requires: labels(&[("gpu", "a100")]),
            ..tail
        };
        assert!(!may_copy(offer, &gpu, true), "a worker without the label");
        let with_gpu = labels(&[("gpu", "a100")]);
        assert!(may_copy(SlotOffer { labels: &with_gpu }, &gpu, true));
    }

    #[test]
    fn the_straggler_threshold_is_factor_times_the_median_of_recent_items() {
        let mut times = ItemTimes::default();
        assert_eq!(times.straggler_after(3), None, "no item yet");
        for ms in [100, 5_000, 120, 90, 110] {
            times.record(ms);
        }
        assert_eq!(times.median(), Some(110), "one slow item does not move it");
        assert_eq!(times.straggler_after(3), Some(330));
        assert_eq!(times.straggler_after(0), None, "factor 0 is off");
        for _ in 0..ITEM_TIMES_KEPT {
            times.record(1_000);
        }
        assert_eq!(times.median(), Some(1_000), "only recent items count");
        let mut instant = ItemTimes::default();
        instant.record(0);
        assert_eq!(
            instant.straggler_after(3),
            Some(3),
            "a 0 ms median counts as 1 ms"
        );
    }

    fn picked<'c>(
        worker: &BTreeMap<String, String>,
        candidates: &'c [Candidate],
    ) -> Option<&'c str> {
        pick(SlotOffer { labels: worker }, candidates).map(|c| c.task_id.as_str())
    }

    /// Slots of one unlabelled worker running the candidates' items, as the
    /// engine will: a free slot picks, and after each item a slot asks
    /// whether to yield.
    struct Sim {
        tasks: Vec<Candidate>,
        slots: Vec<Option<usize>>,
        yields: usize,
    }

    impl Sim {
        fn new(tasks: Vec<Candidate>, slots: usize) -> Sim {
            Sim {
                tasks,
                slots: vec![None; slots],
                yields: 0,
            }
        }

        /// `running` on each task, as given, spread over the slots in order.
        fn with_running(tasks: Vec<Candidate>) -> Sim {
            let slots = tasks
                .iter()
                .enumerate()
                .flat_map(|(i, t)| std::iter::repeat_n(Some(i), t.running as usize))
                .collect();
            Sim {
                tasks,
                slots,
                yields: 0,
            }
        }

        fn offer(&self) -> SlotOffer<'static> {
            static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
            SlotOffer { labels: &NO_LABELS }
        }

        /// A free slot asks for work and claims it.
        fn claim(&mut self, slot: usize) {
            let choice = pick(self.offer(), &self.tasks).map(|c| c.task_id.clone());
            self.slots[slot] = choice.map(|id| {
                let t = self.index(&id);
                self.tasks[t].running += 1;
                t
            });
        }

        fn release(&mut self, slot: usize) {
            if let Some(t) = self.slots[slot].take() {
                self.tasks[t].running -= 1;
            }
        }

        /// The slot's item ends: it yields if the policy says so; an idle
        /// slot asks again.
        fn item_ends(&mut self, slot: usize) {
            match self.slots[slot] {
                Some(t) => {
                    let id = self.tasks[t].task_id.clone();
                    if should_yield(self.offer(), &id, &self.tasks) {
                        self.yields += 1;
                        self.release(slot);
                        self.claim(slot);
                    }
                }
                None => self.claim(slot),
            }
        }

        /// The slot's shard ends: it frees and asks for work.
        fn shard_ends(&mut self, slot: usize) {
            self.release(slot);
            self.claim(slot);
        }

        fn fill(&mut self) {
            for slot in 0..self.slots.len() {
                self.claim(slot);
            }
        }

        /// One item ends on every slot, in order; returns the yields.
        fn round(&mut self) -> usize {
            let before = self.yields;
            for slot in 0..self.slots.len() {
                self.item_ends(slot);
            }
            self.yields - before
        }

        fn index(&self, id: &str) -> usize {
            self.tasks
                .iter()
                .position(|t| t.task_id == id)
                .expect("the policy picks among the candidates")
        }

        fn running(&self) -> Vec<u32> {
            self.tasks.iter().map(|t| t.running).collect()
        }

        /// Whether no task could lose a slot to another and still hold the
        /// larger share: (running_i - 1) / w_i ≤ running_j / w_j.
        fn fair_up_to_one_slot(&self) -> bool {
            self.tasks.iter().all(|i| {
                self.tasks.iter().all(|j| {
                    i.running == 0
                        || u64::from(i.running - 1) * j.weight()
                            <= u64::from(j.running) * i.weight()
                })
            })
        }
    }

    #[test]
    fn a_task_is_only_picked_by_a_worker_with_every_label_it_requires() {
        let mut gpu = task("gpu", 1);
        gpu.requires = labels(&[("gpu", "a100"), ("zone", "eu")]);
        let tasks = [gpu];
        assert_eq!(picked(&labels(&[]), &tasks), None);
        assert_eq!(picked(&labels(&[("gpu", "a100")]), &tasks), None);
        assert_eq!(
            picked(&labels(&[("gpu", "h100"), ("zone", "eu")]), &tasks),
            None,
            "a label with another value does not match"
        );
        assert_eq!(
            picked(
                &labels(&[("gpu", "a100"), ("zone", "eu"), ("disk", "ssd")]),
                &tasks
            ),
            Some("gpu"),
            "extra labels on the worker do not matter"
        );
    }

    #[test]
    fn a_task_at_its_max_concurrency_is_passed_over_until_one_of_its_items_ends() {
        let mut capped = task("capped", 1);
        capped.max_concurrency = Some(2);
        capped.running = 2;
        let mut other = task("other", 2);
        other.running = 5;
        let mut tasks = vec![capped, other];
        assert_eq!(picked(&labels(&[]), &tasks), Some("other"));
        tasks[0].running = 1;
        assert_eq!(picked(&labels(&[]), &tasks), Some("capped"));
        tasks.truncate(1);
        tasks[0].running = 2;
        assert_eq!(picked(&labels(&[]), &tasks), None);
    }

    #[test]
    fn a_task_without_a_free_shard_is_not_picked() {
        let mut busy = task("busy", 1);
        busy.ready = false;
        let mut later = task("later", 2);
        later.running = 9;
        assert_eq!(picked(&labels(&[]), &[busy.clone(), later]), Some("later"));
        assert_eq!(picked(&labels(&[]), &[busy]), None);
    }

    #[test]
    fn a_higher_priority_task_is_picked_even_when_it_already_runs_more_items() {
        let mut urgent = task("urgent", 2);
        urgent.priority = 5;
        urgent.running = 40;
        let idle = task("idle", 1);
        assert_eq!(picked(&labels(&[]), &[idle, urgent]), Some("urgent"));
    }

    #[test]
    fn among_equal_priorities_the_fewest_running_items_per_unit_of_weight_wins() {
        let mut a = task("a", 1);
        a.running = 3;
        a.weight = 2; // share 1.5
        let mut b = task("b", 2);
        b.running = 1; // share 1
        assert_eq!(picked(&labels(&[]), &[a.clone(), b.clone()]), Some("b"));
        b.running = 2; // share 2
        assert_eq!(picked(&labels(&[]), &[a, b]), Some("a"));
    }

    #[test]
    fn equal_shares_go_to_the_oldest_task_and_then_to_the_smallest_id() {
        let newer = task("a-newer", 20);
        let older = task("b-older", 10);
        assert_eq!(
            picked(&labels(&[]), &[newer.clone(), older.clone()]),
            Some("b-older")
        );
        let twin = task("a-twin", 10);
        assert_eq!(picked(&labels(&[]), &[older, twin, newer]), Some("a-twin"));
    }

    #[test]
    fn slots_filled_from_empty_follow_the_weights() {
        let mut heavy = task("heavy", 1);
        heavy.weight = 2;
        let mut sim = Sim::new(vec![heavy, task("light", 2)], 6);
        sim.fill();
        assert_eq!(sim.running(), vec![4, 2]);
    }

    #[test]
    fn every_ready_task_gets_a_slot_before_any_task_gets_a_second() {
        let mut heavy = task("heavy", 1);
        heavy.weight = 1000;
        let mut sim = Sim::new(vec![heavy, task("small-1", 2), task("small-2", 3)], 3);
        sim.fill();
        assert_eq!(sim.running(), vec![1, 1, 1]);
    }

    #[test]
    fn a_small_task_behind_a_big_one_gets_half_the_slots_after_one_item_on_each() {
        let mut big = task("big", 1);
        big.running = 4;
        let mut sim = Sim::with_running(vec![big, task("small", 2)]);
        assert_eq!(sim.round(), 2);
        assert_eq!(sim.running(), vec![2, 2]);
        assert_eq!(sim.round(), 0, "once balanced, nothing moves");
    }

    #[test]
    fn a_slot_yields_to_a_higher_priority_task_however_many_items_it_runs() {
        let mut low = task("low", 1);
        low.running = 1;
        let mut high = task("high", 2);
        high.priority = 1;
        high.running = 7;
        let tasks = [low, high];
        assert!(should_yield(
            SlotOffer {
                labels: &labels(&[])
            },
            "low",
            &tasks
        ));
        assert!(!should_yield(
            SlotOffer {
                labels: &labels(&[])
            },
            "high",
            &tasks
        ));
    }

    #[test]
    fn a_slot_does_not_yield_to_a_task_it_may_not_run() {
        let mut current = task("current", 1);
        current.running = 8;
        let mut placed = task("placed", 2);
        placed.requires = labels(&[("gpu", "a100")]);
        let mut capped = task("capped", 3);
        capped.max_concurrency = Some(1);
        capped.running = 1;
        let mut held = task("held", 4);
        held.ready = false;
        let tasks = [current, placed, capped, held];
        let offer = SlotOffer {
            labels: &labels(&[]),
        };
        assert!(!should_yield(offer, "current", &tasks));
        let gpu = labels(&[("gpu", "a100")]);
        assert!(should_yield(SlotOffer { labels: &gpu }, "current", &tasks));
    }

    #[test]
    fn a_slot_ignores_its_own_task_being_capped_or_without_a_free_shard() {
        let mut current = task("current", 1);
        current.running = 2;
        current.max_concurrency = Some(2);
        current.ready = false;
        let mut other = task("other", 2);
        other.running = 1;
        assert!(!should_yield(
            SlotOffer {
                labels: &labels(&[])
            },
            "current",
            &[current, other]
        ));
    }

    #[test]
    fn a_slot_whose_task_is_no_longer_runnable_yields_to_any_task_it_may_run() {
        let offer = SlotOffer {
            labels: &labels(&[]),
        };
        assert!(should_yield(offer, "gone", &[task("other", 1)]));
        let mut held = task("held", 1);
        held.ready = false;
        assert!(!should_yield(offer, "gone", &[held]));
        assert!(!should_yield(offer, "gone", &[]));
    }

    #[test]
    fn two_equal_tasks_on_an_even_number_of_slots_never_yield() {
        for slots in [2u32, 4, 6, 16] {
            let mut a = task("a", 1);
            a.running = slots / 2;
            let mut b = task("b", 2);
            b.running = slots / 2;
            let mut sim = Sim::with_running(vec![a, b]);
            for _ in 0..5 {
                sim.round();
            }
            assert_eq!(sim.yields, 0, "{slots} slots");
            assert_eq!(sim.running(), vec![slots / 2, slots / 2]);
        }
    }

    #[test]
    fn two_equal_tasks_on_an_odd_number_of_slots_settle_one_apart_and_stay() {
        for slots in [1u32, 3, 5, 15] {
            // The extra slot on either task, whichever is older: no yield.
            for (extra, created) in [(0, [1, 2]), (0, [2, 1]), (1, [1, 2]), (1, [2, 1])] {
                let mut tasks = vec![task("a", created[0]), task("b", created[1])];
                tasks[0].running = slots / 2;
                tasks[1].running = slots / 2;
                tasks[extra].running += 1;
                let mut sim = Sim::with_running(tasks);
                for _ in 0..5 {
                    sim.round();
                }
                assert_eq!(sim.yields, 0, "{slots} slots, extra on {extra}");
            }
            // From every slot on one task: they move until one apart, then stop.
            let mut a = task("a", 1);
            a.running = slots;
            let mut sim = Sim::with_running(vec![a, task("b", 2)]);
            for _ in 0..5 {
                sim.round();
            }
            assert_eq!(sim.yields, (slots / 2) as usize, "{slots} slots");
            assert_eq!(sim.running(), vec![slots / 2 + 1, slots / 2]);
        }
    }

    #[test]
    fn the_waiting_reason_names_the_labels_no_live_worker_has() {
        let mut gpu = task("gpu", 1);
        gpu.requires = labels(&[("zone", "eu"), ("gpu", "a100")]);
        let cpu_only = labels(&[("zone", "eu")]);
        assert_eq!(
            waiting_reason(&gpu, std::slice::from_ref(&cpu_only)).as_deref(),
            Some("no live worker has labels gpu=a100, zone=eu")
        );
        assert_eq!(
            waiting_reason(&gpu, &[]).as_deref(),
            Some("no live worker has labels gpu=a100, zone=eu")
        );
        let both = labels(&[("zone", "eu"), ("gpu", "a100")]);
        assert_eq!(waiting_reason(&gpu, &[cpu_only, both]), None);
    }

    #[test]
    fn a_task_without_requirements_waits_only_when_no_worker_is_live() {
        let plain = task("plain", 1);
        assert_eq!(
            waiting_reason(&plain, &[]).as_deref(),
            Some("no live worker")
        );
        assert_eq!(waiting_reason(&plain, &[labels(&[("any", "x")])]), None);
    }

    #[test]
    fn label_names_are_one_to_sixty_three_characters_of_a_small_charset() {
        for name in [
            "gpu",
            "zone.eu",
            "example.com/rack-2",
            "A_9",
            &"n".repeat(63),
        ] {
            assert_eq!(check_label(name, "v"), Ok(()), "{name}");
        }
        for (name, problem) in [
            ("", LabelError::NameLength(0)),
            (&*"n".repeat(64), LabelError::NameLength(64)),
            ("has space", LabelError::NameCharacter(' ')),
            ("é", LabelError::NameCharacter('é')),
            ("a=b", LabelError::NameCharacter('=')),
            ("a:b", LabelError::NameCharacter(':')),
            ("a,b", LabelError::NameCharacter(',')),
        ] {
            assert_eq!(check_label(name, "v"), Err(problem.clone()), "{name:?}");
            assert!(problem.in_name(), "{problem:?}");
        }
    }

    #[test]
    fn label_values_are_printable_without_commas_or_blanks_at_their_ends() {
        for value in ["", "a100", "with space", "é→", "a=b", &"é".repeat(63)] {
            assert_eq!(check_label("k", value), Ok(()), "{value:?}");
        }
        for (value, problem) in [
            (&*"v".repeat(64), LabelError::ValueLength(64)),
            ("tab\there", LabelError::ValueCharacter('\t')),
            ("nl\n", LabelError::ValueCharacter('\n')),
            ("\u{0}", LabelError::ValueCharacter('\u{0}')),
            ("a100,h100", LabelError::ValueCharacter(',')),
            (" a100", LabelError::ValueBlankEdge),
            ("a100 ", LabelError::ValueBlankEdge),
            ("\u{a0}", LabelError::ValueBlankEdge),
        ] {
            assert_eq!(check_label("k", value), Err(problem.clone()), "{value:?}");
            assert!(!problem.in_name(), "{problem:?}");
        }
    }

    #[test]
    fn a_bad_name_is_reported_before_a_bad_value() {
        assert_eq!(
            check_label("g pu", "a,b"),
            Err(LabelError::NameCharacter(' '))
        );
    }

    // --- Properties -------------------------------------------------------

    fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(
            prop::sample::select(vec!["gpu", "zone", "disk"]).prop_map(String::from),
            prop::sample::select(vec!["a", "b"]).prop_map(String::from),
            0..3,
        )
    }

    /// Up to 8 candidates with distinct ids and everything else random.
    fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec(
            (
                -2i32..=2,
                0u32..=4,
                prop::option::of(0u32..=4),
                label_map(),
                0u32..=6,
                any::<bool>(),
                0u64..=3,
            ),
            0..8,
        )
        .prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(
                    |(
                        i,
                        (priority, weight, max_concurrency, requires, running, ready, created_at),
                    )| {
                        Candidate {
                            task_id: format!("t{i}"),
                            priority,
                            weight,
                            max_concurrency,
                            requires,
                            running,
                            ready,
                            created_at,
                        }
                    },
                )
                .collect()
        })
    }

    proptest! {
        #[test]
        fn the_pick_is_always_eligible_and_something_is_picked_whenever_anything_is(
            tasks in candidates(),
            worker in label_map(),
        ) {
            let offer = SlotOffer { labels: &worker };
            match pick(offer, &tasks) {
                Some(c) => {
                    prop_assert!(c.ready);
                    prop_assert!(c.has_room());
                    for (name, value) in &c.requires {
                        prop_assert_eq!(worker.get(name), Some(value));
                    }
                }
                None => prop_assert!(!tasks.iter().any(|c| eligible(offer, c))),
            }
        }

        #[test]
        fn no_eligible_task_has_a_higher_priority_than_the_pick(
            tasks in candidates(),
            worker in label_map(),
        ) {
            let offer = SlotOffer { labels: &worker };
            if let Some(chosen) = pick(offer, &tasks) {
                for other in tasks.iter().filter(|c| eligible(offer, c)) {
                    prop_assert!(other.priority <= chosen.priority, "{other:?} over {chosen:?}");
                    if other.priority == chosen.priority {
                        prop_assert!(
                            u64::from(chosen.running) * other.weight()
                                <= u64::from(other.running) * chosen.weight(),
                            "{other:?} has the smaller share than {chosen:?}"
                        );
                    }
                }
            }
        }

        #[test]
        fn the_pick_does_not_depend_on_the_order_of_the_snapshot(
            (tasks, shuffled) in candidates()
                .prop_flat_map(|tasks| (Just(tasks.clone()), Just(tasks).prop_shuffle())),
            worker in label_map(),
        ) {
            let offer = SlotOffer { labels: &worker };
            prop_assert_eq!(
                pick(offer, &tasks).map(|c| &c.task_id),
                pick(offer, &shuffled).map(|c| &c.task_id)
            );
            for current in &tasks {
                prop_assert_eq!(
                    should_yield(offer, &current.task_id, &tasks),
                    should_yield(offer, &current.task_id, &shuffled)
                );
            }
        }

        #[test]
        fn slots_claiming_repeatedly_share_them_by_weight_within_one_slot(
            weights in prop::collection::vec(1u32..=8, 1..6),
            slots in 1usize..40,
            events in prop::collection::vec((0usize..1000, any::<bool>()), 0..200),
        ) {
            let tasks = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Candidate { weight: w, ..task(&format!("t{i}"), i as u64) })
                .collect();
            let mut sim = Sim::new(tasks, slots);
            sim.fill();
            for (slot, shard_ends) in events {
                let slot = slot % slots;
                if shard_ends {
                    sim.shard_ends(slot);
                } else {
                    sim.item_ends(slot);
                }
                prop_assert!(sim.slots.iter().all(Option::is_some), "a slot sat idle");
                prop_assert!(sim.fair_up_to_one_slot(), "{:?} for weights {weights:?}", sim.running());
            }
            prop_assert_eq!(sim.yields, 0, "a fair allocation never yields");
            if let [a, b] = sim.running()[..] {
                // Two tasks: each within one slot of its exact proportion.
                let total = u64::from(weights[0] + weights[1]);
                for (running, weight) in [(a, weights[0]), (b, weights[1])] {
                    let off = (u64::from(running) * total).abs_diff(slots as u64 * u64::from(weight));
                    prop_assert!(off < total, "{running} of {slots} for weights {weights:?}");
                }
            }
        }

        #[test]
        fn yielding_from_any_allocation_ends_fair_and_then_stops(
            start in prop::collection::vec((1u32..=8, 0u32..=12), 1..6),
        ) {
            let tasks: Vec<Candidate> = start
                .iter()
                .enumerate()
                .map(|(i, &(weight, running))| Candidate { weight, running, ..task(&format!("t{i}"), i as u64) })
                .collect();
            let mut sim = Sim::with_running(tasks);
            let total: u32 = start.iter().map(|(_, r)| r).sum();
            // Each yield lowers Σ running·(running-1)/(2·weight) by at least
            // 1/64 (weights are at most 8), and a round that does not end
            // it yields at least once: this many rounds are always enough.
            for _ in 0..=32 * total * total {
                if sim.round() == 0 {
                    break;
                }
            }
            prop_assert!(sim.fair_up_to_one_slot(), "{:?} for {start:?}", sim.running());
            prop_assert_eq!(sim.round(), 0);
            prop_assert_eq!(sim.running().iter().sum::<u32>(), total);
        }

        #[test]
        fn max_concurrency_is_never_exceeded_and_no_slot_idles_while_a_task_has_room(
            caps in prop::collection::vec((prop::option::of(1u32..=4), 1u32..=3, -1i32..=1), 1..5),
            slots in 1usize..16,
            events in prop::collection::vec((0usize..1000, any::<bool>()), 0..200),
        ) {
            let tasks = caps
                .iter()
                .enumerate()
                .map(|(i, &(cap, weight, priority))| Candidate {
                    max_concurrency: cap,
                    weight,
                    priority,
                    ..task(&format!("t{i}"), i as u64)
                })
                .collect();
            let mut sim = Sim::new(tasks, slots);
            sim.fill();
            for (slot, shard_ends) in events {
                let slot = slot % slots;
                if shard_ends {
                    sim.shard_ends(slot);
                } else {
                    sim.item_ends(slot);
                }
                for t in &sim.tasks {
                    prop_assert!(t.max_concurrency.is_none_or(|cap| t.running <= cap), "{t:?}");
                }
                if sim.slots.iter().any(Option::is_none) {
                    prop_assert!(!sim.tasks.iter().any(Candidate::has_room), "idle while {:?}", sim.running());
                }
            }
        }
    }
}
