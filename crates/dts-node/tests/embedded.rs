//! Whole embedded nodes started inside the test process: a real SQLite
//! store in a temp directory, the real executor running `bash`, the API on
//! a free loopback port, driven over HTTP like any client.

use dts_config::ConfigError;
use dts_model::TaskStatus;
use dts_model::submit;
use dts_node::{EmbeddedNode, Inherited, NodeError, Role, UpNode};
use dts_testkit::wait_for;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The longest any step may take: starting, running three echo items,
/// stopping.
const DEADLINE: Duration = Duration::from_secs(30);

/// The configuration of a node on `data_dir`, with `extra` keys on top; the
/// process environment is left out, so nothing outside the test changes it.
fn settings(data_dir: &Path, extra: &[(&str, &str)]) -> dts_config::Settings {
    let mut flags = vec![
        ("server.bind".to_string(), "127.0.0.1".to_string()),
        ("server.port".to_string(), "0".to_string()),
        ("worker.cores".to_string(), "2".to_string()),
        ("store.data-dir".to_string(), data_dir.display().to_string()),
    ];
    flags.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    dts_node::load_settings(None, &HashMap::new(), &flags).expect("valid test settings")
}

/// `future`'s output, or a panic saying what was awaited.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {DEADLINE:?}"))
}

