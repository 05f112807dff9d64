//! The dashboard: its login and headers over HTTP, and its pages in a real
//! headless Chromium (skipped, saying so, where Chromium is not installed
//! unless `DTS_TEST_REQUIRE_BROWSER` is set). With
//! `DTS_UPDATE_SCREENSHOTS=1` the browser tests also write the pages'
//! screenshots to docs/img/.

use crate::common::{
    CANCEL_BOUND, DEADLINE, DtsUp, items, process_gone, shared_dir, task, wait_for_pids,
};
use dts_testkit::browser::{Browser, Locator};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};
use std::time::Duration;

const TOKEN: &str = "ui-test-token-0123456789";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// A name that would inject an element if any page put it in as HTML.
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)>";

/// An HTTP client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(DEADLINE)
        .build()
        .expect("an HTTP client")
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().expect("a text header"))
        .unwrap_or("")
}

/// `dts up` with [`TOKEN`], and the directory that holds its data.
fn with_token() -> (tempfile::TempDir, DtsUp) {
    let dir = tempfile::TempDir::new().unwrap();
    let up = DtsUp::start_in(&dir.path().join("data"), &[], &[("DTS_AUTH_TOKEN", TOKEN)]);
    (dir, up)
}

#[tokio::test]
async fn login_sets_an_httponly_strict_cookie_and_refuses_a_wrong_token() {
    let (_dir, up) = with_token();
    let http = no_redirects();
    for page in [
        "/",
        "/ui/tasks",
        "/ui/schedules",
        "/ui/workers",
        "/ui/events?page=workers",
        "/ui/events?page=schedules",
    ] {
        let response = http.get(format!("{}{page}", up.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(
            header(response.headers(), "location"),
            "/ui/login",
            "{page}"
        );
    }

    let login = |token: &str| {
        http.post(format!("{}/ui/login", up.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    let wrong = login("not-the-token").await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("That token is not the server&#39;s token.")
    );

    let right = login(TOKEN).await.unwrap();
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(right.headers(), "location"), "/");
    let cookie = header(right.headers(), "set-cookie").to_string();
    assert_eq!(
        cookie,
        "dts_token=ui%2Dtest%2Dtoken%2D0123456789; HttpOnly; SameSite=Strict; Path=/"
    );
    let pair = cookie.split(';').next().unwrap().to_string();

    let with_cookie = http
        .get(format!("{}/v1/tasks", up.base))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), StatusCode::OK);
    let page = http
        .get(format!("{}/ui/tasks", up.base))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let forged = http
        .get(format!("{}/v1/tasks", up.base))
        .header("cookie", "dts_token=ui-test-token-012345678X")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let logout = http
        .post(format!("{}/ui/logout", up.base))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        header(logout.headers(), "set-cookie"),
        "dts_token=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/"
    );
}

