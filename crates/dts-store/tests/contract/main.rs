//! The contract every `Store` implementation keeps, written once.
//!
//! Each test (in `activity`, `halt`, `outbox`, `schedules`, `tasks`, `inputs`, `plans`, `results`, `leases`, `queue`, `workers`, `retry`, `reduce`) is a generic async
//! function over a `DynStore`; the `store_contract!` lines at the end of this
//! file run all of them against each backend.
//! A new backend adds one line there, with a factory that gives every test a
//! fresh, empty store (and keeps alive whatever that store needs: a temp dir,
//! a server process). Nothing here may depend on a particular backend.

mod activity;
mod halt;
mod helpers;
mod inputs;
mod leases;
mod outbox;
mod plans;
mod queue;
mod reduce;
mod removal;
mod results;
mod retry;
mod schedules;
mod speculation;
mod tasks;
mod workers;

use activity::*;
use dts_store::{DynStore, RedisSettings, RedisStore, SqliteStore};
use halt::*;
use inputs::*;
use leases::*;
use outbox::*;
use plans::*;
use queue::*;
use reduce::*;
use removal::*;
use results::*;
use retry::*;
use schedules::*;
use speculation::*;
use std::sync::Arc;
use std::time::Duration;
use tasks::*;
use workers::*;

/// A store under test and whatever must live as long as it.
pub struct Fixture {
    store: DynStore,
    _keep: Box<dyn std::any::Any + Send>,
}

impl Fixture {
    pub fn new(store: DynStore) -> Fixture {
        Fixture::keeping(store, ())
    }

    /// A store that needs `keep` (a temp dir, a child process) until the test ends.
    pub fn keeping(store: DynStore, keep: impl std::any::Any + Send) -> Fixture {
        Fixture {
            store,
            _keep: Box::new(keep),
        }
    }
}

