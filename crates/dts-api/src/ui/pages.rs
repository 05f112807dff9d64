//! The pages' HTML: a shell with the header and navigation, and per page
//! the empty places the script fills. The only values written in here are
//! the page's own (a task id the store resolved, an error message), and
//! they are escaped all the same.

use crate::AppState;
use crate::error::ApiError;
use crate::v1::find_task;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// `text` safe in HTML text and in double-quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Which navigation link is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Tasks,
    Schedules,
    Workers,
    None,
}

/// A whole page: `page` names it for the script (`data-page`), `data`
/// adds `data-*` attributes (already escaped), `body` is its markup.
fn shell(title: &str, nav: Nav, page: &str, data: &str, body: &str, logout: bool) -> Html<String> {
    let link = |href: &str, label: &str, this: Nav| {
        let current = if nav == this {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    let links = if page == "login" {
        String::new()
    } else {
        format!(
            "<nav>{}{}{}{}</nav>",
            link("/", "Overview", Nav::Overview),
            link("/ui/tasks", "Tasks", Nav::Tasks),
            link("/ui/schedules", "Schedules", Nav::Schedules),
            link("/ui/workers", "Workers", Nav::Workers)
        )
    };
    let logout = if logout {
        "<form method=\"post\" action=\"/ui/logout\" class=\"logout\"><button type=\"submit\">Log out</button></form>"
    } else {
        ""
    };
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · dts</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/app.css\">\
         <script src=\"/ui/assets/app.js\" defer></script></head>\
         <body data-page=\"{page}\"{data}>\
         <header><a class=\"brand\" href=\"/\">dts</a>{links}<span class=\"live\" id=\"live\"></span>{logout}</header>\
         <main>{body}</main></body></html>\n",
        title = escape(title),
    ))
}

/// `GET /`: items per second, queue depth, slots and tasks by status.
pub(crate) async fn overview(State(state): State<AppState>) -> Html<String> {
    let body = "<h1>Overview</h1>\
        <section class=\"cards\">\
        <div class=\"card\"><div class=\"label\">Items / s</div><div class=\"value\" id=\"rate\">–</div><div class=\"hint\">over the last minute</div></div>\
        <div class=\"card\"><div class=\"label\">Queue depth</div><div class=\"value\" id=\"queue\">–</div><div class=\"hint\">shards waiting</div></div>\
        <div class=\"card\"><div class=\"label\">Busy slots</div><div class=\"value\" id=\"slots\">–</div><progress id=\"slots-bar\" max=\"1\" value=\"0\"></progress></div>\
        <div class=\"card\"><div class=\"label\">Workers</div><div class=\"value\" id=\"workers\">–</div><div class=\"hint\" id=\"finished\"></div></div>\
        </section>\
        <div class=\"columns\"><section><h2>Tasks by status</h2><table class=\"status-table\"><tbody id=\"by-status\"></tbody></table></section>\
        <section class=\"wide\"><h2>Latest tasks</h2><div id=\"tasks\"></div></section></div>";
    shell(
        "Overview",
        Nav::Overview,
        "overview",
        "",
        body,
        state.auth_token.is_some(),
    )
}

/// `GET /ui/tasks`: the list with its filters.
pub(crate) async fn tasks(State(state): State<AppState>) -> Html<String> {
    let body = "<h1>Tasks</h1>\
        <form id=\"filters\" class=\"filters\" role=\"search\">\
        <label>Status <select id=\"status\" name=\"status\"><option value=\"\">any</option>\
        <option>WAITING</option><option>QUEUED</option><option>SUBMITTED</option><option>INPROGRESS</option><option>REDUCING</option><option>RETRYING</option>\
        <option>COMPLETED</option><option>FAILED</option><option>CANCELLED</option><option>SUBMISSION_FAILED</option><option>SKIPPED</option></select></label>\
        <label>Name <input id=\"name\" name=\"name\" type=\"search\" placeholder=\"search by name\" autocomplete=\"off\"></label>\
        </form>\
        <div id=\"tasks\"></div>\
        <p><button type=\"button\" id=\"more\" hidden>Older tasks</button></p>";
    shell(
        "Tasks",
        Nav::Tasks,
        "tasks",
        "",
        body,
        state.auth_token.is_some(),
    )
}

