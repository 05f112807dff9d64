//! Schedules (`/v1/schedules`) over HTTP: exactly one task per firing
//! across 3 servers, schedules surviving restarts with `catchUp`, and bad
//! requests refused naming the field.

use crate::common::{Api, DtsUp, task};
use crate::distributed::{Cluster, wait_for_workers};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// An every-second schedule named `name` of a one-item task.
fn every_second(name: &str, overlap: &str, catch_up: &str) -> Value {
    json!({
        "name": name,
        "cron": "* * * * * *",
        "timezone": "Europe/Paris",
        "overlap": overlap,
        "catchUp": catch_up,
        "task": task("true", &["x".to_string()]),
    })
}

async fn create(api: &Api, body: &Value) -> Value {
    let (status, schedule) = api.post_json("/v1/schedules", body).await;
    assert_eq!(status, StatusCode::CREATED, "{schedule}");
    schedule
}

async fn schedule(api: &Api, name: &str) -> Value {
    let (status, schedule) = api.get(&format!("/v1/schedules/{name}")).await;
    assert_eq!(status, StatusCode::OK, "{schedule}");
    schedule
}

/// Waits until `name`'s schedule passes `check`, saying `what` it waited for.
async fn wait_schedule(api: &Api, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let awaited = format!("schedule {name} to {what}");
    dts_testkit::wait_for(crate::common::DEADLINE, &awaited, || async {
        let (status, schedule) = api.get(&format!("/v1/schedules/{name}")).await;
        if status == StatusCode::OK && check(&schedule) {
            Ok(schedule)
        } else {
            Err(format!("{status} {schedule}"))
        }
    })
    .await
}

fn runs(schedule: &Value) -> Vec<Value> {
    schedule["runs"].as_array().cloned().unwrap_or_default()
}

fn fired_runs(schedule: &Value) -> Vec<Value> {
    runs(schedule)
        .into_iter()
        .filter(|run| run["outcome"] == "fired")
        .collect()
}

