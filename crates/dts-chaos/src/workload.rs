//! The seeded workload: a steady stream of tasks to both servers in turn
//! and to `dts up`, with failing, hanging, slow and flaky items, retries,
//! deadlines, priorities, cancels, task retries and tasks that wait for an
//! earlier one (`after`). The seed fixes every task; only the timing of
//! the answers varies between runs.

use crate::api::{Answer, Api};
use crate::{Shared, now_ms};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// The script every item runs. It first appends its start line
/// (`task,index,attempt,worker,start_ms,pid`) to the shared log with one
/// `printf` to a file opened `O_APPEND` (`>>`): one `write`, so concurrent
/// items' lines never interleave. Then it does what its input says.
/// `$EPOCHREALTIME` gives the time without starting a process.
pub const ITEM_SCRIPT: &str = concat!(
    "t=${EPOCHREALTIME/./}; ",
    "printf '%s,%s,%s,%s,%s,%s\\n' \"$DTS_TASK_ID\" \"$DTS_ITEM_INDEX\" \"$DTS_ATTEMPT\" ",
    "\"$DTS_WORKER_ID\" \"${t:0:-3}\" \"$$\" >> '{{log}}'\n",
    "case \"$1\" in\n",
    "  *-fail) exit 1 ;;\n",
    "  *-flaky) [ \"$DTS_ATTEMPT\" -ge 2 ] || exit 1 ;;\n",
    "  *-hang) exec sleep 3600 ;;\n",
    "  *-slow) sleep 1 ;;\n",
    "esac\n",
    "echo \"$1\"\n",
);

/// What an item does, by the end of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// Prints its input and succeeds.
    Ok,
    /// Exits 1.
    Fail,
    /// Fails its first attempt, succeeds from the second.
    Flaky,
    /// Sleeps until the task's `timeoutSecs` kills it.
    Hang,
    /// Sleeps a second, then succeeds.
    Slow,
}

impl ItemKind {
    fn suffix(self) -> &'static str {
        match self {
            ItemKind::Ok => "ok",
            ItemKind::Fail => "fail",
            ItemKind::Flaky => "flaky",
            ItemKind::Hang => "hang",
            ItemKind::Slow => "slow",
        }
    }
}

/// One task of the stream, fixed by the seed.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    /// When to submit it, from the start of the stream.
    pub at: Duration,
    /// Which API to submit it to (an index into the cluster's APIs:
    /// servers first, `dts up` last).
    pub api: usize,
    /// Its items' kinds, in input order.
    pub items: Vec<ItemKind>,
    /// `timeoutSecs`.
    pub timeout_secs: u64,
    /// `retries`.
    pub retries: u32,
    /// `deadlineSecs`, on some.
    pub deadline_secs: Option<u64>,
    /// `priority`, on some.
    pub priority: Option<i32>,
    /// Cancel it this long after it was accepted, on some.
    pub cancel_after: Option<Duration>,
    /// Retry it (`POST /v1/tasks/{id}/retry`) once if it ends FAILED.
    pub retry_when_failed: bool,
    /// `speculation`: on for some tasks only, because a speculative copy
    /// of a straggling shard runs its items again with the same attempt,
    /// which the checker must then allow.
    pub speculation: bool,
    /// Wait for the task of an earlier plan (`after`), with this
    /// `afterStatus`, on some.
    pub after: Option<AfterPlan>,
}

/// A task's wait for an earlier task of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterPlan {
    /// The earlier plan, submitted to the same store (a server's for a
    /// server's task, `dts up`'s for its own), and never retried, so it
    /// ends once.
    pub plan: usize,
    /// `afterStatus`: `COMPLETED` or `ENDED`.
    pub status: &'static str,
}

impl TaskPlan {
    /// What item `index` does, for a violation's message.
    pub fn describe(&self, index: u64) -> String {
        let kind = self
            .items
            .get(index as usize)
            .map(|kind| kind.suffix())
            .unwrap_or("none");
        format!(
            "{kind} item of a task with retries {}, speculation {}",
            self.retries, self.speculation
        )
    }

    /// The task's inputs: `i<index>-<kind>`.
    pub fn inputs(&self) -> Vec<String> {
        self.items
            .iter()
            .enumerate()
            .map(|(i, kind)| format!("i{i}-{}", kind.suffix()))
            .collect()
    }

    /// Whether every item must succeed: nothing fails, hangs or is
    /// cancelled, no deadline may cut it short and it waits for no task
    /// that may fail. Such a task must end COMPLETED whatever the faults.
    pub fn must_complete(&self) -> bool {
        self.cancel_after.is_none()
            && self.deadline_secs.is_none()
            && self.after.is_none()
            && self.items.iter().all(|kind| match kind {
                ItemKind::Ok | ItemKind::Slow => true,
                ItemKind::Flaky => self.retries >= 1,
                ItemKind::Fail | ItemKind::Hang => false,
            })
    }

