//! Worker labels with real processes: `dts up --label` and `dts worker
//! --label` announce them, `GET /v1/workers` and `dts workers` show them, and
//! a bad label stops a node before it listens or connects.

use crate::common::{Api, DEADLINE, DtsUp, dts_binary, run_dts};
use crate::distributed::Cluster;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The live workers once exactly `ids` are listed, by id.
async fn workers_once_listed(api: &Api, ids: &[&str]) -> Vec<Value> {
    dts_testkit::wait_for(DEADLINE, &format!("workers {ids:?} listed"), || async {
        let (_, workers) = api.get("/v1/workers").await;
        let list = workers.as_array().cloned().unwrap_or_default();
        let listed: Vec<&str> = list.iter().filter_map(|w| w["id"].as_str()).collect();
        if listed == ids {
            Ok(list)
        } else {
            Err(workers)
        }
    })
    .await
}

/// `dts ARGS` run to its end (killed and failed at the deadline).
fn dts(args: &[&str]) -> Output {
    run_dts(
        Command::new(dts_binary())
            .args(args)
            .env_remove("DTS_AUTH_TOKEN")
            .env_remove("DTS_WORKER_LABELS"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_up_with_labels_shows_them_in_the_workers_api_and_the_cli_and_node_beats_have_none() {
    let up = DtsUp::start(&["--cores", "1", "--label", "gpu=a100", "--label", "zone=eu"]);
    let (status, _) = up
        .post_form("/schedule/node-beat", "nodeId=node-1&cores=2")
        .await;
    assert_eq!(status, StatusCode::OK);

    let workers = dts_testkit::wait_for(DEADLINE, "the local worker and the node-beat", || async {
        let (_, workers) = up.get("/v1/workers").await;
        match workers.as_array() {
            Some(list) if list.len() == 2 => Ok(list.clone()),
            _ => Err(workers),
        }
    })
    .await;
    let (local, beat): (Vec<&Value>, Vec<&Value>) =
        workers.iter().partition(|w| w["kind"] == "dts");
    assert_eq!((local.len(), beat.len()), (1, 1), "{workers:?}");
    assert_eq!(local[0]["labels"], json!({"gpu": "a100", "zone": "eu"}));
    assert_eq!(beat[0]["id"], "node-1");
    assert_eq!(beat[0]["labels"], json!({}));

    let out = dts(&["workers", "--server", &up.base, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let labels: Vec<&Value> = listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|w| &w["labels"])
        .collect();
    assert!(
        labels.contains(&&json!({"gpu": "a100", "zone": "eu"})),
        "{listed}"
    );

    let out = dts(&["workers", "--server", &up.base]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two workers:\n{table}");
    assert!(lines[0].ends_with("labels"), "{table}");
    let local_id = local[0]["id"].as_str().expect("id");
    let local_line = lines
        .iter()
        .find(|line| line.starts_with(local_id))
        .unwrap_or_else(|| panic!("no line for {local_id}:\n{table}"));
    assert!(local_line.ends_with("  gpu=a100,zone=eu"), "{table}");
    let beat_line = lines
        .iter()
        .find(|line| line.starts_with("node-1 "))
        .unwrap_or_else(|| panic!("no line for node-1:\n{table}"));
    assert!(beat_line.ends_with("  -"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_workers_show_their_labels_with_flags_winning_over_the_environment() {
    let cluster = Cluster::start();
    let server = cluster.server("server");
    let mut labelled_args = cluster.node_args();
    labelled_args.extend(["--label", "gpu=a100", "--label", "zone=eu"].map(String::from));
    let _labelled = cluster.worker_with(
        "w-gpu",
        1,
        labelled_args,
        &[("DTS_WORKER_LABELS", "rack=r1,zone=us")],
    );
    let _plain = cluster.worker("w-plain", 1);

    let workers = workers_once_listed(&server, &["w-gpu", "w-plain"]).await;
    assert_eq!(
        workers[0]["labels"],
        json!({"gpu": "a100", "rack": "r1", "zone": "eu"}),
        "the flag's zone wins over the environment's: {workers:?}"
    );
    assert_eq!(workers[1]["labels"], json!({}), "{workers:?}");

    // A later heartbeat (every 500 ms here) carries the same labels.
    let first_beat = workers[0]["lastHeartbeat"].clone();
    let later = dts_testkit::wait_for(DEADLINE, "a later heartbeat of w-gpu", || async {
        let (_, workers) = server.get("/v1/workers").await;
        match workers.as_array().and_then(|list| list.first()) {
            Some(w) if w["id"] == "w-gpu" && w["lastHeartbeat"] != first_beat => Ok(w.clone()),
            _ => Err(workers),
        }
    })
    .await;
    assert_eq!(later["labels"], workers[0]["labels"], "{later}");
}

#[test]
fn a_bad_label_stops_dts_up_and_dts_worker_before_they_listen_naming_the_label() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let data_dir = dir.path().join("data");
    let port = dts_testkit::free_port().to_string();
    let out = dts(&[
        "up",
        "--port",
        &port,
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
        "--label",
        "gpu=a100",
        "--label",
        "gpu type=h100",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid label \"gpu type=h100\" in worker.labels"),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("dts listening"), "{stderr}");
    assert!(
        !data_dir.exists(),
        "the refused node created its data directory"
    );

    // A worker refuses a name given two values, before it looks for Kafka
    // or Redis (nothing listens on port 1).
    let out = dts(&[
        "worker",
        "--set",
        "pubsub.namespace=127.0.0.1:1",
        "--set",
        "spring.redis.port=1",
        "--label",
        "zone=eu",
        "--label",
        "zone=us",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "invalid label \"zone=us\" in worker.labels (from command-line flag for \
             worker.labels): the same name was already given the value \"eu\""
        ),
        "{stderr}"
    );
    assert!(!text(&out.stdout).contains("dts worker"), "{stderr}");
}
