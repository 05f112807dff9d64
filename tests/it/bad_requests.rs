//! Who may call the API: binding beyond loopback needs a token, and with one
//! every endpoint but health and ping asks for it. (Malformed and hostile
//! requests are in `hostile.rs`.)

use crate::common::DtsUp;
use crate::contract::read_checked;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let dir = tempfile::TempDir::new().unwrap();
    let output = crate::common::run_dts(
        std::process::Command::new(crate::common::dts_binary())
            .args(["up", "--port", "0", "--bind", "0.0.0.0", "--data-dir"])
            .arg(dir.path())
            .env_remove("DTS_AUTH_TOKEN"),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without an auth token"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[tokio::test]
async fn with_a_token_every_endpoint_but_health_and_ping_needs_it() {
    let dir = tempfile::TempDir::new().unwrap();
    let up = DtsUp::start_in(
        &dir.path().join("data"),
        &["--bind", "0.0.0.0"],
        &[("DTS_AUTH_TOKEN", "s3cret-s3cret-s3cret")],
    );
    // The harness sends the token: this works.
    let id = up
        .submit(json!({"templateFunction": "true", "inputList": ["a"]}))
        .await;
    up.wait_ended(&id).await;

    let anonymous = reqwest::Client::new();
    let local = up.base.replace("0.0.0.0", "127.0.0.1");
    for path in [
        "/v1/tasks",
        &format!("/v1/tasks/{id}"),
        "/v1/workers",
        "/schedule/node-beat?nodeId=x",
    ] {
        let response = anonymous
            .get(format!("{local}{path}"))
            .send()
            .await
            .unwrap();
        let (status, _, bytes) = read_checked(&Method::GET, response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let wrong = anonymous
        .get(format!("{local}/v1/tasks"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    let (status, _, _) = read_checked(&Method::GET, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for path in ["/healthz", "/schedule/ping"] {
        let response = anonymous
            .get(format!("{local}{path}"))
            .send()
            .await
            .unwrap();
        let (status, _, _) = read_checked(&Method::GET, response).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}
