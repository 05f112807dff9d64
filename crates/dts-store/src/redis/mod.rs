//! [`RedisStore`]: the [`Store`] of distributed mode, in Redis, shared by
//! every `dts server` and `dts worker` of an installation.
//!
//! Servers and workers keep no state of their own: each call here is one
//! round trip (or a few, for reads that page), and every change that touches
//! more than one key is one Lua script (`scripts`), which Redis runs without
//! interleaving another client's commands. The connection is a
//! [`ConnectionManager`]: when Redis goes away the calls in flight fail with
//! [`StoreError::Unavailable`] and the manager reconnects in the background,
//! so the same store works again once Redis is back. With Sentinel
//! ([`SentinelSettings`]) the connection follows the primary the sentinels
//! name instead (`link`): calls in flight during a failover fail the same
//! way, and the next call finds the new primary. Every call has a
//! deadline ([`CALL_TIMEOUT`]), so a hung server is an error, never a hang.
//!
//! # Key layout
//!
//! Every key starts with the installation's prefix `P` (`RedisSettings::key_prefix`),
//! so two installations can share one Redis.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:task:{id}` | hash | the task's fields (camelCase, as its JSON; `version` counts its changes, `milliCpus` is `cpus` × 1000), `plan` (JSON) once planned, `member` (its list entry), `resultsLayout` (`2`; absent for layout 1); with a reduce: `reduce` (JSON), `reduceWhen` (its `when`, for the scripts), and once claimed `reduceOwner` (the worker running it, whose `P:workers` entry keeps the claim) and `reduceAttempts` (claims so far), and once recorded `reduceResult` (JSON); each absent when there is none |
//! | `P:task:{id}:inputs` | list | the inputs in order (absent when there are none); a task stored by a dts from before has a string here, its list as one JSON array, and is still read |
//! | `P:task:{id}:shards` | set | indices of completed shards |
//! | `P:task:{id}:results:{bucket}` | hash | layout 2: results of items `bucket` × 128 to `bucket` × 128 + 127, field index % 128 → compact result JSON (`codec::ResultForm`) |
//! | `P:task:{id}:results:counts` | hash | layout 2: group (index ÷ 16,384) → how many results its 128 buckets hold |
//! | `P:task:{id}:results:workers` | hash | layout 2: `id:{worker}` → the task's number for it, and number → worker id |
//! | `P:task:{id}:results:failed` | sorted set | indices of failed items (scored by index), both layouts |
//! | `P:task:{id}:results` | hash | layout 1: item index → full result JSON |
//! | `P:task:{id}:results:history` | hash | item index → its earlier attempts (JSON array), which retries moved out of its result |
//! | `P:task:{id}:results:all` / `:succeeded` | sorted set | layout 1: recorded item indices (scored by index), all and succeeded |
//! | `P:task:{id}:leases` | hash | shard leases: `{shard}:owner`, `:expires` (ms, Redis's clock), `:attempts`, `:dirty` |
//! | `P:task:{id}:starts` | hash | item index → how often it was started (only for shards that lost a worker) |
//! | `P:task:{id}:ready` | sorted set | shards neither completed nor owned by a lease, scored by index: the queue free slots claim from |
//! | `P:task:{id}:held` | sorted set | shards owned by a lease, scored by when it expires (expired ones count as ready) |
//! | `P:task:{id}:ranges` | hash | shard index → its range as `start:len` |
//! | `P:tasks` | sorted set | every task's list member, scored by `createdAt` |
//! | `P:ids` | sorted set | every task's id, scored 0, for `ZRANGEBYLEX` by prefix (tasks stored by a dts from before it are found by their full id only) |
//! | `P:tasks:{STATUS}` | sorted set | the same, for the tasks in one status |
//! | `P:unfinished` | sorted set | the same, for tasks not yet in a terminal status |
//! | `P:runnable` | sorted set | the same, for `INPROGRESS` tasks with a shard not yet completed |
//! | `P:ended` | sorted set | ended tasks' members, scored by when their keys expire |
//! | `P:completions` | sorted set | the completion outbox: ids of ended tasks whose event may be owed, scored by when the entry was added or its claim expires (ms, Redis's clock) |
//! | `P:completions:ends` | hash | task id → the `finishedAt` of the end its outbox entry is for |
//! | `P:schedules` | hash | schedule name → the schedule as JSON |
//! | `P:schedules:versions` | hash | schedule name → the version its compare-and-set compares (`lua/update_schedule.lua`) |
//! | `P:seq` | string | counter behind the list members |
//! | `P:worker:{id}` | string | a worker's last heartbeat (JSON), expiring with the heartbeat's TTL |
//! | `P:workers` | sorted set | worker ids, scored by when their heartbeat expires |
//! | `P:live:{id}:watch` | string | someone follows task `id`'s live log (short TTL, refreshed while they do) |
//! | `P:live:{id}` | stream | chunks of task `id`'s running items, published only while watched; capped, expiring soon after the last write (`live`) |
//!
//! # Results layouts
//!
//! A task inserted by this dts has `resultsLayout` `2`: a result costs a few
//! dozen bytes, because a hash of at most 128 fields whose values are at
//! most 64 bytes is one compact listpack in Redis (the defaults of
//! `hash-max-listpack-entries` and `-value`), and a typical compact value
//! (`{"worker":1,"durationMs":52}`: usual values, the index, the task's own
//! input and the worker id are left out) is well under that. A page by rank
//! reads the group counts, one group's bucket sizes and the page; only
//! failures (rare) keep a sorted set. Tasks stored before (no
//! `resultsLayout`) stay in layout 1 for good: every script reads and
//! writes them the old way, so an upgrade needs no migration. The layouts
//! and their helpers are `lua/results_prelude.lua`.
//!
//! A list member is `{sequence:020}:{id}`: tasks created in the same
//! millisecond sort by insertion. When a task ends, all its `P:task:{id}*`
//! keys get the retention TTL together (one written after that, by a worker
//! that has not heard of a cancel yet, gets the task's remaining TTL); its list entries stay until
//! `list_tasks` prunes them (through `P:ended`, or on finding the hash gone).
//! Keys of one task are not in one hash slot, `runnable_tasks.lua` builds
//! the keys of the tasks it finds from the prefix, and the results scripts
//! build bucket, count and worker keys from the results key: this is for a single Redis
//! (or a primary with replicas), not Redis Cluster.

