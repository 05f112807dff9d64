//! `dts schedule add|ls|show|pause|resume|rm` against a running `dts up`:
//! a schedule added from a template and `:::` inputs fires tasks that run,
//! and the server's refusals print naming the field.

use crate::common::{DtsUp, dts_client as dts, text};
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Output;
use std::time::Duration;

/// How long an every-second schedule gets to fire two tasks that complete.
const FIRING_DEADLINE: Duration = Duration::from_secs(20);

/// The standard output of a client command that must succeed.
fn succeeded(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout {}\nstderr {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The line `dts schedule ls` prints for `name`, if it lists it.
fn listed(up: &DtsUp, name: &str) -> Option<String> {
    let table = succeeded(&dts(up, &["schedule", "ls"]), "dts schedule ls");
    assert!(table.starts_with("name "), "{table}");
    table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .map(str::to_string)
}

#[tokio::test]
async fn a_schedule_added_from_a_template_fires_tasks_and_pauses_resumes_and_goes() {
    let up = DtsUp::start(&[]);
    let out = dts(
        &up,
        &[
            "schedule",
            "add",
            "tick",
            "--cron",
            "* * * * * *",
            "--overlap",
            "allow",
            "echo \"tick $1\"",
            ":::",
            "a",
            "b",
            "--timeout",
            "30",
        ],
    );
    let added = succeeded(&out, "dts schedule add");
    assert!(
        added.starts_with("added schedule tick: cron \"* * * * * *\" in UTC, next firing 20"),
        "{added}"
    );
    let line = listed(&up, "tick").expect("dts schedule ls lists tick");
    assert!(
        line.contains("  * * * * * *  UTC  ") && line.contains("  active  "),
        "{line}"
    );

    let schedule = dts_testkit::wait_for(
        FIRING_DEADLINE,
        "schedule tick to have fired 2 tasks that COMPLETED (GET /v1/schedules/tick)",
        || async {
            let (status, schedule) = up.get("/v1/schedules/tick").await;
            let completed = schedule["runs"]
                .as_array()
                .map(|runs| {
                    runs.iter()
                        .filter(|run| run["taskStatus"] == "COMPLETED")
                        .count()
                })
                .unwrap_or(0);
            if status == StatusCode::OK && completed >= 2 {
                Ok(schedule)
            } else {
                Err(format!("{status} {schedule}"))
            }
        },
    )
    .await;
    assert_eq!(schedule["overlap"], "allow", "{schedule}");
    // The fired task is the one `dts submit` would have built.
    let run = schedule["runs"]
        .as_array()
        .and_then(|runs| runs.iter().find(|run| run["taskStatus"] == "COMPLETED"))
        .expect("a completed run");
    let id = run["taskId"].as_str().expect("a run's task id");
    let task = up.task(id).await;
    assert_eq!(task["templateFunction"], "echo \"tick $1\"", "{task}");
    assert_eq!(task["itemsTotal"], 2, "{task}");
    assert_eq!(task["timeoutSecs"], 30, "{task}");
    assert_eq!(task["name"], "tick", "{task}");
    let line = listed(&up, "tick").expect("dts schedule ls lists tick");
    assert!(line.contains("  fired "), "{line}");
    let shown = succeeded(&dts(&up, &["schedule", "show", "tick"]), "show");
    assert!(
        shown.contains("overlap:   allow\n") && shown.contains("runs, newest first:\n"),
        "{shown}"
    );

    let paused = succeeded(&dts(&up, &["schedule", "pause", "tick"]), "pause");
    assert!(paused.starts_with("paused schedule tick"), "{paused}");
    let line = listed(&up, "tick").expect("dts schedule ls lists tick");
    assert!(line.contains("  paused  -  "), "{line}");
    let resumed = succeeded(&dts(&up, &["schedule", "resume", "tick"]), "resume");
    assert!(
        resumed.starts_with("resumed schedule tick: next firing 20"),
        "{resumed}"
    );
    let line = listed(&up, "tick").expect("dts schedule ls lists tick");
    assert!(line.contains("  active  "), "{line}");

    let removed = succeeded(&dts(&up, &["schedule", "rm", "tick"]), "rm");
    assert!(removed.starts_with("deleted schedule tick ("), "{removed}");
    assert_eq!(listed(&up, "tick"), None);
    let (status, body) = up.get("/v1/schedules/tick").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let out = dts(&up, &["schedule", "rm", "tick"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no schedule named \"tick\""),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn schedule_add_takes_a_task_file_and_refuses_a_bad_cron_and_a_taken_name() {
    let up = DtsUp::start(&[]);
    let out = dts(
        &up,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "61 * * * *",
            "echo \"$1\"",
            ":::",
            "a",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("(field: cron; HTTP 400)"), "{stderr}");
    let (status, body) = up.get("/v1/schedules/nightly").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("report.json");
    std::fs::write(
        &file,
        r#"{"templateFunction": "echo \"report $1\"", "inputList": ["sales", "stock"]}"#,
    )
    .unwrap();
    let out = dts(
        &up,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "0 2 * * *",
            "--timezone",
            "Europe/Paris",
            file.to_str().unwrap(),
            "--json",
        ],
    );
    let schedule: Value = serde_json::from_str(&succeeded(&out, "add a task file")).unwrap();
    assert_eq!(schedule["timezone"], "Europe/Paris", "{schedule}");
    assert_eq!(schedule["overlap"], "skip", "{schedule}");
    assert_eq!(
        schedule["task"]["templateFunction"], "echo \"report $1\"",
        "{schedule}"
    );

    let out = dts(
        &up,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "* * * * *",
            "echo \"$1\"",
            ":::",
            "a",
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("nightly") && stderr.contains("(field: name; HTTP 409)"),
        "{stderr}"
    );
    let (_, kept) = up.get("/v1/schedules/nightly").await;
    assert_eq!(kept["cron"], "0 2 * * *", "{kept}");
}
