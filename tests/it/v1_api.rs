//! The v1 API end to end: submit, watch, results, lists, workers, events.

use crate::common::{DtsUp, items, task};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_thousand_item_task_completes_with_exact_counts_and_one_result_per_item() {
    let up = DtsUp::start(&[]);
    let inputs = items(1000);
    let id = up.submit(task("echo \"out:$1\"", &inputs)).await;
    let done = up.wait_ended(&id).await;

    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["itemsTotal"], 1000);
    assert_eq!(done["itemsSucceeded"], 1000);
    assert_eq!(done["itemsFailed"], 0);
    assert!(done["chunksToExecute"].as_u64().unwrap() >= 1);
    assert_eq!(done["chunksExecuted"], done["chunksToExecute"]);
    assert!(done["finishedAt"].is_string());

    let results = up.all_results(&id, "").await;
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i as u64);
        assert_eq!(result["input"], format!("item-{i}"));
        assert_eq!(result["stdout"], format!("out:item-{i}\n"));
        assert_eq!(result["exitCode"], 0);
        assert_eq!(result["succeeded"], true);
        assert_eq!(result["attempt"], 1);
        assert!(result["worker"].as_str().is_some_and(|w| !w.is_empty()));
    }
}

#[tokio::test]
async fn submit_answers_202_with_the_task_and_its_location() {
    let up = DtsUp::start(&[]);
    let body = json!({
        "name": "greeting",
        "templateFunction": "echo {{ greeting }} $1",
        "variableJson": {"greeting": "hi"},
        "inputList": ["a", "b"],
        "timeoutSecs": 30,
        "retries": 1
    });
    let (status, task) = up.post_json("/v1/tasks", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(task["name"], "greeting");
    assert_eq!(task["inputList"], json!(["a", "b"]));
    assert_eq!(task["variableJson"], json!({"greeting": "hi"}));
    assert_eq!(task["timeoutSecs"], 30);
    assert_eq!(task["retries"], 1);
    assert_eq!(task["interpreter"], "bash");
    assert!(
        ["SUBMITTED", "INPROGRESS", "COMPLETED"].contains(&task["status"].as_str().unwrap()),
        "{task}"
    );
    let id = task["id"].as_str().unwrap();

    let (status, full) = up.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(full["inputList"], json!(["a", "b"]));
    let summary = up.task(id).await;
    assert!(
        summary.get("inputList").is_none(),
        "summary leaves the inputs out: {summary}"
    );
    let done = up.wait_ended(id).await;
    assert_eq!(done["status"], "COMPLETED");
    let results = up.all_results(id, "").await;
    assert_eq!(results[1]["stdout"], "hi b\n");
}

#[tokio::test]
async fn a_task_with_no_items_completes_at_once() {
    let up = DtsUp::start(&[]);
    let id = up.submit(task("echo $1", &[])).await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED");
    assert_eq!(done["itemsTotal"], 0);
    assert_eq!(done["chunksToExecute"], 0);
}

#[tokio::test]
async fn results_can_be_filtered_and_paged() {
    let up = DtsUp::start(&[]);
    let inputs: Vec<String> = (0..20)
        .map(|i| {
            if i % 4 == 0 {
                format!("bad-{i}")
            } else {
                format!("good-{i}")
            }
        })
        .collect();
    let id = up
        .submit(task(
            "case \"$1\" in bad-*) echo \"no $1\" >&2; exit 3;; esac; echo ok",
            &inputs,
        ))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "FAILED");
    assert_eq!(done["itemsSucceeded"], 15);
    assert_eq!(done["itemsFailed"], 5);

    let failed = up.all_results(&id, "&status=failed").await;
    let indices: Vec<u64> = failed
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, vec![0, 4, 8, 12, 16]);
    assert!(
        failed
            .iter()
            .all(|r| r["exitCode"] == 3 && r["succeeded"] == false)
    );
    assert_eq!(failed[1]["stderr"], "no bad-4\n");

    let (_, page) = up
        .get(&format!(
            "/v1/tasks/{id}/results?status=succeeded&offset=10&limit=3"
        ))
        .await;
    assert_eq!(page["total"], 15);
    let indices: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, vec![14, 15, 17]);
}

