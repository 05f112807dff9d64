//! Turning [`Settings`] into the engine's pieces. Shared by every command
//! that runs a node, so each role is configured the same way everywhere.

use dts_config::Containment;
use dts_config::Settings;
use dts_engine::Topics;
use dts_engine::scheduler::SchedulerSettings;
use dts_engine::schedules::ScheduleSettings;
use dts_engine::submit::SubmitSettings;
use dts_engine::sweeper::SweeperSettings;
use dts_engine::worker::{WorkerSettings, default_worker_id};
use dts_executor::{ContainmentChoice, ExecSettings, IsolationSettings};
use dts_model::SubmitLimits;

/// The three topics, as `pubsub.*` names them.
pub fn topics(settings: &Settings) -> Topics {
    Topics {
        tasks: settings.pubsub.topic.clone(),
        shards: settings.pubsub.task_shard_topic.clone(),
        results: settings.pubsub.result_topic.clone(),
    }
}

/// What a submitted task may ask for (`limits.*`, `executor.*`).
pub fn submit_limits(settings: &Settings) -> SubmitLimits {
    SubmitLimits {
        max_items: settings.limits.max_items,
        max_item_bytes: settings.limits.max_item_bytes,
        max_template_bytes: settings.limits.max_template_bytes,
        max_timeout_secs: settings.executor.max_timeout.as_secs(),
        default_timeout_secs: settings.executor.default_timeout.as_secs(),
        max_retries: settings.executor.max_retries,
        max_variables_bytes: settings.limits.max_variables_bytes,
        max_memory_mb: settings.limits.max_memory_mb,
        max_cpus: settings.limits.max_cpus,
    }
}

/// How the submitter publishes (`pubsub.submit-*`).
pub fn submit_settings(settings: &Settings) -> SubmitSettings {
    SubmitSettings {
        attempts: settings.pubsub.submit_attempts,
        wait: settings.pubsub.submit_timeout,
        lease_ttl: settings.worker.heartbeat_ttl,
        ..SubmitSettings::default()
    }
}

/// How the scheduler consumes tasks and plans shards.
pub fn scheduler_settings(settings: &Settings) -> SchedulerSettings {
    SchedulerSettings {
        topics: topics(settings),
        group: settings.pubsub.consumer_group.clone(),
        consumers: settings.pubsub.consumer_count,
        oversplit: settings.scheduler.oversplit,
        ..SchedulerSettings::default()
    }
}

/// How often the sweeper looks for stuck and overdue tasks.
pub fn sweeper_settings(settings: &Settings) -> SweeperSettings {
    SweeperSettings {
        interval: settings.scheduler.sweep_interval,
        republish_after: settings.scheduler.republish_after,
        schedules: ScheduleSettings {
            missed_after: settings.scheduler.schedule_missed_after,
            limits: submit_limits(settings),
            ..ScheduleSettings::default()
        },
        ..SweeperSettings::default()
    }
}

/// This machine's worker: its id, cores, labels and timings.
pub fn worker_settings(settings: &Settings) -> WorkerSettings {
    let id = settings.worker.id.clone().unwrap_or_else(default_worker_id);
    let cores = u32::try_from(settings.worker.effective_cores()).unwrap_or(u32::MAX);
    WorkerSettings {
        topics: topics(settings),
        heartbeat_interval: settings.worker.heartbeat_interval,
        heartbeat_ttl: settings.worker.heartbeat_ttl,
        shard_attempts: settings.worker.shard_attempts,
        drain_grace: settings.worker.drain_grace,
        labels: settings.worker.labels.clone(),
        speculation_factor: settings.scheduler.speculation_factor,
        speculation_min: settings.scheduler.speculation_min,
        ..WorkerSettings::new(id, cores)
    }
}

/// Whose items a worker runs, which decides how they are isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Items {
    /// A service's (`dts up`, `dts worker`): anyone allowed to submit runs
    /// code here, so items run as `executor.run-as` (`nobody` for a root
    /// dts) in private directories.
    Service,
    /// The caller's own (`dts run`, like GNU parallel): items run as the
    /// caller, where it was started.
    Caller,
}

/// What the dts process was started with that its items get back. Setting
/// up the process (raising limits, hardening) is the binary's business, not
/// a library's, so the binary says what it found before changing anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inherited {
    /// The open-files soft limit before dts raised its own; `None` leaves
    /// items dts's limit.
    pub open_files: Option<u64>,
}

/// How `items` run on this machine (`executor.*`).
pub fn exec_settings(settings: &Settings, items: Items, inherited: Inherited) -> ExecSettings {
    let executor = &settings.executor;
    let isolation = IsolationSettings {
        run_as: match items {
            Items::Service => executor.run_as.clone().or_else(default_run_as),
            Items::Caller => None,
        },
        private_workdir: items == Items::Service,
        scratch_root: executor.scratch_root.clone(),
        containment: match executor.containment {
            Containment::Auto => ContainmentChoice::Auto,
            Containment::Cgroup => ContainmentChoice::Cgroup,
            Containment::Subreaper => ContainmentChoice::Subreaper,
        },
    };
    ExecSettings {
        output_cap_bytes: executor.output_cap_bytes,
        kill_grace: executor.kill_grace,
        env_allow: executor.env_allow.clone(),
        workdir: executor.workdir.clone(),
        warm_shell: executor.warm_shell,
        isolation,
        items_open_files: inherited.open_files,
    }
}

/// The service modes' items run as `nobody` when dts runs as root, and as
/// dts's own user otherwise.
fn default_run_as() -> Option<String> {
    running_as_root().then(|| "nobody".to_owned())
}

/// Whether dts runs as root (its effective user).
pub(crate) fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
