//! Redis Sentinel in distributed mode, with real processes: a primary with
//! AOF, a replica and three sentinels (dts-testkit), a broker, one
//! `dts server` and two `dts worker`s, configured with
//! `spring.redis.sentinel.*` only. Redis fails over mid-task, on request
//! and by a killed primary; the task still completes with exact counts.

use crate::common::{Api, DtsUp, shared_dir, task};
use crate::distributed::{Worker, wait_for_workers};
use dts_testkit::{Broker, RedisSentinel};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// Items per task: enough that a failover lands mid-task.
const ITEMS: usize = 300;

/// A Sentinel-watched Redis and a broker, and how to point dts at them.
struct SentinelCluster {
    redis: RedisSentinel,
    broker: Broker,
    dir: TempDir,
}

impl SentinelCluster {
    fn start() -> SentinelCluster {
        SentinelCluster {
            redis: RedisSentinel::start(),
            broker: Broker::start(),
            dir: TempDir::new().expect("temp dir"),
        }
    }

    /// Where Kafka and the sentinels are. `spring.redis.host` and `port`
    /// point at nothing, so a dts that ignored the sentinels would fail.
    fn node_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("pubsub.namespace={}", self.broker.bootstrap()),
            "spring.redis.host=127.0.0.1".to_string(),
            "spring.redis.port=1".to_string(),
            format!("spring.redis.sentinel.master={}", self.redis.master_name()),
            format!(
                "spring.redis.sentinel.nodes={}",
                self.redis.sentinel_nodes()
            ),
            "worker.heartbeat-interval-ms=500".to_string(),
            "worker.heartbeat-ttl-ms=3000".to_string(),
        ];
        for (key, value) in Broker::client_settings() {
            args.push(format!("pubsub.kafka.{key}={value}"));
        }
        args.into_iter()
            .flat_map(|kv| ["--set".to_string(), kv])
            .collect()
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn server(&self) -> DtsUp {
        DtsUp::server(&self.node_args(), &[], self.log("server"))
    }

    fn worker(&self, id: &str) -> Worker {
        Worker::spawn(id, 2, self.node_args(), &[], &self.log(id))
    }

    fn log_text(&self, name: &str) -> String {
        std::fs::read_to_string(self.log(name)).unwrap_or_default()
    }
}

/// A task whose items each append their input to `side` (one line per
/// run), take a little while, and print their input.
fn side_effect_task(side: &Path) -> Value {
    let inputs: Vec<String> = (0..ITEMS).map(|i| format!("item-{i}")).collect();
    task(
        &format!("echo \"$1\" >> {}; sleep 0.1; echo \"$1\"", side.display()),
        &inputs,
    )
}

/// Asserts the task completed with one result per item and exact counts,
/// and returns how often each item ran, by the side-effect file.
async fn assert_exact_and_count_runs(api: &Api, id: &str, side: &Path) -> BTreeMap<String, usize> {
    let done = api.wait_ended(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["itemsTotal"], ITEMS as u64);
    assert_eq!(done["itemsSucceeded"], ITEMS as u64, "{done}");
    assert_eq!(done["itemsFailed"], 0, "{done}");
    assert_eq!(done["chunksExecuted"], done["chunksToExecute"], "{done}");
    let results = api.all_results(id, "").await;
    assert_eq!(results.len(), ITEMS);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i as u64, "one result per item, in order");
        assert_eq!(result["stdout"], format!("item-{i}\n"), "{result}");
    }
    let mut runs = BTreeMap::new();
    for line in std::fs::read_to_string(side)
        .expect("the side-effect file")
        .lines()
    {
        *runs.entry(line.to_string()).or_insert(0) += 1;
    }
    for i in 0..ITEMS {
        assert!(
            runs.contains_key(&format!("item-{i}")),
            "item-{i} never ran"
        );
    }
    assert_eq!(runs.len(), ITEMS, "only the task's items ran: {runs:?}");
    runs
}