/// `GET /ui/tasks/{id}`: one task; 404 (as a page) for an unknown id.
pub(crate) async fn task(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let logout = state.auth_token.is_some();
    let id = match find_task(&state, &id).await {
        Ok(task) => task.id,
        Err(error) => {
            let status = match error {
                ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
                ApiError::Invalid(_) | ApiError::AmbiguousId { .. } => StatusCode::BAD_REQUEST,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            let body = format!(
                "<h1>Task</h1><p class=\"error\">{}</p><p><a href=\"/ui/tasks\">All tasks</a></p>",
                escape(&error.to_string())
            );
            let page = shell("Task", Nav::Tasks, "error", "", &body, logout);
            return (status, page).into_response();
        }
    };
    let body = "<div class=\"title-row\"><h1 id=\"task-name\">Task</h1><span id=\"task-status\" class=\"badge\"></span>\
        <span class=\"actions\"><button type=\"button\" id=\"cancel\" class=\"danger\" disabled>Cancel</button>\
        <button type=\"button\" id=\"retry\" disabled>Retry</button></span></div>\
        <p class=\"muted\" id=\"task-meta\"></p><p class=\"error\" id=\"action-error\" hidden></p>\
        <section><progress id=\"progress\" class=\"big\" max=\"1\" value=\"0\"></progress>\
        <div class=\"cards small\">\
        <div class=\"card\"><div class=\"label\">Succeeded</div><div class=\"value ok\" id=\"n-ok\">–</div></div>\
        <div class=\"card\"><div class=\"label\">Failed</div><div class=\"value bad\" id=\"n-failed\">–</div></div>\
        <div class=\"card\"><div class=\"label\">Running</div><div class=\"value\" id=\"n-running\">–</div></div>\
        <div class=\"card\"><div class=\"label\">Waiting</div><div class=\"value\" id=\"n-waiting\">–</div></div>\
        <div class=\"card\"><div class=\"label\">Rate</div><div class=\"value\" id=\"n-rate\">–</div><div class=\"hint\" id=\"n-eta\"></div></div>\
        </div></section>\
        <section id=\"reduce\" class=\"reduce\" hidden><h2>Reduce</h2><div id=\"reduce-body\" class=\"panel\"></div></section>\
        <div class=\"columns chart-first\"><section><h2>Throughput</h2><div id=\"chart\" class=\"chart\"></div></section>\
        <section><h2>Items per worker</h2><div id=\"per-worker\"></div></section></div>\
        <section><h2>Live output</h2><pre id=\"tail\" class=\"tail\" hidden></pre><p class=\"muted\" id=\"tail-note\"></p></section>\
        <section><h2>Failed items</h2><div id=\"failed\"></div>\
        <p class=\"pager\"><button type=\"button\" id=\"failed-prev\" hidden>Newer</button> <span id=\"failed-page\"></span> \
        <button type=\"button\" id=\"failed-next\" hidden>More</button></p></section>";
    let data = format!(" data-task=\"{}\"", escape(&id));
    shell("Task", Nav::Tasks, "task", &data, body, logout).into_response()
}

/// `GET /ui/schedules`: every schedule with its last runs, and its
/// Pause, Resume and Delete buttons.
pub(crate) async fn schedules(State(state): State<AppState>) -> Html<String> {
    let body = "<h1>Schedules</h1>\
        <p class=\"error\" id=\"action-error\" hidden></p>\
        <div id=\"schedules\"></div>";
    shell(
        "Schedules",
        Nav::Schedules,
        "schedules",
        "",
        body,
        state.auth_token.is_some(),
    )
}

/// `GET /ui/workers`: the live workers.
pub(crate) async fn workers(State(state): State<AppState>) -> Html<String> {
    let body = "<h1>Workers</h1><div id=\"workers\"></div>";
    shell(
        "Workers",
        Nav::Workers,
        "workers",
        "",
        body,
        state.auth_token.is_some(),
    )
}

/// The login form, with `error` above it when the last try was wrong.
pub(crate) fn login(error: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"login-error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<div class=\"login\"><h1>Log in</h1>\
         <p class=\"muted\">This server needs its token (<code>server.auth-token</code>).</p>{error}\
         <form method=\"post\" action=\"/ui/login\">\
         <label>Token <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" required autofocus></label>\
         <button type=\"submit\" id=\"login\">Log in</button></form></div>"
    );
    shell("Log in", Nav::None, "login", "", &body, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<img src=x onerror=\"alert('1')\">&"),
            "&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;"
        );
    }
}