#[tokio::test]
async fn tasks_are_listed_newest_first_and_filtered_by_status() {
    let up = DtsUp::start(&[]);
    let ok = up.submit(task("true", &items(2))).await;
    up.wait_ended(&ok).await;
    let bad = up.submit(task("false", &items(2))).await;
    up.wait_ended(&bad).await;

    let (status, list) = up.get("/v1/tasks").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![bad.as_str(), ok.as_str()]);
    assert!(list[0].get("inputList").is_none());

    let (_, failed) = up.get("/v1/tasks?status=FAILED").await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["id"], bad);
    let (_, limited) = up.get("/v1/tasks?limit=1").await;
    assert_eq!(limited.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn scheduling_fields_are_kept_and_shown_and_default_when_left_out() {
    let up = DtsUp::start(&[]);
    let fields = [
        "priority",
        "weight",
        "maxConcurrency",
        "requires",
        "speculation",
    ];
    let shown = |task: &serde_json::Value| fields.map(|f| task[f].clone());
    let mut body = task("true", &items(1));
    for (field, value) in fields.iter().zip([
        json!(-5),
        json!(3),
        json!(2),
        json!({"zone": "eu"}),
        json!(false),
    ]) {
        body[*field] = value;
    }
    let (status, created) = up.post_json("/v1/tasks", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let expected = [
        json!(-5),
        json!(3),
        json!(2),
        json!({"zone": "eu"}),
        json!(false),
    ];
    assert_eq!(shown(&created), expected);
    let stored = up.task(created["id"].as_str().unwrap()).await;
    assert_eq!(shown(&stored), expected, "read back from the store");

    let plain = up.submit(task("true", &items(1))).await;
    assert_eq!(
        shown(&up.task(&plain).await),
        [
            json!(0),
            json!(1),
            serde_json::Value::Null,
            json!({}),
            json!(true)
        ]
    );
}

#[tokio::test]
async fn the_local_worker_is_listed_with_its_cores() {
    let up = DtsUp::start(&["--cores", "3"]);
    let (status, workers) = up.get("/v1/workers").await;
    assert_eq!(status, StatusCode::OK);
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0]["cores"], 3);
    assert!(workers[0]["hostname"].is_string());
    assert!(workers[0]["lastHeartbeat"].is_string());
    assert_eq!(workers[0]["runningItems"], 0);

    let (status, health) = up.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn the_event_stream_ends_with_the_final_status() {
    let up = DtsUp::start(&[]);
    let id = up.submit(task("sleep 0.2; echo $1", &items(4))).await;
    let (content_type, events) = up.events(&format!("/v1/tasks/{id}/events")).await;
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let task = events.last().expect("at least one event");
    assert_eq!(task["status"], "COMPLETED");
    assert_eq!(task["itemsSucceeded"], 4);
}

#[tokio::test]
async fn the_event_stream_sends_a_running_tasks_state_at_once_not_at_its_next_change() {
    let up = DtsUp::start(&[]);
    let id = up.submit(task("sleep 60", &items(1))).await;
    up.wait_task(&id, "the task to run", |t| t["status"] == "INPROGRESS")
        .await;
    let mut stream = reqwest::Client::new()
        .get(format!("{}/v1/tasks/{id}/events", up.base))
        .send()
        .await
        .expect("events request sent");
    crate::contract::check_head(&reqwest::Method::GET, &stream);
    let mut text = String::new();
    // ends: each turn reads a chunk within the deadline, or panics.
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no first event while the task runs: {text:?}"))
            .expect("event stream readable")
            .unwrap_or_else(|| panic!("the stream ended before its first event: {text:?}"));
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("\"status\":\"INPROGRESS\""), "{text}");
    let (status, body) = up
        .post_json(&format!("/v1/tasks/{id}/cancel"), &Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn go_template_braces_reach_the_script_and_doubled_braces_are_a_literal_placeholder() {
    let up = DtsUp::start(&[]);
    let script =
        "echo '{{.ID}} {{ .Names }}|{{range .items}}{{.metadata.name}}{{{{end}}}}|{{who}}' \"$1\"";
    let body =
        json!({"templateFunction": script, "variableJson": {"who": "x"}, "inputList": ["a b"]});
    let (status, task) = up.post_json("/v1/tasks", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    let id = task["id"].as_str().unwrap();
    let done = up.wait_ended(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let results = up.all_results(id, "").await;
    assert_eq!(
        results[0]["stdout"],
        "{{.ID}} {{ .Names }}|{{range .items}}{{.metadata.name}}{{end}}|x a b\n"
    );

    // Unescaped, `{{end}}` is a placeholder like any other, and has no value.
    let body = json!({"templateFunction": "echo '{{range .items}}{{end}}'", "inputList": ["a"]});
    let (status, error) = up.post_json("/v1/tasks", &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["error"]["code"], "missing_variables");
    assert_eq!(error["error"]["field"], "variableJson");
    assert_eq!(
        error["error"]["message"],
        "no value for placeholder {{end}} (add them to variableJson)"
    );
}
