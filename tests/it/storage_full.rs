//! A full disk under `dts up`'s data directory: a submit is refused with
//! 507 `storage_full`, saying so, and changes nothing; once there is room
//! again, submits work and every task completes. Needs root, for a small
//! tmpfs (the chaos soak's); skipped otherwise, unless
//! `DTS_TEST_REQUIRE_ROOT_FAULTS=1`, which `scripts/test.sh` sets as root.

use crate::common::{DtsUp, items, task};
use dts_chaos::cluster::SmallDisk;
use reqwest::StatusCode;

#[tokio::test]
async fn a_submit_to_a_dts_up_whose_disk_is_full_gets_507_and_changes_nothing() {
    let dir = crate::common::shared_dir();
    let Some(disk) = SmallDisk::mount(&dir.path().join("disk")) else {
        let required = std::env::var_os("DTS_TEST_REQUIRE_ROOT_FAULTS").is_some_and(|v| v == "1");
        assert!(
            !required,
            "DTS_TEST_REQUIRE_ROOT_FAULTS=1, but no tmpfs could be mounted (not root?)"
        );
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    };
    let up = DtsUp::start_in(&disk.path.join("data"), &["--cores", "1"], &[]);
    let first = up.submit(task("echo \"$1\"", &items(3))).await;
    assert_eq!(up.wait_ended(&first).await["status"], "COMPLETED");
    let before = up.task_count().await;

    let fill = disk.fill().expect("fill the tmpfs");
    // Large enough that no page SQLite has spare can hold it.
    let big: Vec<String> = (0..2_000).map(|i| format!("{i:0>100}")).collect();
    let (status, body) = up.post_json("/v1/tasks", &task("echo \"$1\"", &big)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("full") && message.contains("nothing was changed"),
        "{body}"
    );
    assert_eq!(
        up.task_count().await,
        before,
        "the refused submit stored nothing"
    );

    disk.drain(&fill);
    let after = up.submit(task("echo \"$1\"", &big)).await;
    let ended = up.wait_ended(&after).await;
    assert_eq!(ended["status"], "COMPLETED", "{ended}");
    assert_eq!(ended["itemsSucceeded"], 2_000);
    up.kill9();
    disk.unmount();
}
