//! The client commands (`submit`, `status`, `watch`, `results`, `cancel`,
//! `tasks`, `workers`): they talk HTTP to a running server and read its
//! answers as the views dts-api writes. Everything they print goes through
//! a [`Console`], which escapes control characters on a terminal.

use super::terminal::Console;
use anyhow::{Context, Result, anyhow, bail};
use dts_api::views::{ErrorBody, ResultView, ResultsPage, TaskView, WorkerView};
use dts_model::TaskStatus;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
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
        if !status.is_success() {
            return Err(anyhow!(server_error(status, &text)));
        }
        serde_json::from_str(&text).with_context(|| {
            format!(
                "the server's answer to {method} {path} is not JSON: {}",
                short(&text)
            )
        })
    }

    /// Sends a request and reads the answer as a `T`; returns the JSON as
    /// the server sent it too, for `--json`.
    async fn fetch<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(T, Value)> {
        let json = self.call(method.clone(), path, body).await?;
        let view = T::deserialize(&json).with_context(|| {
            format!(
                "the server's answer to {method} {path} is not what dts expects: {}",
                short(&json.to_string())
            )
        })?;
        Ok((view, json))
    }
}

/// The server's error as one line: message, and the field to blame; or
/// the start of whatever else answered (a proxy's page).
fn server_error(status: StatusCode, text: &str) -> String {
    let code = status.as_u16();
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(ErrorBody { error }) => match error.field {
            Some(field) => format!("{} (field: {field}; HTTP {code})", error.message),
            None => format!("{} (HTTP {code})", error.message),
        },
        Err(_) => format!("the server answered HTTP {code}: {}", short(text)),
    }
}

