//! Contract: inserting, reading and listing tasks, and status transitions.

use crate::helpers::*;
use dts_model::{Bytes, Reduce, ReduceResult, ReduceWhen, Task, TaskStatus, Variables, now_millis};
use dts_store::{DynStore, PlanOutcome, ResultFilter, StoreError};

pub(crate) async fn a_task_and_its_inputs_read_back_exactly_as_inserted(store: DynStore) {
    let awkward: Vec<Bytes> = [
        "",
        "plain",
        "quo\"te and 'single'",
        "back\\slash",
        "new\nline\r\n\ttab",
        "nul \u{0} byte",
        "é→😀 中文 עברית",
        "$(rm -rf /) `x` ${HOME}",
        "  spaces around  ",
        "{\"json\": [1, 2]}",
        "",
    ]
    .into_iter()
    .map(Bytes::from)
    .chain(std::iter::once(Bytes::from("long ".repeat(5_000))))
    .collect();
    let mut task = task_with(&dts_model::new_task_id(), 1_700_000_000_123, awkward.len());
    task.name = Some("naïve \"quoted\" name; DROP TABLE tasks;--".to_string());
    task.variables = Variables::from_json(&serde_json::json!({
        "greeting": "it's \"fine\"",
        "n": 2.5,
        "big": 9_007_199_254_740_993u64,
        "flag": true,
        "ü": "",
    }))
    .unwrap();
    task.retries = 2;
    task.timeout_secs = 3_600;
    task.reduce = Some(Reduce {
        template_function: "jq -s 'map(.exitCode) | add' # {{greeting}} \"$1\"".to_string(),
        interpreter: "python3".to_string(),
        timeout_secs: 90,
        when: ReduceWhen::Always,
    });
    // A task is stored with a result only by hand (an import, say), but
    // whatever is inserted reads back.
    task.reduce_result = Some(ReduceResult {
        exit_code: None,
        signal: Some(9),
        timed_out: true,
        stdout: Bytes::from("sum: 3\n"),
        stderr: Bytes::new(b"caf\xe9 \x00".to_vec()),
        stdout_truncated: false,
        stderr_truncated: true,
        duration_ms: 90_000,
        worker: "worker-b".to_string(),
        attempt: 3,
        error: Some("killed".to_string()),
    });
    store.insert_task(&task, &awkward).await.unwrap();

    assert_eq!(store.task(&task.id).await.unwrap(), Some(task.clone()));
    assert_eq!(store.inputs(&task.id).await.unwrap(), Some(awkward));

    let empty = task_with(&dts_model::new_task_id(), 1, 0);
    store.insert_task(&empty, &[]).await.unwrap();
    assert_eq!(store.task(&empty.id).await.unwrap(), Some(empty.clone()));
    assert_eq!(store.inputs(&empty.id).await.unwrap(), Some(Vec::new()));
}

pub(crate) async fn a_hundred_thousand_inputs_round_trip(store: DynStore) {
    let many: Vec<Bytes> = (0..100_000)
        .map(|i| Bytes::from(format!("input number {i} «{}»", i % 7)))
        .collect();
    let task = task_with(&dts_model::new_task_id(), now_millis(), many.len());
    store.insert_task(&task, &many).await.unwrap();
    let back = store.inputs(&task.id).await.unwrap().unwrap();
    assert_eq!(back.len(), 100_000);
    assert_eq!(back, many);
    assert_eq!(
        store.task(&task.id).await.unwrap().unwrap().items_total,
        100_000
    );
}

pub(crate) async fn inserting_an_existing_id_is_refused_and_keeps_the_first(store: DynStore) {
    let first = insert(&store, 2).await;
    let mut second = task_with(&first.id, first.created_at + 1, 5);
    second.name = Some("impostor".to_string());
    let err = store.insert_task(&second, &inputs(5)).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::TaskExists { id } if *id == first.id),
        "{err}"
    );
    assert_eq!(store.task(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.inputs(&first.id).await.unwrap(), Some(inputs(2)));
}

