//! The client commands (`submit`, `status`, `watch`, `results`, `cancel`,
//! `retry`, `rm`, `tasks`, `workers`): they talk HTTP to a running server and read its
//! answers as the views dts-api writes. Everything they print goes through
//! a [`Console`], which escapes control characters on a terminal.

use super::terminal::{Console, Progress, Rate, count, progress_bar, progress_text};
use anyhow::{Context, Result, anyhow, bail};
use dts_api::views::{
    ErrorBody, ResultItemView, ResultView, ResultsPage, RetryView, TaskView, WorkerView,
};
use dts_model::{ItemResult, PastAttempt, TaskStatus};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// How often `--wait` and `watch` look at the task.
const POLL: Duration = Duration::from_millis(200);
/// The server `--server` names when it is not given.
const DEFAULT_SERVER: &str = "http://127.0.0.1:30000";
/// The exit status of a command stopped by Ctrl-C, as shells report it.
pub(super) const INTERRUPTED: u8 = 130;

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

    /// `--server URL` as a command that reaches this server must spell it:
    /// nothing for the default.
    fn server_flag(&self) -> String {
        if self.base == DEFAULT_SERVER {
            String::new()
        } else {
            format!(" --server {}", self.base)
        }
    }

    /// Sends a request and returns the JSON answer, or the server's error
    /// message as the error.
    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Value> {
        Ok(self.call_with_headers(method, path, body).await?.0)
    }

    /// [`Client::call`], with the answer's headers (a listing's next cursor).
    async fn call_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(Value, reqwest::header::HeaderMap)> {
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
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .context("cannot read the server's answer")?;
        if !status.is_success() {
            return Err(anyhow!(server_error(&self.base, status, &text)));
        }
        if looks_like_html(&text) {
            bail!("{}", not_dts(&self.base, status));
        }
        let json = serde_json::from_str(&text).with_context(|| {
            format!(
                "the server's answer to {method} {path} is not JSON: {}",
                short(&text)
            )
        })?;
        Ok((json, headers))
    }

    /// `GET path` whose answer is not JSON (text, or events that go on for
    /// as long as what they follow): the response, once its status says it
    /// succeeded, else the server's error. No overall timeout, only one to
    /// connect.
    pub(super) async fn open(&self, path: &str) -> Result<reqwest::Response> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        let mut request = http.get(format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the dts server at {} (is `dts up` running?)",
                self.base
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            bail!("{}", server_error(&self.base, status, &text));
        }
        Ok(response)
    }

    /// Sends a request and reads the answer as a `T`; returns the JSON as
    /// the server sent it too, for `--json`.
    pub(super) async fn fetch<T: DeserializeOwned>(
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

/// The server's error as one line: message, and the field to blame; for
/// a web page (a proxy's or another server's), what answered and its
/// status, not the page; or the start of whatever else answered.
fn server_error(base: &str, status: StatusCode, text: &str) -> String {
    let code = status.as_u16();
    match serde_json::from_str::<ErrorBody>(text) {
        Ok(ErrorBody { error }) => match error.field {
            Some(field) => format!("{} (field: {field}; HTTP {code})", error.message),
            None => format!("{} (HTTP {code})", error.message),
        },
        Err(_) if looks_like_html(text) => not_dts(base, status),
        Err(_) => format!("the server answered HTTP {code}: {}", short(text)),
    }
}

/// Whether an answer is a web page rather than dts's JSON.
fn looks_like_html(text: &str) -> bool {
    let start = text.trim_start().get(..15).unwrap_or_default();
    let start = start.to_ascii_lowercase();
    start.starts_with("<!doctype html") || start.starts_with("<html") || start.starts_with("<head")
}

/// What to say when a web page answered instead of dts.
fn not_dts(base: &str, status: StatusCode) -> String {
    format!(
        "{base} answered HTTP {status} with a web page, not dts's JSON: is --server the URL of a dts server?"
    )
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
pub(super) fn print_json(
    out: &mut super::terminal::Sanitized<impl Write>,
    value: &impl serde::Serialize,
) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    writeln!(out, "{}", out.mode().show_json(&text))?;
    Ok(())
}

/// The task in the file `dts submit FILE|-` names, checked to be JSON.
pub fn read_task(file: &Path) -> Result<Vec<u8>> {
    let (body, what) = if file == Path::new("-") {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .context("cannot read the task from standard input")?;
        (text, "the task on standard input".to_string())
    } else {
        let text = std::fs::read(file)
            .with_context(|| format!("cannot read the task file {}", file.display()))?;
        (text, format!("the task file {}", file.display()))
    };
    // Checked here, so the error names the file (the server cannot).
    serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        .with_context(|| format!("{what} is not valid JSON"))?;
    Ok(body)
}

/// Sends the task in `body` (JSON), says which task it became, and with
/// `wait` follows it to its end: for a task file and for a command-line
/// submit alike.
pub async fn send_task(
    client: &Client,
    console: &mut Console,
    body: Vec<u8>,
    wait: bool,
    json: bool,
) -> Result<ExitCode> {
    // With --json and no --wait, the JSON alone.
    let (task, raw) = post_task(client, console, body, wait || !json).await?;
    if json && !wait {
        print_json(&mut console.out, &raw)?;
        return Ok(ExitCode::SUCCESS);
    }
    if !wait {
        writeln!(console.out, "{}", task.id)?;
        return Ok(ExitCode::SUCCESS);
    }
    watch(client, console, &task.id, json).await
}

/// Sends the task in `body` (JSON); with `say`, says on stderr which task
/// it became.
pub async fn post_task(
    client: &Client,
    console: &mut Console,
    body: Vec<u8>,
    say: bool,
) -> Result<(TaskView, Value)> {
    let (task, raw) = client
        .fetch::<TaskView>(Method::POST, "/v1/tasks", Some(body))
        .await?;
    if say {
        writeln!(
            console.err,
            "submitted task {} ({}, {})",
            task.id,
            count(task.items_total, "item"),
            task.status
        )?;
    }
    Ok((task, raw))
}

/// `dts watch ID` (and `submit --wait`): a progress bar until the task ends;
/// exit 0 only if it completed. Ctrl-C stops the waiting, not the task:
/// it says so, and how to cancel it, and exits 130.
pub async fn watch(
    client: &Client,
    console: &mut Console,
    id: &str,
    json: bool,
) -> Result<ExitCode> {
    let Some((task, raw)) = follow(client, console, id).await? else {
        return Ok(ExitCode::from(INTERRUPTED));
    };
    if json {
        print_json(&mut console.out, &raw)?;
    } else {
        print_task(&mut console.out, &task)?;
    }
    Ok(ended_status(&task))
}

/// The exit status of a command that waited for `task` to end: 0 only
/// if it completed.
pub fn ended_status(task: &TaskView) -> ExitCode {
    if task.status == TaskStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Shows the task's progress until it ends, and returns it as it ended
/// (and its JSON); `None` after Ctrl-C, once it said that the task keeps
/// running and how to cancel it.
pub async fn follow(
    client: &Client,
    console: &mut Console,
    id: &str,
) -> Result<Option<(TaskView, Value)>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let (mut task, mut raw) = client
        .fetch::<TaskView>(Method::GET, &format!("/v1/tasks/{id}?summary=true"), None)
        .await?;
    // `id` may be a prefix, which a task submitted meanwhile could make
    // ambiguous: from here on, the full id the server resolved it to.
    let path = format!("/v1/tasks/{}?summary=true", task.id);
    let bar = progress_bar(task.items_total);
    // Without a terminal the bar is hidden: print each change of status,
    // of the failure count or of why the task waits instead. On a terminal
    // a new reason is printed above the bar, through the console that
    // escapes it (the bar does not).
    let plain = bar.is_hidden();
    let mut last_status = None;
    let mut last_reason = None;
    let mut last_failed = None;
    let rate = Rate::new(task.items_succeeded + task.items_failed);
    loop {
        let done = task.items_succeeded + task.items_failed;
        bar.set_position(done);
        bar.set_message(progress_message(&task, rate.per_sec(done)));
        let reason_changed = last_reason != task.waiting_reason;
        let changed = last_status != Some(task.status) || last_failed != Some(task.items_failed);
        if plain && (changed || reason_changed) {
            write!(
                console.err,
                "{}: {done} of {} done",
                task.status,
                count(task.items_total, "item")
            )?;
            if task.items_failed > 0 {
                write!(console.err, ", {} failed", task.items_failed)?;
            }
            match &task.waiting_reason {
                Some(reason) => writeln!(console.err, " (waiting: {reason})")?,
                None => writeln!(console.err)?,
            }
        } else if let (false, true, Some(reason)) = (plain, reason_changed, &task.waiting_reason) {
            bar.suspend(|| writeln!(console.err, "waiting: {reason}"))?;
        }
        last_status = Some(task.status);
        last_failed = Some(task.items_failed);
        last_reason.clone_from(&task.waiting_reason);
        if task.status.is_terminal() {
            break;
        }
        let next = async {
            tokio::time::sleep(POLL).await;
            client.fetch::<TaskView>(Method::GET, &path, None).await
        };
        tokio::select! {
            next = next => (task, raw) = next?,
            _ = interrupt.recv() => {
                bar.abandon();
                writeln!(
                    console.err,
                    "dts: stopped waiting; task {} keeps running on the server.\n\
                     dts: to cancel it: dts cancel {}{}",
                    task.id,
                    task.id,
                    client.server_flag()
                )?;
                return Ok(None);
            }
        }
    }
    // Not `finish`: that would show every item done, which a cancelled or
    // failed task's items were not.
    bar.abandon();
    Ok(Some((task, raw)))
}

/// The text beside the progress bar: status, items done of all, failures
/// as they happen, and once items are ending, the rate and time left.
fn progress_message(task: &TaskView, rate: Option<f64>) -> String {
    let done = task.items_succeeded + task.items_failed;
    let label = format!("{:<10} ", task.status.as_str());
    let rate = if task.status.is_terminal() {
        Progress::Ended
    } else {
        Progress::Running(rate)
    };
    progress_text(&label, done, task.items_total, task.items_failed, rate)
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

pub(super) fn print_task(out: &mut impl Write, task: &TaskView) -> Result<()> {
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

/// How `dts results` prints the items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsShape {
    /// A block per item: what happened, then its output lines.
    Listing,
    /// Only the output bytes, stdout to stdout and stderr to stderr.
    OutputOnly,
    /// The API's result objects.
    Json,
}

/// `dts results ID [--failed]`: one block per item, every page. Output cut
/// by the server's cap is said on stderr, per item and stream.
pub async fn results(
    client: &Client,
    console: &mut Console,
    id: &str,
    failed: bool,
    shape: ResultsShape,
) -> Result<ExitCode> {
    // For the items' attempts, and to say why there is little or nothing.
    let (task, _) = client
        .fetch::<TaskView>(Method::GET, &format!("/v1/tasks/{id}?summary=true"), None)
        .await?;
    // `id` may be a prefix: the pages use the full id it resolved to.
    let mut all = Vec::new();
    let shown = each_result(client, &task.id, failed, |item| {
        match shape {
            ResultsShape::Listing => {
                print_result(&mut console.out, &item.view, task.retries)?;
                print_previous_attempts(&mut console.out, &item.previous_attempts)?;
            }
            ResultsShape::OutputOnly => {
                console.out.write_all(item.view.result.stdout.as_bytes())?;
                console.err.write_all(item.view.result.stderr.as_bytes())?;
            }
            ResultsShape::Json => {}
        }
        let cuts = cut_notes(&item.view.result, SERVER_CAP);
        if !cuts.is_empty() {
            // Said next to the item it is about, after its output.
            console.out.flush()?;
            for note in cuts {
                writeln!(console.err, "dts: {note}")?;
            }
        }
        if shape == ResultsShape::Json {
            all.push(item);
        }
        Ok(())
    })
    .await?;
    if shape == ResultsShape::Json {
        print_json(&mut console.out, &all)?;
    }
    console.out.flush()?;
    if let Some(note) = results_note(&task, shown, failed) {
        writeln!(console.err, "dts: {note}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Calls `each` with every result of task `id` (the full id), in index
/// order, a page at a time (only the failed ones with `failed`); returns
/// how many there were.
pub async fn each_result(
    client: &Client,
    id: &str,
    failed: bool,
    mut each: impl FnMut(ResultItemView) -> Result<()>,
) -> Result<u64> {
    const PAGE: u64 = 1000;
    let filter = if failed { "&status=failed" } else { "" };
    let mut offset = 0;
    // ends: each page starts after the last one's results, and a page
    // that reaches the total, or an empty one, is the last.
    loop {
        let path = format!("/v1/tasks/{id}/results?offset={offset}&limit={PAGE}{filter}");
        let (page, _) = client
            .fetch::<ResultsPage>(Method::GET, &path, None)
            .await?;
        let read = page.items.len() as u64;
        offset += read;
        for item in page.items {
            each(item)?;
        }
        if offset >= page.total || read == 0 {
            break;
        }
    }
    Ok(offset)
}

/// What `dts results` says on stderr when its list alone would mislead:
/// an empty list, or a cancelled task's, whose other items never ran.
fn results_note(task: &TaskView, shown: u64, failed: bool) -> Option<String> {
    let id = &task.id;
    let total = task.items_total;
    let ran = task.items_succeeded + task.items_failed;
    let ran_of = format!("{ran} of {} ran", count(total, "item"));
    match (task.status, shown, failed) {
        (TaskStatus::Cancelled, 0, false) => Some(format!(
            "task {id} was cancelled before any of its {} ran",
            count(total, "item")
        )),
        (TaskStatus::Cancelled, _, _) => Some(format!("task {id} was cancelled: {ran_of}")),
        (TaskStatus::Skipped, _, _) => Some(format!(
            "task {id} was skipped, so none of its {} ran{}",
            count(total, "item"),
            task.error
                .as_deref()
                .map(|why| format!(": {why}"))
                .unwrap_or_default()
        )),
        (_, 0, true) => Some(format!(
            "no item of task {id} failed ({}, {ran_of})",
            task.status
        )),
        (_, 0, false) => Some(format!(
            "task {id} has no results yet ({}, {ran_of})",
            task.status
        )),
        _ => None,
    }
}

/// What `dts results` (and `dts run`, with a cap the user set) says on
/// stderr for each of an item's streams a cap cut: a silent cut loses data.
/// `keeper` says whose cap it is.
pub(super) fn cut_notes(result: &ItemResult, keeper: &str) -> Vec<String> {
    let streams = [
        (
            "stdout",
            result.stdout_truncated,
            result.stdout.len(),
            result.stdout_bytes,
        ),
        (
            "stderr",
            result.stderr_truncated,
            result.stderr.len(),
            result.stderr_bytes,
        ),
    ];
    let item = format!(
        "item {} ({})",
        result.index,
        Value::from(result.input.as_str())
    );
    streams
        .into_iter()
        .filter(|(_, cut, _, _)| *cut)
        .map(|(stream, _, kept, written)| {
            let kept = kept as u64;
            let how_much = if written > kept {
                format!("{} of {} bytes", grouped(kept), grouped(written))
            } else {
                // Stored by a dts that did not count what was dropped.
                format!("{} bytes, of more it did not count", grouped(kept))
            };
            format!("{item}: {stream} cut at {how_much} ({keeper})")
        })
        .collect()
}

/// Whose cap cut a result `dts results` shows.
pub(super) const SERVER_CAP: &str = "the server keeps executor.output-cap-bytes per item";

/// `n` with its digits in groups of three: 588,895.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut shown = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            shown.push(',');
        }
        shown.push(digit);
    }
    shown
}

/// One item's result; `retries` is the task's, to show an item's attempt
/// out of the attempts it could get.
fn print_result(out: &mut impl Write, item: &ResultView, retries: u32) -> Result<()> {
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
    // A lost worker's shard runs again as a further attempt, which can
    // go past the retries.
    let tries = retries.saturating_add(1);
    let attempt = if retries > 0 && result.attempt <= tries {
        format!("attempt {} of {tries}", result.attempt)
    } else {
        format!("attempt {}", result.attempt)
    };
    writeln!(
        out,
        "#{} {} [{}] {} ms, {attempt}, on {}",
        result.index,
        shown_input(&result.input),
        outcome,
        result.duration_ms,
        result.worker
    )?;
    // The output's bytes as they are, a line at a time: only a terminal
    // sees them escaped (see `terminal`), a pipe gets them unchanged.
    for (stream, output) in [("stdout", &result.stdout), ("stderr", &result.stderr)] {
        let bytes = output.as_bytes();
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if output.is_empty() {
            continue;
        }
        for line in bytes.split(|&b| b == b'\n') {
            write!(out, "  {stream}| ")?;
            out.write_all(line)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The attempts of an item that retries of its task ran before the one
/// shown, newest first, one line each: why it had to run again.
fn print_previous_attempts(out: &mut impl Write, past: &[PastAttempt]) -> Result<()> {
    for attempt in past.iter().rev() {
        let outcome = if attempt.timed_out {
            "timed out".to_string()
        } else if let Some(signal) = attempt.signal {
            format!("killed by signal {signal}")
        } else if let Some(error) = &attempt.error {
            format!("error: {error}")
        } else if let Some(code) = attempt.exit_code {
            format!("exit {code}")
        } else {
            "failed".to_string()
        };
        writeln!(
            out,
            "  earlier: attempt {} [{outcome}] {} ms, on {}",
            attempt.attempt, attempt.duration_ms, attempt.worker
        )?;
    }
    Ok(())
}

/// `dts retry ID [--wait]`: runs the task's failed and never-run items
/// again, as the same task; says what was queued, and with `wait` follows
/// the task as `submit --wait` does.
pub async fn retry(
    client: &Client,
    console: &mut Console,
    id: &str,
    wait: bool,
    json: bool,
) -> Result<ExitCode> {
    let (retried, raw) = client
        .fetch::<RetryView>(Method::POST, &format!("/v1/tasks/{id}/retry"), None)
        .await?;
    if json && !wait {
        print_json(&mut console.out, &raw)?;
        return Ok(ExitCode::SUCCESS);
    }
    let id = &retried.task.id;
    if retried.queued == 0 && retried.task.status == TaskStatus::Reducing {
        writeln!(console.err, "retrying task {id}: its reduce runs again")?;
    } else {
        writeln!(
            console.err,
            "retrying task {id}: {} queued ({} failed, {} never ran)",
            count(retried.queued, "item"),
            retried.failed,
            retried.not_run
        )?;
    }
    if !wait {
        writeln!(console.out, "{id}")?;
        return Ok(ExitCode::SUCCESS);
    }
    watch(client, console, id, json).await
}

/// An input as `dts results` shows it: quoted as JSON, so its spaces and
/// newlines show; bytes that are not UTF-8 as `b"caf\xe9"`, exactly.
fn shown_input(input: &dts_model::Bytes) -> String {
    match input.as_str() {
        Some(text) => Value::from(text).to_string(),
        None => format!("b\"{}\"", input.as_bytes().escape_ascii()),
    }
}

/// `dts cancel ID`.
pub async fn cancel(client: &Client, console: &mut Console, id: &str) -> Result<ExitCode> {
    let (task, _) = client
        .fetch::<TaskView>(Method::POST, &format!("/v1/tasks/{id}/cancel"), None)
        .await?;
    writeln!(console.out, "{} {}", task.id, task.status)?;
    Ok(ExitCode::SUCCESS)
}

/// `dts rm ID...`: deletes ended tasks. Each id is tried, even after one
/// fails; exit 2 (as for any error) if any did.
pub async fn rm(client: &Client, console: &mut Console, ids: &[String]) -> Result<ExitCode> {
    let mut failed = false;
    for id in ids {
        match client
            .fetch::<TaskView>(Method::DELETE, &format!("/v1/tasks/{id}"), None)
            .await
        {
            Ok((task, _)) => writeln!(console.out, "deleted {} ({})", task.id, task.status)?,
            Err(e) => {
                failed = true;
                writeln!(console.err, "dts: cannot delete {id}: {e:#}")?;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// `dts tasks`: newest first; with `all`, every page, `limit` at a time.
pub async fn tasks(
    client: &Client,
    console: &mut Console,
    status: Option<&str>,
    limit: u32,
    all: bool,
    json: bool,
) -> Result<ExitCode> {
    let mut base = format!("/v1/tasks?limit={limit}");
    if let Some(status) = status {
        base.push_str(&format!("&status={status}"));
    }
    let mut list: Vec<TaskView> = Vec::new();
    let mut raw: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    // ends: each page starts after the last (the server's cursor is a
    // position that only moves towards older tasks), and the last page
    // comes without a cursor.
    loop {
        let path = match &cursor {
            Some(cursor) => format!("{base}&cursor={cursor}"),
            None => base.clone(),
        };
        let (json_page, headers) = client.call_with_headers(Method::GET, &path, None).await?;
        let page = Vec::<TaskView>::deserialize(&json_page).with_context(|| {
            format!(
                "the server's answer to GET {path} is not what dts expects: {}",
                short(&json_page.to_string())
            )
        })?;
        list.extend(page);
        if let Value::Array(items) = json_page {
            raw.extend(items);
        }
        cursor = headers
            .get(dts_api::NEXT_CURSOR)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        if !all || cursor.is_none() {
            break;
        }
    }
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
    if !all && cursor.is_some() {
        writeln!(
            console.err,
            "dts: more tasks than --limit {limit}: --all lists every one"
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

    fn cut_result(stdout: &[u8], written: u64) -> ItemResult {
        let mut result: ItemResult = serde_json::from_value(json!({
            "index": 3, "input": "big.txt", "exitCode": 0, "signal": null,
            "timedOut": false, "stdout": "", "stderr": "", "stdoutTruncated": true,
            "stderrTruncated": false, "durationMs": 1, "worker": "w", "attempt": 1,
            "error": null
        }))
        .unwrap();
        result.stdout = stdout.into();
        result.stdout_bytes = written;
        result
    }

    #[test]
    fn a_cut_stream_is_named_with_what_was_kept_of_what_was_written() {
        assert_eq!(
            cut_notes(&cut_result(&[b'x'; 65_536], 588_895), SERVER_CAP),
            [
                "item 3 (\"big.txt\"): stdout cut at 65,536 of 588,895 bytes \
              (the server keeps executor.output-cap-bytes per item)"
            ]
        );
        let mut both = cut_result(b"abc", 1_000);
        both.stderr = "e".into();
        (both.stderr_truncated, both.stderr_bytes) = (true, 1_234_567);
        assert_eq!(cut_notes(&both, SERVER_CAP).len(), 2);
        assert!(
            cut_notes(&both, SERVER_CAP)[1].contains("stderr cut at 1 of 1,234,567 bytes"),
            "{:?}",
            cut_notes(&both, SERVER_CAP)
        );
    }

    #[test]
    fn a_cut_stored_before_dts_counted_says_it_does_not_know_how_much() {
        assert_eq!(
            cut_notes(&cut_result(b"abcd", 4), SERVER_CAP),
            [
                "item 3 (\"big.txt\"): stdout cut at 4 bytes, of more it did not count \
              (the server keeps executor.output-cap-bytes per item)"
            ]
        );
    }

    #[test]
    fn whole_output_gets_no_note() {
        let mut whole = cut_result(b"abcd", 4);
        whole.stdout_truncated = false;
        assert_eq!(cut_notes(&whole, SERVER_CAP), Vec::<String>::new());
    }

    #[test]
    fn numbers_are_grouped_in_threes() {
        let shown: Vec<String> = [0, 999, 1_000, 65_536, 1_234_567].map(grouped).to_vec();
        assert_eq!(shown, ["0", "999", "1,000", "65,536", "1,234,567"]);
    }

    #[test]
    fn results_list_output_that_is_not_utf8_byte_for_byte_into_a_pipe() {
        let mut item = ResultView {
            result: cut_result(b"caf\xe9\n\x1f\x8b", 6),
            succeeded: true,
        };
        item.result.stdout_truncated = false;
        let mut out = Sanitized::new(Vec::new(), Mode::Raw);
        print_result(&mut out, &item, 0).unwrap();
        let listed = out.get_ref().clone();
        let body = listed.splitn(2, |&b| b == b'\n').nth(1).unwrap();
        assert_eq!(body, b"  stdout| caf\xe9\n  stdout| \x1f\x8b\n");
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
                stdout_bytes: 12,
                stderr_bytes: 12,
                duration_ms: 1,
                worker: "w\x1b[31m".into(),
                attempt: 1,
                error: Some("\x1b]52;c;aGk=\x07".into()),
            },
            succeeded: false,
        };
        let shown = on_terminal(|out| print_result(out, &item, 0));
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
        let base = "http://x";
        assert_eq!(
            server_error(base, StatusCode::BAD_REQUEST, body),
            "limit is bad (field: limit; HTTP 400)"
        );
        assert_eq!(
            server_error(base, StatusCode::BAD_GATEWAY, "bad gateway"),
            "the server answered HTTP 502: bad gateway"
        );
    }

    #[test]
    fn progress_starts_without_a_rate_then_shows_one_decimal_failures_and_time_left() {
        let task = task_view(json!({"itemsTotal": 10, "itemsSucceeded": 0, "itemsFailed": 0}));
        assert_eq!(
            progress_message(&task, None),
            "INPROGRESS 0/10 items, starting"
        );
        let task = task_view(json!({"itemsTotal": 10, "itemsSucceeded": 2, "itemsFailed": 3}));
        assert_eq!(
            progress_message(&task, Some(2.0 / 3.0)),
            "INPROGRESS 5/10 items, 3 failed, 0.7/s, eta 8s"
        );
        let task = task_view(
            json!({"itemsTotal": 1, "itemsSucceeded": 0, "itemsFailed": 0,
                                    "status": "CANCELLED"}),
        );
        assert_eq!(progress_message(&task, Some(1.0)), "CANCELLED  0/1 item");
    }

    #[test]
    fn an_html_page_is_named_by_its_status_not_shown() {
        assert_eq!(
            server_error(
                "http://x",
                StatusCode::NOT_FOUND,
                "<html><body>nginx</body></html>"
            ),
            "http://x answered HTTP 404 Not Found with a web page, not dts's JSON: \
             is --server the URL of a dts server?"
        );
        assert!(looks_like_html("\n<!DOCTYPE html><html>"));
        assert!(!looks_like_html("{\"id\": \"<html>\"}"));
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
