//! Faults on a schedule fixed by the seed: SIGKILL of a dts process (started
//! again after a short delay), SIGSTOP then SIGCONT, a Redis primary
//! restart, a Redis failover (on request, or by killing the primary), a
//! broker restart (SIGTERM or SIGKILL) and, as root, partitions of a worker
//! from Redis or the broker and full disks under `dts up`. Each is logged
//! with when it started and when it ended, for the checker's rules and for
//! a replay.

use crate::cluster::{Cluster, Node, Role, lock};
use crate::netns::Cut;
use crate::{Shared, now_ms};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL of a dts process, started again after 1–5 s.
    Kill,
    /// SIGSTOP of a dts process, SIGCONT 1–20 s later.
    Stop,
    /// The Redis primary stopped (SIGTERM: AOF flushed) and started again
    /// 1–5 s later; the sentinels may promote the replica meanwhile.
    RedisRestart,
    /// `SENTINEL FAILOVER`: the replica promoted, the primary demoted.
    RedisFailover,
    /// The Redis primary SIGKILLed; once the sentinels have promoted the
    /// replica, it is started again 1–5 s later and rejoins as a replica.
    RedisPrimaryKill,
    /// The broker stopped with SIGTERM and started again 1–5 s later.
    BrokerRestart,
    /// The broker SIGKILLed and started again 1–5 s later.
    BrokerKill,
    /// A worker cut off from Redis and its sentinels for 5–60 s (root).
    PartitionRedis,
    /// A worker cut off from the broker for 5–60 s (root).
    PartitionBroker,
    /// `dts up`'s data directory's disk (a 32 MB tmpfs) filled for
    /// 5–30 s (root only).
    FullDisk,
}

impl FaultKind {
    /// Every kind, in the report's order.
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::RedisRestart,
        FaultKind::RedisFailover,
        FaultKind::RedisPrimaryKill,
        FaultKind::BrokerRestart,
        FaultKind::BrokerKill,
        FaultKind::PartitionRedis,
        FaultKind::PartitionBroker,
        FaultKind::FullDisk,
    ];

    /// Whether it is a fault of Redis or the broker, which every node
    /// depends on (so it may make dts run any shard again).
    pub fn is_service(self) -> bool {
        matches!(
            self,
            FaultKind::RedisRestart
                | FaultKind::RedisFailover
                | FaultKind::RedisPrimaryKill
                | FaultKind::BrokerRestart
                | FaultKind::BrokerKill
        )
    }

    /// Whether it cuts a worker off the network.
    pub fn is_partition(self) -> bool {
        matches!(self, FaultKind::PartitionRedis | FaultKind::PartitionBroker)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Kill => "SIGKILL + restart",
            FaultKind::Stop => "SIGSTOP/SIGCONT",
            FaultKind::RedisRestart => "Redis primary restart",
            FaultKind::RedisFailover => "Redis SENTINEL FAILOVER",
            FaultKind::RedisPrimaryKill => "Redis primary SIGKILL (promotion)",
            FaultKind::BrokerRestart => "broker SIGTERM + restart",
            FaultKind::BrokerKill => "broker SIGKILL + restart",
            FaultKind::PartitionRedis => "partition from Redis",
            FaultKind::PartitionBroker => "partition from the broker",
            FaultKind::FullDisk => "full disk",
        })
    }
}

/// One planned fault.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// When, from the start of the stream.
    pub at: Duration,
    /// What.
    pub kind: FaultKind,
    /// On what: a node's name, `redis` or `broker`.
    pub target: String,
    /// How long the target stays down or frozen.
    pub hold: Duration,
}

/// One fault as it happened.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// What.
    pub kind: FaultKind,
    /// On what.
    pub target: String,
    /// The target's role, for a dts node.
    pub role: Option<Role>,
    /// When it began (ms since the epoch).
    pub start_ms: u64,
    /// When the target was back (ms since the epoch): restarted and ready,
    /// or continued.
    pub end_ms: u64,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} from {} to {} ({} ms)",
            self.kind,
            self.target,
            self.start_ms,
            self.end_ms,
            self.end_ms.saturating_sub(self.start_ms)
        )
    }
}

