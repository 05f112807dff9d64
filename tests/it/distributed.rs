//! Distributed mode end to end with real processes: Redis, a Kafka-protocol
//! broker, `dts server`s (behind a real nginx) and `dts worker`s.

use crate::common::{Api, DEADLINE, DtsUp, items, spawn_until, task};
use crate::seed_api::urlencode;
use dts_testkit::{Broker, Nginx, RedisServer};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Redis and a broker, and how to point dts processes at them.
pub struct Cluster {
    pub redis: RedisServer,
    pub broker: Broker,
    dir: TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster {
            redis: RedisServer::start(),
            broker: Broker::start(),
            dir: TempDir::new().expect("temp dir"),
        }
    }

    /// A cluster whose broker keeps its log in durable storage, so it can
    /// be restarted for real.
    pub fn start_durable() -> Cluster {
        Cluster {
            redis: RedisServer::start(),
            broker: Broker::start_durable(),
            dir: TempDir::new().expect("temp dir"),
        }
    }

    /// Flags every node gets: where Kafka and Redis are, and the short group
    /// timeouts the test broker needs.
    pub fn node_args(&self) -> Vec<String> {
        self.args(true)
    }

    /// Where Kafka and Redis are; with `short_groups`, the short group
    /// timeouts the test broker is fastest with, else dts's defaults.
    pub fn args(&self, short_groups: bool) -> Vec<String> {
        let mut args = vec![
            format!("pubsub.namespace={}", self.broker.bootstrap()),
            "spring.redis.host=127.0.0.1".to_string(),
            format!("spring.redis.port={}", self.redis.port()),
            "worker.heartbeat-interval-ms=500".to_string(),
            "worker.heartbeat-ttl-ms=3000".to_string(),
            // nginx (dts-testkit) passes on its upstream's name as the Host.
            "server.allowed-hosts=dts".to_string(),
        ];
        if short_groups {
            for (key, value) in Broker::client_settings() {
                args.push(format!("pubsub.kafka.{key}={value}"));
            }
        }
        args.into_iter()
            .flat_map(|kv| ["--set".to_string(), kv])
            .collect()
    }

    /// Reads `topic` as an outside consumer would: its own `group`, plain
    /// Kafka client settings (the broker's short group timeouts only).
    /// Returns the client too, for the caller to shut down.
    pub async fn outside_reader(
        &self,
        topic: &str,
        group: &str,
    ) -> (dts_bus::kafka::KafkaBus, Box<dyn dts_bus::Subscription>) {
        use dts_bus::Bus;
        use dts_bus::kafka::{KafkaBus, KafkaSettings};
        let mut settings = KafkaSettings::new(self.broker.bootstrap());
        settings.client = Broker::client_settings()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let bus = KafkaBus::connect(settings)
            .await
            .expect("connect to the broker");
        let subscription = bus
            .subscribe(topic, group)
            .await
            .unwrap_or_else(|e| panic!("subscribe to {topic}: {e}"));
        (bus, subscription)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    pub fn server(&self, name: &str) -> DtsUp {
        DtsUp::server(&self.node_args(), &[], self.log(name))
    }

    pub fn worker(&self, id: &str, cores: u32) -> Worker {
        self.worker_with(id, cores, self.node_args(), &[])
    }

    /// A worker with these node arguments and environment.
    pub fn worker_with(
        &self,
        id: &str,
        cores: u32,
        node_args: Vec<String>,
        env: &[(&str, &str)],
    ) -> Worker {
        Worker::spawn(id, cores, node_args, env, &self.log(id))
    }
}

/// A running `dts worker`, killed when dropped.
pub struct Worker {
    child: Child,
}

