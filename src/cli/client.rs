//! The client commands (`submit`, `status`, `watch`, `results`, `cancel`,
//! `tasks`, `workers`): they talk HTTP to a running server. Everything they
//! print goes through a [`Console`], which escapes control characters on a
//! terminal.

use super::terminal::Console;
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How often `--wait` and `watch` look at the task.
const POLL: Duration = Duration::from_millis(200);

/// A connection to one dts server.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> Result<Client> {
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server must be an http:// URL, not {server:?}");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// Sends a request and returns the JSON answer, or the server's error
    /// message as the error.
    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Value> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the dts server at {} (is `dts up` running?)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .context("cannot read the server's answer")?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if status.is_success() {
            return Ok(json);
        }
        Err(anyhow!(server_error(status, &json)))
    }
}

/// The server's error as one line: message, and the field to blame.
fn server_error(status: StatusCode, body: &Value) -> String {
    let error = &body["error"];
    match error["message"].as_str() {
        Some(message) => match error["field"].as_str() {
            Some(field) => format!("{message} (field: {field}; HTTP {})", status.as_u16()),
            None => format!("{message} (HTTP {})", status.as_u16()),
        },
        None => format!("the server answered HTTP {}: {}", status.as_u16(), body),
    }
}

/// Prints `value` as pretty JSON.
fn print_json(out: &mut super::terminal::Sanitized<impl Write>, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    writeln!(out, "{}", out.mode().show_json(&text))?;
    Ok(())
}

/// `dts submit FILE|-`.
pub async fn submit(
    client: &Client,
    console: &mut Console,
    file: &Path,
    wait: bool,
    json: bool,
) -> Result<ExitCode> {
    let body = if file == Path::new("-") {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .context("cannot read the task from standard input")?;
        text
    } else {
        std::fs::read(file)
            .with_context(|| format!("cannot read the task file {}", file.display()))?
    };
    let task = client.call(Method::POST, "/v1/tasks", Some(body)).await?;
    let id = task["id"].as_str().unwrap_or_default().to_string();
    if json && !wait {
        print_json(&mut console.out, &task)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        console.err,
        "submitted task {id} ({} items, {})",
        task["itemsTotal"],
        task["status"].as_str().unwrap_or("?")
    )?;
    if !wait {
        writeln!(console.out, "{id}")?;
        return Ok(ExitCode::SUCCESS);
    }
    watch(client, console, &id, json).await
}

/// `dts watch ID` (and `submit --wait`): a progress bar until the task ends;
/// exit 0 only if it completed.
pub async fn watch(
    client: &Client,
    console: &mut Console,
    id: &str,
    json: bool,
) -> Result<ExitCode> {
    let path = format!("/v1/tasks/{id}?summary=true");
    let mut task = client.call(Method::GET, &path, None).await?;
    let bar = ProgressBar::new(task["itemsTotal"].as_u64().unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:12} [{bar:30}] {pos}/{len} items ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // Without a terminal the bar is hidden: print each status change instead.
    let plain = bar.is_hidden();
    let mut last_status = String::new();
    loop {
        let done = task["itemsSucceeded"].as_u64().unwrap_or(0)
            + task["itemsFailed"].as_u64().unwrap_or(0);
        let status = task["status"].as_str().unwrap_or("?").to_string();
        bar.set_position(done);
        bar.set_message(console.err.mode().show(&status).into_owned());
        if plain && status != last_status {
            writeln!(
                console.err,
                "{status}: {done} of {} items done",
                task["itemsTotal"]
            )?;
            last_status = status.clone();
        }
        if is_terminal(&status) {
            break;
        }
        tokio::time::sleep(POLL).await;
        task = client.call(Method::GET, &path, None).await?;
    }
    bar.finish();
    if json {
        print_json(&mut console.out, &task)?;
    } else {
        print_task(&mut console.out, &task)?;
    }
    Ok(if task["status"] == "COMPLETED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "COMPLETED" | "FAILED" | "CANCELLED" | "SUBMISSION_FAILED"
    )
}

