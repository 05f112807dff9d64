//! GNU parallel's habits on a command-line `dts submit`, against a running
//! `dts up`: `-j`, `--dry-run`, and `--tag`, `--joblog`, `--results` with
//! `--wait` (docs/cli.md, the table's "dts submit" column).

use crate::common::{DtsUp, dts_binary, dts_client as dts, run_dts, shared_dir, text};
use crate::run::assert_results_of_a_and_b;
use std::path::Path;
use std::process::Command;

#[tokio::test]
async fn submit_j_1_runs_one_item_at_a_time_across_the_cluster() {
    let up = DtsUp::start(&[]);
    let dir = shared_dir();
    let log = dir.path().join("log");
    // Each item notes its start and its end in one file (short appends
    // are atomic): one at a time, every start is followed by its own end.
    let template = format!(
        "echo \"start $1\" >> '{log}'; sleep 0.3; echo \"end $1\" >> '{log}'",
        log = log.display()
    );
    let out = dts(
        &up,
        &[
            "submit", &template, "-j", "1", "--wait", "--json", ":::", "a", "b", "c", "d",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines.len(), 8, "{logged}");
    for pair in lines.chunks(2) {
        let started = pair[0].strip_prefix("start ");
        let ended = pair[1].strip_prefix("end ");
        assert!(
            started.is_some() && started == ended,
            "two items ran at once:\n{logged}"
        );
    }
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task["maxConcurrency"], 1);
    assert_eq!(task["itemsSucceeded"], 4);
}

#[tokio::test]
async fn submit_dry_run_prints_what_dts_run_would_and_sends_nothing() {
    let up = DtsUp::start(&[]);
    let args = [
        "--dry-run",
        "--var",
        "word=hi",
        "echo {{word}} \"$1\"",
        ":::",
        "a",
        "b c",
        "it's",
    ];
    let out = dts(&up, &[&["submit"][..], &args].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[1].ends_with(" dts-item 'b c'"), "{}", lines[1]);
    let run = run_dts(Command::new(dts_binary()).arg("run").args(args));
    assert_eq!(text(&out.stdout), text(&run.stdout));

    let listed = dts(&up, &["tasks"]);
    assert_eq!(
        text(&listed.stdout).lines().count(),
        1,
        "{}",
        text(&listed.stdout)
    );
    assert_eq!(up.task_count().await, 0, "a dry run sent a task");
}

#[tokio::test]
async fn submit_wait_joblog_has_the_header_and_one_line_per_item_with_its_exit_code() {
    let up = DtsUp::start(&[]);
    let dir = tempfile::TempDir::new().unwrap();
    let log = dir.path().join("jobs.tsv");
    let out = dts(
        &up,
        &[
            "submit",
            "echo $1; [ $1 != b ] || exit 3",
            "a",
            "b",
            "c",
            "--wait",
            "--joblog",
            log.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("items:     3 total, 2 succeeded, 1 failed"),
        "{}",
        text(&out.stdout)
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<Vec<&str>> = logged.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 4, "{logged}");
    assert_eq!(
        rows[0],
        [
            "Seq",
            "Host",
            "Starttime",
            "JobRuntime",
            "Send",
            "Receive",
            "Exitval",
            "Signal",
            "Command"
        ]
    );
    for (row, (seq, exitval, input)) in
        rows[1..]
            .iter()
            .zip([("1", "0", "a"), ("2", "3", "b"), ("3", "0", "c")])
    {
        assert_eq!(row.len(), 9, "{row:?}");
        assert_eq!(row[0], seq);
        assert!(!row[1].is_empty(), "no worker in {row:?}");
        assert!(row[2].parse::<f64>().unwrap() > 1.7e9, "{row:?}");
        assert_eq!(row[4], "0");
        assert_eq!(row[5], "2", "stdout bytes: {row:?}");
        assert_eq!(row[6], exitval);
        assert_eq!(row[7], "0");
        assert!(
            row[8].ends_with(&format!(
                " -c 'echo $1; [ $1 != b ] || exit 3' dts-item {input}"
            )),
            "{row:?}"
        );
    }
}

#[tokio::test]
async fn submit_wait_results_keeps_each_items_input_output_and_exit_code() {
    let up = DtsUp::start(&[]);
    let dir = tempfile::TempDir::new().unwrap();
    let results = dir.path().join("out");
    let out = dts(
        &up,
        &[
            "submit",
            "echo out $1; echo err >&2; [ $1 = a ] || exit 4",
            ":::",
            "a",
            "b",
            "--wait",
            "--results",
            results.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_results_of_a_and_b(&results);
}

#[tokio::test]
async fn submit_wait_tag_prints_each_items_lines_after_its_input_and_a_tab() {
    let up = DtsUp::start(&[]);
    let out = dts(
        &up,
        &[
            "submit",
            "echo one; echo two >&2; echo $1",
            "a",
            "b c",
            "--wait",
            "--tag",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a\tone\na\ta\nb c\tone\nb c\tb c\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("a\ttwo\nb c\ttwo\n"), "{stderr}");
}

#[tokio::test]
async fn submit_refuses_result_flags_without_wait_naming_both_and_sends_nothing() {
    let up = DtsUp::start(&[]);
    let dir = tempfile::TempDir::new().unwrap();
    let log = dir.path().join("jobs.tsv");
    let log = log.to_str().unwrap();
    let why = "needs --wait: without --wait dts submit returns as soon as the task is sent, \
               before any item has run (dts results ID shows them later)\n";
    for (flags, named) in [
        (vec!["--tag"], "--tag".to_string()),
        (vec!["--joblog", log], format!("--joblog {log}")),
        (vec!["--results", "out"], "--results out".to_string()),
        (vec!["--bar"], "--bar".to_string()),
        (vec!["--eta"], "--eta".to_string()),
    ] {
        let out = dts(&up, &[&["submit", "echo $1", "a"][..], &flags].concat());
        assert_eq!(out.status.code(), Some(2), "{flags:?}");
        assert_eq!(text(&out.stderr), format!("dts: error: {named} {why}"));
    }
    assert!(
        !Path::new(log).exists(),
        "a refused submit wrote its job log"
    );
    // --bar with --wait is the bar --wait draws.
    let out = dts(&up, &["submit", "echo $1", "a", "--wait", "--bar"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(up.task_count().await, 1);
}
