//! How items run: inputs as data, failures, timeouts, retries, cancellation,
//! the environment, interpreters and the seed's single-executable templates.

use crate::common::{
    CANCEL_BOUND, CANCEL_PROMISE, DtsUp, items, process_gone, task, wait_for_pids,
};
use dts_testkit::wait_until;
use reqwest::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn hostile_items_reach_the_script_verbatim_and_run_nothing() {
    hostile_items_run_nothing(&[]).await;
}

#[tokio::test]
async fn hostile_items_reach_warm_shells_verbatim_and_run_nothing() {
    hostile_items_run_nothing(&["--warm-shell"]).await;
}

/// One result per item, in index order, with what a user compares.
async fn comparable_results(up: &DtsUp, id: &str) -> Vec<serde_json::Value> {
    up.all_results(id, "")
        .await
        .iter()
        .map(|r| {
            json!([
                r["index"],
                r["input"],
                r["exitCode"],
                r["signal"],
                r["timedOut"],
                r["stdout"],
                r["stderr"],
                r["attempt"]
            ])
        })
        .collect()
}

#[tokio::test]
async fn warm_shells_give_every_item_the_result_a_fresh_process_gives() {
    // Successes, failures, a retried failure, a timeout, stdin, variables
    // and output on both streams, in one task run both ways.
    let script = r#"case "$1" in
  fail-*) echo "no: $1" >&2; exit 3 ;;
  slow-*) echo started; sleep 30 ;;
  flaky-*) [ -e "$DTS_TASK_ID.$1" ] || { touch "$DTS_TASK_ID.$1"; exit 1; } ;;
esac
printf '%s|%s|%s|{{greeting}}|%s\n' "$1" "$DTS_ITEM_INDEX" "$(cat)" "$((${#1} * 2))"
echo "to stderr $DTS_ITEM" >&2"#;
    let mut inputs = items(300);
    for i in (0..300).step_by(37) {
        inputs[i] = format!("fail-{i}");
    }
    inputs[5] = "slow-5".into();
    inputs[6] = "flaky-6".into();
    inputs[7] = "it's \"quoted\" $(touch pwned) `x`".into();
    let body = json!({
        "templateFunction": script,
        "variableJson": {"greeting": "hi there"},
        "inputList": inputs,
        "timeoutSecs": 2,
        "retries": 1,
        // The flaky item counts its tries in a file: a copy of its shard
        // (slow-5 makes the shard straggle) would see the file and succeed
        // at its first try.
        "speculation": false,
    });
    let mut outcomes = Vec::new();
    for extra in [&[][..], &["--warm-shell"][..]] {
        let dir = crate::common::shared_dir();
        let workdir = format!("executor.workdir={}", dir.path().display());
        let mut args = vec!["--set", workdir.as_str()];
        args.extend_from_slice(extra);
        let up = DtsUp::start(&args);
        let id = up.submit(body.clone()).await;
        let done = up.wait_ended(&id).await;
        assert_eq!(done["status"], "FAILED", "{extra:?}: {done}");
        assert_eq!(done["itemsSucceeded"], 290, "{extra:?}: {done}");
        assert_eq!(done["itemsFailed"], 10, "{extra:?}: {done}");
        assert!(
            !dir.path().join("pwned").exists(),
            "{extra:?}: an item ran code"
        );
        // The task id differs between the two runs; the results must not.
        let results: Vec<_> = comparable_results(&up, &id)
            .await
            .into_iter()
            .map(|r| serde_json::Value::String(r.to_string().replace(&id, "<task>")))
            .collect();
        assert_eq!(results.len(), 300, "{extra:?}");
        outcomes.push(results);
    }
    let (fresh, warm) = (&outcomes[0], &outcomes[1]);
    for (f, w) in fresh.iter().zip(warm) {
        assert_eq!(w, f, "warm shell result differs");
    }
    assert!(
        fresh[5].to_string().contains("true"),
        "slow-5 timed out: {}",
        fresh[5]
    );
}