/// The kinds a run injects beyond the ones every run does.
#[derive(Debug, Clone)]
pub struct Kinds {
    /// Full disks under `dts up` (root: its data directory is a tmpfs).
    pub full_disk: bool,
    /// Partitions of a worker from Redis or the broker (root: network
    /// namespaces).
    pub partitions: bool,
}

/// The schedule for `length`: a fault every 4–15 s on a node, Redis or the
/// broker; when allowed, a full disk every 20–60 s and a partition every
/// 15–45 s, drawn from `seed` (streams of their own, apart from the
/// workload's, so running as root leaves the other faults unchanged).
pub fn plan(seed: u64, length: Duration, nodes: &[String], kinds: &Kinds) -> Vec<FaultPlan> {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x5eed_fa17);
    let mut plans = Vec::new();
    let mut at = Duration::from_secs(rng.random_range(3..=8));
    // ends: `at` grows by at least 4 s a turn.
    while at < length {
        let roll = rng.random_range(0..100);
        let node = nodes[rng.random_range(0..nodes.len())].clone();
        let short = Duration::from_millis(rng.random_range(1000..=5000));
        let long = Duration::from_millis(rng.random_range(1000..=20_000));
        let (kind, target, hold) = match roll {
            0..35 => (FaultKind::Kill, node, short),
            35..65 => (FaultKind::Stop, node, long),
            65..74 => (FaultKind::RedisRestart, "redis".to_string(), short),
            74..80 => (FaultKind::RedisFailover, "redis".to_string(), short),
            80..86 => (FaultKind::RedisPrimaryKill, "redis".to_string(), short),
            86..93 => (FaultKind::BrokerRestart, "broker".to_string(), short),
            _ => (FaultKind::BrokerKill, "broker".to_string(), short),
        };
        plans.push(FaultPlan {
            at,
            kind,
            target,
            hold,
        });
        at += Duration::from_millis(rng.random_range(4000..=15_000));
    }
    if kinds.full_disk {
        let mut rng = StdRng::seed_from_u64(seed.rotate_left(29) ^ 0xd15c);
        let mut at = Duration::from_secs(rng.random_range(10..=30));
        // ends: `at` grows by at least 20 s a turn.
        while at < length {
            plans.push(FaultPlan {
                at,
                kind: FaultKind::FullDisk,
                target: "up".to_string(),
                hold: Duration::from_millis(rng.random_range(5000..=30_000)),
            });
            at += Duration::from_secs(rng.random_range(20..=60));
        }
    }
    if kinds.partitions {
        let mut rng = StdRng::seed_from_u64(seed.rotate_left(41) ^ 0x9a27);
        let workers: Vec<&String> = nodes.iter().filter(|n| n.starts_with("worker-")).collect();
        let mut at = Duration::from_secs(rng.random_range(5..=20));
        // ends: `at` grows by at least 15 s a turn.
        while at < length && !workers.is_empty() {
            let worker = workers[rng.random_range(0..workers.len())].clone();
            let kind = if rng.random_bool(0.5) {
                FaultKind::PartitionRedis
            } else {
                FaultKind::PartitionBroker
            };
            let hold = Duration::from_millis(rng.random_range(5000..=60_000));
            // Healed by the stream's end, so the soak's length holds.
            if at + hold <= length {
                plans.push(FaultPlan {
                    at,
                    kind,
                    target: worker,
                    hold,
                });
            }
            at += Duration::from_secs(rng.random_range(15..=45));
        }
    }
    plans.sort_by_key(|plan| plan.at);
    plans
}

