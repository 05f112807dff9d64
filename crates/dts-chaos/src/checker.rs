//! The independent checker. It reads only the HTTP API, the items' start
//! log ([`crate::starts`]), `/proc`, the completion events an outside
//! consumer read, and what the workload and the faults recorded; never the
//! store. What must hold after any faults (issue 14):
//!
//! 1. every task reached an end state (within the settle deadline);
//! 2. every item of a task that was not cancelled has exactly one result,
//!    with its own input; a cancelled task has at most one per item, and
//!    so has a task with a deadline the sweeper ended FAILED (its unrun
//!    items get no result);
//! 3. the task's counts equal its results (`itemsSucceeded`, `itemsFailed`,
//!    `itemsTotal`); a task whose items cannot fail and that no cancel or
//!    deadline cut short ends COMPLETED;
//! 4. no item ran more often than its attempts allow. The rule:
//!    - each result that ran has the start line of its attempt, on its
//!      worker (after a task retry a worker numbers its attempts from 1
//!      again while the API continues the item's history, so then a start
//!      on that worker with an attempt no higher will do);
//!    - a retry (the task's `retries`) starts a new attempt number, so the
//!      attempt numbers of an item may reach `retries + 1`; beyond that,
//!      each further attempt must be explained by one fault during the
//!      task's life that makes dts run a shard again (a worker or `dts up`
//!      killed, frozen or cut off from Redis or the broker; Redis
//!      restarted or failed over; the broker restarted), or by a task
//!      retry (`POST /v1/tasks/{id}/retry`);
//!    - the SAME attempt may start twice only when the node that ran the
//!      earlier start was killed, frozen or cut off (a partitioned worker
//!      loses its lease and its shard runs elsewhere), or Redis restarted
//!      or failed over, or the broker restarted, between the two starts
//!      (the fault log says when), or a task retry was acknowledged between
//!      them;
//! 5. a cancelled task started no item after its cancel was acknowledged
//!    (an item's `start_ms` against the time the cancel's 200 arrived);
//! 6. no item process outlived its task: every pid in the start log is
//!    gone, or runs no item of an ended task (`/proc/PID/environ`);
//! 7. every ended task of the cluster has one or more completion events on
//!    the result topic, the last of them with the task's final status.
//!
//! The time from a fault to work resuming is measured here too; the
//! prober's silences are judged in [`crate::run`] (rule 8: over 10 s
//! without a kill or freeze of that node is a violation).
//!
//! 9. a task that waited for another (`after`) started no item before that
//!    one ended, ran only if it ended as `afterStatus` requires, and
//!    otherwise ended SKIPPED (or CANCELLED, if cancelled while waiting),
//!    its reason naming that task; a SKIPPED task has no results.

use crate::api::{Answer, Api};
use crate::cluster::{Cluster, Role};
use crate::events::{Collector, Events};
use crate::faults::{FaultKind, FaultRecord};
use crate::starts::{self, Start};
use crate::workload::{Submitted, TaskPlan};
use crate::{Shared, now_ms};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// End states.
const ENDED: [&str; 5] = [
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "SUBMISSION_FAILED",
    "SKIPPED",
];

/// What the checker found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Tasks accepted.
    pub tasks: usize,
    /// Tasks by final status.
    pub by_status: BTreeMap<String, usize>,
    /// Results read through the API.
    pub results: usize,
    /// Start lines the items wrote.
    pub starts: usize,
    /// Every violation, one line each.
    pub violations: Vec<String>,
    /// Ended tasks of the cluster without a completion event with their
    /// final status, by that status.
    pub missing_events: BTreeMap<String, usize>,
    /// The longest time from a fault's end until an item started, and the
    /// fault.
    pub longest_resume: Option<(u64, String)>,
}