async fn hostile_items_run_nothing(extra: &[&str]) {
    let up = DtsUp::start(extra);
    let dir = crate::common::shared_dir();
    let marker = dir.path().join("pwned");
    let m = marker.display().to_string();
    let inputs: Vec<String> = vec![
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("; touch {m}"),
        format!("| touch {m}"),
        format!("&& touch {m}"),
        format!("'\"; touch {m}; echo \""),
        format!("line one\ntouch {m}\nline three"),
        "-n".into(),
        "--help".into(),
        "-e \\x41".into(),
        "${HOME}".into(),
        "$1 $0 $@".into(),
        "*".into(),
        "\\".into(),
        "héllo wörld ✓ 日本語 🎉".into(),
        "   spaces around   ".into(),
        String::new(),
        "tab\there".into(),
        "x".repeat(10_000),
    ];
    // $1, DTS_ITEM and stdin each printed, separated by a byte no item has.
    let id = up
        .submit(task(
            "printf '%s\\x1f%s\\x1f' \"$1\" \"$DTS_ITEM\"; cat",
            &inputs,
        ))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let results = up.all_results(&id, "").await;
    assert_eq!(results.len(), inputs.len());
    for (input, result) in inputs.iter().zip(&results) {
        assert_eq!(result["input"], json!(input));
        let expected = format!("{input}\u{1f}{input}\u{1f}{input}\n");
        assert_eq!(result["stdout"], json!(expected), "item {input:?}");
    }
    assert!(!marker.exists(), "an item was executed as code");
}

#[tokio::test]
async fn failing_items_are_recorded_with_their_exit_code_and_the_task_fails() {
    let up = DtsUp::start(&[]);
    let id = up
        .submit(task("echo before; echo oops >&2; exit 3", &items(3)))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["itemsFailed"], 3);
    assert_eq!(done["itemsSucceeded"], 0);
    let results = up.all_results(&id, "&status=failed").await;
    assert_eq!(results.len(), 3);
    for r in &results {
        assert_eq!(r["exitCode"], 3);
        assert_eq!(r["stdout"], "before\n");
        assert_eq!(r["stderr"], "oops\n");
        assert_eq!(r["timedOut"], false);
    }
}

#[tokio::test]
async fn an_item_over_its_timeout_is_killed_with_its_children_and_recorded_as_timed_out() {
    let up = DtsUp::start(&[]);
    let dir = crate::common::shared_dir();
    let pid_file = dir.path().join("child.pid");
    let body = json!({
        "templateFunction": format!("sleep 60 & echo $! > {}; wait", pid_file.display()),
        "inputList": ["slow"],
        "timeoutSecs": 1
    });
    let started = Instant::now();
    let id = up.submit(body).await;
    let done = up.wait_ended(&id).await;
    // Far below the item's own minute of sleep: the 1 s timeout ended it.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(done["status"], "FAILED");
    let result = &up.all_results(&id, "").await[0];
    assert_eq!(result["timedOut"], true, "{result}");
    assert_eq!(result["succeeded"], false);
    assert!(result["exitCode"].is_null());
    assert!(result["signal"].is_number(), "{result}");
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        process_gone(child),
        "the item's background child survived the timeout"
    );
}

#[tokio::test]
async fn a_failing_item_is_retried_and_the_attempt_is_recorded() {
    let up = DtsUp::start(&[]);
    let dir = crate::common::shared_dir();
    let counter = dir.path().join("attempts");
    let body = json!({
        "templateFunction": "echo x >> {{counter}}; [ $(wc -l < {{counter}}) -ge 3 ] && echo third || exit 1",
        "variableJson": {"counter": counter.display().to_string()},
        "inputList": ["flaky"],
        "retries": 2
    });
    let id = up.submit(body).await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let result = &up.all_results(&id, "").await[0];
    assert_eq!(result["attempt"], 3);
    assert_eq!(result["stdout"], "third\n");
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        3
    );
}