pub(crate) async fn unknown_task_ids_read_as_none_and_changes_to_them_are_not_found(
    store: DynStore,
) {
    let id = dts_model::new_task_id();
    let not_found = |err: StoreError| {
        assert!(
            matches!(&err, StoreError::NoSuchTask { id: x } if *x == id),
            "{err}"
        )
    };
    assert_eq!(store.task(&id).await.unwrap(), None);
    assert_eq!(store.inputs(&id).await.unwrap(), None);
    not_found(
        store
            .transition(&id, TaskStatus::Cancelled, None)
            .await
            .unwrap_err(),
    );
    not_found(store.save_plan(&id, &even_plan(4, 2)).await.unwrap_err());
    not_found(store.completed_shards(&id).await.unwrap_err());
    not_found(store.record_results(&id, &[ok(0)]).await.unwrap_err());
    not_found(store.complete_shard(&id, 0, &[ok(0)]).await.unwrap_err());
    not_found(store.recorded_indices(&id, 0, 10).await.unwrap_err());
    not_found(
        store
            .results(&id, ResultFilter::All, 0, 10)
            .await
            .unwrap_err(),
    );
    assert!(store.list_tasks(None, 10).await.unwrap().is_empty());
}

pub(crate) async fn tasks_list_newest_first_filtered_by_status_and_limited(store: DynStore) {
    let base = 1_700_000_000_000;
    let mut ids = Vec::new();
    for (n, created_at) in [base + 10, base + 30, base + 20, base + 40, base + 40]
        .into_iter()
        .enumerate()
    {
        let task = task_with(&dts_model::new_task_id(), created_at, n);
        store.insert_task(&task, &inputs(n)).await.unwrap();
        ids.push(task.id);
    }
    // Newest first; the two created in the same millisecond, last inserted first.
    let newest_first = vec![
        ids[4].clone(),
        ids[3].clone(),
        ids[1].clone(),
        ids[2].clone(),
        ids[0].clone(),
    ];
    let listed = |tasks: Vec<Task>| tasks.into_iter().map(|t| t.id).collect::<Vec<_>>();

    assert_eq!(
        listed(store.list_tasks(None, 100).await.unwrap()),
        newest_first
    );
    assert_eq!(
        listed(store.list_tasks(None, 2).await.unwrap()),
        newest_first[..2].to_vec()
    );
    assert!(store.list_tasks(None, 0).await.unwrap().is_empty());

    for id in [&ids[0], &ids[3], &ids[2]] {
        store
            .transition(id, TaskStatus::Submitted, None)
            .await
            .unwrap();
    }
    assert_eq!(
        listed(
            store
                .list_tasks(Some(TaskStatus::Submitted), 100)
                .await
                .unwrap()
        ),
        vec![ids[3].clone(), ids[2].clone(), ids[0].clone()]
    );
    assert_eq!(
        listed(
            store
                .list_tasks(Some(TaskStatus::Submitted), 1)
                .await
                .unwrap()
        ),
        vec![ids[3].clone()]
    );
    assert_eq!(
        listed(
            store
                .list_tasks(Some(TaskStatus::Queued), 100)
                .await
                .unwrap()
        ),
        vec![ids[4].clone(), ids[1].clone()]
    );
    assert!(
        store
            .list_tasks(Some(TaskStatus::Cancelled), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Listed tasks are the whole tasks, as `task` reads them.
    let full = store.list_tasks(None, 1).await.unwrap().remove(0);
    assert_eq!(Some(full), store.task(&ids[4]).await.unwrap());
}

pub(crate) async fn unfinished_task_ids_are_oldest_first_and_skip_ended_tasks(store: DynStore) {
    use TaskStatus::*;
    let mut expected = Vec::new();
    for (n, status) in [
        Queued,
        Cancelled,
        InProgress,
        SubmissionFailed,
        Retrying,
        Completed,
        Submitted,
        Failed,
        Reducing,
    ]
    .into_iter()
    .enumerate()
    {
        let task = task_with(&dts_model::new_task_id(), 1_000 + n as u64, 3);
        store.insert_task(&task, &inputs(3)).await.unwrap();
        let path: &[TaskStatus] = match status {
            Queued => &[],
            Cancelled => &[Cancelled],
            InProgress => &[InProgress],
            SubmissionFailed => &[Retrying, SubmissionFailed],
            Retrying => &[Retrying],
            Completed => &[InProgress, Completed],
            Submitted => &[Submitted],
            Failed => &[InProgress, Failed],
            // Waiting for its reduce: not ended.
            Reducing => &[InProgress, Reducing],
            Waiting | Skipped => unreachable!("not in this test's list"),
        };
        for step in path {
            store.transition(&task.id, *step, None).await.unwrap();
        }
        if !status.is_terminal() {
            expected.push(task.id);
        }
    }
    assert_eq!(expected.len(), 5);
    assert_eq!(store.unfinished_task_ids().await.unwrap(), expected);
}

pub(crate) async fn every_transition_follows_the_status_rules_and_an_illegal_one_changes_nothing(
    store: DynStore,
) {
    for from in TaskStatus::ALL {
        for to in TaskStatus::ALL {
            let before = task_in(&store, from).await;
            let outcome = store.transition(&before.id, to, Some("why")).await;
            let stored = store.task(&before.id).await.unwrap().unwrap();
            if from.can_transition_to(to) {
                let task = outcome.unwrap_or_else(|e| panic!("{from} -> {to}: {e}"));
                assert_eq!(task.status, to, "{from} -> {to}");
                assert_eq!(
                    task, stored,
                    "{from} -> {to}: returned task differs from stored"
                );
                assert_eq!(task.error.as_deref(), Some("why"));
                assert_eq!(
                    task.finished_at.is_some(),
                    to.is_terminal(),
                    "{from} -> {to}"
                );
                if to == TaskStatus::InProgress {
                    assert!(task.started_at.is_some(), "{from} -> {to}");
                }
            } else {
                let err = outcome.expect_err(&format!("{from} -> {to} must be refused"));
                assert!(
                    matches!(&err, StoreError::IllegalTransition { id, from: f, to: t }
                        if *id == before.id && *f == from && *t == to),
                    "{from} -> {to}: {err}"
                );
                assert_eq!(stored, before, "{from} -> {to} changed the task");
            }
        }
    }
}

pub(crate) async fn transitions_stamp_their_times_and_keep_the_error_given(store: DynStore) {
    let task = insert(&store, 3).await;
    let start = now_millis();
    let retrying = store
        .transition(&task.id, TaskStatus::Retrying, Some("broker down"))
        .await
        .unwrap();
    assert_eq!(retrying.error.as_deref(), Some("broker down"));
    assert_eq!((retrying.started_at, retrying.finished_at), (None, None));

    let submitted = store
        .transition(&task.id, TaskStatus::Submitted, None)
        .await
        .unwrap();
    assert_eq!(
        submitted.error.as_deref(),
        Some("broker down"),
        "no error given keeps the old one"
    );

    let running = store
        .transition(&task.id, TaskStatus::InProgress, None)
        .await
        .unwrap();
    let started = running.started_at.expect("INPROGRESS sets startedAt");
    assert!(started >= start && started <= now_millis());
    assert_eq!(running.finished_at, None);

    let cancelled = store
        .transition(&task.id, TaskStatus::Cancelled, Some("by user"))
        .await
        .unwrap();
    assert_eq!(cancelled.started_at, Some(started), "startedAt is kept");
    let finished = cancelled
        .finished_at
        .expect("a terminal status sets finishedAt");
    assert!(finished >= started && finished <= now_millis());
    assert_eq!(cancelled.error.as_deref(), Some("by user"));
    assert_eq!(
        Task {
            status: TaskStatus::Cancelled,
            started_at: Some(started),
            finished_at: Some(finished),
            error: Some("by user".into()),
            version: 4,
            ..task
        },
        cancelled,
        "nothing else changed; four transitions, four versions"
    );
}

pub(crate) async fn the_version_grows_with_every_change_and_never_with_a_read(store: DynStore) {
    let task = insert(&store, 4).await;
    let version = |store: DynStore, id: String| async move {
        let cheap = store.task_version(&id).await.unwrap().expect("a version");
        let whole = store.task(&id).await.unwrap().expect("the task").version;
        assert_eq!(cheap, whole, "task_version agrees with the task");
        cheap
    };
    assert_eq!(version(store.clone(), task.id.clone()).await, 0);
    // Reads of every kind change nothing.
    store.inputs(&task.id).await.unwrap();
    store.list_tasks(None, 10).await.unwrap();
    store.completed_shards(&task.id).await.unwrap();
    store
        .results(&task.id, ResultFilter::All, 0, 10)
        .await
        .unwrap();
    assert_eq!(version(store.clone(), task.id.clone()).await, 0);

    let mut last = 0;
    let mut changed = |now: u64, what: &str| {
        assert!(now > last, "{what}: version {now} after {last}");
        last = now;
    };
    let submitted = store
        .transition(&task.id, TaskStatus::Submitted, None)
        .await
        .unwrap();
    changed(submitted.version, "a transition");
    assert_eq!(
        version(store.clone(), task.id.clone()).await,
        submitted.version
    );
    let planned = match store.save_plan(&task.id, &even_plan(4, 2)).await.unwrap() {
        PlanOutcome::Created(task) => task,
        other => panic!("expected a new plan, got {other:?}"),
    };
    changed(planned.version, "saving the plan");
    let status = store.record_results(&task.id, &[ok(0)]).await.unwrap();
    assert_eq!(status, TaskStatus::InProgress);
    let recorded = version(store.clone(), task.id.clone()).await;
    changed(recorded, "recording a result");
    store.record_results(&task.id, &[ok(0)]).await.unwrap();
    assert_eq!(
        version(store.clone(), task.id.clone()).await,
        recorded,
        "recording the same outcome again changes nothing"
    );
    store.record_results(&task.id, &[failed(0)]).await.unwrap();
    changed(
        version(store.clone(), task.id.clone()).await,
        "an item recorded again with another outcome",
    );
    let first = store
        .complete_shard(&task.id, 0, &[failed(0), ok(1)])
        .await
        .unwrap();
    changed(first.task.version, "completing a shard");
    let again = store
        .complete_shard(&task.id, 0, &[failed(0), ok(1)])
        .await
        .unwrap();
    assert_eq!(
        again.task.version, first.task.version,
        "a redelivered completion changes nothing"
    );
    let last_shard = store
        .complete_shard(&task.id, 1, &[ok(2), ok(3)])
        .await
        .unwrap();
    assert!(last_shard.finished_task);
    changed(last_shard.task.version, "completing the last shard");
    assert_eq!(
        store.task(&task.id).await.unwrap().map(|t| t.version),
        Some(last_shard.task.version)
    );
}

pub(crate) async fn the_version_of_an_unknown_task_is_none(store: DynStore) {
    assert_eq!(
        store
            .task_version("6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10")
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn the_status_alone_follows_every_transition_and_is_none_for_an_unknown_task(
    store: DynStore,
) {
    let task = insert(&store, 2).await;
    assert_eq!(
        store.task_status(&task.id).await.unwrap(),
        Some(TaskStatus::Queued)
    );
    for to in [
        TaskStatus::Submitted,
        TaskStatus::InProgress,
        TaskStatus::Cancelled,
    ] {
        store.transition(&task.id, to, None).await.unwrap();
        assert_eq!(store.task_status(&task.id).await.unwrap(), Some(to));
    }
    assert_eq!(
        store
            .task_status("6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10")
            .await
            .unwrap(),
        None
    );
}

pub(crate) async fn a_listing_without_a_practical_limit_lists_every_task(store: DynStore) {
    let first = insert(&store, 1).await;
    let second = insert(&store, 2).await;
    for limit in [usize::MAX, usize::MAX >> 1, i64::MAX as usize] {
        let ids: Vec<String> = store
            .list_tasks(None, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids.len(), 2, "limit {limit}: {ids:?}");
        assert!(
            ids.contains(&first.id) && ids.contains(&second.id),
            "{ids:?}"
        );
    }
}