/// Waits for every task to end (up to `settle`), then checks everything.
pub async fn check(
    cluster: &Cluster,
    apis: &[Api],
    plans: &[TaskPlan],
    shared: &Shared,
    settle: Duration,
    events: &Collector,
) -> Checked {
    let submitted: Vec<Submitted> = shared.lock().submitted.clone();
    let faults: Vec<FaultRecord> = shared.lock().faults.clone();
    let up = apis.len() - 1;
    let mut checked = Checked {
        tasks: submitted.len(),
        violations: shared.lock().violations.clone(),
        ..Checked::default()
    };

    // 1. Every task ends.
    let finals = settle_all(apis, &submitted, settle, &mut checked).await;
    // The events so far: a prerequisite's first end, for rule 9.
    let ended_events = events.snapshot();
    // Items a cancel or a timeout killed are given a moment to be reaped.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let (all_starts, bad) = match starts::read(&cluster.starts_log) {
        Ok(read) => read,
        Err(e) => {
            checked.violations.push(format!("the start log: {e}"));
            (Vec::new(), Vec::new())
        }
    };
    for line in bad {
        checked
            .violations
            .push(format!("a start line that is not one: {line:?}"));
    }
    checked.starts = all_starts.len();
    let mut starts_of: BTreeMap<&str, Vec<&Start>> = BTreeMap::new();
    for start in &all_starts {
        starts_of
            .entry(start.task.as_str())
            .or_default()
            .push(start);
    }

    for task in &submitted {
        let Some(final_view) = finals.get(&task.id) else {
            continue;
        };
        let plan = &plans[task.plan];
        let results = match all_results(apis, task, up).await {
            Ok(results) => results,
            Err(e) => {
                checked.violations.push(format!("task {}: {e}", task.id));
                continue;
            }
        };
        checked.results += results.len();
        let starts = starts_of.get(task.id.as_str()).cloned().unwrap_or_default();
        let ended_ms = now_ms();
        let ran_on = |start: &Start| -> String {
            if task.api == up {
                "up".into()
            } else {
                start.worker.clone()
            }
        };
        check_results(
            task,
            plan,
            final_view,
            &results,
            &starts,
            &mut checked.violations,
        );
        check_starts(
            task,
            plan,
            &starts,
            &faults,
            ended_ms,
            &ran_on,
            &mut checked.violations,
        );
        check_outlived(task, final_view, &starts, &mut checked.violations);
        if let Some((before, required)) = &task.after {
            let announced = first_announced_end(&ended_events, before);
            check_after(
                task,
                final_view,
                &starts,
                (before, finals.get(before), required, announced),
                &mut checked.violations,
            );
        }
    }

    // 7. Completion events (the cluster's tasks; `dts up` has no broker).
    let cluster_finals: BTreeMap<&str, &str> = submitted
        .iter()
        .filter(|task| task.api != up)
        .filter_map(|task| {
            let status = finals.get(&task.id)?["status"].as_str()?;
            Some((task.id.as_str(), status))
        })
        .collect();
    let lacking = |events: &Events| -> Vec<(String, String)> {
        cluster_finals
            .iter()
            .filter(|(id, status)| {
                events
                    .get(**id)
                    .and_then(|e| e.last())
                    .map(|e| e.status.as_str())
                    != Some(**status)
            })
            .map(|(id, status)| (id.to_string(), status.to_string()))
            .collect()
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut missing = lacking(&events.snapshot());
    // ends: at `until`.
    while !missing.is_empty() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        missing = lacking(&events.snapshot());
    }
    let events = events.snapshot();
    for (id, status) in missing {
        *checked.missing_events.entry(status.clone()).or_default() += 1;
        checked.violations.push(format!(
            "task {id} ended {status}, but its completion events were {:?}",
            events
                .get(&id)
                .map(|e| e.iter().map(|e| e.status.clone()).collect::<Vec<_>>())
                .unwrap_or_default()
        ));
    }

    checked.longest_resume = longest_resume(&faults, &all_starts);
    checked.by_status = finals
        .values()
        .filter_map(|view| view["status"].as_str())
        .fold(BTreeMap::new(), |mut counts, status| {
            *counts.entry(status.to_string()).or_default() += 1;
            counts
        });
    checked
}

/// The APIs that can answer for a task: `dts up` for its own, any server
/// for the cluster's (they share Redis), the one that accepted it first.
fn apis_for<'a>(apis: &'a [Api], task: &Submitted, up: usize) -> Vec<&'a Api> {
    if task.api == up {
        return vec![&apis[up]];
    }
    let mut order = vec![&apis[task.api]];
    order.extend((0..up).filter(|&i| i != task.api).map(|i| &apis[i]));
    order
}

async fn get_any(apis: &[&Api], path: &str) -> Result<Value, String> {
    let mut last = String::new();
    for api in apis {
        match api.get(path).await {
            Answer::Json(200, body) => return Ok(body),
            Answer::Json(status, body) => last = format!("{}: {status} {body}", api.name),
            Answer::None(e) => last = format!("{}: no answer: {e}", api.name),
        }
    }
    Err(last)
}

