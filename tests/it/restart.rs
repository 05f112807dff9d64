//! Crashes and restarts: `dts up` killed with SIGKILL resumes from its data
//! directory and finishes every task without counting anything twice.

use crate::common::{DtsUp, task};
use serde_json::json;
use std::collections::HashMap;

#[tokio::test]
async fn a_killed_dts_up_resumes_on_restart_and_counts_every_item_once() {
    let dir = crate::common::shared_dir();
    let data = dir.path().join("data");
    let runs_log = dir.path().join("runs.log");
    let total = 200;
    let inputs: Vec<String> = (0..total).map(|i| format!("n{i}")).collect();
    let body = json!({
        "templateFunction": "echo \"$1\" >> {{log}}; sleep 0.03; echo \"done $1\"",
        "variableJson": {"log": runs_log.display().to_string()},
        "inputList": inputs,
    });

    let first = DtsUp::start_in(&data, &["--cores", "2"], &[]);
    let id = first.submit(body).await;
    first
        .wait_task(&id, "partly done", |t| {
            t["itemsSucceeded"].as_u64().unwrap_or(0) >= 40
        })
        .await;
    first.kill9();
    let runs_before_restart = std::fs::read_to_string(&runs_log).unwrap().lines().count();
    assert!(
        runs_before_restart < total,
        "the kill came too late to test anything"
    );

    let second = DtsUp::start_in(&data, &["--cores", "2"], &[]);
    let done = second.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["itemsSucceeded"], total as u64);
    assert_eq!(done["itemsFailed"], 0);
    assert_eq!(done["chunksExecuted"], done["chunksToExecute"]);

    let results = second.all_results(&id, "").await;
    assert_eq!(results.len(), total);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["stdout"], format!("done n{i}\n"));
    }
    // Every item ran; only those in flight at the kill (at most a couple of
    // result batches' worth) ran twice — the rest were not started again.
    let runs = std::fs::read_to_string(&runs_log).unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in runs.lines() {
        *counts.entry(line).or_default() += 1;
    }
    assert_eq!(counts.len(), total, "every item ran");
    let reruns: usize = counts.values().map(|c| c - 1).sum();
    assert!(
        reruns <= 30,
        "{reruns} items ran again: the restart did not resume"
    );
}

#[tokio::test]
async fn sigterm_stops_dts_up_cleanly() {
    let up = DtsUp::start(&[]);
    let id = up.submit(task("echo $1", &["a".to_string()])).await;
    up.wait_ended(&id).await;
    let status = up.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_second_dts_up_on_the_same_data_directory_is_refused() {
    let dir = crate::common::shared_dir();
    let data = dir.path().join("data");
    let _first = DtsUp::start_in(&data, &[], &[]);
    let output = crate::common::run_dts(
        std::process::Command::new(crate::common::dts_binary())
            .args(["up", "--port", "0", "--data-dir"])
            .arg(&data),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("already using the data directory"),
        "{stderr}"
    );
}

/// The lines of `path` (none if it does not exist yet).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_stopped_dts_up_starts_no_new_item_and_says_how_many_still_run() {
    let dir = crate::common::shared_dir();
    let starts = dir.path().join("starts.log");
    let body = json!({
        "templateFunction": "echo \"$1\" >> {{log}}; sleep 3",
        "variableJson": {"log": starts.display().to_string()},
        "inputList": crate::common::items(20),
    });
    // The log is kept in `dir`, to be read after the node has exited.
    let up = DtsUp::start_in(&dir.path().join("data"), &["--cores", "2"], &[]);
    up.submit(body).await;
    // Both cores start an item at once; the next could start only 3 s later.
    crate::common::wait_for("the first two items to start", || async {
        lines_in(&starts) >= 2
    })
    .await;
    let started_at_signal = lines_in(&starts);
    let log = up.log.clone();
    let status = up.terminate();
    assert!(status.success(), "{status:?}");

    assert_eq!(started_at_signal, 2);
    assert_eq!(
        lines_in(&starts),
        started_at_signal,
        "items started after SIGTERM"
    );
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("stopping: 2 items still running; they may finish for up to 10 s"),
        "{log}"
    );
}