mod activity;
mod codec;
mod errors;
mod keys;
mod leases;
mod link;
mod live;
mod outbox;
mod reduce;
mod results;
mod retry;
mod schedules;
mod scripts;
mod tasks;
mod workers;

use crate::{
    CopyClaim, CopyState, HeartbeatOutcome, PlanOutcome, ReadyClaim, ReduceClaim, ResultFilter,
    RetryOutcome, RunnableTask, ShardClaim, ShardCompletion, Store, StoreError, StoreResult,
    TaskCursor, TaskPage, written_by_holder,
};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{RedisResult, Script};
use async_trait::async_trait;
use dts_model::schedule::Schedule;
use dts_model::{
    Bytes, ItemResult, PastAttempt, ReduceResult, ShardRange, Task, TaskStatus, WorkerInfo,
};
use keys::Keys;
use link::{Follower, Link};
pub use live::LiveEntry;
use scripts::SCRIPTS;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

/// How long any one call may take before it fails as [`StoreError::TimedOut`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a submit or a cancel no replica confirmed keeps looking for
/// its write on the primary the sentinels name (a Sentinel failover here
/// takes a few seconds): see [`RedisStore::insert_confirmed`] and
/// [`RedisStore::cancel_confirmed`].
const RECONFIRM_FOR: Duration = Duration::from_secs(10);

/// How often it looks meanwhile: as often as the store asks the sentinels
/// which server is the primary.
const RECONFIRM_POLL: Duration = Duration::from_millis(250);

/// Why [`RedisStore::until_confirmed`] gave up on a write.
enum Unconfirmed {
    /// Looking at the primary failed: for good, or still at the deadline.
    Failed(StoreError),
    /// No replica confirmed the write by the deadline; how the last wait
    /// ended.
    NoReplica(String),
}