#[tokio::test]
async fn items_see_their_attempt_and_worker_and_a_retry_is_attempt_two() {
    // Cold processes and warm shells both.
    for extra in [&[][..], &["--warm-shell"][..]] {
        let up = DtsUp::start(extra);
        // The first attempt fails; the retry says who and which attempt it is.
        let body = json!({
            "templateFunction": "echo \"$DTS_ATTEMPT $DTS_WORKER_ID\"; [ \"$DTS_ATTEMPT\" = 2 ]",
            "inputList": ["once"],
            "retries": 1
        });
        let id = up.submit(body).await;
        let done = up.wait_ended(&id).await;
        assert_eq!(done["status"], "COMPLETED", "{extra:?}: {done}");
        let result = &up.all_results(&id, "").await[0];
        assert_eq!(result["attempt"], 2, "{extra:?}");
        let worker = result["worker"].as_str().expect("worker");
        assert_eq!(result["stdout"], format!("2 {worker}\n"), "{extra:?}");
    }
}

/// Starts `inputs` with a script that finishes `quick-*` items at once and
/// keeps the others running (each writes its PID to `dir`).
async fn start_cancellable(up: &DtsUp, dir: &std::path::Path, inputs: &[&str]) -> String {
    let body = json!({
        "templateFunction": "case \"$1\" in quick-*) echo done; exit 0;; esac; echo $$ > {{dir}}/$1.pid; exec sleep 60",
        "variableJson": {"dir": dir.display().to_string()},
        "inputList": inputs,
    });
    up.submit(body).await
}

#[tokio::test]
async fn cancelling_kills_running_items_within_two_seconds_and_keeps_results() {
    // Four cores for four items: every item starts at once.
    let up = DtsUp::start(&["--cores", "4"]);
    let dir = crate::common::shared_dir();
    let id = start_cancellable(&up, dir.path(), &["quick-0", "quick-1", "slow-2", "slow-3"]).await;
    let running = wait_for_pids(dir.path(), 2).await;
    up.wait_task(&id, "two items done", |t| t["itemsSucceeded"] == 2)
        .await;

    let (status, cancelled) = up
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "CANCELLED");
    wait_until(
        CANCEL_BOUND,
        &format!("the running items {running:?} to end after the cancel (promised within {CANCEL_PROMISE:?})"),
        || async { running.iter().all(|pid| process_gone(*pid)) },
    )
    .await;

    let task = up.task(&id).await;
    assert_eq!(task["status"], "CANCELLED");
    assert!(task["finishedAt"].is_string());
    let results = up.all_results(&id, "").await;
    let kept: Vec<&str> = results
        .iter()
        .map(|r| r["input"].as_str().unwrap())
        .collect();
    assert_eq!(
        kept,
        vec!["quick-0", "quick-1"],
        "results recorded before the cancel are kept"
    );

    let (status, again) = up
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
}

#[tokio::test]
async fn after_a_cancel_no_new_item_starts() {
    let up = DtsUp::start(&["--cores", "2"]);
    let dir = crate::common::shared_dir();
    let inputs: Vec<String> = (0..10).map(|i| format!("slow-{i}")).collect();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let id = start_cancellable(&up, dir.path(), &inputs).await;
    let running = wait_for_pids(dir.path(), 2).await;

    let (status, _) = up
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_until(
        CANCEL_BOUND,
        &format!("the running items {running:?} to end after the cancel (promised within {CANCEL_PROMISE:?})"),
        || async { running.iter().all(|pid| process_gone(*pid)) },
    )
    .await;
    // Both slots are free now; give a wrongly started item time to appear.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(started, 2, "an item started after the cancel");
    assert_eq!(up.task(&id).await["status"], "CANCELLED");
}

