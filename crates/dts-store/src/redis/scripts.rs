//! The Lua scripts that make each multi-key change one atomic step.
//!
//! Redis runs a script without interleaving any other command, so a script
//! that reads the task, checks it and writes is what a transaction is in
//! SQLite. [`::redis::Script`] sends `EVALSHA` and loads the script again
//! when the server answers `NOSCRIPT` (after a restart, say).
//!
//! Scripts that touch item results share `lua/results_prelude.lua` (the two
//! results layouts and their helpers); scripts that change a task share
//! `lua/task_prelude.lua` after it: the KEYS layout
//! of [`super::keys::Keys::task_script`], the status sets passed in from Rust
//! (the rules themselves stay in `dts-model`), and helpers to move a task
//! between status indexes, start its retention clock and upsert results.
//! Scripts that touch shard leases share `lua/lease_prelude.lua` (the
//! lease hash's fields); task scripts get it after the task prelude. Every
//! script that reads Redis's clock or stores whole numbers starts with
//! `lua/clock_prelude.lua`.

use ::redis::Script;
use std::sync::LazyLock;

const CLOCK_PRELUDE: &str = include_str!("lua/clock_prelude.lua");
const RESULTS_PRELUDE: &str = include_str!("lua/results_prelude.lua");
const TASK_PRELUDE: &str = include_str!("lua/task_prelude.lua");
const LEASE_PRELUDE: &str = include_str!("lua/lease_prelude.lua");

/// Every script, hashed once per process.
pub(super) struct Scripts {
    pub(super) insert_task: Script,
    pub(super) transition: Script,
    pub(super) save_plan: Script,
    pub(super) record_results: Script,
    pub(super) complete_shard: Script,
    pub(super) claim_shard: Script,
    pub(super) claim_ready_shard: Script,
    pub(super) claim_copy: Script,
    pub(super) copy_state: Script,
    pub(super) runnable_tasks: Script,
    pub(super) renew_leases: Script,
    pub(super) release_shard: Script,
    pub(super) live_leases: Script,
    pub(super) mark_item_started: Script,
    pub(super) results_page: Script,
    pub(super) recorded_indices: Script,
    pub(super) read_inputs: Script,
    pub(super) prune_ended: Script,
    pub(super) delete_task: Script,
    pub(super) retry_task: Script,
    pub(super) heartbeat: Script,
    pub(super) live_workers: Script,
    pub(super) fill_ids: Script,
    pub(super) claim_completions: Script,
    pub(super) ack_completion: Script,
    pub(super) insert_schedule: Script,
    pub(super) update_schedule: Script,
    pub(super) delete_schedule: Script,
    pub(super) claim_reduce: Script,
    pub(super) finish_reduce: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    insert_task: task_script(include_str!("lua/insert_task.lua")),
    transition: task_script(include_str!("lua/transition.lua")),
    save_plan: task_script(include_str!("lua/save_plan.lua")),
    record_results: task_script(include_str!("lua/record_results.lua")),
    complete_shard: task_script(include_str!("lua/complete_shard.lua")),
    claim_shard: task_script(include_str!("lua/claim_shard.lua")),
    claim_ready_shard: task_script(include_str!("lua/claim_ready_shard.lua")),
    claim_copy: task_script(include_str!("lua/claim_copy.lua")),
    copy_state: task_script(include_str!("lua/copy_state.lua")),
    runnable_tasks: clock_script(include_str!("lua/runnable_tasks.lua")),
    renew_leases: lease_script(include_str!("lua/renew_leases.lua")),
    release_shard: lease_script(include_str!("lua/release_shard.lua")),
    live_leases: clock_script(include_str!("lua/live_leases.lua")),
    mark_item_started: task_script(include_str!("lua/mark_item_started.lua")),
    results_page: results_script(include_str!("lua/results_page.lua")),
    recorded_indices: results_script(include_str!("lua/recorded_indices.lua")),
    read_inputs: Script::new(include_str!("lua/read_inputs.lua")),
    prune_ended: clock_script(include_str!("lua/prune_ended.lua")),
    delete_task: task_script(include_str!("lua/delete_task.lua")),
    retry_task: task_script(include_str!("lua/retry_task.lua")),
    heartbeat: clock_script(include_str!("lua/heartbeat.lua")),
    live_workers: clock_script(include_str!("lua/live_workers.lua")),
    fill_ids: Script::new(include_str!("lua/fill_ids.lua")),
    claim_completions: clock_script(include_str!("lua/claim_completions.lua")),
    ack_completion: Script::new(include_str!("lua/ack_completion.lua")),
    insert_schedule: Script::new(include_str!("lua/insert_schedule.lua")),
    update_schedule: Script::new(include_str!("lua/update_schedule.lua")),
    delete_schedule: Script::new(include_str!("lua/delete_schedule.lua")),
    claim_reduce: clock_script(include_str!("lua/claim_reduce.lua")),
    finish_reduce: task_script(include_str!("lua/finish_reduce.lua")),
});

fn task_script(body: &str) -> Script {
    Script::new(&format!(
        "{CLOCK_PRELUDE}\n{RESULTS_PRELUDE}\n{TASK_PRELUDE}\n{LEASE_PRELUDE}\n{body}"
    ))
}

fn results_script(body: &str) -> Script {
    Script::new(&format!("{CLOCK_PRELUDE}\n{RESULTS_PRELUDE}\n{body}"))
}

fn lease_script(body: &str) -> Script {
    Script::new(&format!("{CLOCK_PRELUDE}\n{LEASE_PRELUDE}\n{body}"))
}

fn clock_script(body: &str) -> Script {
    Script::new(&format!("{CLOCK_PRELUDE}\n{body}"))
}