/// Runs every contract test against the store `$make` (an async closure
/// returning a [`Fixture`]) in a module named `$backend`.
macro_rules! store_contract {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            contract_tests!(
                $make;
                a_task_and_its_inputs_read_back_exactly_as_inserted,
                a_hundred_thousand_inputs_round_trip,
                input_ranges_at_the_start_middle_and_end_read_exactly_those_inputs,
                a_range_past_the_end_is_clamped_and_one_beyond_it_is_empty,
                a_task_with_no_inputs_reads_an_empty_range,
                inputs_that_are_not_utf8_and_their_results_read_back_exactly,
                input_ranges_of_an_unknown_task_read_as_none,
                a_hundred_thousand_inputs_read_in_guided_ranges_equal_the_whole_list,
                inserting_an_existing_id_is_refused_and_keeps_the_first,
                unknown_task_ids_read_as_none_and_changes_to_them_are_not_found,
                tasks_list_newest_first_filtered_by_status_and_limited,
                a_listing_without_a_practical_limit_lists_every_task,
                unfinished_task_ids_are_oldest_first_and_skip_ended_tasks,
                every_transition_follows_the_status_rules_and_an_illegal_one_changes_nothing,
                transitions_stamp_their_times_and_keep_the_error_given,
                a_plan_is_saved_once_and_returned_to_later_callers,
                concurrent_planners_see_exactly_one_created,
                a_plan_with_no_shards_completes_the_task_at_once,
                planning_a_cancelled_task_ends_without_storing_a_plan,
                recording_an_item_twice_counts_it_once,
                an_item_recorded_again_moves_its_count_across,
                recording_results_reports_a_cancellation,
                redelivered_completions_of_one_shard_count_it_once,
                concurrent_shard_completions_complete_the_task_exactly_once,
                a_failed_item_makes_the_finished_task_failed,
                completing_the_last_shard_of_a_cancelled_task_keeps_it_cancelled,
                completing_a_shard_the_plan_does_not_have_is_refused_and_records_nothing,
                the_last_shard_ends_a_task_as_the_model_rule_says_in_every_case,
                results_page_in_index_order_with_a_filter_and_its_total,
                recorded_indices_are_those_in_the_range_ascending,
                results_on_both_sides_of_128_page_and_filter_as_one_sequence,
                a_task_with_exactly_128_results_pages_to_its_end_and_no_further,
                results_on_both_sides_of_16384_page_as_one_sequence,
                results_with_unusual_values_in_every_field_read_back_exactly,
                output_that_is_not_utf8_reads_back_byte_for_byte,
                the_overview_counts_tasks_by_status_waiting_shards_and_each_result_once,
                a_tasks_activity_counts_results_per_worker_in_the_bucket_they_were_recorded,
                deleting_a_task_deletes_its_activity,
                every_way_a_task_ends_leaves_exactly_one_outbox_entry,
                a_claimed_completion_is_hidden_until_its_lease_expires,
                an_acknowledged_completion_is_gone_for_good,
                an_end_never_published_waits_out_the_settle_time_then_is_claimed,
                a_task_retried_before_its_event_went_out_owes_only_its_next_end,
                deleting_an_ended_task_drops_its_pending_event,
                schedules_read_back_as_stored_and_list_by_name,
                a_taken_schedule_name_is_refused_and_keeps_the_first,
                of_two_writers_of_the_same_version_one_wins,
                a_deleted_schedule_is_gone_and_cannot_be_updated,
                a_heartbeat_keeps_a_worker_live_until_its_ttl_passes,
                a_new_heartbeat_replaces_the_previous_one,
                a_removed_worker_is_gone_at_once,
                a_node_beat_never_replaces_a_live_dts_worker,
                a_dts_worker_replaces_a_node_beat_and_a_node_beat_replaces_a_gone_worker,
                a_workers_labels_round_trip_and_a_new_heartbeat_replaces_them,
                the_version_grows_with_every_change_and_never_with_a_read,
                the_version_of_an_unknown_task_is_none,
                the_status_alone_follows_every_transition_and_is_none_for_an_unknown_task,
                the_first_claim_of_a_shard_acquires_attempt_one,
                a_live_lease_is_held_against_every_claimant_with_its_owner_and_time_left,
                an_expired_lease_is_taken_over_by_another_worker_as_attempt_two,
                a_clean_release_lets_the_next_claim_acquire_without_a_new_attempt,
                a_dirty_release_counts_a_new_attempt_at_the_next_claim,
                releasing_a_lease_one_does_not_hold_changes_nothing,
                a_completed_shard_claims_as_completed_and_completion_dropped_its_lease,
                renewing_keeps_a_lease_alive_past_its_original_expiry,
                a_lease_that_expired_unclaimed_is_still_its_owners_to_renew,
                live_leases_count_the_held_unexpired_shards_of_the_task_only,
                renewing_reports_the_shards_taken_over_completed_released_or_unknown,
                sixteen_concurrent_claims_of_one_shard_acquire_it_exactly_once,
                item_starts_count_one_two_three_per_item_independently,
                leases_and_start_counts_of_an_unknown_task_are_not_found,
                claiming_a_shard_the_plan_does_not_have_is_refused,
                ready_shards_are_claimed_lowest_first_and_each_exactly_once,
                a_held_shard_is_not_handed_out_until_its_lease_expires_then_as_attempt_two,
                max_held_is_never_exceeded_even_by_sixteen_concurrent_claimers,
                a_clean_release_makes_the_shard_claimable_again_with_the_same_attempt,
                a_completed_shard_is_never_claimed,
                a_cancelled_tasks_claims_return_task_ended_and_it_leaves_runnable_tasks,
                ready_and_held_counts_are_exact_through_claim_release_expiry_and_completion,
                claiming_through_the_old_claim_shard_path_takes_the_shard_off_the_ready_queue,
                runnable_tasks_are_the_in_progress_tasks_with_open_shards_oldest_first,
                a_copy_is_handed_out_only_once_nothing_is_ready_and_a_shard_straggles,
                a_workers_own_shard_is_copied_only_when_no_other_straggles,
                sixteen_concurrent_copiers_get_each_shard_once,
                copies_of_an_ended_task_are_refused_and_of_an_unknown_one_not_found,
                the_first_run_to_complete_a_shard_counts_and_a_later_one_records_nothing,
                a_copied_shard_completed_by_the_copy_drops_the_holders_lease,
                a_copy_may_run_until_its_shard_completes_or_its_task_ends,
                a_copy_from_before_a_retry_starts_and_records_nothing_in_the_retried_run,
                a_shard_that_lost_a_worker_is_never_copied,
                a_shards_first_result_per_item_counts_and_nothing_after_its_completion,
                a_prefix_finds_the_ids_that_start_with_it_in_order,
                pages_of_the_task_list_follow_each_other_without_gaps_or_repeats,
                a_status_filtered_list_pages_and_a_deleted_task_at_the_cursor_skips_nothing,
                a_deleted_task_reads_as_unknown_with_its_results_gone_and_others_untouched,
                deleting_a_task_that_has_not_ended_is_refused_and_changes_nothing,
                a_retry_moves_only_the_failed_results_into_history_and_queues_their_shards,
                a_cancelled_task_retries_the_items_that_never_ran,
                retrying_a_running_completed_unplanned_late_or_unknown_task_is_refused,
                of_sixteen_concurrent_retries_exactly_one_queues_the_work,
                an_item_retried_twelve_times_keeps_its_last_ten_attempts,
                the_failure_that_reaches_a_halt_ends_the_task_failed_naming_it,
                a_halt_reached_by_a_shards_completion_finishes_the_task,
                a_percentage_halt_counts_against_all_the_items,
                two_workers_recording_a_failure_each_at_once_reach_a_halt_of_two,
                a_halted_task_retries_the_items_that_failed_or_never_ran,
                a_halt_of_a_task_that_ended_otherwise_changes_nothing,
                the_last_shard_of_a_task_with_a_due_reduce_starts_it_and_owes_no_event,
                a_reduce_claim_holds_while_its_owners_heartbeat_is_live_then_passes_on,
                a_reduce_is_claimed_only_while_reducing_and_an_unknown_task_is_not_found,
                of_sixteen_workers_claiming_a_reduce_at_once_exactly_one_gets_it,
                the_claim_holders_record_ends_the_task_completed_with_its_result_once,
                a_record_by_a_worker_that_lost_the_claim_changes_nothing,
                a_failed_reduce_or_a_failed_item_ends_the_task_failed,
                a_reduce_recorded_after_a_cancel_changes_nothing,
                reducing_tasks_are_exactly_the_reducing_ones_oldest_first,
                a_retry_after_a_failed_reduce_reduces_again_from_attempt_one,
                a_retried_task_with_a_reduce_runs_its_failed_items_then_reduces_again,
            );
        }
    };
}

macro_rules! contract_tests {
    ($make:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let fixture: Fixture = ($make)().await;
                super::$test(Arc::clone(&fixture.store)).await;
            }
        )*
    };
}

store_contract!(sqlite_memory, || async {
    Fixture::new(Arc::new(
        SqliteStore::in_memory().expect("open in-memory store"),
    ))
});

store_contract!(sqlite_file, || async {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("data").join("dts.sqlite")).expect("open store");
    Fixture::keeping(Arc::new(store), dir)
});

// Each test gets its own redis-server on a free port (stopped when the
// fixture drops), so tests never share data or depend on a server left running.
store_contract!(redis, || async {
    let server = tokio::task::spawn_blocking(dts_testkit::RedisServer::start)
        .await
        .expect("start redis-server");
    let store = RedisStore::connect(RedisSettings {
        url: server.url(),
        key_prefix: "dts-contract".to_string(),
        retention: Duration::from_secs(3_600),
        sentinel: None,
    })
    .await
    .expect("connect to redis");
    Fixture::keeping(Arc::new(store), server)
});