#[tokio::test]
async fn scripts_get_a_cleared_environment_with_the_dts_variables() {
    let dir = crate::common::shared_dir();
    let up = DtsUp::start_in(
        &dir.path().join("data"),
        &[],
        &[
            ("DTS_TEST_SECRET", "hunter2"),
            ("AWS_SECRET_ACCESS_KEY", "k"),
        ],
    );
    let id = up
        .submit(task(
            "echo \"${DTS_TEST_SECRET:-none} ${AWS_SECRET_ACCESS_KEY:-none} $DTS_ITEM $DTS_ITEM_INDEX $DTS_SHARD_INDEX $DTS_TASK_ID\"; test -n \"$PATH\"",
            &items(2),
        ))
        .await;
    up.wait_ended(&id).await;
    let results = up.all_results(&id, "").await;
    let words: Vec<String> = results[1]["stdout"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(words[..4], ["none", "none", "item-1", "1"]);
    assert!(words[4].parse::<u32>().is_ok());
    assert_eq!(words[5], id);
    assert_eq!(results[1]["exitCode"], 0);
}

#[tokio::test]
async fn another_interpreter_runs_the_script() {
    let up = DtsUp::start(&[]);
    let body =
        json!({"templateFunction": "echo \"sh got $1\"", "interpreter": "sh", "inputList": ["z"]});
    let id = up.submit(body).await;
    up.wait_ended(&id).await;
    assert_eq!(up.all_results(&id, "").await[0]["stdout"], "sh got z\n");

    let body = json!({"templateFunction": "echo hi", "interpreter": "no-such-interpreter-here", "inputList": ["z"]});
    let id = up.submit(body).await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "FAILED");
    let result = &up.all_results(&id, "").await[0];
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("no-such-interpreter-here"),
        "{result}"
    );
}

#[tokio::test]
async fn a_template_naming_one_executable_runs_it_directly_with_the_item() {
    let up = DtsUp::start(&[]);
    let dir = crate::common::shared_dir();
    let script = dir.path().join("job.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"job: $1 ($#)\"\n").unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&script).unwrap().permissions(),
        0o755,
    );
    let mut permissions = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&script, permissions).unwrap();

    let id = up
        .submit(task(
            &script.display().to_string(),
            &["one two".to_string()],
        ))
        .await;
    up.wait_ended(&id).await;
    assert_eq!(
        up.all_results(&id, "").await[0]["stdout"],
        "job: one two (1)\n"
    );
}

#[tokio::test]
async fn a_task_past_its_deadline_kills_the_running_item_and_starts_no_other() {
    let up = DtsUp::start(&["--cores", "1"]);
    let body = json!({
        "templateFunction": "sleep 1; echo \"$1\"",
        "inputList": items(6),
        "deadlineSecs": 2,
    });
    let (status, created) = up.post_json("/v1/tasks", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["deadlineSecs"], 2);
    let id = created["id"].as_str().unwrap();
    let done = up.wait_ended(id).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(done["itemsTotal"], 6);
    assert_eq!(
        done["itemsSucceeded"].as_u64().unwrap() + done["itemsFailed"].as_u64().unwrap(),
        6
    );
    assert!(done["itemsSucceeded"].as_u64().unwrap() <= 2, "{done}");

    let failed = up.all_results(id, "&status=failed").await;
    let killed = failed
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("killed: the task's deadline")
        })
        .count();
    let unrun = failed
        .iter()
        .filter(|r| {
            r["error"]
                .as_str()
                .unwrap_or("")
                .starts_with("not run: the task's deadline")
        })
        .count();
    assert!(killed <= 1, "{failed:?}");
    assert!(
        unrun >= 3,
        "items after the deadline are failed without running: {failed:?}"
    );
    assert_eq!(
        killed + unrun,
        failed.len(),
        "every failure is the deadline's: {failed:?}"
    );
}
