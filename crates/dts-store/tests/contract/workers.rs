//! Contract: worker heartbeats, expiry and removal.

use dts_model::{Isolation, WorkerInfo, WorkerKind, now_millis};
use dts_store::{DynStore, HeartbeatOutcome};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(crate) fn worker(id: &str, cores: u32, running_items: u32) -> WorkerInfo {
    WorkerInfo {
        id: id.to_string(),
        hostname: format!("host-of-{id}.example"),
        cores,
        running_items,
        last_heartbeat: now_millis(),
        kind: WorkerKind::Dts,
        isolation: None,
        labels: BTreeMap::new(),
        shards_held: 0,
        running_by_task: Default::default(),
    }
}

pub(crate) async fn live_ids(store: &DynStore) -> Vec<String> {
    store
        .live_workers()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id)
        .collect()
}

pub(crate) async fn a_heartbeat_keeps_a_worker_live_until_its_ttl_passes(store: DynStore) {
    let (short, long) = (worker("w-short", 4, 1), worker("w-long", 8, 0));
    store
        .heartbeat(&short, Duration::from_millis(300))
        .await
        .unwrap();
    store
        .heartbeat(&long, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![long.clone(), short.clone()],
        "by id, as given"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while live_ids(&store).await.contains(&short.id) {
        assert!(
            Instant::now() < deadline,
            "a 300 ms heartbeat was still live after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(store.live_workers().await.unwrap(), vec![long]);
}

pub(crate) async fn a_new_heartbeat_replaces_the_previous_one(store: DynStore) {
    let first = worker("w-1", 4, 0);
    store
        .heartbeat(&first, Duration::from_millis(300))
        .await
        .unwrap();
    let second = WorkerInfo {
        running_items: 3,
        last_heartbeat: first.last_heartbeat + 1_000,
        ..first.clone()
    };
    store
        .heartbeat(&second, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(store.live_workers().await.unwrap(), vec![second.clone()]);
    // The first heartbeat's short TTL no longer applies.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.live_workers().await.unwrap(), vec![second]);
}

pub(crate) async fn a_removed_worker_is_gone_at_once(store: DynStore) {
    for id in ["w-a", "w-b"] {
        store
            .heartbeat(&worker(id, 2, 0), Duration::from_secs(60))
            .await
            .unwrap();
    }
    store.remove_worker("w-a").await.unwrap();
    assert_eq!(live_ids(&store).await, vec!["w-b".to_string()]);
    store.remove_worker("never-seen").await.unwrap();
    store.remove_worker("w-b").await.unwrap();
    assert!(store.live_workers().await.unwrap().is_empty());
}

/// `worker(id, ...)` as announced through the seed's node-beat.
fn node_beat(id: &str, cores: u32) -> WorkerInfo {
    WorkerInfo {
        kind: WorkerKind::NodeBeat,
        ..worker(id, cores, 0)
    }
}

pub(crate) async fn a_node_beat_never_replaces_a_live_dts_worker(store: DynStore) {
    let real = WorkerInfo {
        isolation: Some(Isolation {
            containment: "cgroup".to_string(),
            run_as: Some("nobody".to_string()),
            private_workdir: true,
            limits: vec!["memoryMb".to_string(), "cpus".to_string()],
        }),
        ..worker("w-real", 4, 1)
    };
    assert_eq!(
        store
            .heartbeat(&real, Duration::from_secs(60))
            .await
            .unwrap(),
        HeartbeatOutcome::Recorded
    );
    assert_eq!(
        store
            .heartbeat(&node_beat("w-real", 4096), Duration::from_secs(60))
            .await
            .unwrap(),
        HeartbeatOutcome::Refused
    );
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![real.clone()],
        "the dts worker's entry is kept whole"
    );
    // A node-beat may replace a node-beat, and creates new entries.
    let beats = [node_beat("n-1", 2), node_beat("n-1", 3)];
    for beat in &beats {
        assert_eq!(
            store
                .heartbeat(beat, Duration::from_secs(60))
                .await
                .unwrap(),
            HeartbeatOutcome::Recorded
        );
    }
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![beats[1].clone(), real]
    );
}

pub(crate) async fn a_dts_worker_replaces_a_node_beat_and_a_node_beat_replaces_a_gone_worker(
    store: DynStore,
) {
    store
        .heartbeat(&node_beat("w-1", 64), Duration::from_secs(60))
        .await
        .unwrap();
    let real = worker("w-1", 2, 0);
    assert_eq!(
        store
            .heartbeat(&real, Duration::from_millis(300))
            .await
            .unwrap(),
        HeartbeatOutcome::Recorded
    );
    assert_eq!(store.live_workers().await.unwrap(), vec![real]);

    let deadline = Instant::now() + Duration::from_secs(10);
    while !live_ids(&store).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "a 300 ms heartbeat was still live after 10 s"
        );
        // Polled every millisecond, so the check below often runs in the
        // very millisecond the heartbeat expires: the listing and the key
        // must agree even then.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let ghost = node_beat("w-1", 8);
    assert_eq!(
        store
            .heartbeat(&ghost, Duration::from_secs(60))
            .await
            .unwrap(),
        HeartbeatOutcome::Recorded,
        "the dts worker's heartbeat had expired"
    );
    assert_eq!(store.live_workers().await.unwrap(), vec![ghost]);
}

pub(crate) async fn a_workers_labels_round_trip_and_a_new_heartbeat_replaces_them(store: DynStore) {
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    };
    let labelled = WorkerInfo {
        labels: labels(&[
            ("gpu", "a100"),
            ("zone", "eu"),
            ("example.com/rack", "r-1_b"),
            ("ssd", ""),
            ("note", "A100 80GB = fast, é"),
        ]),
        ..worker("w-labelled", 4, 0)
    };
    let plain = worker("w-plain", 2, 0);
    for beat in [&labelled, &plain] {
        store
            .heartbeat(beat, Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![labelled.clone(), plain.clone()],
        "labels read back exactly, and a worker without any has none"
    );

    // Labels are the latest heartbeat's, not merged with earlier ones.
    let relabelled = WorkerInfo {
        labels: labels(&[("gpu", "h100")]),
        last_heartbeat: labelled.last_heartbeat + 1_000,
        ..labelled.clone()
    };
    let unlabelled = WorkerInfo {
        labels: BTreeMap::new(),
        last_heartbeat: relabelled.last_heartbeat + 1_000,
        ..relabelled.clone()
    };
    store
        .heartbeat(&relabelled, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![relabelled, plain.clone()]
    );
    store
        .heartbeat(&unlabelled, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        store.live_workers().await.unwrap(),
        vec![unlabelled, plain],
        "a heartbeat without labels clears them"
    );
}