/// Longest wait for one TCP connection attempt.
const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// One attempt per (re)connection, no retries inside the client: its backoff
/// starts at a second, which would make every call during an outage wait for
/// it. Instead a call fails at once with `Unavailable` (callers retry with
/// their own backoff) and the next call after a failure tries again.
const CONNECT_RETRIES: usize = 0;

/// Where the store lives and how long ended tasks stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port/` (optionally `redis://:password@host:port/db`).
    pub url: String,
    /// Put before every key (`dts` gives `dts:task:…`), so several
    /// installations can share one Redis.
    pub key_prefix: String,
    /// How long the keys of a task stay after it ends (completed, failed,
    /// cancelled or never submitted); then Redis deletes them.
    pub retention: Duration,
    /// Find the primary through Redis Sentinel instead of at `url`'s host
    /// and port (whose password and database still apply).
    pub sentinel: Option<SentinelSettings>,
}

/// Redis Sentinel: which master to follow, where the sentinels are, and how
/// long writes a client is told about wait for a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    /// The master name the sentinels monitor (`spring.redis.sentinel.master`).
    pub master: String,
    /// Each sentinel's host and port, asked in this order.
    pub nodes: Vec<(String, u16)>,
    /// Replicas that must have a submit or a cancel before dts answers
    /// (`WAIT`); 0 does not wait.
    pub wait_replicas: u32,
    /// The longest such a wait lasts; then dts answers anyway, and logs it.
    pub wait_timeout: Duration,
}

