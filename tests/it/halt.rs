//! A task's `halt` (GNU parallel's `--halt`) on a server: `dts up` and a
//! distributed cluster stop the task at the failure, as `dts run` does.

use crate::common::{Api, DtsUp, dts_binary, dts_client, items, run_dts, shared_dir, task, text};
use crate::distributed::Cluster;
use serde_json::Value;
use std::path::Path;

/// `n` items that append their input to `dir/ran` when they start; item-1
/// fails (exit 4) after a second, so an item-0 on another core has surely
/// started, and item-0 runs `first` before it succeeds.
fn halting_task(dir: &Path, n: usize, halt: &str, first: &str) -> Value {
    let dir = dir.display();
    let mut task = task(
        &format!(
            "echo \"$1\" >> '{dir}'/ran\n\
             case \"$1\" in item-0) {first} ;; item-1) sleep 1; exit 4 ;; esac\n\
             echo \"ok $1\""
        ),
        &items(n),
    );
    task["halt"] = Value::from(halt);
    task
}

fn started(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("ran")).unwrap_or_default()
}

/// One core: item-0 succeeds, item-1 fails, and nothing after it starts.
/// 100 items, so that the first shard holds several (100 ÷ 16 on one
/// core): the items after item-1 in its own shard do not start either.
async fn halts_now_at_the_first_failure(api: &Api, dir: &Path) {
    let id = api
        .submit(halting_task(dir, 100, "now,fail=1", "true"))
        .await;
    let ended = api.wait_ended(&id).await;
    assert_eq!(ended["status"], "FAILED", "{ended}");
    assert_eq!(ended["error"], "halted: 1 item failed (halt now,fail=1)");
    assert_eq!(ended["halt"], "now,fail=1");
    assert_eq!(
        (
            ended["itemsSucceeded"].as_u64(),
            ended["itemsFailed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(started(dir), "item-0\nitem-1\n");
    let results = api.all_results(&id, "").await;
    let indices: Vec<&Value> = results.iter().map(|r| &r["index"]).collect();
    assert_eq!(indices, [0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_now_on_dts_up_fails_the_task_at_the_first_failure_and_starts_no_other_item() {
    let dir = shared_dir();
    let up = DtsUp::start(&["--cores", "1"]);
    halts_now_at_the_first_failure(&up, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_soon_on_dts_up_lets_the_running_item_finish_and_starts_no_new_one() {
    let dir = shared_dir();
    let up = DtsUp::start(&["--cores", "2"]);
    // item-0 runs beside item-1 (each slot takes a shard) and is still
    // running when item-1 fails.
    let id = up
        .submit(halting_task(dir.path(), 6, "soon,fail=1", "sleep 3"))
        .await;
    let ended = up.wait_ended(&id).await;
    assert_eq!(ended["status"], "FAILED", "{ended}");
    assert_eq!(ended["error"], "halted: 1 item failed (halt soon,fail=1)");
    let finished = up
        .wait_task(&id, "item-0's result recorded", |t| {
            t["itemsSucceeded"] == 1
        })
        .await;
    assert_eq!(finished["itemsFailed"], 1);
    let results = up.all_results(&id, "").await;
    let outcomes: Vec<(&Value, &Value)> = results
        .iter()
        .map(|r| (&r["index"], &r["exitCode"]))
        .collect();
    assert_eq!(
        outcomes,
        [
            (&Value::from(0), &Value::from(0)),
            (&Value::from(1), &Value::from(4))
        ]
    );
    assert_eq!(results[0]["stdout"], "ok item-0\n");
    let mut ran: Vec<String> = started(dir.path()).lines().map(String::from).collect();
    ran.sort();
    assert_eq!(
        ran,
        ["item-0", "item-1"],
        "nothing started after the failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_submit_halt_sends_the_halt_and_the_task_stops_at_it() {
    let dir = shared_dir();
    let up = DtsUp::start(&["--cores", "1"]);
    let log = dir.path().join("ran");
    let template = format!(
        "echo \"$1\" >> '{}'; [ \"$1\" != b ] || exit 4",
        log.display()
    );
    let out = dts_client(
        &up,
        &[
            "submit",
            "--halt",
            "now,fail=1",
            "--wait",
            &template,
            ":::",
            "a",
            "b",
            "c",
            "d",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nb\n");
    let out = dts_client(&up, &["submit", "--halt", "now,done=1", "true", "a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"done=1\" in \"now,done=1\": only fail=N is supported"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_now_in_distributed_mode_fails_the_task_at_the_first_failure() {
    let dir = shared_dir();
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let _worker = cluster.worker("w1", 1);
    halts_now_at_the_first_failure(&server, dir.path()).await;
}

#[test]
fn dts_run_with_a_task_file_halts_at_its_halt_field() {
    let dir = tempfile::TempDir::new().unwrap();
    let log = dir.path().join("ran");
    let file = dir.path().join("task.json");
    let body = serde_json::json!({
        "templateFunction": format!("echo \"$1\" >> '{}'; [ \"$1\" != b ] || exit 6; echo \"$1\"", log.display()),
        "inputList": ["a", "b", "c", "d"],
        "halt": "now,fail=1",
    });
    std::fs::write(&file, body.to_string()).unwrap();
    let out = run_dts(
        std::process::Command::new(dts_binary())
            .args(["run", "-j", "1", "--task"])
            .arg(&file),
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a\n");
    assert!(
        text(&out.stderr).contains("dts: halted (--halt now,fail=1): 1 item failed; killed "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "a\nb\n");
}
