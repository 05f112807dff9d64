//! Schedules: stored, listed by name, changed only by a compare-and-set
//! that one of two concurrent writers wins, and deleted.

use dts_model::schedule::{self, Run, RunOutcome, Schedule};
use dts_model::{SubmitLimits, now_millis};
use dts_store::{DynStore, StoreError};
use serde_json::json;

fn schedule_named(name: &str) -> Schedule {
    let body = json!({
        "name": name,
        "cron": "*/5 * * * *",
        "timezone": "Europe/Paris",
        "task": {"templateFunction": "echo \"$1\"", "inputList": ["a", "b"]},
        "overlap": "cancel-previous",
        "catchUp": "last",
    });
    schedule::from_json(&body, &SubmitLimits::default(), now_millis()).unwrap()
}

fn fired_at(at: u64) -> Run {
    Run {
        at,
        outcome: RunOutcome::Fired,
        task_id: Some(schedule::firing_task_id("nightly", at)),
        stored: false,
        note: None,
    }
}

pub(crate) async fn schedules_read_back_as_stored_and_list_by_name(store: DynStore) {
    assert!(store.schedules().await.unwrap().is_empty());
    assert_eq!(store.schedule("nightly").await.unwrap(), None);
    for name in ["nightly", "hourly", "b.c-d_e"] {
        store.insert_schedule(&schedule_named(name)).await.unwrap();
    }
    let nightly = store.schedule("nightly").await.unwrap().unwrap();
    assert_eq!(nightly, schedule_named_at(&nightly));
    let names: Vec<String> = store
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["b.c-d_e", "hourly", "nightly"]);
}

/// `schedule_named` with the created time and version of `stored`, which
/// the test cannot know beforehand.
fn schedule_named_at(stored: &Schedule) -> Schedule {
    Schedule {
        created_at: stored.created_at,
        handled_until: stored.handled_until,
        ..schedule_named(&stored.name)
    }
}

pub(crate) async fn a_taken_schedule_name_is_refused_and_keeps_the_first(store: DynStore) {
    let first = schedule_named("nightly");
    store.insert_schedule(&first).await.unwrap();
    let mut second = schedule_named("nightly");
    second.cron = "0 * * * *".into();
    match store.insert_schedule(&second).await {
        Err(StoreError::ScheduleExists { name }) => assert_eq!(name, "nightly"),
        other => panic!("expected ScheduleExists, got {other:?}"),
    }
    let stored = store.schedule("nightly").await.unwrap().unwrap();
    assert_eq!(stored.cron, "*/5 * * * *");
}

pub(crate) async fn of_two_writers_of_the_same_version_one_wins(store: DynStore) {
    store
        .insert_schedule(&schedule_named("nightly"))
        .await
        .unwrap();
    let read = store.schedule("nightly").await.unwrap().unwrap();
    let mut first = read.clone();
    first.record(fired_at(1_000));
    let mut second = read.clone();
    second.record(fired_at(2_000));
    assert!(store.update_schedule(&first).await.unwrap());
    assert!(
        !store.update_schedule(&second).await.unwrap(),
        "a write of a version read before the first write loses"
    );
    let stored = store.schedule("nightly").await.unwrap().unwrap();
    assert_eq!(stored.version, read.version + 1);
    assert_eq!(stored.runs, first.runs);
    assert_eq!(stored.handled_until, first.handled_until);

    // Writing on top of what is stored now wins again.
    let mut third = stored.clone();
    third.paused = true;
    assert!(store.update_schedule(&third).await.unwrap());
    let stored = store.schedule("nightly").await.unwrap().unwrap();
    assert!(stored.paused);
    assert_eq!(stored.version, read.version + 2);
}

pub(crate) async fn a_deleted_schedule_is_gone_and_cannot_be_updated(store: DynStore) {
    store
        .insert_schedule(&schedule_named("nightly"))
        .await
        .unwrap();
    let read = store.schedule("nightly").await.unwrap().unwrap();
    assert!(store.delete_schedule("nightly").await.unwrap());
    assert!(!store.delete_schedule("nightly").await.unwrap());
    assert_eq!(store.schedule("nightly").await.unwrap(), None);
    assert!(!store.update_schedule(&read).await.unwrap());
    assert_eq!(store.schedule("nightly").await.unwrap(), None);
    // The name is free again.
    store
        .insert_schedule(&schedule_named("nightly"))
        .await
        .unwrap();
}
