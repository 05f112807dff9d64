//! The chaos soak (issue 14): a real dts cluster under a steady, seeded
//! stream of tasks and a seeded schedule of faults, then an independent
//! checker of what must hold whatever the faults.
//!
//! - [`cluster`]: Redis, the broker, 2 `dts server`s, 3 `dts worker`s and
//!   one `dts up`, each a process the faults can kill, freeze and restart;
//! - [`workload`]: the tasks, and the script every item runs, which appends
//!   a start line to a shared log before it does anything else;
//! - [`faults`]: the schedule and the injection, with a log of each fault;
//! - [`probe`]: polls every API every 250 ms and records silences;
//! - [`events`]: reads the result topic as an outside consumer would;
//! - [`checker`]: reads only the API, the start log, `/proc` and those
//!   records, never the store, and lists every violation;
//! - [`report`]: the markdown table.
//!
//! The seed fixes the workload and the fault schedule; a violation prints
//! both so the run can be replayed (`dts-chaos --seed S`).

pub mod api;
pub mod checker;
pub mod cluster;
pub mod events;
pub mod faults;
pub mod netns;
pub mod probe;
pub mod report;
pub mod starts;
pub mod workload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What can stop a soak before its checker runs.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A file or directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A dts process could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which node.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A dts process did not say it was ready in time.
    #[error("{what} did not become ready; its log is {}", log.display())]
    NotReady {
        /// Which node.
        what: String,
        /// Its log.
        log: PathBuf,
    },
    /// A network namespace, veth or address for partitions could not be
    /// made.
    #[error("partitions: {0}")]
    Network(String),
    /// Root-only faults were required but this run cannot inject them.
    #[error("{0}")]
    RootFaultsRequired(String),
}

/// Milliseconds since the Unix epoch: the clock the items' start lines use.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A flag that tells loops to end.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Tells them.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether they were told.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What the workload and the faults record while the soak runs.
#[derive(Debug, Default)]
pub struct State {
    /// Every task an API accepted.
    pub submitted: Vec<workload::Submitted>,
    /// Planned tasks no API accepted within their deadline.
    pub refused: usize,
    /// Every fault injected, when it ended.
    pub faults: Vec<faults::FaultRecord>,
    /// Planned faults skipped because their target was in another fault.
    pub faults_skipped: usize,
    /// Faults a service would not take (a failover Sentinel refused), with
    /// why: not injected, so not in `faults`.
    pub faults_refused: Vec<String>,
    /// Violations found while running (a node that did not come back).
    pub violations: Vec<String>,
}

/// The state, shared by the workload's and the faults' tasks.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    state: Arc<Mutex<State>>,
    stopping: Stop,
}

impl Shared {
    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        cluster::lock(&self.state)
    }

    /// Records a violation.
    pub fn violation(&self, what: String) {
        self.lock().violations.push(what);
    }

    /// Whether the stream has ended.
    pub fn stopping(&self) -> bool {
        self.stopping.is_set()
    }

    fn stop(&self) {
        self.stopping.set();
    }
}

/// How to run a soak.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `dts` binary.
    pub dts: PathBuf,
    /// Fixes the workload and the fault schedule.
    pub seed: u64,
    /// How long tasks keep arriving and faults keep happening.
    pub length: Duration,
    /// How long the checker waits for every task to end.
    pub settle: Duration,
    /// Keep the directory with the nodes' logs.
    pub keep: bool,
}

impl Config {
    /// A soak of `minutes` in all: the stream and the faults for all but the
    /// last half minute, which is for the tasks to end; the checker waits up
    /// to two more minutes before it calls a task stuck.
    pub fn for_minutes(dts: PathBuf, seed: u64, minutes: u64, keep: bool) -> Config {
        let total = Duration::from_secs(minutes.max(1) * 60);
        Config {
            dts,
            seed,
            length: total.saturating_sub(Duration::from_secs(30)),
            settle: Duration::from_secs(150),
            keep,
        }
    }
}

