//! Task ids by unique prefix, deleting ended tasks, paging the task list
//! and refusing unknown query parameters: over HTTP and through the CLI,
//! against the real binary.

use crate::common::{DtsUp, dts_client as dts, task, text};
use dts_model::{Scheduling, Task, TaskStatus, Variables, now_millis};
use dts_store::{SqliteStore, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;

const A: &str = "abcd1111-1111-4111-8111-111111111111";
const B: &str = "abcd2222-2222-4222-8222-222222222222";

/// Stores cancelled tasks with the ids given in the data directory's
/// store before `dts up` opens it: ids that share a prefix on purpose.
async fn seed_cancelled(data_dir: &Path, ids: &[&str]) {
    std::fs::create_dir_all(data_dir).unwrap();
    let store = SqliteStore::open(&data_dir.join("dts.sqlite3")).unwrap();
    for id in ids {
        let task = Task {
            id: id.to_string(),
            name: None,
            status: TaskStatus::Queued,
            template_function: "true".into(),
            variables: Variables::default(),
            interpreter: "bash".into(),
            timeout_secs: 60,
            retries: 0,
            deadline_secs: None,
            items_total: 1,
            chunks_to_execute: 0,
            chunks_executed: 0,
            items_succeeded: 0,
            items_failed: 0,
            created_at: now_millis(),
            started_at: None,
            finished_at: None,
            error: None,
            memory_mb: None,
            milli_cpus: None,
            scheduling: Scheduling::default(),
            halt: None,
            after: None,
            reduce: None,
            reduce_result: None,
            version: 0,
        };
        store.insert_task(&task, &["x".into()]).await.unwrap();
        store
            .transition(id, TaskStatus::Cancelled, None)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_unique_prefix_names_its_task_and_a_shared_one_lists_the_candidates() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    seed_cancelled(&data, &[A, B]).await;
    let up = DtsUp::start_in(&data, &[], &[]);

    let (status, found) = up.get("/v1/tasks/abcd1?summary=true").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["id"], A);
    let (status, found) = up.get("/v1/tasks/ABCD2222").await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["id"], B);
    let (status, page) = up.get("/v1/tasks/abcd2/results").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page, json!({"total": 0, "items": []}));

    let (status, error) = up.get("/v1/tasks/abcd").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "ambiguous_id");
    assert_eq!(error["error"]["field"], "id");
    assert_eq!(error["error"]["candidates"], json!([A, B]));
    assert_eq!(
        error["error"]["message"],
        format!("\"abcd\" is the start of several task ids: {A}, {B}; give more of the id")
    );

    let (status, error) = up.get("/v1/tasks/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["field"], "id");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a unique prefix of one of at least 4 characters"),
        "{error}"
    );
    let (status, error) = up.get("/v1/tasks/ffff").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");

    // The CLI passes prefixes through and shows the server's answer.
    let out = dts(&up, &["status", "abcd1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("id:        {A}\n")));
    let out = dts(&up, &["results", "abcd2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!("dts: task {B} was cancelled before any of its 1 item ran\n")
    );
    let out = dts(&up, &["status", "abcd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(&format!(
            "\"abcd\" is the start of several task ids: {A}, {B}; give more of the id (field: id; HTTP 400)"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_ended_task_is_deleted_with_its_results_and_a_running_one_must_be_cancelled_first() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    seed_cancelled(&data, &[A, B]).await;
    let up = DtsUp::start_in(&data, &[], &[]);

    let done = up.submit(task("echo $1", &["x".into(), "y".into()])).await;
    up.wait_ended(&done).await;
    let (status, deleted) = up
        .request(
            Method::DELETE,
            &format!("/v1/tasks/{done}"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id"], done.as_str());
    assert_eq!(deleted["status"], "COMPLETED");
    let (status, _) = up.get(&format!("/v1/tasks/{done}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = up.get(&format!("/v1/tasks/{done}/results")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = up
        .request(
            Method::DELETE,
            &format!("/v1/tasks/{done}"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let running = up.submit(task("sleep 30", &["a".into()])).await;
    up.wait_task(&running, "its item to run", |t| t["status"] == "INPROGRESS")
        .await;
    let (status, error) = up
        .request(
            Method::DELETE,
            &format!("/v1/tasks/{running}"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(
        error["error"]["message"],
        format!(
            "task {running} is INPROGRESS, not ended: cancel it first (POST /v1/tasks/{running}/cancel), then delete it"
        )
    );
    assert_eq!(up.task(&running).await["status"], "INPROGRESS");

    // dts rm: by prefix, every id tried, exit 2 if one failed.
    let out = dts(&up, &["rm", "abcd1", "ffff", &running[..8]]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), format!("deleted {A} (CANCELLED)\n"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("dts: cannot delete ffff: no task with id \"ffff\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "dts: cannot delete {}: task {running} is INPROGRESS",
            &running[..8]
        )),
        "{stderr}"
    );
    let out = dts(&up, &["cancel", &running]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = dts(&up, &["rm", &running, "abcd"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("deleted {running} (CANCELLED)\ndeleted {B} (CANCELLED)\n")
    );
    let (_, list) = up.get("/v1/tasks").await;
    assert_eq!(list, json!([]));
}

/// The ids of a listing page and its `X-Next-Cursor`.
async fn page(up: &DtsUp, query: &str) -> (Vec<String>, Option<String>, Option<String>) {
    let response = reqwest::get(format!("{}/v1/tasks?{query}", up.base))
        .await
        .unwrap();
    let (status, headers, bytes) = crate::contract::read_checked(&Method::GET, response).await;
    assert_eq!(status, StatusCode::OK, "{query}");
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
    let (cursor, link) = (header("x-next-cursor"), header("link"));
    let body: Vec<Value> = serde_json::from_slice(&bytes).unwrap();
    let ids = body
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    (ids, cursor, link)
}

#[tokio::test]
async fn the_task_list_pages_with_a_cursor_until_every_task_is_listed_once() {
    let up = DtsUp::start(&[]);
    for _ in 0..7 {
        let id = up.submit(task("true", &[])).await;
        up.wait_ended(&id).await;
    }
    let (all, cursor, _) = page(&up, "limit=100").await;
    assert_eq!(all.len(), 7);
    assert_eq!(cursor, None);

    let (first, cursor, link) = page(&up, "limit=3&status=COMPLETED").await;
    assert_eq!(first, all[..3]);
    let cursor = cursor.expect("a cursor after the first page");
    assert_eq!(
        link.as_deref(),
        Some(
            format!("</v1/tasks?limit=3&cursor={cursor}&status=COMPLETED>; rel=\"next\"").as_str()
        )
    );
    let (second, cursor, _) = page(&up, &format!("limit=3&status=COMPLETED&cursor={cursor}")).await;
    assert_eq!(second, all[3..6]);
    let (third, cursor, link) = page(
        &up,
        &format!("limit=3&status=COMPLETED&cursor={}", cursor.unwrap()),
    )
    .await;
    assert_eq!(third, all[6..]);
    assert_eq!((cursor, link), (None, None));

    let (status, error) = up.get("/v1/tasks?cursor=page-2").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["field"], "cursor");

    let out = dts(&up, &["tasks", "--limit", "3", "--all", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = listed.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(listed, all);
    let out = dts(&up, &["tasks", "--limit", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1 + 3);
    assert_eq!(
        text(&out.stderr),
        "dts: more tasks than --limit 3: --all lists every one\n"
    );
}

#[tokio::test]
async fn an_unknown_query_parameter_is_a_400_naming_it_and_changes_nothing() {
    let up = DtsUp::start(&[]);
    let running = up.submit(task("sleep 30", &["a".into()])).await;
    up.wait_task(&running, "its item to run", |t| t["status"] == "INPROGRESS")
        .await;
    let cases = [
        (Method::GET, "/v1/tasks?staus=FAILED".to_string(), "staus"),
        (
            Method::GET,
            format!("/v1/tasks/{running}?sumary=true"),
            "sumary",
        ),
        (
            Method::GET,
            format!("/v1/tasks/{running}/results?ofset=1"),
            "ofset",
        ),
        (
            Method::GET,
            format!("/v1/tasks/{running}/events?ful=1"),
            "ful",
        ),
        (
            Method::POST,
            format!("/v1/tasks/{running}/cancel?force=1"),
            "force",
        ),
        (
            Method::DELETE,
            format!("/v1/tasks/{running}?force=1"),
            "force",
        ),
        (Method::GET, "/v1/workers?all=1".to_string(), "all"),
    ];
    for (method, path, name) in cases {
        let (status, error) = up.request(method.clone(), &path, None, Vec::new()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {error}");
        assert_eq!(error["error"]["code"], "unknown_parameter", "{path}");
        assert_eq!(error["error"]["field"], name, "{path}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("unknown query parameter \"{name}\": ")),
            "{error}"
        );
    }
    // The cancel with a misspelt parameter cancelled nothing.
    assert_eq!(up.task(&running).await["status"], "INPROGRESS");
    let (status, _) = up
        .get("/v1/tasks?status=INPROGRESS&limit=5&full=true")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = up
        .request(
            Method::POST,
            &format!("/v1/tasks/{running}/cancel"),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