/// Asserts the task has not ended yet: the failover happened mid-task.
async fn assert_mid_task(api: &Api, id: &str) {
    let now = api
        .wait_task(id, "readable after the failover", |_| true)
        .await;
    assert_eq!(
        now["status"], "INPROGRESS",
        "the task ended before the failover: {now}"
    );
}

/// A server and two workers on the cluster, running the side-effect task,
/// a fifth of whose items are done.
struct RunningTask {
    server: DtsUp,
    _workers: [Worker; 2],
    id: String,
    side: PathBuf,
    /// Where the side effects go; kept until the test ends.
    files: TempDir,
}

impl RunningTask {
    async fn start(cluster: &SentinelCluster) -> RunningTask {
        let server = cluster.server();
        let workers = [cluster.worker("a"), cluster.worker("b")];
        wait_for_workers(&server, 2).await;
        let files = shared_dir();
        let side = files.path().join("ran");
        let id = server.submit(side_effect_task(&side)).await;
        server
            .wait_task(&id, "a fifth done", |t| {
                t["itemsSucceeded"].as_u64().unwrap_or(0) >= (ITEMS / 5) as u64
            })
            .await;
        RunningTask {
            server,
            _workers: workers,
            id,
            side,
            files,
        }
    }
}

/// Items that ran more than once, as `item (runs)`.
fn reruns(runs: &BTreeMap<String, usize>) -> Vec<String> {
    runs.iter()
        .filter(|(_, n)| **n > 1)
        .map(|(item, n)| format!("{item} ({n})"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_failed_over_through_sentinel_mid_task_completes_with_exact_counts() {
    let mut cluster = SentinelCluster::start();
    let running = RunningTask::start(&cluster).await;
    let (server, id, side) = (&running.server, &running.id, running.side.clone());
    let before = cluster.redis.primary_port();
    let after = tokio::task::block_in_place(|| cluster.redis.failover());
    assert_ne!(before, after);
    eprintln!("failed over from port {before} to {after}");
    assert_mid_task(server, id).await;

    let runs = assert_exact_and_count_runs(server, id, &side).await;
    let again = reruns(&runs);
    eprintln!("{} items ran again: {again:?}", again.len());
    // The old primary took writes until the sentinels turned it into a
    // replica: items whose results it alone had run again
    // (docs/configuration.md, "Redis Sentinel"). Never all of them.
    assert!(again.len() < ITEMS / 2, "{again:?}");
    for name in ["server", "a", "b"] {
        assert!(
            cluster
                .log_text(name)
                .contains("Redis failed over to a new primary"),
            "{name} did not follow the failover:\n{}",
            cluster.log_text(name)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_redis_primary_is_killed_mid_task_completes_with_exact_counts_on_the_replica()
{
    let mut cluster = SentinelCluster::start();
    let running = RunningTask::start(&cluster).await;
    let (server, id, side) = (&running.server, &running.id, running.side.clone());
    let before = cluster.redis.primary_port();
    let killed = cluster.redis.kill_primary();
    let after = tokio::task::block_in_place(|| cluster.redis.wait_for_new_primary(before));
    eprintln!("killed node {killed} (port {before}); the sentinels promoted port {after}");
    assert_mid_task(server, id).await;

    let runs = assert_exact_and_count_runs(server, id, &side).await;
    let again = reruns(&runs);
    eprintln!("{} items ran again: {again:?}", again.len());
    assert!(again.len() < ITEMS / 2, "{again:?}");

    // The killed primary comes back as a replica, and dts stays on the new one.
    tokio::task::block_in_place(|| cluster.redis.restart(killed));
    let next = server
        .submit(side_effect_task(&running.files.path().join("next")))
        .await;
    assert_exact_and_count_runs(server, &next, &running.files.path().join("next")).await;
    assert_eq!(cluster.redis.primary_port(), after);
}