/// A [`Store`] in Redis. Cloning gives another handle on the same connection.
#[derive(Clone)]
pub struct RedisStore {
    /// Multiplexed and self-healing: one connection serves every call, and
    /// it is re-established after Redis restarts or fails over.
    conn: Link,
    /// With Sentinel, a second connection of its own for the writes a client
    /// waits on replicas for (submits and cancels), and their `WAIT`s.
    /// `WAIT` blocks the connection it is sent on until the replicas answer
    /// or it times out; on the shared one, every other call queued behind
    /// it, and while no replica confirmed (a failover) the API stopped
    /// answering for 10–18 s (chaos soak, seed 7, 60 minutes).
    confirming: Option<Link>,
    /// How writes a client is told about wait for replicas (Sentinel only).
    replication: Option<(u32, Duration)>,
    keys: Keys,
    /// `host:port`, for error messages (never the URL: it may hold a password).
    address: String,
    /// The TTL ended tasks' keys get, in milliseconds, as the scripts take it.
    retention_ms: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("address", &self.address)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis and checks that it answers. Fails within about
    /// [`CALL_TIMEOUT`] with [`StoreError::Unavailable`] or
    /// [`StoreError::TimedOut`] naming `host:port` when Redis cannot be
    /// reached, and at once with [`StoreError::InvalidUrl`] or
    /// [`StoreError::ZeroRetention`] for bad settings.
    pub async fn connect(settings: RedisSettings) -> StoreResult<RedisStore> {
        let client =
            ::redis::Client::open(settings.url.as_str()).map_err(|e| StoreError::InvalidUrl {
                url: redact(&settings.url),
                source: e.into(),
            })?;
        if settings.retention.is_zero() {
            return Err(StoreError::ZeroRetention);
        }
        let (address, replication, link, confirming) = match &settings.sentinel {
            None => (
                client.get_connection_info().addr.to_string(),
                None,
                None,
                None,
            ),
            Some(sentinel) => {
                let follow = || {
                    let follower = std::sync::Arc::new(Follower::new(
                        sentinel.master.clone(),
                        sentinel.nodes.clone(),
                        client.get_connection_info().redis.clone(),
                        link::connection_config(CONNECT_ATTEMPT_TIMEOUT, CALL_TIMEOUT),
                    ));
                    link::watch(&follower);
                    follower
                };
                let replication = (sentinel.wait_replicas > 0)
                    .then_some((sentinel.wait_replicas, sentinel.wait_timeout));
                let follower = follow();
                let confirming = replication.map(|_| Link::Sentinel(follow()));
                (
                    follower.describe(),
                    replication,
                    Some(Link::Sentinel(follower)),
                    confirming,
                )
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_ATTEMPT_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(CONNECT_RETRIES);
        // Connected is not enough: a PING proves the server answers commands
        // (it is not, say, still loading its data or refusing our password).
        let connecting = async {
            let mut conn = match link {
                Some(link) => link,
                None => Link::Direct(ConnectionManager::new_with_config(client, config).await?),
            };
            ::redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await?;
            Ok::<_, ::redis::RedisError>(conn)
        };
        let conn = match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(errors::classify("connect", &address, e)),
            Err(_) => return Err(errors::timed_out("connect", &address, CALL_TIMEOUT)),
        };
        let store = RedisStore {
            conn,
            confirming,
            replication,
            keys: Keys::new(&settings.key_prefix),
            address,
            // Far beyond any retention anyone sets, and within PEXPIRE's range.
            retention_ms: u64::try_from(settings.retention.as_millis())
                .unwrap_or(u64::MAX)
                .min(1 << 50),
        };
        store.fill_id_index().await?;
        Ok(store)
    }

    /// Puts the tasks an older dts stored into the id index, once per
    /// database, so a prefix of their id finds them too.
    async fn fill_id_index(&self) -> StoreResult<()> {
        let mut call = SCRIPTS.fill_ids.prepare_invoke();
        call.key(self.keys.all_tasks())
            .key(self.keys.ids())
            .key(self.keys.ids_filled());
        let mut conn = self.conn.clone();
        let added: i64 = self
            .run("fill the task id index", call.invoke_async(&mut conn))
            .await?;
        if added > 0 {
            tracing::info!(
                tasks = added,
                "indexed the ids of tasks stored before the id index"
            );
        }
        Ok(())
    }

    /// This store on the connection for the writes a client waits on
    /// replicas for (see the `confirming` field); itself when there is
    /// none (no Sentinel, or no replicas to wait for).
    fn confirming(&self) -> RedisStore {
        match &self.confirming {
            Some(link) => RedisStore {
                conn: link.clone(),
                confirming: None,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// `WAIT`s for the configured replicas to have what was written on this
    /// connection; `Err` says how they did not (counted in the metrics).
    /// `Ok` at once without Sentinel.
    async fn wait_for_replicas(&self, what: &str) -> Result<(), String> {
        let Some((replicas, timeout)) = self.replication else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let acked = self
            .run(
                &format!("wait for replicas to have {what}"),
                ::redis::cmd("WAIT")
                    .arg(replicas)
                    .arg(millis)
                    .query_async::<u64>(&mut conn),
            )
            .await;
        let why = match acked {
            Ok(acked) if acked >= u64::from(replicas) => return Ok(()),
            Ok(acked) => format!(
                "{acked} of the {replicas} replicas wanted confirmed {what} within {millis} ms"
            ),
            Err(error) => format!("could not wait for replicas to have {what}: {error}"),
        };
        dts_metrics::metrics().store_error("wait_replicas", false);
        Err(why)
    }

    /// Keeps a write a client waits for (on the `confirming` connection,
    /// `self` here) until a replica confirms it. When the first `WAIT` ends
    /// unconfirmed, the primary may be failing over to a replica without
    /// the write, so every [`RECONFIRM_POLL`] for up to [`RECONFIRM_FOR`]
    /// `restore` looks at whatever primary the sentinels name, writes it
    /// again there if it is missing (`Ok` once the write is there), and
    /// then the replicas are waited for again. A retryable failure skips
    /// the wait and is kept in case the time runs out; any other ends the
    /// loop. A primary with no replica connected is no exception: its
    /// replica may be resyncing and still be promoted without the write
    /// (chaos soak, seed 7).
    async fn until_confirmed<F, Fut>(&self, what: &str, mut restore: F) -> Result<(), Unconfirmed>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<()>>,
    {
        let Err(mut why) = self.wait_for_replicas(what).await else {
            return Ok(());
        };
        let until = tokio::time::Instant::now() + RECONFIRM_FOR;
        let mut unreachable = None;
        // ends: at `until`.
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(RECONFIRM_POLL).await;
            match restore().await {
                Ok(()) => unreachable = None,
                Err(e) if e.is_retryable() => {
                    unreachable = Some(e);
                    continue;
                }
                Err(e) => return Err(Unconfirmed::Failed(e)),
            }
            match self.wait_for_replicas(what).await {
                Ok(()) => return Ok(()),
                Err(again) => why = again,
            }
        }
        Err(match unreachable {
            Some(e) => Unconfirmed::Failed(e),
            None => Unconfirmed::NoReplica(why),
        })
    }

    /// Stores a new task so that a failover right after the client's 202
    /// does not lose it ([`RedisStore::until_confirmed`]): a task missing
    /// on the primary is stored again (dts still has the whole submission).
    /// Without it the client would get 404 for the id it was given. When no
    /// replica confirms within [`RECONFIRM_FOR`] the submission is refused
    /// ([`StoreError::Unavailable`], a 503 the client retries), and the
    /// stored task is marked `SUBMISSION_FAILED` so it never runs; a task
    /// some scheduler already took on is answered as accepted instead (it
    /// runs either way).
    async fn insert_confirmed(&self, task: &Task, inputs: &[Bytes]) -> StoreResult<()> {
        let writer = self.confirming();
        tasks::insert_task(&writer, task, inputs).await?;
        let restore = || async {
            // One field read while the task is there; the whole submission
            // (perhaps a million inputs) goes again only when it is not.
            if tasks::task_status(&writer, &task.id).await?.is_some() {
                return Ok(());
            }
            match tasks::insert_task(&writer, task, inputs).await {
                Ok(()) => {
                    tracing::warn!(
                        task = %task.id,
                        "the task was missing on the Redis primary (a failover lost it); stored it again"
                    );
                    Ok(())
                }
                Err(StoreError::TaskExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        };
        match writer
            .until_confirmed(&format!("task {}", task.id), restore)
            .await
        {
            Ok(()) => Ok(()),
            Err(Unconfirmed::Failed(e)) => Err(e),
            Err(Unconfirmed::NoReplica(why)) => writer.refuse_unconfirmed(task, &why).await,
        }
    }

    /// Cancels a task so that a failover right after the client's 200 does
    /// not undo the cancel ([`RedisStore::until_confirmed`]): a task found
    /// not cancelled on the primary is cancelled again. A cancel the old
    /// primary took and no replica had was lost in a failover, and the task
    /// went on running: items of three cancelled tasks started 7–16 s
    /// after the cancel's 200 (chaos soak, seed 7, 60 minutes). When no
    /// replica confirms within [`RECONFIRM_FOR`] it fails with
    /// [`StoreError::Unavailable`] (a 503): the cancel is on the primary
    /// but may still be undone, so the client should look and cancel again.
    /// A task that ended otherwise meanwhile (the cancel was lost and its
    /// items finished) is [`StoreError::IllegalTransition`], as for any
    /// cancel of an ended task.
    async fn cancel_confirmed(&self, id: &str, error: Option<&str>) -> StoreResult<Task> {
        let writer = self.confirming();
        let cancelled = tasks::transition(&writer, id, TaskStatus::Cancelled, error).await?;
        let ended_otherwise = |from| StoreError::IllegalTransition {
            id: id.to_string(),
            from,
            to: TaskStatus::Cancelled,
        };
        let restore = || async {
            match tasks::task_status(&writer, id).await? {
                None => Err(StoreError::NoSuchTask { id: id.to_string() }),
                Some(TaskStatus::Cancelled) => Ok(()),
                Some(ended) if ended.is_terminal() => Err(ended_otherwise(ended)),
                Some(_) => match tasks::transition(&writer, id, TaskStatus::Cancelled, error).await
                {
                    Ok(_) => {
                        tracing::warn!(
                            task = %id,
                            "the cancel was missing on the Redis primary (a failover lost it); cancelled the task again"
                        );
                        Ok(())
                    }
                    // Cancelled or ended in between.
                    Err(StoreError::IllegalTransition { from, .. })
                        if from != TaskStatus::Cancelled =>
                    {
                        Err(ended_otherwise(from))
                    }
                    Err(StoreError::IllegalTransition { .. }) => Ok(()),
                    Err(e) => Err(e),
                },
            }
        };
        match writer
            .until_confirmed(&format!("the cancel of task {id}"), restore)
            .await
        {
            Ok(()) => Ok(tasks::task(&writer, id)
                .await
                .ok()
                .flatten()
                .unwrap_or(cancelled)),
            Err(Unconfirmed::Failed(e)) => Err(e),
            Err(Unconfirmed::NoReplica(why)) => {
                let reason = format!(
                    "{why} for {} s: the task is cancelled on the Redis primary, but a failover could still undo it; read the task and cancel it again unless it is CANCELLED",
                    RECONFIRM_FOR.as_secs()
                );
                tracing::warn!(task = %id, "{reason}");
                Err(StoreError::Unavailable {
                    op: format!("redis cancel task {id} on a replica"),
                    source: reason.into(),
                })
            }
        }
    }

    /// Ends a submission no replica confirmed within [`RECONFIRM_FOR`]:
    /// marks the task `SUBMISSION_FAILED` (so no sweeper publishes it) and
    /// refuses it. `Ok` when a scheduler got to the task first: it runs, so
    /// the client must have its id.
    async fn refuse_unconfirmed(&self, task: &Task, why: &str) -> StoreResult<()> {
        let reason = format!(
            "not accepted: {why} for {} s, so a Redis failover could have lost the task; submit it again",
            RECONFIRM_FOR.as_secs()
        );
        match tasks::transition(self, &task.id, TaskStatus::SubmissionFailed, Some(&reason)).await {
            Ok(_) => {}
            Err(StoreError::IllegalTransition { from, .. }) => {
                tracing::warn!(task = %task.id, status = %from, "{why} for {RECONFIRM_FOR:?}, but a scheduler already took the task on; answering with the task on the primary, where a failover now could lose it");
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "could not mark an unconfirmed submission SUBMISSION_FAILED; it stays QUEUED on the primary, where a sweeper may still publish it");
            }
        }
        tracing::warn!(task = %task.id, "{reason}");
        Err(StoreError::Unavailable {
            op: format!("redis store task {} on a replica", task.id),
            source: reason.into(),
        })
    }

    /// How many times this store saw Redis fail over to another primary
    /// (always 0 without Sentinel).
    pub fn failovers(&self) -> u64 {
        match &self.conn {
            Link::Direct(_) => 0,
            Link::Sentinel(follower) => follower.failovers(),
        }
    }

    /// Awaits one Redis call with the deadline, turning its error into a
    /// [`StoreError`] that names `op`.
    async fn run<T>(&self, op: &str, call: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(errors::classify(op, &self.address, e)),
            Err(_) => Err(errors::timed_out(op, &self.address, CALL_TIMEOUT)),
        }
    }

    /// Runs a task script (see `lua/task_prelude.lua`) on task `id`, with the
    /// shared arguments first and `args` after them.
    async fn task_script<A: ::redis::ToRedisArgs>(
        &self,
        script: &Script,
        op: &str,
        id: &str,
        args: Vec<A>,
    ) -> StoreResult<Vec<String>> {
        let mut call = script.prepare_invoke();
        for key in self.keys.task_script(id) {
            call.key(key);
        }
        call.arg(&*ALL_STATUSES)
            .arg(&*TERMINAL_STATUSES)
            .arg(TaskStatus::InProgress.as_str())
            .arg(self.retention_ms);
        for arg in args {
            call.arg(arg);
        }
        let mut conn = self.conn.clone();
        self.run(op, call.invoke_async::<Vec<String>>(&mut conn))
            .await
    }
}

/// Every status name, and the terminal ones, as task scripts take them
/// (`lua/task_prelude.lua`): built once, not per call.
static ALL_STATUSES: LazyLock<String> = LazyLock::new(|| status_names(TaskStatus::ALL));
static TERMINAL_STATUSES: LazyLock<String> =
    LazyLock::new(|| status_names(TaskStatus::ALL.into_iter().filter(|s| s.is_terminal())));

/// Status names as the scripts take a set of them: comma-separated.
fn status_names(statuses: impl IntoIterator<Item = TaskStatus>) -> String {
    statuses
        .into_iter()
        .map(TaskStatus::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn insert_task(&self, task: &Task, inputs: &[Bytes]) -> StoreResult<()> {
        self.insert_confirmed(task, inputs).await
    }

    async fn task(&self, id: &str) -> StoreResult<Option<Task>> {
        tasks::task(self, id).await
    }

    async fn task_version(&self, id: &str) -> StoreResult<Option<u64>> {
        tasks::task_version(self, id).await
    }

    async fn task_status(&self, id: &str) -> StoreResult<Option<TaskStatus>> {
        tasks::task_status(self, id).await
    }

    async fn inputs(&self, id: &str) -> StoreResult<Option<Vec<Bytes>>> {
        tasks::inputs(self, id).await
    }

    async fn inputs_range(
        &self,
        id: &str,
        start: u64,
        len: u64,
    ) -> StoreResult<Option<Vec<Bytes>>> {
        tasks::inputs_range(self, id, start, len).await
    }

    async fn list_tasks_page(
        &self,
        status: Option<TaskStatus>,
        after: Option<TaskCursor>,
        limit: usize,
    ) -> StoreResult<TaskPage> {
        tasks::list_tasks_page(self, status, after, limit).await
    }

    async fn task_ids_with_prefix(&self, prefix: &str, limit: usize) -> StoreResult<Vec<String>> {
        tasks::task_ids_with_prefix(self, prefix, limit).await
    }

    async fn delete_task(&self, id: &str) -> StoreResult<Task> {
        tasks::delete_task(self, id).await
    }

    async fn unfinished_task_ids(&self) -> StoreResult<Vec<String>> {
        tasks::unfinished_task_ids(self).await
    }

    async fn transition(&self, id: &str, to: TaskStatus, error: Option<&str>) -> StoreResult<Task> {
        // A cancel is answered to a client; other moves are the engine's,
        // which finds them again after a failover.
        if to == TaskStatus::Cancelled && self.replication.is_some() {
            return self.cancel_confirmed(id, error).await;
        }
        tasks::transition(self, id, to, error).await
    }

    async fn save_plan(&self, id: &str, shards: &[ShardRange]) -> StoreResult<PlanOutcome> {
        tasks::save_plan(self, id, shards).await
    }

    async fn completed_shards(&self, id: &str) -> StoreResult<Vec<u32>> {
        results::completed_shards(self, id).await
    }

    async fn retry_task(&self, id: &str) -> StoreResult<RetryOutcome> {
        retry::retry_task(self, id).await
    }

    async fn attempt_history(
        &self,
        id: &str,
        indices: &[u64],
    ) -> StoreResult<BTreeMap<u64, Vec<PastAttempt>>> {
        retry::attempt_history(self, id, indices).await
    }

    async fn record_results(&self, id: &str, results: &[ItemResult]) -> StoreResult<TaskStatus> {
        results::record_results(self, id, None, None, results)
            .await
            .and_then(written_by_holder)
    }

    async fn record_shard_results(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<TaskStatus> {
        results::record_results(self, id, Some(shard), None, results)
            .await
            .and_then(written_by_holder)
    }

    async fn record_copy_results(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<TaskStatus>> {
        results::record_results(self, id, Some(shard), Some(token), results).await
    }

    async fn complete_shard(
        &self,
        id: &str,
        shard: u32,
        results: &[ItemResult],
    ) -> StoreResult<ShardCompletion> {
        results::complete_shard(self, id, shard, None, results)
            .await
            .and_then(written_by_holder)
    }

    async fn complete_copy(
        &self,
        id: &str,
        shard: u32,
        token: u64,
        results: &[ItemResult],
    ) -> StoreResult<Option<ShardCompletion>> {
        results::complete_shard(self, id, shard, Some(token), results).await
    }

    async fn recorded_indices(&self, id: &str, start: u64, end: u64) -> StoreResult<Vec<u64>> {
        results::recorded_indices(self, id, start, end).await
    }

    async fn results(
        &self,
        id: &str,
        filter: ResultFilter,
        offset: u64,
        limit: u64,
    ) -> StoreResult<(u64, Vec<ItemResult>)> {
        results::results(self, id, filter, offset, limit).await
    }

    async fn heartbeat(&self, worker: &WorkerInfo, ttl: Duration) -> StoreResult<HeartbeatOutcome> {
        workers::heartbeat(self, worker, ttl).await
    }

    async fn remove_worker(&self, id: &str) -> StoreResult<()> {
        workers::remove_worker(self, id).await
    }

    async fn live_workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        workers::live_workers(self).await
    }

    async fn claim_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        lease: Duration,
    ) -> StoreResult<ShardClaim> {
        leases::claim_shard(self, id, shard, worker, lease).await
    }

    async fn renew_leases(
        &self,
        worker: &str,
        shards: &[(String, u32)],
        lease: Duration,
    ) -> StoreResult<Vec<(String, u32)>> {
        leases::renew_leases(self, worker, shards, lease).await
    }

    async fn live_leases(&self, id: &str) -> StoreResult<u32> {
        leases::live_leases(self, id).await
    }

    async fn release_shard(
        &self,
        id: &str,
        shard: u32,
        worker: &str,
        clean: bool,
    ) -> StoreResult<()> {
        leases::release_shard(self, id, shard, worker, clean).await
    }

    async fn runnable_tasks(&self, limit: usize) -> StoreResult<Vec<RunnableTask>> {
        leases::runnable_tasks(self, limit).await
    }

    async fn claim_ready_shard(
        &self,
        id: &str,
        worker: &str,
        lease: Duration,
        max_held: Option<u32>,
    ) -> StoreResult<ReadyClaim> {
        leases::claim_ready_shard(self, id, worker, lease, max_held).await
    }

    async fn claim_copy(
        &self,
        id: &str,
        worker: &str,
        per_item: Duration,
        min: Duration,
    ) -> StoreResult<CopyClaim> {
        leases::claim_copy(self, id, worker, per_item, min).await
    }

    async fn copy_state(&self, id: &str, shard: u32, token: u64) -> StoreResult<CopyState> {
        leases::copy_state(self, id, shard, token).await
    }

    async fn mark_item_started(&self, id: &str, index: u64) -> StoreResult<u32> {
        leases::mark_item_started(self, id, index).await
    }

    async fn stats(&self) -> StoreResult<crate::activity::StoreStats> {
        activity::stats(self).await
    }

    async fn task_activity(&self, id: &str) -> StoreResult<Option<crate::activity::TaskActivity>> {
        activity::task_activity(self, id).await
    }

    async fn claim_completions(
        &self,
        limit: usize,
        settle: Duration,
        lease: Duration,
    ) -> StoreResult<Vec<Task>> {
        outbox::claim_completions(self, limit, settle, lease).await
    }

    async fn ack_completion(&self, id: &str, finished_at: u64) -> StoreResult<()> {
        outbox::ack_completion(self, id, finished_at).await
    }

    async fn pending_completions(&self) -> StoreResult<u64> {
        outbox::pending_completions(self).await
    }

    async fn insert_schedule(&self, schedule: &Schedule) -> StoreResult<()> {
        schedules::insert(self, schedule).await
    }

    async fn schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        schedules::one(self, name).await
    }

    async fn schedules(&self) -> StoreResult<Vec<Schedule>> {
        schedules::all(self).await
    }

    async fn update_schedule(&self, schedule: &Schedule) -> StoreResult<bool> {
        schedules::update(self, schedule).await
    }

    async fn delete_schedule(&self, name: &str) -> StoreResult<bool> {
        schedules::delete(self, name).await
    }

    async fn reducing_tasks(&self, limit: usize) -> StoreResult<Vec<Task>> {
        reduce::reducing_tasks(self, limit).await
    }

    async fn claim_reduce(&self, id: &str, worker: &str) -> StoreResult<ReduceClaim> {
        reduce::claim_reduce(self, id, worker).await
    }

    async fn finish_reduce(
        &self,
        id: &str,
        worker: &str,
        attempt: u32,
        result: &ReduceResult,
    ) -> StoreResult<Option<Task>> {
        reduce::finish_reduce(self, id, worker, attempt, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_error_messages() {
        assert_eq!(
            redact("redis://:s3cret@db.example:6379/0"),
            "redis://***@db.example:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }

    #[test]
    fn status_sets_are_comma_separated_names() {
        assert_eq!(
            status_names([TaskStatus::Queued, TaskStatus::InProgress]),
            "QUEUED,INPROGRESS"
        );
    }
}