/// Injects one planned fault, unless its target is in another fault now
/// (then it is skipped and counted). Logs it in `shared` when it ends.
pub async fn inject(
    shared: Shared,
    cluster: Arc<Cluster>,
    busy: Arc<Mutex<BTreeSet<String>>>,
    fault: FaultPlan,
) {
    if !lock(&busy).insert(fault.target.clone()) {
        shared.lock().faults_skipped += 1;
        return;
    }
    let node = cluster
        .nodes()
        .into_iter()
        .find(|node| lock(node).name == fault.target);
    let role = node.as_ref().map(|node| lock(node).role);
    let start_ms = now_ms();
    let outcome = match (fault.kind, node) {
        (FaultKind::FullDisk, _) => match &cluster.small_disk {
            Some(disk) => match disk.fill() {
                Ok(file) => {
                    tokio::time::sleep(fault.hold).await;
                    disk.drain(&file);
                    Ok(Injected::Done)
                }
                Err(e) => Err(e),
            },
            None => Err("there is no small disk to fill".to_string()),
        },
        (FaultKind::Kill, Some(node)) => {
            let victim = node.clone();
            blocking(move || lock(&victim).kill9()).await;
            tokio::time::sleep(fault.hold).await;
            blocking_result(move || restart(&node))
                .await
                .map(|()| Injected::Done)
        }
        (FaultKind::Stop, Some(node)) => {
            lock(&node).signal(libc::SIGSTOP);
            tokio::time::sleep(fault.hold).await;
            lock(&node).signal(libc::SIGCONT);
            Ok(Injected::Done)
        }
        (FaultKind::PartitionRedis | FaultKind::PartitionBroker, Some(_)) => {
            partition(&cluster, &fault).await.map(|()| Injected::Done)
        }
        (kind, _) if kind.is_service() => restart_service(&cluster, kind, fault.hold).await,
        (kind, _) => Err(format!("{kind} of {} cannot be injected", fault.target)),
    };
    let record = FaultRecord {
        kind: fault.kind,
        target: fault.target.clone(),
        role,
        start_ms,
        end_ms: now_ms(),
    };
    lock(&busy).remove(&fault.target);
    let mut state = shared.lock();
    match outcome {
        Ok(Injected::Done) => state.faults.push(record),
        Ok(Injected::Refused(why)) => state.faults_refused.push(format!("{record}: {why}")),
        Err(e) => {
            state.violations.push(format!("{record}: {e}"));
            state.faults.push(record);
        }
    }
}

/// How a fault went, when nothing broke.
enum Injected {
    Done,
    /// The service would not take it: Sentinel refused a failover (no
    /// replica in sync right after another Redis fault), or its sentinels
    /// did not agree on the outcome in time. Not a fault of dts: the
    /// checker's rules catch what it does to the tasks.
    Refused(String),
}

fn restart(node: &Mutex<Node>) -> Result<(), String> {
    lock(node).start().map_err(|e| e.to_string())
}

async fn blocking_result(
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("the restart panicked: {e}"))?
}

/// Runs `f` off the async threads: stopping and starting processes waits.
async fn blocking(f: impl FnOnce() + Send + 'static) {
    let _ = tokio::task::spawn_blocking(f).await;
}

