//! A process that becomes a child subreaper when its executor is set up
//! keeps the children it already had: the sweeps after each item kill only
//! orphans of items. The executor records its own children only once the
//! process is a subreaper, so the ones from before are recorded then. This
//! test makes its whole process a subreaper, so it has a binary of its own.

use std::time::Duration;

use dts_executor::{
    ContainmentChoice, ExecSettings, Executor, IsolationSettings, ItemContext, ItemLimits, Program,
};
use tokio_util::sync::CancellationToken;

fn gone(pid: i32) -> bool {
    // A zombie has a /proc entry too; `State: Z` counts as gone here, as the
    // sweep reaps only what it killed.
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z')),
        Err(_) => true,
    }
}

#[tokio::test]
async fn children_from_before_the_subreaper_are_not_taken_for_orphans() {
    let mut own = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("sleep");
    let executor = Executor::with_base_env(
        ExecSettings {
            isolation: IsolationSettings {
                containment: ContainmentChoice::Subreaper,
                ..IsolationSettings::default()
            },
            ..ExecSettings::default()
        },
        [("PATH".into(), "/usr/bin:/bin".into())],
    )
    .expect("executor");
    // An item that leaves an orphan outside its process group.
    let program = Program::Script {
        interpreter: "bash".into(),
        script: "setsid sleep 101 & echo $!".into(),
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
    let out = executor
        .run(
            &program,
            &item,
            Duration::from_secs(10),
            &CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    let orphan: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the orphan's pid");
    // Up to 10 s: room for a loaded machine, far short of the orphan's 101 s.
    let mut killed = false;
    for _ in 0..1000 {
        if gone(orphan) {
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(killed, "the item's orphan {orphan} survived");
    assert!(
        own.try_wait().expect("try_wait").is_none(),
        "the sweep killed a child this process had before it was a subreaper"
    );
    own.kill().expect("kill");
    own.wait().expect("wait");
}