/// Polls until every task has an end status or `settle` passes; returns
/// the tasks' final views. Tasks that did not end are violations.
async fn settle_all(
    apis: &[Api],
    submitted: &[Submitted],
    settle: Duration,
    checked: &mut Checked,
) -> BTreeMap<String, Value> {
    let up = apis.len() - 1;
    let until = tokio::time::Instant::now() + settle;
    let mut finals = BTreeMap::new();
    let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
    // ends: at `until`.
    loop {
        for task in submitted {
            if finals.contains_key(&task.id) {
                continue;
            }
            let path = format!("/v1/tasks/{}?summary=true", task.id);
            match get_any(&apis_for(apis, task, up), &path).await {
                Ok(view) if ENDED.contains(&view["status"].as_str().unwrap_or("")) => {
                    finals.insert(task.id.clone(), view);
                }
                Ok(view) => {
                    last_seen.insert(task.id.clone(), view.to_string());
                }
                Err(e) => {
                    last_seen.insert(task.id.clone(), e);
                }
            }
        }
        if finals.len() == submitted.len() || tokio::time::Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for task in submitted {
        if !finals.contains_key(&task.id) {
            checked.violations.push(format!(
                "task {} did not end within {settle:?} of the stream's end; last seen: {}",
                task.id,
                last_seen.get(&task.id).map(String::as_str).unwrap_or("?")
            ));
        }
    }
    finals
}

/// Every result of the task, page by page, with a bound on the pages.
async fn all_results(apis: &[Api], task: &Submitted, up: usize) -> Result<Vec<Value>, String> {
    let apis = apis_for(apis, task, up);
    let mut all: Vec<Value> = Vec::new();
    // ends: each page must bring new results, and at most 100 pages of 1000.
    for _ in 0..100 {
        let path = format!(
            "/v1/tasks/{}/results?offset={}&limit=1000",
            task.id,
            all.len()
        );
        let page = get_any(&apis, &path).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let total = page["total"].as_u64().unwrap_or(0) as usize;
        if items.is_empty() && all.len() < total {
            return Err(format!("{path}: an empty page at {} of {total}", all.len()));
        }
        all.extend(items);
        if all.len() >= total {
            return Ok(all);
        }
    }
    Err("more than 100 pages of results".to_string())
}

/// Rules 2 and 3, and that each result that ran has its start line.
fn check_results(
    task: &Submitted,
    plan: &TaskPlan,
    view: &Value,
    results: &[Value],
    starts: &[&Start],
    violations: &mut Vec<String>,
) {
    let id = &task.id;
    let status = view["status"].as_str().unwrap_or("?");
    let inputs = plan.inputs();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for result in results {
        let Some(index) = result["index"].as_u64() else {
            violations.push(format!("task {id}: a result without an index: {result}"));
            continue;
        };
        *seen.entry(index).or_default() += 1;
        if inputs.get(index as usize).map(String::as_str) != result["input"].as_str() {
            violations.push(format!(
                "task {id}: the result of item {index} has input {}, not {:?}",
                result["input"],
                inputs.get(index as usize)
            ));
        }
        // A result that ran (an exit code, a signal or a timeout) has the
        // start line of its attempt on its worker.
        // A result the deadline killed may have been killed before the
        // script's first line ran: with no time left, the item's process
        // starts and is stopped at once.
        let deadline_kill = result["error"]
            .as_str()
            .is_some_and(|error| error.contains("deadline (deadlineSecs) passed while it ran"));
        let ran = (!result["exitCode"].is_null()
            || !result["signal"].is_null()
            || result["timedOut"] == true)
            && !deadline_kill;
        let attempt = result["attempt"].as_u64().unwrap_or(0);
        let worker = result["worker"].as_str().unwrap_or("");
        let retried = !task.retry_sent_ms.is_empty();
        let matches = |s: &&&Start| {
            s.index == index
                && s.worker == worker
                && if retried {
                    u64::from(s.attempt) <= attempt
                } else {
                    u64::from(s.attempt) == attempt
                }
        };
        if ran && !starts.iter().any(|s| matches(&s)) {
            violations.push(format!(
                "task {id}: item {index} ({}) has a result of attempt {attempt} on {worker}, which never started",
                plan.describe(index)
            ));
        }
    }
    for (index, count) in &seen {
        if *count > 1 {
            violations.push(format!("task {id}: item {index} has {count} results"));
        }
    }
    let total = inputs.len();
    // A task whose deadline passed while items were still unrun is ended by
    // the sweeper, and those items get no result (docs/reliability.md).
    let past_deadline = status == "FAILED"
        && plan.deadline_secs.is_some()
        && view["error"]
            .as_str()
            .is_some_and(|reason| reason.contains("deadline"));
    if status == "SKIPPED" && !results.is_empty() {
        violations.push(format!(
            "task {id} was SKIPPED, yet {} of its items have results",
            results.len()
        ));
    }
    if !["CANCELLED", "SUBMISSION_FAILED", "SKIPPED"].contains(&status) && !past_deadline {
        let missing: Vec<u64> = (0..total as u64)
            .filter(|i| !seen.contains_key(i))
            .collect();
        if !missing.is_empty() {
            violations.push(format!(
                "task {id} ended {status} without results for {} items (first {:?})",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
    }
    let succeeded = results.iter().filter(|r| r["succeeded"] == true).count() as u64;
    let failed = results.len() as u64 - succeeded;
    let counts = (
        view["itemsTotal"].as_u64(),
        view["itemsSucceeded"].as_u64(),
        view["itemsFailed"].as_u64(),
    );
    if counts != (Some(total as u64), Some(succeeded), Some(failed)) {
        violations.push(format!(
            "task {id} ({status}) counts total/succeeded/failed {:?}, but it has {total} items and {succeeded}/{failed} results",
            counts
        ));
    }
    if plan.must_complete() && status != "COMPLETED" {
        violations.push(format!(
            "task {id}: none of its items can fail, and no cancel or deadline applies, but it ended {status}"
        ));
    }
}

/// The `finishedAt` of the first completion event that announced task
/// `id` ended, if one did.
fn first_announced_end(events: &Events, id: &str) -> Option<u64> {
    events
        .get(id)?
        .iter()
        .filter_map(|event| event.finished_ms)
        .min()
}

/// Rule 9, for a task that waited for another (`after`), which ended once
/// (the workload never retries a task others wait for): no item of it
/// started before that task ended, it ran only if that task ended as
/// `afterStatus` requires, and it was skipped only if that task did not.
fn check_after(
    task: &Submitted,
    view: &Value,
    starts: &[&Start],
    (before, before_view, required, announced): (&str, Option<&Value>, &str, Option<u64>),
    violations: &mut Vec<String>,
) {
    let id = &task.id;
    let status = view["status"].as_str().unwrap_or("?");
    let Some(before_view) = before_view else {
        // The task it waited for did not end: a violation of its own.
        return;
    };
    let before_status = before_view["status"].as_str().unwrap_or("?");
    let before_ended_ms = before_view["finishedAt"]
        .as_str()
        .and_then(|at| humantime::parse_rfc3339(at).ok())
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_millis() as u64)
        // A Redis failover can lose a recorded end that a completion event
        // announced (and the release read); the task then ends again,
        // later. Its first end is the one the release followed.
        .map(|recorded| announced.map_or(recorded, |first| first.min(recorded)));
    let allowed = required == "ENDED" || before_status == "COMPLETED";
    let first_start = starts.iter().map(|s| s.start_ms).min();
    if let Some(first) = first_start {
        if !allowed {
            violations.push(format!(
                "task {id} ran after {before} ended {before_status}, but it waited for it to be {required}"
            ));
        }
        match before_ended_ms {
            Some(ended) if first < ended => violations.push(format!(
                "task {id}'s first item started at {first} ms, before {before}, which it waited for, ended at {ended} ms"
            )),
            Some(_) => {}
            None => violations.push(format!(
                "task {id} ran, but {before}, which it waited for, has no finishedAt: {before_view}"
            )),
        }
    }
    if status == "SKIPPED" {
        let reason = view["error"].as_str().unwrap_or("");
        if allowed {
            violations.push(format!(
                "task {id} was SKIPPED, but {before}, which it waited for, ended {before_status} and {required} was required"
            ));
        } else if !reason.contains(before) {
            violations.push(format!(
                "task {id} was SKIPPED with a reason that does not name {before}: {reason:?}"
            ));
        }
    } else if !allowed && status != "CANCELLED" {
        violations.push(format!(
            "task {id} ended {status}, but {before}, which it waited for, ended {before_status} where {required} was required: it should be SKIPPED"
        ));
    }
}

/// How long after a Redis fault ends its effects may still show: the dts
/// nodes follow a new primary only when their link to the old one fails or
/// is demoted, and a claim the old primary took meanwhile is lost when it
/// rejoins as a replica, so the item is claimed and started again.
pub const REDIS_SETTLE_MS: u64 = 5_000;

/// When a fault's effects end: a Redis fault's [`REDIS_SETTLE_MS`] after it.
fn effect_end(fault: &FaultRecord) -> u64 {
    match fault.kind {
        FaultKind::RedisRestart | FaultKind::RedisFailover | FaultKind::RedisPrimaryKill => {
            fault.end_ms + REDIS_SETTLE_MS
        }
        _ => fault.end_ms,
    }
}

/// Whether a fault makes dts run the work of node `ran_on` again: the node
/// killed or frozen (or cut off), or Redis or the broker restarted.
fn reruns(fault: &FaultRecord, ran_on: &str) -> bool {
    match fault.kind {
        kind if kind.is_service() => true,
        FaultKind::FullDisk => fault.target == ran_on,
        _ => fault.target == ran_on && matches!(fault.role, Some(Role::Worker | Role::Up)),
    }
}

/// Rules 4 and 5.
fn check_starts(
    task: &Submitted,
    plan: &TaskPlan,
    starts: &[&Start],
    faults: &[FaultRecord],
    ended_ms: u64,
    ran_on: &dyn Fn(&Start) -> String,
    violations: &mut Vec<String>,
) {
    let id = &task.id;
    let mut by_item: BTreeMap<u64, Vec<&Start>> = BTreeMap::new();
    for start in starts {
        by_item.entry(start.index).or_default().push(start);
        if let Some(acked) = task.cancel_acked_ms {
            if start.start_ms > acked {
                violations.push(format!(
                    "task {id}: item {} ({}, attempt {}) started on {} at {}, {} ms after the cancel was acknowledged at {acked}",
                    start.index,
                    plan.describe(start.index),
                    start.attempt,
                    start.worker,
                    start.start_ms,
                    start.start_ms - acked
                ));
            }
        }
    }
    let retried_between = |from: u64, to: u64| {
        task.retry_sent_ms
            .iter()
            .any(|&sent| sent >= from && sent <= to)
    };
    // Faults during the task's life that may each cost an attempt.
    let life_faults = |ran: &str| {
        faults
            .iter()
            .filter(|f| f.start_ms <= ended_ms && effect_end(f) >= task.accepted_ms)
            .filter(|f| match f.kind {
                kind if kind.is_service() => true,
                _ => {
                    matches!(f.role, Some(Role::Worker | Role::Up))
                        && (ran == "up") == (f.target == "up")
                }
            })
            .count()
    };
    let allowed = plan.retries as usize + 1;
    for (index, mut runs) in by_item {
        runs.sort_by_key(|s| (s.attempt, s.start_ms));
        // A speculative copy may run each attempt of an item once more, in
        // each round (a task retry starts a new one).
        let mut copies: BTreeSet<(u32, usize)> = BTreeSet::new();
        let round = |at: u64| {
            task.retry_sent_ms
                .iter()
                .filter(|&&sent| sent <= at)
                .count()
        };
        for pair in runs.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            if earlier.attempt != later.attempt {
                continue;
            }
            let node = ran_on(earlier);
            let explained = faults.iter().any(|f| {
                reruns(f, &node)
                    && f.start_ms <= later.start_ms
                    && effect_end(f) >= earlier.start_ms
            }) || retried_between(earlier.start_ms, later.start_ms)
                || (plan.speculation && copies.insert((earlier.attempt, round(later.start_ms))));
            if !explained {
                violations.push(format!(
                    "task {id}: item {index} ({}) attempt {} started twice, on {} at {} and on {} at {}, with no fault on {node} or task retry between",
                    plan.describe(index), earlier.attempt, earlier.worker, earlier.start_ms, later.worker, later.start_ms
                ));
            }
        }
        let highest = runs.iter().map(|s| s.attempt as usize).max().unwrap_or(0);
        let node = runs.first().map(|s| ran_on(s)).unwrap_or_default();
        let excess = highest.saturating_sub(allowed);
        if excess > 0 && task.retry_sent_ms.is_empty() && excess > life_faults(&node) {
            violations.push(format!(
                "task {id}: item {index} reached attempt {highest} with retries {} and {} faults during the task",
                plan.retries,
                life_faults(&node)
            ));
        }
    }
}

/// Rule 6: no item process of an ended task is still running.
fn check_outlived(task: &Submitted, view: &Value, starts: &[&Start], violations: &mut Vec<String>) {
    if !ENDED.contains(&view["status"].as_str().unwrap_or("")) {
        return;
    }
    let marker = format!("DTS_TASK_ID={}", task.id);
    let pids: BTreeSet<i32> = starts.iter().map(|s| s.pid).collect();
    for pid in pids {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let runs_it = environ
            .split(|&b| b == 0)
            .any(|var| var == marker.as_bytes());
        if runs_it && !is_zombie(pid) {
            violations.push(format!(
                "task {} ended {}, but its item process {pid} still runs",
                task.id, view["status"]
            ));
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(") ")
                .next()
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

/// The longest time from a fault's end to the next item start, over the
/// faults some item started after.
fn longest_resume(faults: &[FaultRecord], starts: &[Start]) -> Option<(u64, String)> {
    let mut times: Vec<u64> = starts.iter().map(|s| s.start_ms).collect();
    times.sort_unstable();
    faults
        .iter()
        .filter_map(|fault| {
            let next = times.partition_point(|&t| t <= fault.end_ms);
            let resumed = *times.get(next)?;
            Some((resumed - fault.end_ms, fault.to_string()))
        })
        .max_by_key(|(ms, _)| *ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::ItemKind;

    fn task() -> Submitted {
        Submitted {
            id: "t".into(),
            plan: 0,
            api: 0,
            accepted_ms: 1_000,
            cancel_acked_ms: None,
            cancel_sent: false,
            retry_acked_ms: Vec::new(),
            retry_sent_ms: Vec::new(),
            after: None,
        }
    }

    fn plan(speculation: bool) -> TaskPlan {
        TaskPlan {
            at: Duration::ZERO,
            api: 0,
            items: vec![ItemKind::Ok],
            timeout_secs: 30,
            retries: 0,
            deadline_secs: None,
            priority: None,
            cancel_after: None,
            retry_when_failed: false,
            speculation,
            after: None,
        }
    }

    fn start(attempt: u32, worker: &str, start_ms: u64) -> Start {
        Start {
            task: "t".into(),
            index: 0,
            attempt,
            worker: worker.into(),
            start_ms,
            pid: 1,
        }
    }

    fn kill(target: &str, start_ms: u64, end_ms: u64) -> FaultRecord {
        FaultRecord {
            kind: FaultKind::Kill,
            target: target.into(),
            role: Some(Role::Worker),
            start_ms,
            end_ms,
        }
    }

    fn violations(
        task: &Submitted,
        plan: &TaskPlan,
        starts: &[Start],
        faults: &[FaultRecord],
    ) -> Vec<String> {
        let starts: Vec<&Start> = starts.iter().collect();
        let mut found = Vec::new();
        let ran_on = |s: &Start| s.worker.clone();
        check_starts(task, plan, &starts, faults, 100_000, &ran_on, &mut found);
        found
    }

    #[test]
    fn the_same_attempt_twice_is_a_violation_unless_its_worker_was_killed_between() {
        let twice = [start(1, "w1", 2_000), start(1, "w2", 9_000)];
        assert_eq!(violations(&task(), &plan(false), &twice, &[]).len(), 1);
        // A kill of the other worker explains nothing.
        assert_eq!(
            violations(&task(), &plan(false), &twice, &[kill("w2", 3_000, 4_000)]).len(),
            1
        );
        assert_eq!(
            violations(&task(), &plan(false), &twice, &[kill("w1", 3_000, 4_000)]),
            Vec::<String>::new()
        );
    }

    fn fault(kind: FaultKind, target: &str, start_ms: u64, end_ms: u64) -> FaultRecord {
        FaultRecord {
            kind,
            target: target.into(),
            role: target.starts_with('w').then_some(Role::Worker),
            start_ms,
            end_ms,
        }
    }

    #[test]
    fn a_partition_explains_a_rerun_on_the_cut_worker_only_and_a_redis_failover_on_any() {
        let twice = [start(1, "w1", 2_000), start(1, "w2", 9_000)];
        for kind in [FaultKind::PartitionRedis, FaultKind::PartitionBroker] {
            assert_eq!(
                violations(
                    &task(),
                    &plan(false),
                    &twice,
                    &[fault(kind, "w1", 3_000, 40_000)]
                ),
                Vec::<String>::new(),
                "{kind}"
            );
            assert_eq!(
                violations(
                    &task(),
                    &plan(false),
                    &twice,
                    &[fault(kind, "w2", 3_000, 40_000)]
                )
                .len(),
                1,
                "{kind}"
            );
        }
        for kind in [
            FaultKind::RedisFailover,
            FaultKind::RedisPrimaryKill,
            FaultKind::BrokerKill,
        ] {
            assert_eq!(
                violations(
                    &task(),
                    &plan(false),
                    &twice,
                    &[fault(kind, "redis", 3_000, 4_000)]
                ),
                Vec::<String>::new(),
                "{kind}"
            );
        }
        // A claim the old primary took just after the failover ended is
        // lost too: its effects last REDIS_SETTLE_MS longer.
        let after = [start(1, "w1", 5_000), start(1, "w1", 5_200)];
        let failover = fault(FaultKind::RedisFailover, "redis", 3_000, 4_990);
        assert_eq!(
            violations(
                &task(),
                &plan(false),
                &after,
                std::slice::from_ref(&failover)
            ),
            Vec::<String>::new()
        );
        let long_after = [start(1, "w1", 10_000), start(1, "w1", 10_200)];
        assert_eq!(
            violations(&task(), &plan(false), &long_after, &[failover]).len(),
            1
        );
        // An attempt beyond `retries + 1` needs a fault during the task.
        let third = [start(1, "w1", 2_000), start(2, "w1", 5_000)];
        assert_eq!(violations(&task(), &plan(false), &third, &[]).len(), 1);
        assert_eq!(
            violations(
                &task(),
                &plan(false),
                &third,
                &[fault(FaultKind::RedisFailover, "redis", 3_000, 4_000)]
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_task_its_deadline_ended_may_lack_results_and_any_other_failed_task_may_not() {
        let mut plan = plan(false);
        plan.items = vec![ItemKind::Ok, ItemKind::Ok];
        let view = |error: &str| {
            serde_json::json!({
                "status": "FAILED",
                "error": error,
                "itemsTotal": 2,
                "itemsSucceeded": 0,
                "itemsFailed": 0,
            })
        };
        let check = |plan: &TaskPlan, view: &Value| {
            let mut found = Vec::new();
            check_results(&task(), plan, view, &[], &[], &mut found);
            found
        };
        let reason = "the deadline of 5 s passed before every item ran (0 of 2 ended)";
        // Without a deadline, missing results are a violation whatever the
        // reason says.
        let found = check(&plan, &view(reason));
        assert!(
            found
                .iter()
                .any(|v| v.contains("without results for 2 items")),
            "{found:?}"
        );
        plan.deadline_secs = Some(5);
        assert_eq!(check(&plan, &view(reason)), Vec::<String>::new());
        let found = check(&plan, &view("an item failed"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("without results for 2 items"),
            "{found:?}"
        );
    }

    #[test]
    fn a_result_needs_its_start_unless_the_deadline_killed_it_before_its_first_line() {
        let mut plan = plan(false);
        plan.items = vec![ItemKind::Ok];
        plan.deadline_secs = Some(9);
        let view = serde_json::json!({
            "status": "FAILED",
            "error": "the deadline of 9 s passed",
            "itemsTotal": 1,
            "itemsSucceeded": 0,
            "itemsFailed": 1,
        });
        let result = |error: Option<&str>| {
            serde_json::json!({
                "index": 0, "input": plan.inputs()[0], "exitCode": null, "signal": 15,
                "timedOut": true, "attempt": 1, "worker": "w1", "error": error,
            })
        };
        let check = |result: Value| {
            let mut found = Vec::new();
            check_results(&task(), &plan, &view, &[result], &[], &mut found);
            found
        };
        let killed = "killed: the task's deadline (deadlineSecs) passed while it ran";
        assert_eq!(check(result(Some(killed))), Vec::<String>::new());
        let found = check(result(None));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("never started"), "{found:?}");
    }

    #[test]
    fn a_prerequisite_end_a_failover_lost_counts_from_its_first_announced_end() {
        let view = serde_json::json!({"status": "COMPLETED", "error": null});
        // Recorded again at 10 s; its first end was announced at 6 s.
        let before = serde_json::json!({
            "status": "COMPLETED",
            "finishedAt": "1970-01-01T00:00:10.000Z",
        });
        let starts = [start(1, "w1", 7_000)];
        let starts: Vec<&Start> = starts.iter().collect();
        let check = |announced: Option<u64>| {
            let mut found = Vec::new();
            check_after(
                &task(),
                &view,
                &starts,
                ("p", Some(&before), "COMPLETED", announced),
                &mut found,
            );
            found
        };
        assert_eq!(check(Some(6_000)), Vec::<String>::new());
        assert_eq!(check(None).len(), 1);
        assert_eq!(
            check(Some(8_000)).len(),
            1,
            "an end announced after the start"
        );
        let mut events = Events::new();
        events.entry("p".into()).or_default().extend([
            crate::events::Event {
                status: "COMPLETED".into(),
                finished_ms: Some(10_000),
            },
            crate::events::Event {
                status: "COMPLETED".into(),
                finished_ms: Some(6_000),
            },
        ]);
        assert_eq!(first_announced_end(&events, "p"), Some(6_000));
        assert_eq!(first_announced_end(&events, "q"), None);
    }

    #[test]
    fn speculation_allows_one_copy_of_an_attempt_per_round_of_task_retries() {
        let copied = [start(1, "w1", 2_000), start(1, "w2", 3_000)];
        assert_eq!(
            violations(&task(), &plan(true), &copied, &[]),
            Vec::<String>::new()
        );
        let thrice = [
            start(1, "w1", 2_000),
            start(1, "w2", 3_000),
            start(1, "w3", 4_000),
        ];
        assert_eq!(violations(&task(), &plan(true), &thrice, &[]).len(), 1);
        // After a task retry, the new round may be copied once again.
        let mut retried = task();
        retried.retry_sent_ms = vec![3_500];
        let rounds = [
            start(1, "w1", 2_000),
            start(1, "w2", 3_000),
            start(1, "w3", 4_000),
            start(1, "w1", 5_000),
        ];
        assert_eq!(
            violations(&retried, &plan(true), &rounds, &[]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn an_item_started_after_the_cancel_was_acknowledged_is_a_violation() {
        let mut cancelled = task();
        cancelled.cancel_acked_ms = Some(5_000);
        let before = [start(1, "w1", 4_999)];
        assert_eq!(
            violations(&cancelled, &plan(false), &before, &[]),
            Vec::<String>::new()
        );
        let after = [start(1, "w1", 5_004)];
        let found = violations(&cancelled, &plan(false), &after, &[]);
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("4 ms after the cancel"), "{found:?}");
    }

    /// The violations [`check_after`] finds for a task that ended
    /// `status` (reason `reason`), with item starts at `starts_ms`, that
    /// waited with `required` for a task that ended `before_status` at
    /// 10 s past the epoch.
    fn after_violations(
        status: &str,
        reason: &str,
        starts_ms: &[u64],
        before_status: &str,
        required: &str,
    ) -> Vec<String> {
        let view = serde_json::json!({"status": status, "error": reason});
        let before = serde_json::json!({
            "status": before_status,
            "finishedAt": "1970-01-01T00:00:10.000Z",
        });
        let starts: Vec<Start> = starts_ms.iter().map(|&ms| start(1, "w1", ms)).collect();
        let starts: Vec<&Start> = starts.iter().collect();
        let mut found = Vec::new();
        check_after(
            &task(),
            &view,
            &starts,
            ("p", Some(&before), required, None),
            &mut found,
        );
        found
    }

    #[test]
    fn a_waiting_task_runs_after_its_prerequisite_ended_as_required_or_is_skipped_naming_it() {
        let none = Vec::<String>::new();
        assert_eq!(
            after_violations("COMPLETED", "", &[10_000, 10_500], "COMPLETED", "COMPLETED"),
            none
        );
        assert_eq!(
            after_violations("COMPLETED", "", &[10_001], "FAILED", "ENDED"),
            none
        );
        assert_eq!(
            after_violations(
                "SKIPPED",
                "prerequisite task p ended FAILED",
                &[],
                "FAILED",
                "COMPLETED"
            ),
            none
        );
        assert_eq!(
            after_violations("CANCELLED", "", &[], "FAILED", "COMPLETED"),
            none
        );

        let early = after_violations("COMPLETED", "", &[9_999], "COMPLETED", "COMPLETED");
        assert!(
            early.len() == 1 && early[0].contains("before p"),
            "{early:?}"
        );
        let ran = after_violations("COMPLETED", "", &[10_001], "FAILED", "COMPLETED");
        assert!(
            ran.iter().any(|v| v.contains("ran after p ended FAILED")),
            "{ran:?}"
        );
        let wrongly = after_violations("SKIPPED", "", &[], "COMPLETED", "COMPLETED");
        assert!(
            wrongly.len() == 1 && wrongly[0].contains("was SKIPPED, but p"),
            "{wrongly:?}"
        );
        let unnamed = after_violations("SKIPPED", "something", &[], "CANCELLED", "COMPLETED");
        assert!(
            unnamed.len() == 1 && unnamed[0].contains("does not name p"),
            "{unnamed:?}"
        );
        let not_skipped = after_violations("FAILED", "", &[], "FAILED", "COMPLETED");
        assert!(
            not_skipped.len() == 1 && not_skipped[0].contains("should be SKIPPED"),
            "{not_skipped:?}"
        );
    }
}