impl Worker {
    /// Starts `dts worker` with these node arguments (where Redis and Kafka
    /// are), logging to `log`; returns once it says it runs.
    pub fn spawn(
        id: &str,
        cores: u32,
        node_args: Vec<String>,
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Worker {
        let mut args = vec![
            "worker".to_string(),
            "--id".into(),
            id.into(),
            "--cores".into(),
            cores.to_string(),
        ];
        args.extend(node_args);
        let (child, _) = spawn_until(&args, env, log, "dts worker ");
        Worker { child }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends `signal` (SIGSTOP and SIGCONT freeze and thaw it).
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit (killed and failed at the deadline).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        dts_testkit::wait_for_exit(&mut self.child, DEADLINE, "the worker after SIGTERM")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the API lists exactly `n` live workers.
pub async fn wait_for_workers(api: &Api, n: usize) {
    dts_testkit::wait_for(DEADLINE, &format!("{n} live workers"), || async {
        let (_, workers) = api.get("/v1/workers").await;
        if workers.as_array().map(|w| w.len()) == Some(n) {
            Ok(())
        } else {
            Err(workers)
        }
    })
    .await
}

/// The distinct workers that ran a task's items.
pub fn workers_of(results: &[Value]) -> BTreeSet<String> {
    results
        .iter()
        .map(|r| r["worker"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tasks_through_nginx_complete_exactly_spread_over_three_workers() {
    let cluster = Cluster::start();
    let a = cluster.server("server-a");
    let b = cluster.server("server-b");
    let nginx = Nginx::start(&[
        a.base.trim_start_matches("http://").to_string(),
        b.base.trim_start_matches("http://").to_string(),
    ]);
    let front = Api::at(nginx.url());
    let _w1 = cluster.worker("w1", 1);
    let _w2 = cluster.worker("w2", 2);
    // One worker runs its items in warm shells: their results are checked
    // like the others'.
    let mut warm_args = cluster.node_args();
    warm_args.push("--warm-shell".into());
    let _w3 = cluster.worker_with("w3", 3, warm_args, &[]);
    wait_for_workers(&front, 3).await;

    let inputs = items(500);
    let submissions = (0..20).map(|n| {
        let front = Api::at(nginx.url());
        let inputs = inputs.clone();
        tokio::spawn(async move {
            let template = format!("echo \"task{n}:$1\"");
            if n % 2 == 0 {
                front.submit(task(&template, &inputs)).await
            } else {
                let form = format!(
                    "templateFunction={}&inputList={}",
                    urlencode(&template),
                    urlencode(&inputs.join(","))
                );
                let (status, created) = front.post_form("/schedule/create", &form).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{created}");
                created["id"].as_str().unwrap().to_string()
            }
        })
    });
    let started = Instant::now();
    let ids: Vec<String> = futures::future::join_all(submissions)
        .await
        .into_iter()
        .map(|r| r.expect("submission task"))
        .collect();

    let mut spread = BTreeMap::new();
    let mut everyone = BTreeSet::new();
    for (n, id) in ids.iter().enumerate() {
        let done = front.wait_ended(id).await;
        assert_eq!(done["status"], "COMPLETED", "task {n}: {done}");
        assert_eq!(done["itemsTotal"], 500);
        assert_eq!(done["itemsSucceeded"], 500);
        assert_eq!(done["itemsFailed"], 0);
        assert_eq!(done["chunksExecuted"], done["chunksToExecute"]);

        let results = front.all_results(id, "").await;
        assert_eq!(results.len(), 500, "task {n}");
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r["index"], i as u64);
            assert_eq!(r["stdout"], format!("task{n}:item-{i}\n"));
        }
        let ran = workers_of(&results);
        everyone.extend(ran.iter().cloned());
        spread.insert(n, ran.len());

        // Either server answers the same.
        let from_a = a.task(id).await;
        let from_b = b.task(id).await;
        assert_eq!(
            from_a, from_b,
            "task {n} reads differently from the two servers"
        );
    }
    let elapsed = started.elapsed();
    eprintln!(
        "20 tasks x 500 items through nginx: all completed and checked in {:.1} s ({:.0} items/s); tasks on all three workers: {on_all_three}",
        elapsed.as_secs_f64(),
        10_000.0 / elapsed.as_secs_f64(),
        on_all_three = spread.values().filter(|n| **n == 3).count(),
    );
    assert_eq!(
        everyone,
        ["w1", "w2", "w3"].map(String::from).into_iter().collect(),
        "every worker ran items"
    );
    // Workers claim shards as their cores free up (late binding), so how a
    // task's shards fall across the workers depends on their timing; on a
    // loaded 2-core machine one worker may take a whole small task. What a
    // user relies on is that tasks do not stick to one worker; how evenly
    // they spread is measured by the benchmark (docs/scheduling.md).
    let on_two_or_more = spread.values().filter(|n| **n >= 2).count();
    assert!(
        on_two_or_more >= 10,
        "shards of most tasks should run on more than one worker: {spread:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_with_no_worker_waits_and_completes_when_one_starts() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let id = server.submit(task("echo \"$1\"", &items(50))).await;
    server
        .wait_task(&id, "planned", |t| t["status"] == "INPROGRESS")
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waiting = server.task(&id).await;
    assert_eq!(
        waiting["itemsSucceeded"], 0,
        "nothing can run without a worker: {waiting}"
    );

    let _worker = cluster.worker("late", 2);
    let done = server.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["itemsSucceeded"], 50);
    assert_eq!(
        workers_of(&server.all_results(&id, "").await),
        ["late".to_string()].into_iter().collect()
    );

    // A third party reading the result topic sees the completion as JSON.
    let event = completion_event(&cluster, &id).await;
    assert_eq!(event["status"], "COMPLETED", "{event}");
    assert_eq!(event["itemsTotal"], 50);
    assert_eq!(event["itemsSucceeded"], 50);
    assert_eq!(event["itemsFailed"], 0);
    assert!(event["finishedAt"].is_string(), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_announces_its_end_on_the_result_topic() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    // No worker: the task waits, planned, until the cancel ends it.
    let id = server.submit(task("echo \"$1\"", &items(5))).await;
    server
        .wait_task(&id, "planned", |t| t["status"] == "INPROGRESS")
        .await;

    let (status, cancelled) = server
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");

    let event = completion_event(&cluster, &id).await;
    assert_eq!(event["status"], "CANCELLED", "{event}");
    assert_eq!(event["itemsTotal"], 5);
    assert_eq!(event["itemsSucceeded"], 0);
    assert_eq!(event["itemsFailed"], 0);
}

/// Reads the result topic as an outside consumer would (its own group, plain
/// Kafka client settings) until the event for `task` arrives.
async fn completion_event(cluster: &Cluster, task: &str) -> Value {
    let (bus, mut events) = cluster
        .outside_reader("distributed_task_completed", "third-party-reader")
        .await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let delivery = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("no completion event for {task} within {DEADLINE:?}"))
            .expect("a delivery");
        let event: Value = serde_json::from_slice(&delivery.payload).expect("the event is JSON");
        delivery.ack().await.expect("ack");
        if event["taskId"] == task {
            bus.shutdown(Duration::from_secs(5)).await;
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_after_submission_picks_up_shards() {
    let cluster = Cluster::start();
    // Many small shards, so some still wait on the bus when the second
    // worker arrives (the first holds at most two at a time).
    let mut args = cluster.node_args();
    args.extend(["--set".to_string(), "scheduler.oversplit=10".to_string()]);
    let server = DtsUp::server(&args, &[], cluster.log("server"));
    let _first = cluster.worker("first", 1);
    wait_for_workers(&server, 1).await;
    // About 8 s of work for one core.
    let id = server
        .submit(task("sleep 0.1; echo \"$1\"", &items(80)))
        .await;
    server
        .wait_task(&id, "started", |t| {
            t["itemsSucceeded"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    let _second = cluster.worker("second", 2);

    let done = server.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["itemsSucceeded"], 80);
    let results = server.all_results(&id, "").await;
    assert_eq!(results.len(), 80);
    let ran = workers_of(&results);
    assert!(
        ran.contains("second"),
        "the late worker ran nothing: {ran:?}"
    );
}

#[tokio::test]
async fn a_server_fails_fast_with_a_clear_message_when_redis_or_kafka_is_down() {
    let cluster = Cluster::start();
    let dead_port = dts_testkit::free_port().to_string();
    for (what, key, expected) in [
        ("redis", "spring.redis.port", "Redis"),
        ("kafka", "pubsub.namespace", "Kafka"),
    ] {
        let mut args = vec!["server".to_string(), "--port".into(), "0".into()];
        args.extend(cluster.node_args());
        let value = if what == "kafka" {
            format!("127.0.0.1:{dead_port}")
        } else {
            dead_port.clone()
        };
        args.extend(["--set".to_string(), format!("{key}={value}")]);
        let started = Instant::now();
        let output = crate::common::run_dts(
            std::process::Command::new(crate::common::dts_binary()).args(&args),
        );
        assert!(!output.status.success(), "{what}: started anyway");
        // What "fails fast" means here: it gives up on the first refused
        // connection rather than retrying; 30 s is room for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: took {:?}",
            started.elapsed()
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(expected) && stderr.contains(&dead_port),
            "{what}: {stderr}"
        );
    }
}
