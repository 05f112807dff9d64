//! A small HTTP client for the checker and the workload: every request has
//! a timeout, and no answer is a value ([`Answer::None`]), never a panic,
//! because faults make missing answers normal.

use reqwest::Client;
use serde_json::Value;
use std::time::Duration;

/// What a request got.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A response: its status and its body as JSON (a JSON string when the
    /// body was not JSON).
    Json(u16, Value),
    /// No response: refused, reset or timed out.
    None(String),
}

/// One dts API.
#[derive(Debug, Clone)]
pub struct Api {
    /// Its name (`server-1`, `up`).
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    http: Client,
}

impl Api {
    /// A client for `base`, whose requests give up after `timeout`.
    pub fn new(name: &str, base: &str, timeout: Duration) -> Api {
        Api {
            name: name.to_string(),
            base: base.to_string(),
            // A builder with only a timeout set does not fail.
            http: Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_else(|_| Client::new()),
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => {
                        let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(&bytes).into_owned())
                        });
                        Answer::Json(status, json)
                    }
                    Err(e) => Answer::None(e.to_string()),
                }
            }
            Err(e) => Answer::None(e.to_string()),
        }
    }
}