/// `dts status ID`.
pub async fn status(
    client: &Client,
    console: &mut Console,
    id: &str,
    json: bool,
) -> Result<ExitCode> {
    let task = client
        .call(Method::GET, &format!("/v1/tasks/{id}?summary=true"), None)
        .await?;
    if json {
        print_json(&mut console.out, &task)?;
    } else {
        print_task(&mut console.out, &task)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_task(out: &mut impl Write, task: &Value) -> Result<()> {
    let text = |key: &str| {
        task[key]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| "-".into())
    };
    writeln!(out, "id:        {}", text("id"))?;
    if let Some(name) = task["name"].as_str() {
        writeln!(out, "name:      {name}")?;
    }
    writeln!(out, "status:    {}", text("status"))?;
    writeln!(
        out,
        "items:     {} total, {} succeeded, {} failed",
        task["itemsTotal"], task["itemsSucceeded"], task["itemsFailed"]
    )?;
    writeln!(
        out,
        "shards:    {} of {} done",
        task["chunksExecuted"], task["chunksToExecute"]
    )?;
    writeln!(out, "created:   {}", text("createdAt"))?;
    writeln!(out, "started:   {}", text("startedAt"))?;
    writeln!(out, "finished:  {}", text("finishedAt"))?;
    if let Some(error) = task["error"].as_str() {
        writeln!(out, "error:     {error}")?;
    }
    Ok(())
}

/// `dts results ID [--failed]`: one block per item, every page.
pub async fn results(
    client: &Client,
    console: &mut Console,
    id: &str,
    failed: bool,
    json: bool,
) -> Result<ExitCode> {
    const PAGE: u64 = 1000;
    let filter = if failed { "&status=failed" } else { "" };
    let mut offset = 0;
    let mut all = Vec::new();
    loop {
        let page = client
            .call(
                Method::GET,
                &format!("/v1/tasks/{id}/results?offset={offset}&limit={PAGE}{filter}"),
                None,
            )
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        let total = page["total"].as_u64().unwrap_or(0);
        offset += items.len() as u64;
        for item in items {
            if json {
                all.push(item);
            } else {
                print_result(&mut console.out, &item)?;
            }
        }
        if offset >= total || offset == 0 {
            break;
        }
    }
    if json {
        print_json(&mut console.out, &Value::Array(all))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_result(out: &mut impl Write, item: &Value) -> Result<()> {
    let outcome = if item["succeeded"] == true {
        "ok".to_string()
    } else if item["timedOut"] == true {
        "timed out".to_string()
    } else if let Some(signal) = item["signal"].as_i64() {
        format!("killed by signal {signal}")
    } else if let Some(error) = item["error"].as_str() {
        format!("error: {error}")
    } else {
        format!("exit {}", item["exitCode"])
    };
    writeln!(
        out,
        "#{} {} [{}] {} ms, attempt {}, on {}",
        item["index"],
        item["input"],
        outcome,
        item["durationMs"],
        item["attempt"],
        item["worker"].as_str().unwrap_or("?")
    )?;
    for (stream, key) in [("stdout", "stdout"), ("stderr", "stderr")] {
        if let Some(text) = item[key].as_str().filter(|t| !t.is_empty()) {
            for line in text.lines() {
                writeln!(out, "  {stream}| {line}")?;
            }
        }
    }
    Ok(())
}

/// `dts cancel ID`.
pub async fn cancel(client: &Client, console: &mut Console, id: &str) -> Result<ExitCode> {
    let task = client
        .call(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
        .await?;
    writeln!(
        console.out,
        "{} {}",
        task["id"].as_str().unwrap_or(id),
        task["status"].as_str().unwrap_or("?")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `dts tasks`: newest first.
pub async fn tasks(
    client: &Client,
    console: &mut Console,
    status: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<ExitCode> {
    let mut path = format!("/v1/tasks?limit={limit}");
    if let Some(status) = status {
        path.push_str(&format!("&status={status}"));
    }
    let list = client.call(Method::GET, &path, None).await?;
    if json {
        print_json(&mut console.out, &list)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        console.out,
        "{:<36}  {:<17}  {:>9}  {:>9}  {:>9}  created",
        "id", "status", "items", "succeeded", "failed"
    )?;
    for task in list.as_array().into_iter().flatten() {
        writeln!(
            console.out,
            "{:<36}  {:<17}  {:>9}  {:>9}  {:>9}  {}",
            task["id"].as_str().unwrap_or("?"),
            task["status"].as_str().unwrap_or("?"),
            task["itemsTotal"].to_string(),
            task["itemsSucceeded"].to_string(),
            task["itemsFailed"].to_string(),
            task["createdAt"].as_str().unwrap_or("?")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `dts workers`: the live workers.
pub async fn workers(client: &Client, console: &mut Console, json: bool) -> Result<ExitCode> {
    let list = client.call(Method::GET, "/v1/workers", None).await?;
    if json {
        print_json(&mut console.out, &list)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        console.out,
        "{:<40}  {:<20}  {:>5}  {:>7}  last heartbeat",
        "id", "hostname", "cores", "running"
    )?;
    for worker in list.as_array().into_iter().flatten() {
        writeln!(
            console.out,
            "{:<40}  {:<20}  {:>5}  {:>7}  {}",
            worker["id"].as_str().unwrap_or("?"),
            worker["hostname"].as_str().unwrap_or("?"),
            worker["cores"].to_string(),
            worker["runningItems"].to_string(),
            worker["lastHeartbeat"].as_str().unwrap_or("?")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::terminal::{Mode, Sanitized};
    use serde_json::json;

    /// What `print` writes to a terminal.
    fn on_terminal(print: impl FnOnce(&mut Sanitized<Vec<u8>>) -> Result<()>) -> String {
        let mut out = Sanitized::new(Vec::new(), Mode::Escape);
        print(&mut out).unwrap();
        out.flush().unwrap();
        String::from_utf8(out.get_ref().clone()).unwrap()
    }

    #[test]
    fn status_shows_a_hostile_task_name_and_error_escaped_on_a_terminal() {
        let task = json!({
            "id": "t1",
            "name": "\x1b]0;owned\x07nice name",
            "status": "FAILED",
            "error": "bad\x1b[2K\r\u{9b}31m",
        });
        let shown = on_terminal(|out| print_task(out, &task));
        assert!(
            shown.contains("name:      \\x1b]0;owned\\x07nice name\n"),
            "{shown}"
        );
        assert!(
            shown.contains("error:     bad\\x1b[2K\\x0d\\x9b31m\n"),
            "{shown}"
        );
        assert!(!shown.contains(['\x1b', '\x07', '\r', '\u{9b}']), "{shown}");
    }

    #[test]
    fn results_show_hostile_output_and_inputs_escaped_on_a_terminal() {
        let item = json!({
            "index": 0,
            "input": "\u{9b}2J",
            "succeeded": false,
            "error": "\x1b]52;c;aGk=\x07",
            "stdout": "one\x1b[2K\ntwo\x7f",
            "stderr": "\x1b]0;title\x07",
            "durationMs": 1,
            "attempt": 1,
            "worker": "w\x1b[31m",
        });
        let shown = on_terminal(|out| print_result(out, &item));
        assert_eq!(
            shown,
            "#0 \"\\x9b2J\" [error: \\x1b]52;c;aGk=\\x07] 1 ms, attempt 1, on w\\x1b[31m\n\
             \x20 stdout| one\\x1b[2K\n\
             \x20 stdout| two\\x7f\n\
             \x20 stderr| \\x1b]0;title\\x07\n"
        );
    }

    #[test]
    fn json_on_a_terminal_escapes_what_serde_json_leaves_raw() {
        let value = json!({"stdout": "\u{9b}\x7f\x1b"});
        let shown = on_terminal(|out| print_json(out, &value));
        assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), value);
        assert!(shown.contains("\\u009b\\u007f\\u001b"), "{shown}");
    }
}