#[tokio::test]
async fn a_post_from_a_foreign_origin_is_refused_even_with_the_login_cookie() {
    let (_dir, up) = with_token();
    let http = no_redirects();
    let cookie = format!("dts_token={TOKEN}");
    let body = json!({"templateFunction": "sleep 30", "inputList": ["a"]}).to_string();
    let submit = |origin: String| {
        http.post(format!("{}/v1/tasks", up.base))
            .header("cookie", &cookie)
            .header("origin", origin)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let foreign = submit("http://evil.example".into()).await.unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let own = submit(up.base.clone()).await.unwrap();
    assert_eq!(own.status(), StatusCode::ACCEPTED);
    let id = own.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let cancel = |origin: &'static str| {
        http.post(format!("{}/v1/tasks/{id}/cancel", up.base))
            .header("cookie", &cookie)
            .header("origin", origin)
            .send()
    };
    assert_eq!(
        cancel("http://evil.example").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        cancel("null").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_ne!(up.task(&id).await["status"], "CANCELLED");
    let login = http
        .post(format!("{}/ui/login", up.base))
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
    assert!(login.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn every_dashboard_page_forbids_inline_script_and_framing() {
    let up = DtsUp::start(&[]);
    let id = up.submit(task("true", &items(1))).await;
    let http = no_redirects();
    for page in [
        "/".to_string(),
        "/ui/tasks".into(),
        format!("/ui/tasks/{id}"),
        "/ui/schedules".into(),
        "/ui/workers".into(),
        "/ui/assets/app.js".into(),
    ] {
        let response = http.get(format!("{}{page}", up.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{page}");
        let headers = response.headers().clone();
        assert_eq!(header(&headers, "content-security-policy"), CSP, "{page}");
        assert_eq!(header(&headers, "x-frame-options"), "DENY", "{page}");
        assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
        // `no-referrer` would make the login form post `Origin: null`.
        assert_eq!(header(&headers, "referrer-policy"), "same-origin");
        let html = response.text().await.unwrap();
        let scripts = html.matches("<script").count();
        let external = html
            .matches("<script src=\"/ui/assets/app.js\" defer>")
            .count();
        assert_eq!(scripts, external, "{page} has an inline script");
    }
    // Without a token there is nothing to log into.
    let login = http
        .get(format!("{}/ui/login", up.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(login.headers(), "location"), "/");
    let unknown = http
        .get(format!(
            "{}/ui/tasks/00000000-0000-4000-8000-000000000000",
            up.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tasks_are_searched_by_name_in_any_case_and_paged_with_a_cursor() {
    let up = DtsUp::start(&[]);
    for name in ["alpha-1", "Beta", "ALPHA-2", "gamma", "alpha-3", "delta"] {
        let mut body = task("true", &items(1));
        body["name"] = json!(name);
        up.submit(body).await;
    }
    let http = no_redirects();
    let page = |query: String| {
        let http = http.clone();
        let url = format!("{}/v1/tasks?{query}", up.base);
        async move {
            let response = http.get(url).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let cursor = header(response.headers(), "x-next-cursor").to_string();
            let names: Vec<String> = response
                .json::<Vec<Value>>()
                .await
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect();
            (names, cursor)
        }
    };
    let (first, cursor) = page("name=Alpha&limit=2".into()).await;
    assert_eq!(first, ["alpha-3", "ALPHA-2"]);
    assert!(!cursor.is_empty(), "a cursor to the next page");
    let (second, end) = page(format!("name=Alpha&limit=2&cursor={cursor}")).await;
    assert_eq!(second, ["alpha-1"]);
    assert_eq!(end, "", "no page after the last match");
    let (none, _) = page("name=zeta".into()).await;
    assert!(none.is_empty());
}

// --- In the browser ---------------------------------------------------------

/// Writes a screenshot of what the browser shows to docs/img/NAME.png,
/// only when `DTS_UPDATE_SCREENSHOTS=1` (CI must not change the checkout).
async fn screenshot(browser: &Browser, name: &str) {
    if std::env::var("DTS_UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let png = browser.screenshot().await.expect("a screenshot");
    let path = dts_testkit::workspace_root()
        .join("docs/img")
        .join(format!("{name}.png"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
}

/// The value of a JavaScript expression in the page.
async fn js(browser: &Browser, expression: &str) -> Value {
    browser
        .execute(&format!("return {expression};"), vec![])
        .await
        .unwrap_or_else(|e| panic!("running {expression}: {e}"))
}

/// Waits until `expression` is true in the page.
async fn wait_js(browser: &Browser, what: &str, expression: &str) {
    dts_testkit::wait_for(DEADLINE, what, || async {
        match browser
            .execute(&format!("return {expression};"), vec![])
            .await
        {
            Ok(Value::Bool(true)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// Loads the page at `path` of `up`'s dashboard.
async fn open(browser: &Browser, up: &DtsUp, path: &str) {
    browser
        .goto(&format!("{}{path}", up.base))
        .await
        .unwrap_or_else(|e| panic!("loading {path}: {e}"));
}

/// The selector of a task's row on the tasks page.
fn row(id: &str) -> String {
    format!("tr[data-id=\"{id}\"]")
}

#[tokio::test]
async fn a_submitted_task_shows_on_the_tasks_page_and_its_bar_advances_live() {
    let Some(browser) = Browser::start(1280, 760).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "2"]);
    let mut done = task("echo \"$1\"", &items(40));
    done["name"] = json!("thumbnails");
    let earlier = up.submit(done).await;
    up.wait_ended(&earlier).await;
    // 20 items of a second on 2 slots: at least 10 s to watch the bar move.
    let mut body = task("sleep 1; echo \"$1\"", &items(20));
    body["name"] = json!(HOSTILE_NAME);
    let id = up.submit(body).await;

    open(&browser, &up, "/ui/tasks").await;
    let bar = format!("document.querySelector('{} progress')", row(&id));
    wait_js(
        &browser,
        "the task's row with its progress bar on the tasks page",
        &format!("{bar} !== null"),
    )
    .await;
    // The hostile name is text, and no <img> was made of it.
    let name = js(
        &browser,
        &format!(
            "document.querySelector('{} .task-name').textContent",
            row(&id)
        ),
    )
    .await;
    assert_eq!(name, json!(HOSTILE_NAME));
    assert_eq!(js(&browser, "document.images.length").await, json!(0));
    // A mark on the window: still there after the bar moved means the page
    // was not reloaded.
    js(&browser, "(window.sameLoad = true)").await;
    let first = js(&browser, &format!("{bar}.value"))
        .await
        .as_f64()
        .unwrap();
    wait_js(
        &browser,
        &format!("the progress bar to pass {first} without a reload"),
        &format!("{bar}.value > {first}"),
    )
    .await;
    assert_eq!(js(&browser, "window.sameLoad").await, json!(true));
    assert_eq!(
        js(&browser, &format!("{bar}.max")).await.as_f64(),
        Some(20.0)
    );
    screenshot(&browser, "tasks").await;

    open(&browser, &up, "/").await;
    wait_js(
        &browser,
        "the overview to list the latest tasks",
        &format!("document.querySelector('{}') !== null", row(&earlier)),
    )
    .await;
    // Items per second counts whole 10-second buckets: it shows the
    // finished items once their bucket has closed.
    wait_js(
        &browser,
        "the overview's items per second to count the finished items",
        "document.getElementById('rate').textContent !== '0.00' && document.getElementById('finished').textContent !== ''",
    )
    .await;
    screenshot(&browser, "overview").await;
    browser.close().await;
}

#[tokio::test]
async fn cancel_on_the_task_page_cancels_the_task_and_no_item_starts_after() {
    let Some(browser) = Browser::start(1280, 900).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "2"]);
    let dir = shared_dir();
    let body = json!({
        "name": "long sleepers",
        "templateFunction": "echo $$ > {{dir}}/$1.pid; exec sleep 60",
        "variableJson": {"dir": dir.path().display().to_string()},
        "inputList": items(10),
    });
    let id = up.submit(body).await;
    let running = wait_for_pids(dir.path(), 2).await;

    open(&browser, &up, &format!("/ui/tasks/{id}")).await;
    wait_js(
        &browser,
        "the Cancel button to be enabled",
        "document.getElementById('cancel').disabled === false",
    )
    .await;
    browser
        .find(Locator::Id("cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_js(
        &browser,
        "the task page to show CANCELLED",
        "document.getElementById('task-status').textContent === 'CANCELLED'",
    )
    .await;
    assert_eq!(up.task(&id).await["status"], "CANCELLED");
    dts_testkit::wait_until(
        CANCEL_BOUND,
        &format!("the running items {running:?} to end after the cancel"),
        || async { running.iter().all(|pid| process_gone(*pid)) },
    )
    .await;
    // Both slots are free now; give a wrongly started item time to appear.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(started, 2, "an item started after the cancel");
    assert_eq!(
        js(&browser, "document.getElementById('cancel').disabled").await,
        json!(true)
    );
    browser.close().await;
}

#[tokio::test]
async fn a_failed_items_exit_code_and_stderr_show_on_its_task_page() {
    let Some(browser) = Browser::start(1280, 1100).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "2"]);
    let inputs: Vec<String> = (0..30)
        .map(|i| {
            if i == 7 {
                "bad-7".to_string()
            } else {
                format!("photo-{i}")
            }
        })
        .collect();
    let body = json!({
        "name": "resize photos",
        "templateFunction": "sleep 0.2; case \"$1\" in bad-*) echo \"cannot read $1: <b>no such file</b>\" >&2; exit 3;; esac; echo \"resized $1\"",
        "inputList": inputs,
    });
    let id = up.submit(body).await;
    up.wait_ended(&id).await;

    open(&browser, &up, &format!("/ui/tasks/{id}")).await;
    wait_js(
        &browser,
        "the failed item's row",
        "document.querySelector('tr.failed-item') !== null",
    )
    .await;
    let failed = js(
        &browser,
        "[...document.querySelectorAll('tr.failed-item')].map(r => [r.querySelector('.exit').textContent, r.querySelector('pre.stderr').textContent])",
    )
    .await;
    assert_eq!(
        failed,
        json!([["3", "cannot read bad-7: <b>no such file</b>\n"]])
    );
    assert_eq!(
        js(&browser, "document.querySelectorAll('pre.stderr b').length").await,
        json!(0)
    );
    assert_eq!(
        js(&browser, "document.getElementById('n-failed').textContent").await,
        json!("1")
    );
    assert_eq!(
        js(&browser, "document.getElementById('n-ok').textContent").await,
        json!("29")
    );
    wait_js(
        &browser,
        "the throughput chart and the items per worker",
        "document.querySelector('#chart svg rect.bar') !== null && document.querySelector('#per-worker td') !== null",
    )
    .await;
    let per_worker = js(
        &browser,
        "[...document.querySelectorAll('#per-worker tbody tr')].map(r => [r.cells[1].textContent, r.cells[2].textContent])",
    )
    .await;
    assert_eq!(per_worker, json!([["29", "1"]]));
    let counts = js(
        &browser,
        "['n-ok', 'n-failed', 'n-running', 'n-waiting'].map(id => document.getElementById(id).textContent)",
    )
    .await;
    assert_eq!(counts, json!(["29", "1", "0", "0"]));
    screenshot(&browser, "task").await;
    browser.close().await;
}

/// `secs` as the pages write a duration: `45 s`, `5 min 0 s`, `2 h 5 min`.
fn shown_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// What the Reduce section shows, as `[outcome, exit, stdout, stderr]`.
const REDUCE_SHOWN: &str = "['reduce-outcome', 'reduce-exit', 'reduce-stdout', 'reduce-stderr'].map(id => document.getElementById(id)?.textContent ?? null)";

#[tokio::test]
async fn the_task_page_shows_the_reduce_its_result_and_its_output_as_text() {
    let Some(browser) = Browser::start(1280, 1100).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "2"]);
    let dir = shared_dir();
    // The items wait for the file `go`, so the page is open before the
    // reduce has run, and sees its result come without a reload. The shell
    // loop ends when the file appears, or at the items' time limit.
    let sum = "jq -s 'map(.stdout) | add'";
    let body = json!({
        "name": "reduce to markup",
        "templateFunction": "until [ -e {{dir}}/go ]; do sleep 0.1; done; echo \"<b>$1</b>\"",
        "variableJson": {"dir": dir.path().display().to_string()},
        "inputList": ["x", "y", "z"],
        "timeoutSecs": 120,
        "reduce": {"templateFunction": sum},
    });
    let id = up.submit(body).await;

    open(&browser, &up, &format!("/ui/tasks/{id}")).await;
    wait_js(
        &browser,
        "the Reduce section with its script, before the reduce ran",
        "document.getElementById('reduce').hidden === false \
         && document.getElementById('reduce-state')?.textContent === 'The reduce runs once every item has its result.'",
    )
    .await;
    let step = js(
        &browser,
        "['reduce-script', 'reduce-when', 'reduce-timeout'].map(id => document.getElementById(id).textContent)",
    )
    .await;
    let timeout = up.task(&id).await["reduce"]["timeoutSecs"]
        .as_u64()
        .expect("the reduce's timeoutSecs");
    assert_eq!(step[0], json!(sum), "the script, as text");
    assert_eq!(
        step[1],
        json!("once every item has succeeded (when: success)")
    );
    assert_eq!(step[2], json!(shown_duration(timeout)));
    js(&browser, "(window.sameLoad = true)").await;
    std::fs::write(dir.path().join("go"), "").unwrap();

    wait_js(
        &browser,
        "the task COMPLETED and the Reduce section to show succeeded with its stdout",
        "document.getElementById('task-status').textContent === 'COMPLETED' \
         && document.getElementById('reduce-outcome')?.textContent === 'succeeded' \
         && (document.getElementById('reduce-stdout')?.textContent || '') !== ''",
    )
    .await;
    assert_eq!(js(&browser, "window.sameLoad").await, json!(true));
    let task = up.task(&id).await;
    let result = &task["reduce"]["result"];
    let stdout = result["stdout"].as_str().expect("the reduce's stdout");
    assert_eq!(stdout, "\"<b>x</b>\\n<b>y</b>\\n<b>z</b>\\n\"\n", "{task}");
    let shown = js(&browser, REDUCE_SHOWN).await;
    assert_eq!(shown, json!(["succeeded", "exit code 0", stdout, ""]));
    // The output is text: no <b> was made of it.
    assert_eq!(
        js(&browser, "document.querySelectorAll('#reduce b').length").await,
        json!(0)
    );
    let facts = js(
        &browser,
        "['reduce-attempt', 'reduce-worker'].map(id => document.getElementById(id).textContent)",
    )
    .await;
    assert_eq!(
        facts,
        json!([result["attempt"].to_string(), result["worker"]])
    );
    assert_eq!(
        js(
            &browser,
            "document.querySelectorAll('#reduce p.note').length"
        )
        .await,
        json!(0),
        "a truncated note for output that was not cut"
    );
    screenshot(&browser, "reduce").await;

    let failing = up
        .submit(json!({
            "name": "reduce that fails",
            "templateFunction": "echo \"$1\"",
            "inputList": ["a", "b"],
            "reduce": {"templateFunction": "cat >/dev/null; echo oops >&2; exit 3"},
        }))
        .await;
    open(&browser, &up, &format!("/ui/tasks/{failing}")).await;
    wait_js(
        &browser,
        "the task FAILED and the Reduce section to show failed",
        "document.getElementById('task-status').textContent === 'FAILED' \
         && document.getElementById('reduce-outcome')?.textContent === 'failed'",
    )
    .await;
    assert_eq!(
        js(&browser, REDUCE_SHOWN).await,
        json!(["failed", "exit code 3", "", "oops\n"])
    );
    assert_eq!(
        js(
            &browser,
            "document.querySelector('#reduce-outcome.badge.failed') !== null"
        )
        .await,
        json!(true)
    );
    let meta = js(&browser, "document.getElementById('task-meta').textContent").await;
    assert!(
        meta.as_str()
            .unwrap_or("")
            .contains("the reduce exited 3 (attempt 1)"),
        "{meta}"
    );

    // While it reduces, the section says so. The reduce's loop ends when
    // the file `reduced` appears, or at its time limit.
    let slow = up
        .submit(json!({
            "name": "reduce that waits",
            "templateFunction": "echo \"$1\"",
            "variableJson": {"dir": dir.path().display().to_string()},
            "inputList": ["a"],
            "reduce": {"templateFunction": "until [ -e {{dir}}/reduced ]; do sleep 0.1; done; wc -l", "timeoutSecs": 120},
        }))
        .await;
    open(&browser, &up, &format!("/ui/tasks/{slow}")).await;
    wait_js(
        &browser,
        "the REDUCING badge and the note that the reduce runs",
        "document.getElementById('task-status').textContent === 'REDUCING' \
         && document.getElementById('reduce-state')?.textContent === 'Every item has its result: the reduce runs now (or waits for a worker to take it).'",
    )
    .await;
    std::fs::write(dir.path().join("reduced"), "").unwrap();
    wait_js(
        &browser,
        "the task COMPLETED and the reduce's stdout, the count of its one line",
        "document.getElementById('task-status').textContent === 'COMPLETED' \
         && document.getElementById('reduce-stdout')?.textContent === '1\\n' \
         && document.getElementById('reduce-state') === null",
    )
    .await;
    browser.close().await;
}

#[tokio::test]
async fn the_task_page_tails_the_output_of_running_items_live() {
    let Some(browser) = Browser::start(1280, 1100).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "2"]);
    let body = json!({
        "name": "tail me",
        "templateFunction": "echo \"started $1\"; sleep 1; echo \"halfway $1\" >&2; sleep 60",
        "inputList": ["a", "b"],
    });
    let id = up.submit(body).await;
    open(&browser, &up, &format!("/ui/tasks/{id}")).await;
    wait_js(
        &browser,
        "both items' first and second lines in the live output",
        "['started a', 'started b', 'halfway a', 'halfway b'].every(t => \
         (document.getElementById('tail').textContent || '').includes(t))",
    )
    .await;
    wait_js(
        &browser,
        "the page to count both items running",
        "document.getElementById('n-running').textContent === '2'",
    )
    .await;
    // Lines come while the items still run, each tagged with its index,
    // stderr apart from stdout.
    assert_eq!(up.task(&id).await["status"], "INPROGRESS");
    assert_eq!(
        js(
            &browser,
            "[...document.querySelectorAll('#tail span.stderr')].map(s => s.textContent).sort()"
        )
        .await,
        json!(["[0] halfway a\n", "[1] halfway b\n"])
    );
    screenshot(&browser, "live-output").await;
    let (status, body) = up
        .post_json(&format!("/v1/tasks/{id}/cancel"), &Value::Null)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    browser.close().await;
}

#[tokio::test]
async fn the_workers_page_lists_the_live_worker() {
    let Some(browser) = Browser::start(1280, 520).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "3", "--label", "gpu=none"]);
    let (_, workers) = up.get("/v1/workers").await;
    let worker = workers[0]["id"].as_str().unwrap().to_string();
    open(&browser, &up, "/ui/workers").await;
    wait_js(
        &browser,
        "the worker's row",
        "document.querySelector('tr.worker') !== null",
    )
    .await;
    let shown = js(
        &browser,
        "[...document.querySelectorAll('tr.worker')].map(r => [r.cells[0].querySelector('.mono').textContent, r.cells[2].textContent, r.cells[5].textContent])",
    )
    .await;
    assert_eq!(shown, json!([[worker, "3", "gpu=none"]]));
    screenshot(&browser, "workers").await;
    browser.close().await;
}

#[tokio::test]
async fn finished_tasks_are_still_listed_after_dts_up_restarts() {
    let Some(browser) = Browser::start(1280, 600).await else {
        return;
    };
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let up = DtsUp::start_in(&data, &[], &[]);
    let mut ids = Vec::new();
    for name in ["before restart A", "before restart B"] {
        let mut body = task("echo \"$1\"", &items(3));
        body["name"] = json!(name);
        let id = up.submit(body).await;
        up.wait_ended(&id).await;
        ids.push(id);
    }
    up.terminate();

    let up = DtsUp::start_in(&data, &[], &[]);
    open(&browser, &up, "/ui/tasks").await;
    for id in &ids {
        wait_js(
            &browser,
            &format!("task {id} on the tasks page after the restart"),
            &format!("document.querySelector('{}') !== null", row(id)),
        )
        .await;
    }
    let shown = js(
        &browser,
        "[...document.querySelectorAll('table.tasks tbody tr')].map(r => [r.querySelector('.task-name').textContent, r.querySelector('.badge').textContent])",
    )
    .await;
    assert_eq!(
        shown,
        json!([
            ["before restart B", "COMPLETED"],
            ["before restart A", "COMPLETED"]
        ])
    );
    browser.close().await;
}

#[tokio::test]
async fn with_a_token_the_dashboard_opens_only_after_logging_in() {
    let Some(browser) = Browser::start(1280, 640).await else {
        return;
    };
    let (_dir, up) = with_token();
    let mut body = task("true", &items(2));
    body["name"] = json!("behind the login");
    let id = up.submit(body).await;

    open(&browser, &up, "/ui/tasks").await;
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/ui/login");
    assert_eq!(
        js(&browser, &format!("document.querySelector('{}')", row(&id))).await,
        Value::Null
    );
    screenshot(&browser, "login").await;

    let log_in = |token: &'static str| {
        let browser = &browser;
        async move {
            let field = browser.find(Locator::Id("token")).await.unwrap();
            field.clear().await.unwrap();
            field.send_keys(token).await.unwrap();
            browser
                .find(Locator::Id("login"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    log_in("wrong-token-0123456789").await;
    wait_js(
        &browser,
        "the login form to say the token is wrong",
        "document.getElementById('login-error') !== null",
    )
    .await;
    assert_eq!(
        js(
            &browser,
            "document.getElementById('login-error').textContent"
        )
        .await,
        json!("That token is not the server's token.")
    );
    log_in(TOKEN).await;
    wait_js(
        &browser,
        "the overview after logging in",
        "document.body.dataset.page === 'overview'",
    )
    .await;
    // The cookie is HttpOnly: the page's script cannot read it.
    assert_eq!(js(&browser, "document.cookie").await, json!(""));
    open(&browser, &up, "/ui/tasks").await;
    wait_js(
        &browser,
        "the task on the tasks page after logging in",
        &format!("document.querySelector('{}') !== null", row(&id)),
    )
    .await;
    browser.close().await;
}

#[tokio::test]
async fn a_waiting_task_shows_what_it_waits_for_and_is_skipped_when_that_is_cancelled() {
    let Some(browser) = Browser::start(1280, 900).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "1"]);
    let first = up
        .submit(json!({"templateFunction": "sleep 30", "inputList": ["x"]}))
        .await;
    let second = up
        .submit(json!({"templateFunction": "echo \"$1\"", "inputList": ["y"], "after": [first]}))
        .await;

    open(&browser, &up, &format!("/ui/tasks/{second}")).await;
    wait_js(
        &browser,
        "the WAITING badge and what the task waits for",
        &format!(
            "document.querySelector('#task-status .badge.waiting')?.textContent === 'WAITING' \
             && document.getElementById('task-meta').textContent.includes('waiting for task {first} to complete')"
        ),
    )
    .await;
    let (status, _) = up
        .post_json(&format!("/v1/tasks/{first}/cancel"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_js(
        &browser,
        "the SKIPPED badge and the reason naming the cancelled task",
        &format!(
            "document.querySelector('#task-status .badge.skipped')?.textContent === 'SKIPPED' \
             && document.getElementById('task-meta').textContent.includes('task {first} ended CANCELLED')"
        ),
    )
    .await;
}

/// Clicks the element `css` selects.
async fn click(browser: &Browser, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("finding {css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
}

/// Waits until `GET /v1/schedules/{name}` says `paused` is `paused`.
async fn wait_paused(up: &DtsUp, name: &str, paused: bool) -> Value {
    dts_testkit::wait_for(
        DEADLINE,
        &format!("the API to say schedule {name} has paused: {paused}"),
        || async {
            let (status, schedule) = up.get(&format!("/v1/schedules/{name}")).await;
            if status == StatusCode::OK && schedule["paused"] == json!(paused) {
                Ok(schedule)
            } else {
                Err(format!("{status}: {schedule}"))
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_schedules_page_shows_runs_live_and_pauses_resumes_and_deletes() {
    let Some(browser) = Browser::start(1280, 900).await else {
        return;
    };
    let up = DtsUp::start(&["--cores", "2"]);
    let every_second = json!({
        "name": "every-second",
        "cron": "* * * * * *",
        "timezone": "Europe/Paris",
        "overlap": "allow",
        "task": {"name": HOSTILE_NAME, "templateFunction": "true", "inputList": ["x"]},
    });
    let (status, body) = up.post_json("/v1/schedules", &every_second).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Its first task runs 30 s: the next firings are skipped, with a note.
    let slow = json!({
        "name": "slow-one",
        "cron": "* * * * * *",
        "overlap": "skip",
        "task": {"templateFunction": "sleep 30", "inputList": ["x"]},
    });
    let (status, body) = up.post_json("/v1/schedules", &slow).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    open(&browser, &up, "/ui/schedules").await;
    let fast = "tbody.schedule[data-name=\"every-second\"]";
    let skipping = "tbody.schedule[data-name=\"slow-one\"]";
    wait_js(
        &browser,
        "every-second's row with a run that links to its task",
        &format!("document.querySelector('{fast} tr.run a.task-link') !== null"),
    )
    .await;
    wait_js(
        &browser,
        "slow-one's row with a skipped-overlap run",
        &format!("document.querySelector('{skipping} tr.run .badge.skipped-overlap') !== null"),
    )
    .await;
    // By name, as the API lists them.
    assert_eq!(
        js(
            &browser,
            "[...document.querySelectorAll('tbody.schedule')].map(b => b.dataset.name)"
        )
        .await,
        json!(["every-second", "slow-one"])
    );
    let shown = js(
        &browser,
        &format!(
            "(b => [b.querySelector('.schedule-name').textContent, b.querySelector('code.cron').textContent, \
             b.querySelector('.timezone').textContent, b.querySelector('.badge.state').textContent, \
             b.querySelector('.schedule-task').textContent])(document.querySelector('{fast}'))"
        ),
    )
    .await;
    assert_eq!(
        shown,
        json!([
            "every-second",
            "* * * * * *",
            "Europe/Paris",
            "active",
            format!("runs {HOSTILE_NAME}")
        ])
    );
    // The task's name is text: no <img> was made of it.
    assert_eq!(js(&browser, "document.images.length").await, json!(0));
    // The run's link is to a task the schedule created, and it shows that
    // task's status.
    let link = js(
        &browser,
        &format!("document.querySelector('{fast} tr.run a.task-link').getAttribute('href')"),
    )
    .await;
    let link = link.as_str().expect("a link").to_string();
    let task_id = link
        .strip_prefix("/ui/tasks/")
        .unwrap_or_else(|| panic!("a task page link: {link}"))
        .to_string();
    let (_, schedule) = up.get("/v1/schedules/every-second").await;
    let created: Vec<&str> = schedule["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|run| run["taskId"].as_str())
        .collect();
    assert!(
        created.contains(&task_id.as_str()),
        "{task_id} is not among the schedule's tasks {created:?}"
    );
    assert_eq!(up.task(&task_id).await["name"], json!(HOSTILE_NAME));
    wait_js(
        &browser,
        "a run of every-second to show its task's status",
        &format!(
            "document.querySelector('{fast} tr.run .badge.completed')?.textContent === 'COMPLETED'"
        ),
    )
    .await;
    // The skipped firing's note, as the API has it.
    let note = js(
        &browser,
        &format!(
            "[...document.querySelectorAll('{skipping} tr.run')].find(r => r.querySelector('.badge.skipped-overlap')).querySelector('td.note').textContent"
        ),
    )
    .await;
    let note = note.as_str().expect("a note").to_string();
    assert!(note.contains("had not ended"), "{note}");
    let (_, slow_view) = up.get("/v1/schedules/slow-one").await;
    let notes: Vec<&str> = slow_view["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|run| run["note"].as_str())
        .collect();
    assert!(notes.contains(&note.as_str()), "{note} not in {notes:?}");
    screenshot(&browser, "schedules").await;

    // Pause: the API says so, the page shows it, and it stops firing.
    click(&browser, &format!("{fast} button.pause")).await;
    let paused = wait_paused(&up, "every-second", true).await;
    wait_js(
        &browser,
        "the page to show every-second paused, with Resume instead of Pause",
        &format!(
            "(b => b.querySelector('.badge.state').textContent === 'paused' && b.querySelector('button.pause').hidden \
             && !b.querySelector('button.resume').hidden)(document.querySelector('{fast}'))"
        ),
    )
    .await;
    assert_eq!(paused["nextFiring"], Value::Null);
    let fired = paused["fired"].as_u64().expect("fired");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, still) = up.get("/v1/schedules/every-second").await;
    assert_eq!(
        still["fired"].as_u64(),
        Some(fired),
        "it fired while paused"
    );

    // Resume: it fires again, and the page counts it live.
    click(&browser, &format!("{fast} button.resume")).await;
    wait_paused(&up, "every-second", false).await;
    wait_js(
        &browser,
        &format!("the page to show every-second active and firing past {fired}"),
        &format!(
            "(b => b.querySelector('.badge.state').textContent === 'active' && b.querySelector('button.resume').hidden \
             && !b.querySelector('button.pause').hidden \
             && Number(b.querySelector('.fired').textContent.replace(/,/g, '')) > {fired})(document.querySelector('{fast}'))"
        ),
    )
    .await;

    // Past 5 runs the older ones fold away.
    wait_js(
        &browser,
        "every-second to show 5 runs and fold the older ones",
        &format!(
            "(b => b.querySelectorAll('tr.runs-row > td > table.runs tr.run').length === 5 \
             && b.querySelectorAll('details.earlier tr.run').length > 0)(document.querySelector('{fast}'))"
        ),
    )
    .await;

    // Delete asks first: declined, nothing happens.
    js(
        &browser,
        "(window.asked = [], window.confirm = (m) => { window.asked.push(m); return false; }, true)",
    )
    .await;
    click(&browser, &format!("{fast} button.delete")).await;
    assert_eq!(
        js(&browser, "window.asked").await,
        json!(["Delete the schedule every-second? The tasks it created stay."])
    );
    let (status, _) = up.get("/v1/schedules/every-second").await;
    assert_eq!(status, StatusCode::OK);
    js(&browser, "(window.confirm = () => true, true)").await;
    click(&browser, &format!("{fast} button.delete")).await;
    dts_testkit::wait_until(DEADLINE, "the API to forget every-second", || async {
        up.get("/v1/schedules/every-second").await.0 == StatusCode::NOT_FOUND
    })
    .await;
    wait_js(
        &browser,
        "the page to list only slow-one",
        "[...document.querySelectorAll('tbody.schedule')].map(b => b.dataset.name).join() === 'slow-one'",
    )
    .await;
    assert_eq!(
        js(&browser, "document.getElementById('action-error').hidden").await,
        json!(true)
    );
    // The task it created stays.
    assert_eq!(up.task(&task_id).await["id"], json!(task_id));
    browser.close().await;
}
