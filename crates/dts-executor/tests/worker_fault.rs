//! An item that cannot start because the worker ran out of descriptors is
//! the worker's fault, not the item's (finding 2 of the security review: a
//! worker out of descriptors recorded 315 items as failed). This test lowers
//! the open-files limit of its whole process, so it has a binary of its own.

use std::time::Duration;

use dts_executor::{ExecSettings, Executor, ItemContext, ItemLimits, Program};
use tokio_util::sync::CancellationToken;

/// The descriptors this process has open now.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("list /proc/self/fd")
        .count() as u64
}

fn set_soft_limit(soft: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit on a struct on this stack.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let before = limit.rlim_cur;
        limit.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        before
    }
}

#[tokio::test]
async fn an_item_that_cannot_start_for_lack_of_descriptors_is_the_workers_fault() {
    let executor = Executor::new(ExecSettings::default()).expect("executor");
    let program = Program::Script {
        interpreter: "bash".into(),
        script: "echo ran".into(),
    };
    let item = ItemContext {
        task_id: "task-1",
        shard_index: 0,
        index: 0,
        attempt: 1,
        worker_id: "worker-9",
        input: b"x",
        limits: ItemLimits::default(),
    };
    let cancel = CancellationToken::new();
    // Room for one more descriptor: not for the item's three pipes.
    let before = set_soft_limit(open_descriptors() + 1);
    let starved = executor
        .run(&program, &item, Duration::from_secs(10), &cancel)
        .await;
    set_soft_limit(before);
    assert!(starved.worker_fault, "{starved:?}");
    assert!(!starved.succeeded());
    let error = starved.error.as_deref().unwrap_or_default();
    assert!(error.contains("Too many open files"), "{error}");

    let fed = executor
        .run(&program, &item, Duration::from_secs(10), &cancel)
        .await;
    assert_eq!(fed.stdout, b"ran\n", "{fed:?}");
    assert!(!fed.worker_fault && fed.succeeded(), "{fed:?}");
}
