//! The `dts` client commands against a running `dts up`, and `dts up` reading
//! the seed's configuration file.

use crate::common::{DEADLINE, DtsUp, dts_binary, dts_client as dts, run_dts, text};
use std::process::{Command, Output};

#[tokio::test]
async fn submit_wait_exits_zero_for_a_completed_task_and_one_for_a_failed_one() {
    let up = DtsUp::start(&[]);
    let dir = tempfile::TempDir::new().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"templateFunction": "echo hi $1", "inputList": ["a", "b", "c"]}"#,
    )
    .unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"templateFunction": "[ \"$1\" != b ]", "inputList": ["a", "b", "c"]}"#,
    )
    .unwrap();

    let out = dts(&up, &["submit", good.to_str().unwrap(), "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("status:    COMPLETED"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("3 total, 3 succeeded, 0 failed"));

    let out = dts(&up, &["submit", bad.to_str().unwrap(), "--wait", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["status"], "FAILED");
    let id = task["id"].as_str().unwrap();

    let out = dts(&up, &["results", id, "--failed"]);
    assert_eq!(out.status.code(), Some(0));
    let listed = text(&out.stdout);
    assert!(listed.contains("#1 \"b\" [exit 1]"), "{listed}");
    assert!(!listed.contains("\"a\""), "{listed}");

    let out = dts(&up, &["status", id]);
    assert!(text(&out.stdout).contains("status:    FAILED"));
    let out = dts(&up, &["tasks"]);
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "{}",
        text(&out.stdout)
    );
    let out = dts(&up, &["workers"]);
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn submit_reads_standard_input_and_reports_server_errors_plainly() {
    let up = DtsUp::start(&[]);
    let mut child = Command::new(dts_binary())
        .args(["submit", "-", "--server", &up.base])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"templateFunction": "echo {{missing}}", "inputList": []}"#)
        .unwrap();
    let out = dts_testkit::finish_within(&mut child, DEADLINE, "dts submit -");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("{{missing}}") && stderr.contains("variableJson"),
        "{stderr}"
    );

    let out = dts(&up, &["status", "6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no task with id"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn cancel_through_the_cli_cancels_the_task() {
    let up = DtsUp::start(&[]);
    let id = up
        .submit(serde_json::json!({"templateFunction": "sleep 5", "inputList": ["a", "b"]}))
        .await;
    up.wait_task(&id, "running", |t| t["status"] == "INPROGRESS")
        .await;
    let out = dts(&up, &["cancel", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("CANCELLED"));
    let out = dts(&up, &["watch", &id]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test]
async fn dts_up_reads_the_seeds_application_properties_unchanged() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("application.properties");
    std::fs::write(&file, SEED_PROPERTIES).unwrap();
    // The file says port 30000; a flag overrides it (flags beat files), so
    // this test does not depend on that port being free. The file's topics
    // and consumer settings are used as they are.
    let up = DtsUp::start(&["--config", file.to_str().unwrap()]);
    let id = up
        .submit(serde_json::json!({"templateFunction": "echo $1", "inputList": ["a"]}))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert!(!up.log_text().contains("unknown key"), "{}", up.log_text());
}

/// The seed's `application.properties`, as its README gives it.
const SEED_PROPERTIES: &str = "server.port= 30000

# pubsub (kafka) props
pubsub.namespace=localhost:9092

pubsub.topic = distributed_task

pubsub.task-shard.topic = distributed_task_shard

pubsub.result.topic = distributed_task_completed

pubsub.consumergroup = task-subscribers

pubsub.consumercount = 2

# Redis Caching Params
spring.cache.type=redis

spring.redis.host=localhost

spring.redis.port=6379
";

fn dts_run(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(dts_binary())
        .arg("run")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dts run");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    dts_testkit::finish_within(&mut child, DEADLINE, "dts run")
}

#[test]
fn dts_run_prints_every_items_output_in_input_order() {
    let inputs: Vec<String> = (0..200).map(|i| format!("{i}")).collect();
    let out = dts_run(
        &[
            "--cores",
            "4",
            "sleep 0.0$(( $1 % 3 )); echo \"$1 squared is $(( $1 * $1 ))\"",
        ],
        &inputs.join("\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected: String = (0..200)
        .map(|i| format!("{i} squared is {}\n", i * i))
        .collect();
    assert_eq!(text(&out.stdout), expected);
}

#[test]
fn dts_run_takes_inputs_as_arguments_and_variables_and_fails_when_an_item_fails() {
    let out = dts_run(
        &[
            "[ \"$1\" != b ] && echo {{word}} $1",
            "--var",
            "word=ok",
            "a",
            "b",
            "c",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "ok a\nok c\n");
    assert!(
        text(&out.stderr).contains("item 1 (\"b\") failed: exit 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn dts_run_reads_a_task_file_and_can_print_json() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"templateFunction": "printf %s \"$1\"", "inputList": ["x", "y"]}"#,
    )
    .unwrap();
    let out = dts_run(&["--task", file.to_str().unwrap(), "--json"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results[0]["stdout"], "x");
    assert_eq!(results[1]["stdout"], "y");
    assert_eq!(results.as_array().unwrap().len(), 2);
}

#[test]
fn dts_run_refuses_a_template_with_missing_variables_before_running_anything() {
    let out = dts_run(&["echo {{missing}}", "a"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("{{missing}}"),
        "{}",
        text(&out.stderr)
    );
}

/// Items that append a line to `DIR/INPUT` each time they run; `slow`
/// takes 5 s, the others no time, so by the time it has run longer than
/// three medians and a second, the other core is idle.
fn runs_per_input(extra: &[&str]) -> Vec<(String, usize)> {
    let dir = tempfile::TempDir::new().unwrap();
    let template = format!(
        "echo run >> '{}'/\"$1\"; [ \"$1\" = slow ] && sleep 5; echo \"$1\"",
        dir.path().display()
    );
    let mut args = vec!["--cores", "2", template.as_str()];
    args.extend_from_slice(extra);
    args.extend(["a", "b", "c", "d", "slow"]);
    let out = dts_run(&args, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a\nb\nc\nd\nslow\n");
    ["a", "b", "c", "d", "slow"]
        .iter()
        .map(|input| {
            let runs = std::fs::read_to_string(dir.path().join(input)).unwrap_or_default();
            (input.to_string(), runs.lines().count())
        })
        .collect()
}

#[test]
fn dts_run_runs_each_item_once_unless_asked_to_speculate() {
    let once: Vec<(String, usize)> = ["a", "b", "c", "d", "slow"]
        .iter()
        .map(|i| (i.to_string(), 1))
        .collect();
    assert_eq!(runs_per_input(&[]), once, "like xargs and GNU parallel");
    let speculated = runs_per_input(&["--speculate"]);
    assert_eq!(
        speculated.last(),
        Some(&("slow".to_string(), 2)),
        "the straggler got a copy on the idle core: {speculated:?}"
    );
}

// ---------------------------------------------------------------------------
// Issue 12: no flag ignored, GNU parallel's input sources, Ctrl-C, results
// ---------------------------------------------------------------------------

#[test]
fn dts_run_takes_inputs_after_gnu_parallels_triple_and_quadruple_colons() {
    let dir = tempfile::TempDir::new().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "x y\nz\n").unwrap();

    let out = dts_run(&["echo \"<$1>\"", ":::", "a", "b c"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "<a>\n<b c>\n", "no item named :::");

    let out = dts_run(&["echo \"<$1>\"", "::::", list.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "<x y>\n<z>\n");
}

#[test]
fn dts_run_refuses_two_input_sources_naming_both_and_runs_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "x\n").unwrap();
    let marker = dir.path().join("ran");
    let template = format!("touch '{}'", marker.display());
    let list = list.to_str().unwrap();
    let why = "are two input sources; give one: GNU parallel would run every \
               combination of them, but a dts item has one input\n";
    for (args, named) in [
        (
            vec!["--inputs", list, "extra"],
            format!("the inputs \"extra\" and --inputs {list}"),
        ),
        (
            vec![":::", "a", "b", ":::", "c"],
            "::: \"a\" \"b\" and ::: \"c\"".to_string(),
        ),
        (
            vec!["::::", list, ":::", "c"],
            format!(":::: {list} and ::: \"c\""),
        ),
        (
            vec!["a", ":::", "b"],
            "the inputs \"a\" and ::: \"b\"".to_string(),
        ),
    ] {
        let mut all = vec![template.as_str()];
        all.extend(args.iter().copied());
        let out = dts_run(&all, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&out.stderr), format!("dts: error: {named} {why}"));
        assert_eq!(text(&out.stdout), "");
    }
    assert!(!marker.exists(), "an item ran");
}

#[test]
fn dts_run_flags_override_the_fields_of_a_task_file() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"templateFunction": "echo {{who}} $1 ${BASH_VERSION:+in-bash}",
            "variableJson": {"who": "file"}, "inputList": ["a"]}"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = dts_run(&["--task", file], "");
    assert_eq!(
        text(&out.stdout),
        "file a in-bash\n",
        "{}",
        text(&out.stderr)
    );
    let out = dts_run(
        &["--task", file, "--var", "who=flag", "--interpreter", "sh"],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "flag a\n",
        "--var and --interpreter applied"
    );

    let slow = dir.path().join("slow.json");
    std::fs::write(
        &slow,
        r#"{"templateFunction": "sleep 30", "inputList": ["a"], "timeoutSecs": 60}"#,
    )
    .unwrap();
    let out = dts_run(&["--task", slow.to_str().unwrap(), "--timeout", "1"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "dts: item 0 (\"a\") failed: timed out\n");
}

#[test]
fn a_misspelled_variable_gets_did_you_mean_in_the_command_lines_words() {
    let out = dts_run(&["echo {{nmae}}", "--var", "name=Ada", "a"], "");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "dts: error: no value for placeholder {{nmae}}: did you mean {{name}}? \
         (--var name=... was given)\n"
    );
    let out = dts_run(&["echo {{greeting}}", "a"], "");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        "dts: error: no value for placeholder {{greeting}}: give it with --var greeting=VALUE\n"
    );
}

#[test]
fn a_task_file_that_is_not_json_is_named_in_the_error() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(&file, "templateFunction: echo\n").unwrap();
    let shown = file.display().to_string();
    // No server listens there: the file is refused before any request.
    let out = run_dts(
        Command::new(dts_binary())
            .args(["submit", &shown, "--server", "http://127.0.0.1:9"])
            .env_remove("DTS_AUTH_TOKEN"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "dts: error: the task file {shown} is not valid JSON\n  \
             caused by: expected ident at line 1 column 2\n"
        )
    );
}

#[tokio::test]
async fn ctrl_c_during_submit_wait_says_the_task_keeps_running_and_how_to_cancel_it() {
    use std::io::BufRead;
    let up = DtsUp::start(&[]);
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"templateFunction": "sleep 60", "inputList": ["a"]}"#,
    )
    .unwrap();
    let mut child = Command::new(dts_binary())
        .args([
            "submit",
            file.to_str().unwrap(),
            "--wait",
            "--server",
            &up.base,
        ])
        .env_remove("DTS_AUTH_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first line names the task; the second says it is waiting.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for _ in 0..2 {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            lines.push(line);
        }
        let _ = tx.send(lines);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        let _ = tx.send(vec![rest]);
    });
    let first = rx
        .recv_timeout(DEADLINE)
        .expect("dts submit --wait to name its task and start waiting");
    let id = first[0]
        .strip_prefix("submitted task ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_string();
    up.wait_task(&id, "its item to run", |t| t["status"] == "INPROGRESS")
        .await;
    // SAFETY: kill sends a signal to the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = dts_testkit::wait_for_exit(&mut child, DEADLINE, "dts submit --wait");
    assert_eq!(status.code(), Some(130));
    let rest = rx.recv_timeout(DEADLINE).expect("the rest of stderr");
    assert_eq!(
        rest[0],
        format!(
            "dts: stopped waiting; task {id} keeps running on the server.\n\
             dts: to cancel it: dts cancel {id} --server {}\n",
            up.base
        )
    );
    assert_eq!(up.task(&id).await["status"], "INPROGRESS");
    let out = dts(&up, &["cancel", &id]);
    assert_eq!(text(&out.stdout), format!("{id} CANCELLED\n"));
}

#[tokio::test]
async fn results_say_so_when_a_task_was_cancelled_or_nothing_failed_and_show_attempts() {
    let up = DtsUp::start(&[]);
    // No worker has this label: the task waits, then is cancelled unrun.
    let unrun = up
        .submit(serde_json::json!({
            "templateFunction": "echo $1", "inputList": ["a", "b"],
            "requires": {"gpu": "none-here"},
        }))
        .await;
    let out = dts(&up, &["cancel", &unrun]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = dts(&up, &["results", &unrun]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!("dts: task {unrun} was cancelled before any of its 2 items ran\n")
    );

    let good = up
        .submit(serde_json::json!({"templateFunction": "echo $1", "inputList": ["a"]}))
        .await;
    assert_eq!(up.wait_ended(&good).await["status"], "COMPLETED");
    let out = dts(&up, &["results", &good, "--failed"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!("dts: no item of task {good} failed (COMPLETED, 1 of 1 item ran)\n")
    );

    let retried = up
        .submit(serde_json::json!({
            "templateFunction": "exit 3", "inputList": ["a"], "retries": 1,
        }))
        .await;
    assert_eq!(up.wait_ended(&retried).await["status"], "FAILED");
    let out = dts(&up, &["results", &retried]);
    let listed = text(&out.stdout);
    assert!(
        listed.starts_with("#0 \"a\" [exit 3] ") && listed.contains(" ms, attempt 2 of 2, on "),
        "{listed}"
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn items_that_would_start_after_the_deadline_do_not_start_and_fail_saying_so() {
    let dir = tempfile::TempDir::new().unwrap();
    let starts = dir.path().join("starts.log");
    let file = dir.path().join("task.json");
    let inputs: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
    let task = serde_json::json!({
        "templateFunction": format!("echo \"$1\" >> '{}'; sleep 3", starts.display()),
        "inputList": inputs,
        "deadlineSecs": 4,
    });
    std::fs::write(&file, task.to_string()).unwrap();
    let out = dts_run(
        &["--cores", "2", "--task", file.to_str().unwrap(), "--json"],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), 6);
    // The first two run on the two cores and end before the deadline; the
    // next two start at 3 s and are killed at 4 s (or, on a slow machine,
    // do not start); the last two would start at 6 s, past the deadline.
    let succeeded: Vec<u64> = results
        .iter()
        .filter(|r| r["succeeded"] == true)
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(succeeded, [0, 1], "{results:?}");
    let not_run = "not run: the task's deadline (deadlineSecs) passed before this item started";
    let killed = "killed: the task's deadline (deadlineSecs) passed while it ran";
    let errors: Vec<&str> = results[2..]
        .iter()
        .map(|r| r["error"].as_str().unwrap_or_default())
        .collect();
    assert!(
        errors.iter().all(|e| *e == not_run || *e == killed),
        "{errors:?}"
    );
    assert_eq!(&errors[2..], [not_run, not_run], "{errors:?}");
    let started = std::fs::read_to_string(&starts).unwrap().lines().count();
    let never_started = errors.iter().filter(|e| **e == not_run).count();
    assert_eq!(
        started + never_started,
        6,
        "an item past the deadline started"
    );
}

/// `dts submit ARGS` against `up`, with `stdin` on its standard input.
fn submit_with_stdin(up: &DtsUp, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(dts_binary())
        .arg("submit")
        .args(args)
        .arg("--server")
        .arg(&up.base)
        .env_remove("DTS_AUTH_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dts submit");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    dts_testkit::finish_within(&mut child, DEADLINE, "dts submit")
}

/// The stdout of each item of task `id`, in input order.
async fn stdouts(up: &DtsUp, id: &str) -> Vec<String> {
    let results = up.all_results(id, "").await;
    results
        .iter()
        .map(|r| r["stdout"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn submit_from_the_command_line_sends_the_template_inputs_and_variables_exactly() {
    let up = DtsUp::start(&[]);
    let template = "printf '%s|%s\\n' '{{greeting}}' \"$1\"";

    // GNU parallel's ::: with --wait: the task's JSON once it has ended.
    let out = submit_with_stdin(
        &up,
        &[
            template,
            "--var",
            "greeting=hi there",
            ":::",
            "a",
            "b c",
            "--wait",
            "--json",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["templateFunction"], template);
    assert_eq!(task["itemsTotal"], 2);
    // No flag asked: the server's default (it speculates).
    assert_eq!(task["speculation"], true);
    let id = task["id"].as_str().unwrap();
    assert_eq!(stdouts(&up, id).await, ["hi there|a\n", "hi there|b c\n"]);

    // Plain arguments, the task's fields from flags; prints the id.
    let out = submit_with_stdin(
        &up,
        &[
            template,
            "x",
            "--var",
            "greeting=yo",
            "--name",
            "nightly",
            "--timeout",
            "7",
            "--retries",
            "2",
            "--no-speculate",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    let task = up.wait_ended(&id).await;
    assert_eq!(task["name"], "nightly");
    assert_eq!(task["timeoutSecs"], 7);
    assert_eq!(task["retries"], 2);
    assert_eq!(task["speculation"], false);
    assert_eq!(stdouts(&up, &id).await, ["yo|x\n"]);

    // --inputs FILE, and standard input, one input per line.
    let dir = tempfile::TempDir::new().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "one\ntwo 2\n").unwrap();
    let args = [template, "--var", "greeting=f", "--wait", "--json"];
    let from_file = [&args[..], &["--inputs", list.to_str().unwrap()]].concat();
    for (args, stdin) in [(&from_file[..], ""), (&args[..], "one\ntwo 2\n")] {
        let out = submit_with_stdin(&up, args, stdin);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = task["id"].as_str().unwrap();
        assert_eq!(stdouts(&up, id).await, ["f|one\n", "f|two 2\n"]);
    }
    assert_eq!(up.task_count().await, 4);
}

#[tokio::test]
async fn submit_refuses_two_input_sources_and_a_task_file_with_inputs_naming_both() {
    let up = DtsUp::start(&[]);
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"templateFunction": "echo $1", "inputList": ["a"]}"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let sources = "are two input sources; give one: GNU parallel would run every \
                   combination of them, but a dts item has one input\n";
    let file_and = "cannot go together: a task file is sent as it is; \
                    give the file alone, or a template with its inputs and flags\n";
    for (args, error) in [
        (
            vec!["echo $1", ":::", "a", ":::", "b"],
            format!("::: \"a\" and ::: \"b\" {sources}"),
        ),
        (
            vec!["echo $1", "x", "--inputs", file],
            format!("the inputs \"x\" and --inputs {file} {sources}"),
        ),
        (
            vec![file, ":::", "a"],
            format!("the task file {file} and the inputs \":::\" \"a\" {file_and}"),
        ),
        (
            vec!["-", "--timeout", "5"],
            format!("- (a JSON task on standard input) and --timeout 5 {file_and}"),
        ),
    ] {
        let out = submit_with_stdin(&up, &args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&out.stderr), format!("dts: error: {error}"));
        assert_eq!(text(&out.stdout), "");
    }
    let out = submit_with_stdin(&up, &["echo $1", "a", "--speculate", "--no-speculate"], "");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("'--speculate' cannot be used with '--no-speculate'"),
        "{stderr}"
    );
    assert_eq!(up.task_count().await, 0, "a refused submit sent a task");
}
