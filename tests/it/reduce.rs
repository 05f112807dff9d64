//! A task's `reduce` step over HTTP, on `dts up` and on a cluster, and in
//! `dts run --reduce`: it reads every result, its result ends the task, and
//! a worker killed mid-reduce costs an attempt, not a second result.

use crate::common::{Api, DtsUp, dts_binary, run_dts, shared_dir, text};
use crate::distributed::{Cluster, wait_for_workers};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Sums the `stdout` of every result line (a number each), streaming.
const SUM_STDOUT: &str = "jq -n 'reduce (inputs | .stdout | tonumber) as $n (0; . + $n)'";

/// `n` lines of a few words each, different per line.
fn lines(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let words = 1 + i % 7;
            (0..words)
                .map(|w| format!("w{i}x{w}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// What `wc -w` says of `lines`, one per line.
fn wc_words(dir: &Path, lines: &[String]) -> u64 {
    let file = dir.join("all.txt");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write the lines");
    let out = Command::new("wc")
        .arg("-w")
        .arg(&file)
        .output()
        .expect("run wc");
    text(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("wc said {}", text(&out.stdout)))
}

/// A task counting each input's words, whose reduce sums the counts.
fn word_count(inputs: &[String]) -> Value {
    json!({
        "templateFunction": "set -f; set -- $1; echo $#",
        "inputList": inputs,
        "reduce": {"templateFunction": SUM_STDOUT, "timeoutSecs": 300},
    })
}

async fn a_10000_item_word_count_sums_to_what_wc_says(api: &Api, dir: &Path) {
    let inputs = lines(10_000);
    let expected = wc_words(dir, &inputs);
    let id = api.submit(word_count(&inputs)).await;
    // 10,000 processes: about 20 s on 2 idle cores, minutes on a loaded
    // machine running other tests beside it.
    let task = dts_testkit::wait_for(
        Duration::from_secs(600),
        "the 10,000-item word count and its reduce to end",
        || async {
            let task = api.task(&id).await;
            match task["status"].as_str() {
                Some("COMPLETED" | "FAILED" | "CANCELLED") => Ok(task),
                _ => Err(format!(
                    "{} of 10000 items done, {}",
                    task["itemsSucceeded"], task["status"]
                )),
            }
        },
    )
    .await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["itemsSucceeded"], 10_000);
    let result = &task["reduce"]["result"];
    assert_eq!(result["succeeded"], true, "{task}");
    assert_eq!(result["exitCode"], 0);
    assert_eq!(result["attempt"], 1);
    assert_eq!(
        result["stdout"].as_str().map(str::trim),
        Some(expected.to_string().as_str()),
        "the reduce's sum is wc's count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dts_up_a_10000_item_word_count_reduces_to_what_wc_says() {
    let dir = shared_dir();
    let up = DtsUp::start(&["--cores", "2"]);
    a_10000_item_word_count_sums_to_what_wc_says(&up, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_10000_item_word_count_reduces_to_what_wc_says() {
    let dir = shared_dir();
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _worker = cluster.worker("w1", 2);
    wait_for_workers(&server, 1).await;
    a_10000_item_word_count_sums_to_what_wc_says(&server, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reduce_fails_the_task_and_a_failed_item_skips_a_success_only_reduce() {
    let up = DtsUp::start(&["--cores", "2"]);
    let failing_reduce = up
        .submit(json!({
            "templateFunction": "echo \"$1\"",
            "inputList": ["a", "b"],
            "reduce": {"templateFunction": "cat > /dev/null; echo broken >&2; exit 4"},
        }))
        .await;
    let task = up.wait_ended(&failing_reduce).await;
    assert_eq!(task["status"], "FAILED", "{task}");
    assert_eq!(task["error"], "the reduce exited 4 (attempt 1)", "{task}");
    assert_eq!(task["reduce"]["result"]["stderr"], "broken\n");
    assert_eq!(task["itemsSucceeded"], 2);

    for (when, reduced) in [("success", false), ("always", true)] {
        let id = up
            .submit(json!({
                "templateFunction": "test \"$1\" != b",
                "inputList": ["a", "b", "c"],
                "reduce": {"templateFunction": "jq -s 'map(.exitCode)'", "when": when},
            }))
            .await;
        let task = up.wait_ended(&id).await;
        assert_eq!(task["status"], "FAILED", "{when}: {task}");
        let result = &task["reduce"]["result"];
        assert_eq!(!result.is_null(), reduced, "{when}: {task}");
        if reduced {
            let codes: Value = serde_json::from_str(result["stdout"].as_str().unwrap_or("null"))
                .expect("the reduce printed JSON");
            assert_eq!(codes, json!([0, 1, 0]), "every result, in index order");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reduce_whose_worker_is_killed_runs_again_elsewhere_and_counts_once() {
    let dir = shared_dir();
    let starts = dir.path().join("reduce-starts");
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let mut first = cluster.worker("w1", 1);
    wait_for_workers(&server, 1).await;
    // Slow enough to be killed mid-run; it notes each start, and where.
    let reduce = format!(
        "echo \"$DTS_WORKER_ID $DTS_ATTEMPT\" >> '{}'; sleep 3; jq -s length",
        starts.display()
    );
    let id = server
        .submit(json!({
            "templateFunction": "echo \"$1\"",
            "inputList": ["a", "b", "c"],
            "reduce": {"templateFunction": reduce, "timeoutSecs": 60},
        }))
        .await;
    dts_testkit::wait_for(
        crate::common::DEADLINE,
        "the reduce to start on w1",
        || async {
            let started = std::fs::read_to_string(&starts).unwrap_or_default();
            if started.starts_with("w1 ") {
                Ok(())
            } else {
                Err(started)
            }
        },
    )
    .await;
    assert_eq!(server.task(&id).await["status"], "REDUCING");
    first.kill9();
    let _second = cluster.worker("w2", 1);

    let task = server.wait_ended(&id).await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    let result = &task["reduce"]["result"];
    assert_eq!(result["worker"], "w2", "{task}");
    assert_eq!(result["attempt"], 2, "the killed run cost one attempt");
    assert_eq!(result["stdout"], "3\n", "every result read, once");
    let started = std::fs::read_to_string(&starts).unwrap_or_default();
    assert_eq!(started, "w1 1\nw2 2\n", "run once per attempt");
    // One end, so one completion event's worth of state: the task is not
    // reopened by the killed run's worker coming back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(server.task(&id).await["reduce"]["result"]["attempt"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dts_up_a_reduce_killed_with_the_server_runs_again_after_the_restart() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    // Items (and reduces) of `dts up` run as nobody: the log they write
    // is in a directory anyone may write.
    let shared = shared_dir();
    let starts = shared.path().join("reduce-starts");
    let args = ["--cores", "1", "--set", "worker.heartbeat-ttl-ms=3000"];
    let up = DtsUp::start_in(&data, &args, &[]);
    let reduce = format!(
        "echo \"$DTS_ATTEMPT\" >> '{}'; sleep 3; jq -s 'map(.stdout) | add'",
        starts.display()
    );
    let id = up
        .submit(json!({
            "templateFunction": "echo -n \"$1\"",
            "inputList": ["x", "y", "z"],
            "reduce": {"templateFunction": reduce, "timeoutSecs": 60},
        }))
        .await;
    dts_testkit::wait_for(crate::common::DEADLINE, "the reduce to start", || async {
        let started = std::fs::read_to_string(&starts).unwrap_or_default();
        if started.is_empty() {
            Err("not yet".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    up.kill9();
    let up = DtsUp::start_in(&data, &args, &[]);
    let task = up.wait_ended(&id).await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["reduce"]["result"]["stdout"], "\"xyz\"\n");
    assert_eq!(task["reduce"]["result"]["attempt"], 2);
    let started = std::fs::read_to_string(&starts).unwrap_or_default();
    assert_eq!(started, "1\n2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_task_whose_reduce_failed_runs_only_the_reduce_again() {
    let dir = shared_dir();
    let marker = dir.path().join("second-time");
    let up = DtsUp::start(&["--cores", "2"]);
    // Fails the first time, succeeds once the marker exists.
    let reduce = format!(
        "if [ -e '{m}' ]; then jq -s length; else touch '{m}'; exit 5; fi",
        m = marker.display()
    );
    let id = up
        .submit(json!({
            "templateFunction": "echo \"$1\"",
            "inputList": ["a", "b"],
            "reduce": {"templateFunction": reduce},
        }))
        .await;
    let failed = up.wait_ended(&id).await;
    assert_eq!(
        failed["error"], "the reduce exited 5 (attempt 1)",
        "{failed}"
    );
    let (status, retried) = up
        .post_json(&format!("/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["queued"], 0, "no item runs again: {retried}");
    assert_eq!(retried["task"]["status"], "REDUCING", "{retried}");
    let task = up.wait_ended(&id).await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["reduce"]["result"]["stdout"], "2\n");
    assert_eq!(task["itemsSucceeded"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reduce_fields_are_refused_naming_them() {
    let up = DtsUp::start(&["--cores", "1"]);
    for (reduce, field) in [
        (json!("sum"), "reduce"),
        (
            json!({"templateFunction": "echo {{nope}}"}),
            "reduce.templateFunction",
        ),
        (
            json!({"templateFunction": "x", "when": "never"}),
            "reduce.when",
        ),
        (
            json!({"templateFunction": "x", "timeoutSecs": 0}),
            "reduce.timeoutSecs",
        ),
    ] {
        let body = json!({"templateFunction": "true", "inputList": ["a"], "reduce": reduce});
        let (status, answer) = up.post_json("/v1/tasks", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
}

#[test]
fn dts_run_reduce_prints_the_reduce_s_output_instead_of_the_items() {
    let dir = shared_dir();
    let inputs = lines(1000);
    let expected = wc_words(dir.path(), &inputs);
    let list = dir.path().join("list.txt");
    std::fs::write(&list, inputs.join("\n") + "\n").expect("write the list");
    let out = run_dts(
        Command::new(dts_binary())
            .args(["run", "-j", "2", "--reduce", SUM_STDOUT])
            .arg("echo \"$1\" | wc -w")
            .arg("::::")
            .arg(&list),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), expected.to_string());

    let out = run_dts(
        Command::new(dts_binary())
            .args(["run", "--reduce", "cat > /dev/null; exit 3"])
            .args(["true", ":::", "a"]),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the reduce exited 3"),
        "{}",
        text(&out.stderr)
    );
}