/// A client of one node's API.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(node: &UpNode) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: format!("http://{}", node.local_addr()),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET reaches the node");
        assert!(response.status().is_success(), "GET {path}: {response:?}");
        response.json().await.expect("a JSON answer")
    }

    async fn submit(&self, task: Value) -> String {
        let response = self
            .http
            .post(format!("{}/v1/tasks", self.base))
            .json(&task)
            .send()
            .await
            .expect("POST reaches the node");
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
        let task: Value = response.json().await.expect("a JSON answer");
        task["id"].as_str().expect("the task's id").to_string()
    }

    /// The task once its status is terminal.
    async fn ended(&self, id: &str) -> Value {
        wait_for(DEADLINE, &format!("the end of task {id}"), || async {
            let task = self.get(&format!("/v1/tasks/{id}?summary=true")).await;
            let status: TaskStatus =
                serde_json::from_value(task["status"].clone()).expect("a known status");
            if status.is_terminal() {
                Ok(task)
            } else {
                Err(status)
            }
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_node_runs_a_task_submitted_over_http_stops_cleanly_and_keeps_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let settings = settings(&data_dir, &[]);

    let node = within(
        "the node's start",
        UpNode::start(&settings, Inherited::default()),
    )
    .await
    .expect("the node starts");
    let api = Api::new(&node);
    let stop = node.shutdown_token();
    let running = tokio::spawn(node.run());

    let id = api
        .submit(json!({
            "templateFunction": "echo {{greeting}} \"$1\"",
            "variableJson": {"greeting": "hello"},
            "inputList": ["a", "b", "c"],
        }))
        .await;
    let task = api.ended(&id).await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["itemsTotal"], 3, "{task}");
    assert_eq!(task["itemsSucceeded"], 3, "{task}");
    assert_eq!(task["itemsFailed"], 0, "{task}");
    let results = api.get(&format!("/v1/tasks/{id}/results")).await;
    assert_eq!(results["total"], 3, "{results}");
    let outputs: Vec<&str> = results["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["stdout"].as_str().expect("stdout"))
        .collect();
    assert_eq!(outputs, ["hello a\n", "hello b\n", "hello c\n"]);

    stop.cancel();
    within("the node's stop", running)
        .await
        .expect("the node's task did not panic")
        .expect("the node stops without an error");

    // Stopped cleanly, it released the data directory: a new node opens it
    // and finds the task as it ended.
    let node = within(
        "the second node's start",
        UpNode::start(&settings, Inherited::default()),
    )
    .await
    .expect("a second node starts on the released data directory");
    let api = Api::new(&node);
    let stop = node.shutdown_token();
    let running = tokio::spawn(node.run());
    let task = api.get(&format!("/v1/tasks/{id}?summary=true")).await;
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["itemsSucceeded"], 3, "{task}");
    stop.cancel();
    within("the second node's stop", running)
        .await
        .expect("the node's task did not panic")
        .expect("the second node stops without an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_directory_in_use_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let settings = settings(&data_dir, &[]);
    let first = within(
        "the first node's start",
        UpNode::start(&settings, Inherited::default()),
    )
    .await
    .expect("the first node starts");

    let second = within(
        "the second node's refusal",
        UpNode::start(&settings, Inherited::default()),
    )
    .await;
    match second {
        Err(NodeError::DataDirInUse { dir }) => assert_eq!(dir, data_dir),
        Err(other) => panic!("expected DataDirInUse, got {other:?}"),
        Ok(_) => panic!("a second node started on a data directory in use"),
    }

    let stop = first.shutdown_token();
    let running = tokio::spawn(first.run());
    stop.cancel();
    within("the first node's stop", running)
        .await
        .expect("the node's task did not panic")
        .expect("the first node stops without an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_worker_of_an_embedded_node_announces_its_configured_labels() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = settings(
        dir.path(),
        &[
            ("store.ephemeral", "true"),
            ("worker.labels", "gpu=a100"),
            ("worker.labels", "zone=eu"),
        ],
    );
    let node = within(
        "the node's start",
        UpNode::start(&settings, Inherited::default()),
    )
    .await
    .expect("the node starts");
    let api = Api::new(&node);
    let worker_id = node.worker_id().to_string();
    let stop = node.shutdown_token();
    let running = tokio::spawn(node.run());

    let workers = wait_for(DEADLINE, "the local worker's heartbeat", || async {
        let workers = api.get("/v1/workers").await;
        match workers.as_array() {
            Some(list) if list.len() == 1 => Ok(workers.clone()),
            _ => Err(workers),
        }
    })
    .await;
    assert_eq!(workers[0]["id"], worker_id.as_str(), "{workers}");
    assert_eq!(
        workers[0]["labels"],
        json!({"gpu": "a100", "zone": "eu"}),
        "{workers}"
    );

    stop.cancel();
    within("the node's stop", running)
        .await
        .expect("the node's task did not panic")
        .expect("the node stops without an error");
}

#[test]
fn a_bad_label_is_a_typed_error_naming_worker_labels_and_the_label() {
    let flags = [(
        "worker.labels".to_string(),
        "gpu=a100,bad name=x".to_string(),
    )];
    let error = dts_node::load_settings(None, &HashMap::new(), &flags)
        .expect_err("a label name with a space must be refused");
    match error {
        NodeError::Config(ConfigError::InvalidLabel { key, label, .. }) => {
            assert_eq!(key, "worker.labels");
            assert_eq!(label, "bad name=x");
        }
        other => panic!("expected an invalid label, got {other:?}"),
    }
}

#[test]
fn a_configuration_value_of_the_wrong_type_is_a_typed_error_naming_its_key() {
    let flags = [("worker.cores".to_string(), "many".to_string())];
    let error = dts_node::load_settings(None, &HashMap::new(), &flags)
        .expect_err("worker.cores=many must be refused");
    match error {
        NodeError::Config(ConfigError::InvalidValue { key, value, .. }) => {
            assert_eq!(key, "worker.cores");
            assert_eq!(value, "many");
        }
        other => panic!("expected an invalid value, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_open_to_the_network_without_a_token_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let settings = settings(&data_dir, &[("server.bind", "0.0.0.0")]);

    let refused = UpNode::start(&settings, Inherited::default()).await;
    match refused {
        Err(NodeError::ExposedWithoutToken { bind }) => {
            assert_eq!(bind.to_string(), "0.0.0.0");
        }
        Err(other) => panic!("expected ExposedWithoutToken, got {other:?}"),
        Ok(_) => panic!("a node without a token started on 0.0.0.0"),
    }
    assert!(
        !data_dir.exists(),
        "the refused node created its data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_run_counts_the_items_that_failed_and_fails_the_task() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = settings(dir.path(), &[("store.ephemeral", "true")]);
    let (store, lock) = dts_node::open_store(&settings)
        .await
        .expect("an in-memory store");
    assert!(lock.is_none(), "an in-memory store locks no directory");
    let node = within(
        "the engine's start",
        EmbeddedNode::start(&settings, store, Role::Run, Inherited::default()),
    )
    .await
    .expect("the engine starts");

    let new = submit::from_json(
        &json!({"templateFunction": "exit \"$1\"", "inputList": ["0", "3", "0", "0"]}),
        &dts_node::wiring::submit_limits(&settings),
    )
    .expect("a valid task");
    let task = node
        .submitter
        .submit(new)
        .await
        .expect("the task is stored");
    let store = Arc::clone(&node.store);
    let ended = wait_for(
        DEADLINE,
        &format!("the end of task {}", task.id),
        || async {
            let task = store
                .task(&task.id)
                .await
                .expect("the store answers")
                .expect("the task exists");
            if task.status.is_terminal() {
                Ok(task)
            } else {
                Err(task.status)
            }
        },
    )
    .await;
    assert_eq!(ended.status, TaskStatus::Failed);
    assert_eq!(ended.items_total, 4);
    assert_eq!(ended.items_succeeded, 3);
    assert_eq!(ended.items_failed, 1);

    within("the engine's stop", node.stop()).await;
}