/// At most the first 200 characters of `text`, for an error message.
fn short(text: &str) -> String {
    const MAX: usize = 200;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// Prints `value` as pretty JSON.
fn print_json(
    out: &mut super::terminal::Sanitized<impl Write>,
    value: &impl serde::Serialize,
) -> Result<()> {
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
    let (task, raw) = client
        .fetch::<TaskView>(Method::POST, "/v1/tasks", Some(body))
        .await?;
    if json && !wait {
        print_json(&mut console.out, &raw)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        console.err,
        "submitted task {} ({} items, {})",
        task.id, task.items_total, task.status
    )?;
    if !wait {
        writeln!(console.out, "{}", task.id)?;
        return Ok(ExitCode::SUCCESS);
    }
    watch(client, console, &task.id, json).await
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
    let (mut task, mut raw) = client.fetch::<TaskView>(Method::GET, &path, None).await?;
    let bar = ProgressBar::new(task.items_total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg:12} [{bar:30}] {pos}/{len} items ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    // Without a terminal the bar is hidden: print each change of status (or
    // of why the task waits) instead. On a terminal a new reason is printed
    // above the bar, through the console that escapes it (the bar does not).
    let plain = bar.is_hidden();
    let mut last_status = None;
    let mut last_reason = None;
    loop {
        let done = task.items_succeeded + task.items_failed;
        bar.set_position(done);
        bar.set_message(task.status.as_str());
        let reason_changed = last_reason != task.waiting_reason;
        if plain && (last_status != Some(task.status) || reason_changed) {
            write!(
                console.err,
                "{}: {done} of {} items done",
                task.status, task.items_total
            )?;
            match &task.waiting_reason {
                Some(reason) => writeln!(console.err, " (waiting: {reason})")?,
                None => writeln!(console.err)?,
            }
        } else if let (false, true, Some(reason)) = (plain, reason_changed, &task.waiting_reason) {
            bar.suspend(|| writeln!(console.err, "waiting: {reason}"))?;
        }
        last_status = Some(task.status);
        last_reason.clone_from(&task.waiting_reason);
        if task.status.is_terminal() {
            break;
        }
        tokio::time::sleep(POLL).await;
        (task, raw) = client.fetch(Method::GET, &path, None).await?;
    }
    bar.finish();
    if json {
        print_json(&mut console.out, &raw)?;
    } else {
        print_task(&mut console.out, &task)?;
    }
    Ok(if task.status == TaskStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `dts status ID`.
pub async fn status(
    client: &Client,
    console: &mut Console,
    id: &str,
    json: bool,
) -> Result<ExitCode> {
    let (task, raw) = client
        .fetch::<TaskView>(Method::GET, &format!("/v1/tasks/{id}?summary=true"), None)
        .await?;
    if json {
        print_json(&mut console.out, &raw)?;
    } else {
        print_task(&mut console.out, &task)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_task(out: &mut impl Write, task: &TaskView) -> Result<()> {
    let or_dash = |text: &Option<String>| text.clone().unwrap_or_else(|| "-".into());
    writeln!(out, "id:        {}", task.id)?;
    if let Some(name) = &task.name {
        writeln!(out, "name:      {name}")?;
    }
    writeln!(out, "status:    {}", task.status)?;
    if let Some(reason) = &task.waiting_reason {
        writeln!(out, "waiting:   {reason}")?;
    }
    writeln!(
        out,
        "items:     {} total, {} succeeded, {} failed",
        task.items_total, task.items_succeeded, task.items_failed
    )?;
    writeln!(
        out,
        "shards:    {} of {} done",
        task.chunks_executed, task.chunks_to_execute
    )?;
    writeln!(out, "created:   {}", task.created_at)?;
    writeln!(out, "started:   {}", or_dash(&task.started_at))?;
    writeln!(out, "finished:  {}", or_dash(&task.finished_at))?;
    if let Some(error) = &task.error {
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
        let path = format!("/v1/tasks/{id}/results?offset={offset}&limit={PAGE}{filter}");
        let (page, _) = client
            .fetch::<ResultsPage>(Method::GET, &path, None)
            .await?;
        offset += page.items.len() as u64;
        for item in page.items {
            if json {
                all.push(item);
            } else {
                print_result(&mut console.out, &item)?;
            }
        }
        if offset >= page.total || offset == 0 {
            break;
        }
    }
    if json {
        print_json(&mut console.out, &all)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_result(out: &mut impl Write, item: &ResultView) -> Result<()> {
    let result = &item.result;
    let outcome = if item.succeeded {
        "ok".to_string()
    } else if result.timed_out {
        "timed out".to_string()
    } else if let Some(signal) = result.signal {
        format!("killed by signal {signal}")
    } else if let Some(error) = &result.error {
        format!("error: {error}")
    } else if let Some(code) = result.exit_code {
        format!("exit {code}")
    } else {
        "failed".to_string()
    };
    writeln!(
        out,
        "#{} {} [{}] {} ms, attempt {}, on {}",
        result.index,
        // Quoted as JSON, so an input's spaces and newlines show.
        Value::from(result.input.as_str()),
        outcome,
        result.duration_ms,
        result.attempt,
        result.worker
    )?;
    for (stream, text) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
        for line in text.lines() {
            writeln!(out, "  {stream}| {line}")?;
        }
    }
    Ok(())
}

/// `dts cancel ID`.
pub async fn cancel(client: &Client, console: &mut Console, id: &str) -> Result<ExitCode> {
    let (task, _) = client
        .fetch::<TaskView>(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
        .await?;
    writeln!(console.out, "{} {}", task.id, task.status)?;
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
    let (list, raw) = client
        .fetch::<Vec<TaskView>>(Method::GET, &path, None)
        .await?;
    if json {
        print_json(&mut console.out, &raw)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        console.out,
        "{:<36}  {:<17}  {:>9}  {:>9}  {:>9}  created",
        "id", "status", "items", "succeeded", "failed"
    )?;
    for task in list {
        writeln!(
            console.out,
            "{:<36}  {:<17}  {:>9}  {:>9}  {:>9}  {}",
            task.id,
            task.status.as_str(),
            task.items_total,
            task.items_succeeded,
            task.items_failed,
            task.created_at
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `dts workers`: the live workers.
pub async fn workers(client: &Client, console: &mut Console, json: bool) -> Result<ExitCode> {
    let (list, raw) = client
        .fetch::<Vec<WorkerView>>(Method::GET, "/v1/workers", None)
        .await?;
    if json {
        print_json(&mut console.out, &raw)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_workers(&mut console.out, &list)?;
    Ok(ExitCode::SUCCESS)
}

/// The table of `dts workers`; labels last, as `name=value,...` (`-` for
/// none), since they are the widest and the most optional column.
fn print_workers(out: &mut impl Write, list: &[WorkerView]) -> Result<()> {
    writeln!(
        out,
        "{:<40}  {:<20}  {:>5}  {:>7}  {:<24}  labels",
        "id", "hostname", "cores", "running", "last heartbeat"
    )?;
    for worker in list {
        let labels = if worker.labels.is_empty() {
            "-".to_string()
        } else {
            dts_config::labels::render(&worker.labels)
        };
        writeln!(
            out,
            "{:<40}  {:<20}  {:>5}  {:>7}  {:<24}  {labels}",
            worker.id, worker.hostname, worker.cores, worker.running_items, worker.last_heartbeat
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::terminal::{Mode, Sanitized};
    use dts_model::ItemResult;
    use serde_json::json;

    /// What `print` writes to a terminal.
    fn on_terminal(print: impl FnOnce(&mut Sanitized<Vec<u8>>) -> Result<()>) -> String {
        let mut out = Sanitized::new(Vec::new(), Mode::Escape);
        print(&mut out).unwrap();
        out.flush().unwrap();
        String::from_utf8(out.get_ref().clone()).unwrap()
    }

    /// A task view as the server writes it, with `fields` changed.
    fn task_view(fields: Value) -> TaskView {
        let mut task = json!({
            "id": "6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10",
            "name": null,
            "status": "INPROGRESS",
            "templateFunction": "echo $1",
            "interpreter": "bash",
            "timeoutSecs": 60,
            "retries": 0,
            "deadlineSecs": null,
            "memoryMb": null,
            "cpus": null,
            "itemsTotal": 3,
            "itemsSucceeded": 1,
            "itemsFailed": 1,
            "chunksToExecute": 2,
            "chunksExecuted": 1,
            "createdAt": "2024-01-01T00:00:00.000Z",
            "startedAt": null,
            "finishedAt": null,
            "error": null,
        });
        for (key, value) in fields.as_object().unwrap() {
            task[key] = value.clone();
        }
        serde_json::from_value(task).unwrap()
    }

    #[test]
    fn status_shows_every_count_and_a_dash_for_what_has_not_happened() {
        let task = task_view(json!({"startedAt": "2024-01-01T00:00:01.000Z"}));
        let shown = on_terminal(|out| print_task(out, &task));
        assert_eq!(
            shown,
            "id:        6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10\n\
             status:    INPROGRESS\n\
             items:     3 total, 1 succeeded, 1 failed\n\
             shards:    1 of 2 done\n\
             created:   2024-01-01T00:00:00.000Z\n\
             started:   2024-01-01T00:00:01.000Z\n\
             finished:  -\n"
        );
    }

    #[test]
    fn status_says_why_a_task_waits_right_below_its_status() {
        let task = task_view(json!({
            "status": "INPROGRESS",
            "itemsSucceeded": 0,
            "itemsFailed": 0,
            "chunksExecuted": 0,
            "waitingReason": "no live worker has labels gpu=a100",
        }));
        let shown = on_terminal(|out| print_task(out, &task));
        assert_eq!(
            shown.lines().take(3).collect::<Vec<_>>(),
            [
                "id:        6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10",
                "status:    INPROGRESS",
                "waiting:   no live worker has labels gpu=a100",
            ]
        );
    }

    #[test]
    fn status_shows_a_hostile_task_name_and_error_escaped_on_a_terminal() {
        let task = task_view(json!({
            "name": "\x1b]0;owned\x07nice name",
            "status": "FAILED",
            "error": "bad\x1b[2K\r\u{9b}31m",
        }));
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
    fn a_status_dts_does_not_know_is_refused_not_shown() {
        let mut task = serde_json::to_value(task_view(json!({}))).unwrap();
        task["status"] = json!("FAILED\x1b[2K");
        assert!(
            serde_json::from_value::<TaskView>(task.clone()).is_err(),
            "{task}"
        );
    }

    #[test]
    fn results_show_hostile_output_and_inputs_escaped_on_a_terminal() {
        let item = ResultView {
            result: ItemResult {
                index: 0,
                input: "\u{9b}2J".into(),
                exit_code: None,
                signal: None,
                timed_out: false,
                stdout: "one\x1b[2K\ntwo\x7f".into(),
                stderr: "\x1b]0;title\x07".into(),
                stdout_truncated: false,
                stderr_truncated: false,
                duration_ms: 1,
                worker: "w\x1b[31m".into(),
                attempt: 1,
                error: Some("\x1b]52;c;aGk=\x07".into()),
            },
            succeeded: false,
        };
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
    fn a_server_error_names_its_message_field_and_status_and_anything_else_is_quoted() {
        let body = r#"{"error":{"code":"invalid_field","message":"limit is bad","field":"limit"}}"#;
        assert_eq!(
            server_error(StatusCode::BAD_REQUEST, body),
            "limit is bad (field: limit; HTTP 400)"
        );
        assert_eq!(
            server_error(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>"),
            "the server answered HTTP 502: <html>bad gateway</html>"
        );
    }

    #[test]
    fn json_on_a_terminal_escapes_what_serde_json_leaves_raw() {
        let value = json!({"stdout": "\u{9b}\x7f\x1b"});
        let shown = on_terminal(|out| print_json(out, &value));
        assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), value);
        assert!(shown.contains("\\u009b\\u007f\\u001b"), "{shown}");
    }

    #[test]
    fn the_workers_table_ends_with_each_workers_labels_or_a_dash() {
        let worker = |id: &str, labels: Value| -> WorkerView {
            serde_json::from_value(json!({
                "id": id,
                "hostname": "box",
                "cores": 4,
                "lastHeartbeat": "2024-01-01T00:00:00.000Z",
                "runningItems": 1,
                "kind": "dts",
                "isolation": null,
                "labels": labels,
            }))
            .unwrap()
        };
        let list = [
            worker("w-gpu", json!({"zone": "eu", "gpu": "a100"})),
            worker("w-plain", json!({})),
        ];
        let shown = on_terminal(|out| print_workers(out, &list));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert!(
            lines[0].ends_with("  last heartbeat            labels"),
            "{shown}"
        );
        assert!(lines[1].starts_with("w-gpu "), "{shown}");
        assert!(
            lines[1].ends_with("  2024-01-01T00:00:00.000Z  gpu=a100,zone=eu"),
            "{shown}"
        );
        assert!(
            lines[2].ends_with("  2024-01-01T00:00:00.000Z  -"),
            "{shown}"
        );
    }
}
