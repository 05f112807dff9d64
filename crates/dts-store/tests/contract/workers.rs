//! Contract: worker heartbeats, expiry and removal.

use dts_model::{WorkerInfo, now_millis};
use dts_store::DynStore;
use std::time::{Duration, Instant};

pub(crate) fn worker(id: &str, cores: u32, running_items: u32) -> WorkerInfo {
    WorkerInfo {
        id: id.to_string(),
        hostname: format!("host-of-{id}.example"),
        cores,
        running_items,
        last_heartbeat: now_millis(),
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
