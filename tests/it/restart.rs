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
