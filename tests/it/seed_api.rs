//! The seed's endpoints, so a client written for the original keeps working.

use crate::common::{DtsUp, items};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn ping_answers_as_the_seed_did() {
    let up = DtsUp::start(&[]);
    let (status, body) = up.get("/schedule/ping").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!("Scheduler Service Status :  [Running]"));
}

#[tokio::test]
async fn a_thousand_item_form_submission_completes_with_exact_counts() {
    let up = DtsUp::start(&[]);
    let inputs = items(1000);
    let form = format!(
        "templateFunction={}&variableJson={}&inputList={}",
        urlencode("echo {{prefix}}$1"),
        urlencode(r#"{"prefix":"seed:"}"#),
        urlencode(&inputs.join(","))
    );
    let (status, created) = up.post_form("/schedule/create", &form).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    // The seed's MasterTask shape: variableJson is a string.
    assert_eq!(created["variableJson"], json!(r#"{"prefix":"seed:"}"#));
    assert_eq!(created["inputList"].as_array().unwrap().len(), 1000);
    let id = created["id"].as_str().unwrap().to_string();

    up.wait_ended(&id).await;
    let (status, seed_view) = up.get(&format!("/schedule/status?taskId={id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seed_view["status"], "COMPLETED");
    assert_eq!(seed_view["chunksExecuted"], seed_view["chunksToExecute"]);
    assert_eq!(
        seed_view
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        [
            "chunksExecuted",
            "chunksToExecute",
            "id",
            "inputList",
            "status",
            "templateFunction",
            "variableJson"
        ]
    );

    let task = up.task(&id).await;
    assert_eq!(task["itemsSucceeded"], 1000);
    assert_eq!(task["itemsFailed"], 0);
    let results = up.all_results(&id, "").await;
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["stdout"], format!("seed:item-{i}\n"));
    }
}

#[tokio::test]
async fn repeated_form_fields_are_one_item_each_commas_and_all() {
    let up = DtsUp::start(&[]);
    let form = "templateFunction=printf+%25s+%22%241%22&inputList=a%2Cb&inputList=c";
    let (status, created) = up.post_form("/schedule/create", form).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["inputList"], json!(["a,b", "c"]));
    let id = created["id"].as_str().unwrap();
    up.wait_ended(id).await;
    let results = up.all_results(id, "").await;
    assert_eq!(results[0]["stdout"], "a,b");
}

#[tokio::test]
async fn a_seed_master_task_in_json_is_accepted_with_its_read_only_fields() {
    let up = DtsUp::start(&[]);
    let body = json!({
        "id": null, "status": null, "chunksToExecute": 0, "chunksExecuted": 0,
        "templateFunction": "echo {{x}}-$1",
        "variableJson": "{\"x\": 7}",
        "inputList": ["a"]
    });
    let (status, created) = up.post_json("/schedule/create", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["id"].as_str().unwrap();
    up.wait_ended(id).await;
    assert_eq!(up.all_results(id, "").await[0]["stdout"], "7-a\n");
}

#[tokio::test]
async fn node_beat_by_post_registers_a_node_that_runs_nothing() {
    let up = DtsUp::start(&[]);
    let (status, body) = up
        .request(
            Method::POST,
            "/schedule/node-beat?nodeId=node-7",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"nodeId": "node-7", "cores": 1, "recorded": true})
    );
    let (status, body) = up
        .post_form("/schedule/node-beat", "nodeId=node-8&cores=3")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["cores"], 3);
    let (_, workers) = up.get("/v1/workers").await;
    let kinds: Vec<(&str, &str)> = workers
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["id"].as_str().unwrap(), w["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("node-7", "node-beat")), "{workers}");
    assert!(kinds.contains(&("node-8", "node-beat")), "{workers}");

    let (status, body) = up
        .request(Method::POST, "/schedule/node-beat", None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "nodeId");
    let (status, body) = up.get("/schedule/node-beat?nodeId=node-9").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("POST"),
        "{body}"
    );
}

#[tokio::test]
async fn status_names_the_task_id_parameter_in_its_errors() {
    let up = DtsUp::start(&[]);
    let (status, body) = up.get("/schedule/status").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "taskId");
    let (status, body) = up.get("/schedule/status?taskId=../../etc/passwd").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "taskId");
    let (status, body) = up
        .get("/schedule/status?taskId=6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

pub fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
