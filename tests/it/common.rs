//! Test support: start the real `dts` binary on a free port with its own data
//! directory, talk HTTP to it, wait for conditions with deadlines.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// How long any single wait in these tests may take before it fails.
pub use dts_testkit::DEADLINE;

/// dts promises that a cancel ends an item's running processes within 2 s
/// (docs/reliability.md). Tests allow [`CANCEL_BOUND`]: a loaded 2-core
/// machine must not fail them, and a cancel that kills nothing still does
/// (their items sleep for a minute).
pub const CANCEL_PROMISE: Duration = Duration::from_secs(2);
/// The promise plus room for a loaded machine; see [`CANCEL_PROMISE`].
pub const CANCEL_BOUND: Duration = Duration::from_secs(5);

pub fn dts_binary() -> &'static str {
    env!("CARGO_BIN_EXE_dts")
}

/// A running `dts` node with an HTTP API (`dts up` or `dts server`),
/// killed when dropped. Derefs to its [`Api`].
pub struct DtsUp {
    child: Option<Child>,
    api: Api,
    pub log: PathBuf,
    /// Keeps the temp dir alive when this process created it.
    _dir: Option<TempDir>,
}

impl std::ops::Deref for DtsUp {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

/// Talks HTTP to one dts API (a node, or nginx in front of several).
pub struct Api {
    pub base: String,
    http: Client,
    token: Option<String>,
    /// Where to look for a log when a wait fails.
    log: Option<PathBuf>,
}

impl DtsUp {
    /// `dts up` on a free port with a fresh data directory and `extra` arguments.
    pub fn start(extra: &[&str]) -> DtsUp {
        let dir = TempDir::new().expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut up = DtsUp::start_in(&data_dir, extra, &[]);
        up._dir = Some(dir);
        up
    }

    /// `dts up` on `data_dir` (kept by the caller, e.g. across a restart).
    pub fn start_in(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> DtsUp {
        DtsUp::start_in_with(data_dir, extra, env, |_| {})
    }

    /// [`DtsUp::start_in`] with `configure` applied to the command before it
    /// starts (resource limits, inherited descriptors, umask).
    pub fn start_in_with(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        configure: impl FnOnce(&mut Command),
    ) -> DtsUp {
        std::fs::create_dir_all(data_dir.parent().expect("parent")).expect("data dir parent");
        let log = data_dir.with_extension(format!("log-{}", unique()));
        let mut args: Vec<String> = vec![
            "up".into(),
            "--port".into(),
            "0".into(),
            "--data-dir".into(),
        ];
        args.push(data_dir.display().to_string());
        args.extend(extra.iter().map(|a| a.to_string()));
        DtsUp::spawn(&args, env, log, configure)
    }

    /// `dts server` on a free port; `args` and `env` say where Kafka and Redis are.
    pub fn server(args: &[String], env: &[(&str, &str)], log: PathBuf) -> DtsUp {
        let mut all: Vec<String> = vec!["server".into(), "--port".into(), "0".into()];
        all.extend(args.iter().cloned());
        DtsUp::spawn(&all, env, log, |_| {})
    }

    fn spawn(
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
        configure: impl FnOnce(&mut Command),
    ) -> DtsUp {
        let (child, line) = spawn_until_with(args, env, &log, "dts listening on ", configure);
        let token = env
            .iter()
            .find(|(k, _)| *k == "DTS_AUTH_TOKEN")
            .map(|(_, v)| v.to_string());
        DtsUp {
            child: Some(child),
            api: Api {
                base: line,
                http: client(),
                token,
                log: Some(log.clone()),
            },
            log,
            _dir: None,
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for exit (killed and failed at the deadline);
    /// returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        dts_testkit::wait_for_exit(&mut child, DEADLINE, "dts after SIGTERM")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Api {
    /// A client for an API at `base` (e.g. nginx in front of servers).
    pub fn at(base: String) -> Api {
        Api {
            base,
            http: client(),
            token: None,
            log: None,
        }
    }

    fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|log| std::fs::read_to_string(log).ok())
            .unwrap_or_default()
    }

    /// Any request; returns the status and the body as JSON (or a JSON string).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        self.request_with(method, path, content_type, &[], body)
            .await
    }