    /// Whether the workload may retry the task (it does when the task
    /// ends FAILED): such a task can end twice.
    pub fn retried(&self) -> bool {
        self.retry_when_failed && !self.must_complete()
    }

    /// The v1 submission body.
    pub fn body(&self, log: &Path) -> Value {
        let mut body = json!({
            "templateFunction": ITEM_SCRIPT,
            "variableJson": { "log": log.display().to_string() },
            "inputList": self.inputs(),
            "timeoutSecs": self.timeout_secs,
            "retries": self.retries,
            "speculation": self.speculation,
        });
        if let Some(deadline) = self.deadline_secs {
            body["deadlineSecs"] = json!(deadline);
        }
        if let Some(priority) = self.priority {
            body["priority"] = json!(priority);
        }
        body
    }
}

/// The stream's tasks for `length`, over `apis` APIs (the last is `dts
/// up`): one every 0.5–2 s, alternating between the servers, with every
/// fourth to `dts up`. About one in seven waits for one of the ten tasks
/// before it, of its store, that is never retried; those choices come from
/// a generator of their own, so the rest of a seed's tasks are what they
/// were before tasks waited.
pub fn plan(seed: u64, length: Duration, apis: usize) -> Vec<TaskPlan> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut waits = StdRng::seed_from_u64(seed ^ 0x0061_6674_6572);
    let mut plans = Vec::new();
    let mut at = Duration::ZERO;
    let servers = apis.saturating_sub(1).max(1);
    let mut next_server = 0;
    let mut n = 0u64;
    // Big tasks stop early enough to finish before the checker's deadline.
    let calm = length.saturating_sub(Duration::from_secs(45));
    // ends: `at` grows by at least 0.5 s a turn.
    while at < length {
        n += 1;
        let api = if n % 4 == 0 {
            apis - 1
        } else {
            next_server = (next_server + 1) % servers;
            next_server
        };
        let size = match rng.random_range(0..100) {
            0..70 => rng.random_range(1..=20),
            70..97 => rng.random_range(21..=300),
            _ if at < calm => rng.random_range(301..=5000),
            _ => rng.random_range(21..=50),
        };
        let mut items = vec![ItemKind::Ok; size];
        let mut timeout_secs = 30;
        let mut retries = 0;
        let mut sprinkle = |rng: &mut StdRng, kind: ItemKind, most: usize| {
            for _ in 0..rng.random_range(1..=most) {
                let i = rng.random_range(0..size);
                items[i] = kind;
            }
        };
        if rng.random_bool(0.2) {
            sprinkle(&mut rng, ItemKind::Fail, 3);
        }
        if rng.random_bool(0.1) {
            sprinkle(&mut rng, ItemKind::Hang, 2);
            timeout_secs = rng.random_range(2..=4);
        }
        if rng.random_bool(0.15) {
            sprinkle(&mut rng, ItemKind::Flaky, 5);
            retries = rng.random_range(1..=2);
        }
        let deadline_secs = rng.random_bool(0.1).then(|| rng.random_range(5..=20));
        if deadline_secs.is_some() || rng.random_bool(0.1) {
            sprinkle(&mut rng, ItemKind::Slow, 10);
        }
        let priority = rng.random_bool(0.3).then(|| rng.random_range(-5..=5));
        let cancel_after = rng.random_bool(0.1).then(|| {
            sprinkle(&mut rng, ItemKind::Slow, 10);
            Duration::from_millis(rng.random_range(200..=5000))
        });
        let retry_when_failed = rng.random_bool(0.5);
        let speculation = rng.random_bool(0.2);
        let same_store = |other: &TaskPlan| (other.api == apis - 1) == (api == apis - 1);
        let candidates: Vec<usize> = (plans.len().saturating_sub(10)..plans.len())
            .filter(|&k| same_store(&plans[k]) && !plans[k].retried())
            .collect();
        let after = (waits.random_bool(0.15) && !candidates.is_empty()).then(|| AfterPlan {
            plan: candidates[waits.random_range(0..candidates.len())],
            status: if waits.random_bool(0.5) {
                "COMPLETED"
            } else {
                "ENDED"
            },
        });
        plans.push(TaskPlan {
            after,
            speculation,
            at,
            api,
            items,
            timeout_secs,
            retries,
            deadline_secs,
            priority,
            cancel_after,
            retry_when_failed,
        });
        at += Duration::from_millis(rng.random_range(500..=2000));
    }
    plans
}