/// Milliseconds since the epoch of an RFC 3339 time the API shows.
fn millis(text: &Value) -> u64 {
    let text = text.as_str().unwrap_or_default();
    let time = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The ids of every task whose name is `name` (the schedule's tasks).
async fn tasks_named(api: &Api, name: &str) -> Vec<String> {
    let (status, tasks) = api.get(&format!("/v1/tasks?name={name}&limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{tasks}");
    tasks
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|task| task["name"] == name)
        .filter_map(|task| task["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_every_second_schedule_on_3_servers_fires_one_task_per_second_even_when_one_dies() {
    let cluster = Cluster::start();
    let a = cluster.server("server-a");
    let b = cluster.server("server-b");
    let c = cluster.server("server-c");
    let _worker = cluster.worker("w1", 2);
    wait_for_workers(&a, 1).await;
    create(&a, &every_second("tick", "allow", "none")).await;

    // Ten seconds of firings; half-way, one server dies as a crash would,
    // whatever it was doing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.kill9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, paused) = a.post_json("/v1/schedules/tick/pause", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["paused"], true);
    // A decision stored just before the pause still gets its task.
    let schedule = wait_schedule(&b, "tick", "have every fired run's task stored", |s| {
        fired_runs(s)
            .iter()
            .all(|run| run["taskStatus"].is_string())
    })
    .await;

    let fired = fired_runs(&schedule);
    assert_eq!(
        fired.len(),
        runs(&schedule).len(),
        "with overlap allow every firing fires: {schedule}"
    );
    assert!(
        (8..=12).contains(&fired.len()),
        "about one firing a second for 10 s: {schedule}"
    );
    assert_eq!(schedule["fired"], fired.len() as u64);
    let times: Vec<u64> = fired.iter().map(|run| millis(&run["at"])).collect();
    for pair in times.windows(2) {
        assert_eq!(
            pair[0] - pair[1],
            1000,
            "one firing each second, no gap and none twice: {times:?}"
        );
    }
    let ids: BTreeSet<String> = fired
        .iter()
        .filter_map(|run| run["taskId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), fired.len(), "a task of its own per firing");
    let named: BTreeSet<String> = tasks_named(&a, "tick").await.into_iter().collect();
    assert_eq!(named, ids, "exactly the firings' tasks exist, each once");
    for id in &ids {
        assert_eq!(a.wait_ended(id).await["status"], "COMPLETED");
    }
    // Each firing was decided by one server: the decisions logged across
    // the three add up to the runs.
    let decided: usize = [a.log_text(), b.log_text(), c_log(&cluster)]
        .iter()
        .map(|log| {
            log.lines()
                .filter(|line| line.contains("schedule fired") && line.contains("tick"))
                .count()
        })
        .sum();
    assert_eq!(decided, fired.len(), "each firing decided once");
}

/// The log of the killed server c.
fn c_log(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.log("server-c")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_survive_a_restart_and_catch_up_last_runs_the_latest_missed_firing_once() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let args = [
        "--cores",
        "2",
        "--set",
        "scheduler.schedule-missed-after-ms=1000",
    ];
    let up = DtsUp::start_in(&data, &args, &[]);
    create(&up, &every_second("last", "allow", "last")).await;
    create(&up, &every_second("none", "allow", "none")).await;
    for name in ["last", "none"] {
        wait_schedule(&up, name, "fire once", |s| !fired_runs(s).is_empty()).await;
    }
    up.kill9();
    let down_at = dts_model::now_millis();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let up = DtsUp::start_in(&data, &args, &[]);
    let up_at = dts_model::now_millis();

    // Both schedules are back and firing on time again.
    for name in ["last", "none"] {
        wait_schedule(&up, name, "fire after the restart", |s| {
            fired_runs(s)
                .iter()
                .any(|run| millis(&run["at"]) > up_at && run["taskStatus"].is_string())
        })
        .await;
    }
    // Firings due while down and more than the grace late: `last` ran the
    // latest once, noted as caught up; `none` dropped them in one run. No
    // other run lies between the firings before the crash and that one.
    let gap_run = |s: &Value, outcome: &str| -> Value {
        let all = runs(s);
        let late: Vec<&Value> = all
            .iter()
            .filter(|run| {
                run["outcome"] == outcome
                    && run["note"]
                        .as_str()
                        .is_some_and(|note| note.contains("missed"))
            })
            .collect();
        assert_eq!(late.len(), 1, "one run for the missed firings: {s}");
        let at = millis(&late[0]["at"]);
        assert!(at > down_at && at < up_at, "missed while down: {s}");
        let between = all
            .iter()
            .filter(|run| {
                let t = millis(&run["at"]);
                t > down_at + 1000 && t < at
            })
            .count();
        assert_eq!(between, 0, "the earlier missed firings are dropped: {s}");
        late[0].clone()
    };
    let last = schedule(&up, "last").await;
    let caught_up = gap_run(&last, "fired");
    let note = caught_up["note"].as_str().unwrap_or_default();
    assert!(note.contains("caught up"), "{note}");
    let id = caught_up["taskId"].as_str().unwrap_or_default();
    assert_eq!(up.wait_ended(id).await["status"], "COMPLETED");

    let none = schedule(&up, "none").await;
    let dropped = gap_run(&none, "missed");
    assert!(dropped["taskId"].is_null(), "{none}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_skip_fires_no_task_while_the_previous_one_runs_and_a_paused_schedule_fires_none() {
    let up = DtsUp::start(&["--cores", "2"]);
    let mut body = every_second("slow", "skip", "none");
    body["task"] = task("sleep 2.5", &["x".to_string()]);
    create(&up, &body).await;
    let skipping = wait_schedule(&up, "slow", "skip a firing for overlap", |s| {
        s["skippedOverlaps"].as_u64().unwrap_or(0) >= 2 && fired_runs(s).len() >= 2
    })
    .await;
    let skipped = runs(&skipping)
        .into_iter()
        .find(|run| run["outcome"] == "skipped-overlap")
        .expect("a skipped run");
    assert!(
        skipped["note"]
            .as_str()
            .is_some_and(|note| note.contains("had not ended")),
        "{skipped}"
    );
    // Never two of its tasks at once: each started after the last ended.
    let (status, _) = up.post_json("/v1/schedules/slow/pause", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let mut spans = Vec::new();
    for id in tasks_named(&up, "slow").await {
        let task = up.wait_ended(&id).await;
        spans.push((millis(&task["startedAt"]), millis(&task["finishedAt"])));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlapping tasks: {spans:?}");
    }

    // Paused: no run is added for 2.5 s.
    let before = runs(&schedule(&up, "slow").await).len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let paused = schedule(&up, "slow").await;
    assert_eq!(runs(&paused).len(), before, "a paused schedule fires none");
    assert!(paused["nextFiring"].is_null(), "{paused}");

    // One process decided every firing, and counted each.
    let (_, metrics) = up.get("/metrics").await;
    let text = metrics.as_str().unwrap_or_default();
    let counted = |outcome: &str| -> u64 {
        let series = format!("dts_schedule_firings_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(counted("fired"), paused["fired"], "{text}");
    assert_eq!(
        counted("skipped-overlap"),
        paused["skippedOverlaps"],
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_naming_the_field_and_unknown_names_are_404() {
    let up = DtsUp::start(&["--cores", "1"]);
    let good = every_second("nightly", "skip", "none");
    for (field, value, named) in [
        ("cron", json!("61 * * * *"), "cron"),
        ("cron", json!("* *"), "cron"),
        ("timezone", json!("Mars/Olympus"), "timezone"),
        ("name", json!("../etc/passwd"), "name"),
        ("overlap", json!("sometimes"), "overlap"),
        ("catchUp", json!("all"), "catchUp"),
        (
            "task",
            json!({"templateFunction": "echo {{x}}", "inputList": ["a"]}),
            "task.variableJson",
        ),
        ("task", json!("echo hi"), "task"),
        ("every", json!("day"), "every"),
    ] {
        let mut body = good.clone();
        body[field] = value;
        let (status, answer) = up.post_json("/v1/schedules", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], named, "{answer}");
    }
    let mut waiting = good.clone();
    waiting["task"]["after"] = json!(["00000000-0000-4000-8000-000000000000"]);
    let (status, answer) = up.post_json("/v1/schedules", &waiting).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(answer["error"]["field"], "task.after", "{answer}");
    let (_, listed) = up.get("/v1/schedules").await;
    assert_eq!(listed, json!([]), "a refused schedule is not stored");

    create(&up, &good).await;
    let (status, answer) = up.post_json("/v1/schedules", &good).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["field"], "name", "{answer}");

    for (method, path) in [
        (Method::GET, "/v1/schedules/nope"),
        (Method::DELETE, "/v1/schedules/nope"),
        (Method::POST, "/v1/schedules/nope/pause"),
        (Method::POST, "/v1/schedules/nope/resume"),
    ] {
        let (status, answer) = up.request(method, path, None, Vec::new()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
        assert_eq!(answer["error"]["field"], "name", "{answer}");
    }
    let (status, deleted) = up
        .request(Method::DELETE, "/v1/schedules/nightly", None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["name"], "nightly");
    let (status, _) = up.get("/v1/schedules/nightly").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_a_schedule_outlives_its_only_server_and_fires_from_the_next_one() {
    let cluster = Cluster::start();
    let first = cluster.server("server-a");
    let _worker = cluster.worker("w1", 2);
    wait_for_workers(&first, 1).await;
    create(&first, &every_second("kept", "allow", "none")).await;
    wait_schedule(&first, "kept", "fire once", |s| !fired_runs(s).is_empty()).await;
    first.kill9();
    // No server at all for a moment; the schedule is in Redis.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = cluster.server("server-b");
    let restarted_at = dts_model::now_millis();
    let schedule = wait_schedule(&second, "kept", "fire from the new server", |s| {
        fired_runs(s)
            .iter()
            .any(|run| millis(&run["at"]) > restarted_at && run["taskStatus"].is_string())
    })
    .await;
    let ids: BTreeSet<String> = fired_runs(&schedule)
        .iter()
        .filter_map(|run| run["taskId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        ids.len(),
        fired_runs(&schedule).len(),
        "a task of its own per firing"
    );
}
