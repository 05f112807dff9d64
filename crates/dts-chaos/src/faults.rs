//! Faults on a schedule fixed by the seed: SIGKILL of a dts process (started
//! again after a short delay), SIGSTOP then SIGCONT, a Redis restart and,
//! when asked for, a broker restart. Each is logged with when it started
//! and when it ended, for the checker's rules and for a replay.

use crate::cluster::{Cluster, Node, Role, lock};
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
    /// Redis stopped (SIGTERM: AOF flushed) and started again 1–5 s later.
    RedisRestart,
    /// The broker stopped and started again 1–5 s later.
    BrokerRestart,
    /// A worker cut off from Redis or the broker (not built yet).
    Partition,
    /// `dts up`'s data directory's disk (a 32 MB tmpfs) filled for
    /// 5–30 s (root only).
    FullDisk,
}

impl FaultKind {
    /// Every kind, in the report's order.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Stop,
        FaultKind::RedisRestart,
        FaultKind::BrokerRestart,
        FaultKind::Partition,
        FaultKind::FullDisk,
    ];
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::Kill => "SIGKILL + restart",
            FaultKind::Stop => "SIGSTOP/SIGCONT",
            FaultKind::RedisRestart => "Redis restart",
            FaultKind::BrokerRestart => "broker restart",
            FaultKind::Partition => "partition",
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

/// The kinds a run injects.
#[derive(Debug, Clone)]
pub struct Kinds {
    /// Broker restarts: only with durable broker storage, since the test
    /// broker keeps its log in memory and a restart loses every topic.
    pub broker_restart: bool,
    /// Full disks under `dts up` (root: its data directory is a tmpfs).
    pub full_disk: bool,
}

/// The schedule for `length`: a fault every 4–15 s on a node, Redis or the
/// broker, and a full disk every 20–60 s when allowed, drawn from `seed`
/// (streams of their own, apart from the workload's).
pub fn plan(seed: u64, length: Duration, nodes: &[String], kinds: &Kinds) -> Vec<FaultPlan> {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x5eed_fa17);
    let mut plans = Vec::new();
    let mut at = Duration::from_secs(rng.random_range(3..=8));
    // ends: `at` grows by at least 4 s a turn.
    while at < length {
        let roll = rng.random_range(0..100);
        // The same draws whatever the kinds allowed, so a seed's schedule
        // differs only where a kind is on or off.
        let node = nodes[rng.random_range(0..nodes.len())].clone();
        let short = Duration::from_millis(rng.random_range(1000..=5000));
        let long = Duration::from_millis(rng.random_range(1000..=20_000));
        let (kind, target, hold) = match roll {
            0..40 => (FaultKind::Kill, node, short),
            40..75 => (FaultKind::Stop, node, long),
            75..90 => (FaultKind::RedisRestart, "redis".to_string(), short),
            _ if kinds.broker_restart => (FaultKind::BrokerRestart, "broker".to_string(), short),
            _ => (FaultKind::Kill, node, short),
        };
        plans.push(FaultPlan {
            at,
            kind,
            target,
            hold,
        });
        at += Duration::from_millis(rng.random_range(4000..=15_000));
    }
    // Full disks on a schedule of their own, so that running as root
    // (which allows them) leaves the other faults' schedule unchanged.
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
        plans.sort_by_key(|plan| plan.at);
    }
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
            Some(disk) => {
                let file = disk.fill();
                tokio::time::sleep(fault.hold).await;
                disk.drain(&file);
                Ok(())
            }
            None => Err("there is no small disk to fill".to_string()),
        },
        (FaultKind::Kill, Some(node)) => {
            let victim = node.clone();
            blocking(move || lock(&victim).kill9()).await;
            tokio::time::sleep(fault.hold).await;
            blocking_result(move || restart(&node)).await
        }
        (FaultKind::Stop, Some(node)) => {
            lock(&node).signal(libc::SIGSTOP);
            tokio::time::sleep(fault.hold).await;
            lock(&node).signal(libc::SIGCONT);
            Ok(())
        }
        (FaultKind::RedisRestart, _) => restart_service(&cluster, Service::Redis, fault.hold).await,
        (FaultKind::BrokerRestart, _) => {
            restart_service(&cluster, Service::Broker, fault.hold).await
        }
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
    if let Err(e) = outcome {
        state.violations.push(format!("{record}: {e}"));
    }
    state.faults.push(record);
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

#[derive(Clone, Copy)]
enum Service {
    Redis,
    Broker,
}

/// Stops a service, waits `hold`, and starts it again on the same port.
async fn restart_service(
    cluster: &Arc<Cluster>,
    service: Service,
    hold: Duration,
) -> Result<(), String> {
    let c = cluster.clone();
    catch(
        move || match service {
            Service::Redis => lock(&c.services.redis).stop(),
            Service::Broker => lock(&c.services.broker).stop(),
        },
        "stopping",
    )
    .await?;
    tokio::time::sleep(hold).await;
    let c = cluster.clone();
    catch(
        move || match service {
            Service::Redis => lock(&c.services.redis).restart(),
            Service::Broker => lock(&c.services.broker).restart(),
        },
        "restarting",
    )
    .await
}

/// Runs a test kit restart, which panics when the server does not come
/// back, and makes that panic an error.
async fn catch(f: impl FnOnce() + Send + 'static, what: &str) -> Result<(), String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("{what} the service failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64, kinds: &Kinds) -> Vec<(Duration, FaultKind, String, Duration)> {
        let nodes: Vec<String> = ["server-1", "worker-1", "up"].map(String::from).to_vec();
        plan(seed, Duration::from_secs(600), &nodes, kinds)
            .into_iter()
            .map(|f| (f.at, f.kind, f.target, f.hold))
            .collect()
    }

    #[test]
    fn a_seed_gives_the_same_schedule_and_full_disks_only_add_to_it() {
        let plain = Kinds {
            broker_restart: false,
            full_disk: false,
        };
        let root = Kinds {
            full_disk: true,
            ..plain.clone()
        };
        assert_eq!(schedule(14, &plain), schedule(14, &plain));
        assert_ne!(schedule(14, &plain), schedule(15, &plain));
        let with_disks = schedule(14, &root);
        let others: Vec<_> = with_disks
            .iter()
            .filter(|f| f.1 != FaultKind::FullDisk)
            .cloned()
            .collect();
        assert_eq!(others, schedule(14, &plain));
        assert!(with_disks.iter().any(|f| f.1 == FaultKind::FullDisk));
    }
}