/// A submitted task and what the workload did to it.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task's id.
    pub id: String,
    /// The plan it came from (an index into the plans).
    pub plan: usize,
    /// The API that accepted it.
    pub api: usize,
    /// When the submission was accepted (ms since the epoch).
    pub accepted_ms: u64,
    /// When a cancel's 200 response arrived, if one did.
    pub cancel_acked_ms: Option<u64>,
    /// A cancel was sent (answered or not).
    pub cancel_sent: bool,
    /// When each task retry's 202 response arrived.
    pub retry_acked_ms: Vec<u64>,
    /// When each task retry was sent (its items may start before the
    /// response arrives).
    pub retry_sent_ms: Vec<u64>,
    /// The task it waits for (`after`) and how that must end, when it was
    /// submitted with one.
    pub after: Option<(String, &'static str)>,
}

/// Submits one planned task, then cancels or retries it as planned.
/// Records what happened in `shared`. A submission no API accepted within
/// its deadline is counted as refused: the API's answers are the prober's
/// business, not the workload's.
pub async fn drive(
    shared: Shared,
    apis: Vec<Api>,
    plans: std::sync::Arc<Vec<TaskPlan>>,
    index: usize,
    log: std::path::PathBuf,
) {
    let plan = &plans[index];
    let mut body = plan.body(&log);
    let mut after = None;
    if let Some(wait) = plan.after {
        // The earlier task's id, once it was accepted; without one (it was
        // refused) this task waits for nothing.
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        // ends: at `until`.
        while tokio::time::Instant::now() < until && !shared.stopping() {
            let found = shared
                .lock()
                .submitted
                .iter()
                .find(|task| task.plan == wait.plan)
                .map(|task| task.id.clone());
            if let Some(id) = found {
                body["after"] = json!([id]);
                body["afterStatus"] = json!(wait.status);
                after = Some((id, wait.status));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let servers = apis.len() - 1;
    // The planned API first; for a server, the other servers after it.
    let order: Vec<usize> = if plan.api == servers {
        vec![plan.api]
    } else {
        (0..servers).map(|k| (plan.api + k) % servers).collect()
    };
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut accepted = None;
    // ends: gives up at `give_up`.
    'submit: while tokio::time::Instant::now() < give_up {
        for &api in &order {
            if let Answer::Json(status, created) = apis[api].post("/v1/tasks", &body).await {
                if status == 202 {
                    if let Some(id) = created["id"].as_str() {
                        accepted = Some((api, id.to_string()));
                        break 'submit;
                    }
                }
                if status == 400 && created["error"]["code"] == "unknown_task" {
                    // The task it waits for is gone (a Redis failover lost
                    // it): the checker judges that task; this one cannot be
                    // submitted.
                    shared.lock().refused += 1;
                    return;
                }
                if status == 400 {
                    shared.violation(format!(
                        "the submission of plan {index} was refused: {created}"
                    ));
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let Some((api, id)) = accepted else {
        shared.lock().refused += 1;
        return;
    };
    let record = Submitted {
        id: id.clone(),
        plan: index,
        api,
        accepted_ms: now_ms(),
        cancel_acked_ms: None,
        cancel_sent: false,
        retry_acked_ms: Vec::new(),
        retry_sent_ms: Vec::new(),
        after,
    };
    let slot = {
        let mut state = shared.lock();
        state.submitted.push(record);
        state.submitted.len() - 1
    };
    if let Some(after) = plan.cancel_after {
        tokio::time::sleep(after).await;
        shared.lock().submitted[slot].cancel_sent = true;
        let answer = apis[api]
            .post(&format!("/v1/tasks/{id}/cancel"), &json!({}))
            .await;
        let acked = now_ms();
        if let Answer::Json(200, _) = answer {
            shared.lock().submitted[slot].cancel_acked_ms = Some(acked);
        }
        return;
    }
    if plan.retried() {
        // Waits for the end (the checker waits again, with its deadline).
        let until = tokio::time::Instant::now() + Duration::from_secs(120);
        // ends: gives up at `until`.
        while tokio::time::Instant::now() < until && !shared.stopping() {
            if let Answer::Json(200, task) =
                apis[api].get(&format!("/v1/tasks/{id}?summary=true")).await
            {
                match task["status"].as_str() {
                    Some("FAILED") => {
                        shared.lock().submitted[slot].retry_sent_ms.push(now_ms());
                        let answer = apis[api]
                            .post(&format!("/v1/tasks/{id}/retry"), &json!({}))
                            .await;
                        let acked = now_ms();
                        if let Answer::Json(202, _) = answer {
                            shared.lock().submitted[slot].retry_acked_ms.push(acked);
                        }
                        return;
                    }
                    Some("COMPLETED" | "CANCELLED" | "SUBMISSION_FAILED" | "SKIPPED") => return,
                    _ => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