    /// [`Api::request`] with extra headers (an `Origin`, say).
    pub async fn request_with(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
        // Every answer must be one the OpenAPI document allows.
        let (status, _, bytes) = crate::contract::read_checked(&method, response).await;
        if status.is_success() {
            if let Some(ct) = content_type {
                crate::contract::check_accepted_request(&method, path, ct, &body);
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, None, Vec::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.request(
            Method::POST,
            path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await
    }

    /// POSTs a form (`application/x-www-form-urlencoded`), as the seed's
    /// clients do.
    pub async fn post_form(&self, path: &str, form: &str) -> (StatusCode, Value) {
        self.request(
            Method::POST,
            path,
            Some("application/x-www-form-urlencoded"),
            form.as_bytes().to_vec(),
        )
        .await
    }

    /// Submits through v1 and returns the task id.
    pub async fn submit(&self, task: Value) -> String {
        let (status, body) = self.post_json("/v1/tasks", &task).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().expect("id").to_string()
    }

    pub async fn task(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/tasks/{id}?summary=true")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Waits until `check` holds for the task, or panics at the deadline
    /// with the task as last seen and the node's log.
    pub async fn wait_task(&self, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v1/tasks/{id}?summary=true");
        let awaited = format!("task {id} to become {what}");
        let waited =
            std::panic::AssertUnwindSafe(dts_testkit::wait_for(DEADLINE, &awaited, || async {
                let (status, task) = self.get(&path).await;
                // 503 while the store is down (a Redis restart) is a fine
                // answer: ask again, until the deadline.
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    return Err(format!("503 {task}"));
                }
                assert_eq!(status, StatusCode::OK, "{task}");
                if check(&task) {
                    Ok(task)
                } else {
                    Err(task.to_string())
                }
            }));
        match futures::FutureExt::catch_unwind(waited).await {
            Ok(task) => task,
            Err(failure) => {
                eprintln!("log of the node:\n{}", self.log_text());
                std::panic::resume_unwind(failure)
            }
        }
    }

    /// Waits for the task to end (any terminal status).
    pub async fn wait_ended(&self, id: &str) -> Value {
        self.wait_task(id, "ended", |t| {
            matches!(
                t["status"].as_str(),
                Some("COMPLETED" | "FAILED" | "CANCELLED" | "SUBMISSION_FAILED" | "SKIPPED")
            )
        })
        .await
    }

    /// Every result of the task, in index order, read page by page. A page
    /// that brings nothing new before `total` is reached fails the test, as
    /// does paging past the deadline: a pager that never reached `total`
    /// would otherwise ask forever.
    pub async fn all_results(&self, id: &str, filter: &str) -> Vec<Value> {
        let deadline = std::time::Instant::now() + DEADLINE;
        let mut all = Vec::new();
        loop {
            let path = format!(
                "/v1/tasks/{id}/results?offset={}&limit=1000{filter}",
                all.len()
            );
            let (status, page) = self.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            let items = page["items"].as_array().expect("items").clone();
            let total = page["total"].as_u64().expect("total") as usize;
            assert!(
                !items.is_empty() || all.len() >= total,
                "{path}: an empty page at {} of {total} results",
                all.len()
            );
            all.extend(items);
            if all.len() >= total {
                return all;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path}: paging for {DEADLINE:?} did not reach {total} results"
            );
        }
    }

    /// Reads an event stream (`GET` of `path`) until the server ends it,
    /// with a deadline: the response's content type and each event's data
    /// as JSON, in order.
    pub async fn events(&self, path: &str) -> (String, Vec<Value>) {
        let mut request = self.http.get(format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("events request sent");
        crate::contract::check_head(&Method::GET, &response);
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = tokio::time::timeout(DEADLINE, response.text())
            .await
            .unwrap_or_else(|_| panic!("the event stream {path} did not end within {DEADLINE:?}"))
            .expect("event stream body");
        let events = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|data| serde_json::from_str(data.trim()).expect("an event's data is JSON"))
            .collect();
        (content_type, events)
    }

    /// How many tasks the server knows.
    pub async fn task_count(&self) -> usize {
        let (_, list) = self.get("/v1/tasks?limit=1000").await;
        list.as_array().map(|a| a.len()).unwrap_or(0)
    }
}

/// Starts `dts ARGS`, logging to `log`, and waits for a stdout line starting
/// with `ready`; returns the child and the rest of that line.
pub fn spawn_until(
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    ready: &str,
) -> (Child, String) {
    spawn_until_with(args, env, log, ready, |_| {})
}

/// [`spawn_until`] with `configure` applied to the command before it starts.
pub fn spawn_until_with(
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
    ready: &str,
    configure: impl FnOnce(&mut Command),
) -> (Child, String) {
    let log_file = std::fs::File::create(log).expect("log file");
    let mut command = Command::new(dts_binary());
    command
        .args(args)
        .env("DTS_LOG", "info,dts_engine=debug")
        .env_remove("DTS_AUTH_TOKEN")
        .stdout(Stdio::piped())
        .stderr(log_file);
    for (key, value) in env {
        command.env(key, value);
    }
    configure(&mut command);
    let mut child = command.spawn().expect("start dts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&ready) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(rest) => (child, rest),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "dts {args:?} did not start; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

impl Drop for DtsUp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A temporary directory every user may write to: the items of `dts up`
/// run as `nobody` when the tests run as root, and tests that watch items
/// through files give them such a directory (by absolute path: each item
/// runs in a private directory of its own).
pub fn shared_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod the shared temp dir");
    dir
}

/// Waits for `check` with the deadline, saying what it waited for.
pub async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, check: impl FnMut() -> F) {
    dts_testkit::wait_until(DEADLINE, what, check).await
}

/// The pids that the first `n` items to start wrote to `dir`, one file each
/// (`echo $$ > DIR/NAME`).
///
/// The shell creates such a file before `echo` writes the pid, so a file
/// seen empty or without its final newline is read again until it holds a
/// whole pid.
pub async fn wait_for_pids(dir: &Path, n: usize) -> Vec<i32> {
    dts_testkit::wait_for(
        DEADLINE,
        &format!("{n} items to write their pids to {}", dir.display()),
        || async {
            let texts: Vec<String> = std::fs::read_dir(dir)
                .expect("read the pid directory")
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .collect();
            let pids: Vec<i32> = texts
                .iter()
                .filter_map(|text| text.strip_suffix('\n')?.parse().ok())
                .collect();
            if pids.len() >= n && pids.len() == texts.len() {
                Ok(pids)
            } else {
                Err(texts)
            }
        },
    )
    .await
}

/// Runs the client command `dts ARGS --server <up>` to its end, with no
/// token from the environment.
pub fn dts_client(up: &DtsUp, args: &[&str]) -> std::process::Output {
    run_dts(
        Command::new(dts_binary())
            .args(args)
            .arg("--server")
            .arg(&up.base)
            .env_remove("DTS_AUTH_TOKEN"),
    )
}

/// A process's output bytes as text (invalid UTF-8 replaced).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a dts client command (`dts ARGS`) to its end, killed and failed at
/// the deadline.
pub fn run_dts(command: &mut Command) -> std::process::Output {
    dts_testkit::output_within(command, DEADLINE, "a dts client command")
}

/// An HTTP client whose every request (body included) ends by the deadline,
/// so a server that accepts and never answers fails the test instead of
/// hanging it.
fn client() -> Client {
    Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("an HTTP client")
}

/// A task body for the v1 API.
pub fn task(template: &str, inputs: &[String]) -> Value {
    json!({ "templateFunction": template, "inputList": inputs })
}

/// `n` inputs `item-0 .. item-(n-1)`.
pub fn items(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("item-{i}")).collect()
}

/// Whether a process is gone (or a zombie nobody waits for any more).
pub fn process_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if !alive {
        return true;
    }
    // A zombie counts as gone: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.split(") ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}