/// Cuts a worker off from Redis or the broker for the fault's hold, then
/// heals the cut.
async fn partition(cluster: &Cluster, fault: &FaultPlan) -> Result<(), String> {
    let Some(partitions) = &cluster.partitions else {
        return Err("partitions need root (network namespaces)".to_string());
    };
    let n: usize = fault
        .target
        .strip_prefix("worker-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("{} is not a worker", fault.target))?;
    let what = match fault.kind {
        FaultKind::PartitionRedis => Cut::Redis,
        _ => Cut::Broker,
    };
    partitions.cut(n, what).map_err(|e| e.to_string())?;
    tokio::time::sleep(fault.hold).await;
    partitions.heal(n, what).map_err(|e| e.to_string())
}

/// A fault of Redis or the broker: stopped or killed and, after `hold`,
/// started again on the same port; or a failover, on request (which
/// Sentinel may refuse) or by killing the primary (which rejoins as a
/// replica after `hold`).
async fn restart_service(
    cluster: &Arc<Cluster>,
    kind: FaultKind,
    hold: Duration,
) -> Result<Injected, String> {
    if kind == FaultKind::RedisFailover {
        let c = cluster.clone();
        return catch(
            move || lock(&c.services.redis).try_failover(),
            "failing over",
        )
        .await
        .map(|failed_over| match failed_over {
            Ok(_) => Injected::Done,
            Err(why) => Injected::Refused(why),
        });
    }
    let c = cluster.clone();
    // The Redis node a restart must start again.
    let down = catch(
        move || match kind {
            FaultKind::RedisRestart => {
                let mut redis = lock(&c.services.redis);
                let primary = redis.primary();
                redis.stop(primary);
                Some(primary)
            }
            FaultKind::RedisPrimaryKill => {
                let mut redis = lock(&c.services.redis);
                let before = redis.primary_port();
                let killed = redis.kill_primary();
                redis.wait_for_new_primary(before);
                Some(killed)
            }
            FaultKind::BrokerKill => {
                lock(&c.services.broker).kill();
                None
            }
            _ => {
                lock(&c.services.broker).stop();
                None
            }
        },
        "stopping",
    )
    .await?;
    tokio::time::sleep(hold).await;
    let c = cluster.clone();
    catch(
        move || match down {
            Some(node) => lock(&c.services.redis).restart(node),
            None => lock(&c.services.broker).restart(),
        },
        "restarting",
    )
    .await
    .map(|()| Injected::Done)
}

/// Runs a test kit restart, which panics when the server does not come
/// back, and makes that panic an error.
async fn catch<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
    what: &str,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("{what} the service failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64, kinds: &Kinds) -> Vec<(Duration, FaultKind, String, Duration)> {
        schedule_of(seed, kinds, 600)
    }

    fn schedule_of(
        seed: u64,
        kinds: &Kinds,
        seconds: u64,
    ) -> Vec<(Duration, FaultKind, String, Duration)> {
        let nodes: Vec<String> = ["server-1", "worker-1", "up"].map(String::from).to_vec();
        plan(seed, Duration::from_secs(seconds), &nodes, kinds)
            .into_iter()
            .map(|f| (f.at, f.kind, f.target, f.hold))
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_schedule_and_root_only_faults_only_add_to_it() {
        let plain = Kinds {
            full_disk: false,
            partitions: false,
        };
        let root = Kinds {
            full_disk: true,
            partitions: true,
        };
        assert_eq!(schedule(14, &plain), schedule(14, &plain));
        assert_ne!(schedule(14, &plain), schedule(15, &plain));
        let with_root = schedule(14, &root);
        let others: Vec<_> = with_root
            .iter()
            .filter(|f| f.1 != FaultKind::FullDisk && !f.1.is_partition())
            .cloned()
            .collect();
        assert_eq!(others, schedule(14, &plain));
        // Half an hour as root brings every kind of fault.
        let kinds: BTreeSet<FaultKind> = schedule_of(14, &root, 1800).iter().map(|f| f.1).collect();
        assert_eq!(kinds, FaultKind::ALL.into_iter().collect());
    }

    #[test]
    fn partitions_cut_only_workers_for_5_to_60_s_and_heal_before_the_stream_ends() {
        let root = Kinds {
            full_disk: false,
            partitions: true,
        };
        let partitions: Vec<_> = schedule(14, &root)
            .into_iter()
            .filter(|f| f.1.is_partition())
            .collect();
        assert!(partitions.len() >= 5, "{partitions:?}");
        for (at, _, target, hold) in partitions {
            assert_eq!(target, "worker-1");
            assert!((5..=60).contains(&hold.as_secs()), "{hold:?}");
            assert!(at + hold <= Duration::from_secs(600), "{at:?} + {hold:?}");
        }
    }
}