/// Runs a soak and checks it. `Err` only when the cluster could not be set
/// up; violations are in the report.
pub async fn run(config: &Config) -> Result<report::Report, ChaosError> {
    let root_faults = root_faults_absence();
    if let Some(why) = &root_faults {
        if std::env::var_os("DTS_TEST_REQUIRE_ROOT_FAULTS").is_some_and(|v| v == "1") {
            return Err(ChaosError::RootFaultsRequired(format!(
                "DTS_TEST_REQUIRE_ROOT_FAULTS=1, but partitions and full disks are not injected: {why}"
            )));
        }
    }
    let dts = config.dts.clone();
    let keep = config.keep;
    let cluster = tokio::task::spawn_blocking(move || cluster::Cluster::start(&dts, keep))
        .await
        .map_err(|e| {
            ChaosError::RootFaultsRequired(format!("starting the cluster panicked: {e}"))
        })??;
    let cluster = Arc::new(cluster);
    let shared = Shared::default();
    let apis: Vec<api::Api> = cluster
        .apis()
        .iter()
        .map(|(name, base)| api::Api::new(name, base, Duration::from_secs(10)))
        .collect();

    let plans = Arc::new(workload::plan(config.seed, config.length, apis.len()));
    let node_names: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|node| cluster::lock(node).name.clone())
        .collect();
    let kinds = faults::Kinds {
        full_disk: cluster.small_disk.is_some(),
        partitions: cluster.partitions.is_some(),
    };
    let fault_plans = faults::plan(config.seed, config.length, &node_names, &kinds);

    let events = events::Collector::start(cluster.services.bootstrap().to_string());
    let prober = probe::Prober::start(&apis);
    let started = tokio::time::Instant::now();
    let mut running = Vec::new();
    for (index, plan) in plans.iter().enumerate() {
        let (shared, apis, plans, log) = (
            shared.clone(),
            apis.clone(),
            plans.clone(),
            cluster.starts_log.clone(),
        );
        let at = started + plan.at;
        running.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            workload::drive(shared, apis, plans, index, log).await;
        }));
    }
    let busy = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
    for fault in fault_plans.iter().cloned() {
        let (shared, cluster, busy) = (shared.clone(), cluster.clone(), busy.clone());
        let at = started + fault.at;
        running.push(tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            faults::inject(shared, cluster, busy, fault).await;
        }));
    }
    tokio::time::sleep_until(started + config.length).await;
    shared.stop();
    // Every submission, cancel, retry and fault has its own deadline.
    for task in running {
        let _ = task.await;
    }
    let checked = checker::check(&cluster, &apis, &plans, &shared, config.settle, &events).await;
    let silences = prober.stop().await;
    let mut checked = checked;
    checked
        .violations
        .extend(unexplained_silences(&silences, &shared.lock().faults));
    let _ = events.stop().await;
    let report = report::Report::build(
        config,
        &shared,
        &plans,
        checked,
        silences,
        &cluster,
        root_faults,
    );
    Ok(report)
}

/// The longest an API may stay silent when no fault stopped or killed its
/// own node: a Redis restart must give fast 503s, not silence.
pub const SILENCE_BOUND_MS: u64 = 10_000;

/// Silences longer than [`SILENCE_BOUND_MS`] that no kill or freeze of the
/// API's own node overlaps, as violations.
fn unexplained_silences(
    silences: &[probe::Silence],
    faults: &[faults::FaultRecord],
) -> Vec<String> {
    silences
        .iter()
        .filter(|silence| silence.ms() > SILENCE_BOUND_MS)
        .filter(|silence| {
            !faults.iter().any(|f| {
                f.target == silence.api
                    && f.start_ms <= silence.to_ms
                    && f.end_ms >= silence.from_ms
            })
        })
        .map(|silence| {
            format!(
                "{} did not answer for {} ms (from {} to {}) though no fault stopped it",
                silence.api,
                silence.ms(),
                silence.from_ms,
                silence.to_ms
            )
        })
        .collect()
}

/// Why the root-only faults are not injected, or `None` if they are: full
/// disks need a tmpfs mount, partitions network namespaces.
fn root_faults_absence() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "not root: no tmpfs for full disks, no network namespaces for partitions".into(),
        );
    }
    None
}
