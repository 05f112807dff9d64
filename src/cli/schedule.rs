//! `dts schedule`: schedules on a server, each submitting a task at every
//! firing of a cron expression (`/v1/schedules`).
//!
//! ```text
//! dts schedule add nightly --cron '0 2 * * *' 'gzip -k "$1"' ::: /data/a.txt /data/b.txt
//! dts schedule ls
//! dts schedule pause nightly
//! dts schedule rm nightly
//! ```
//!
//! `add` takes the task as `dts submit` does (a task file, or a template
//! with its inputs and flags), built by the same code
//! ([`TaskArgs`]).

use super::ClientArgs;
use super::client::print_json;
use super::submit::TaskArgs;
use super::terminal::count;
use anyhow::{Result, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use dts_model::TaskStatus;
use dts_model::schedule::{self, CatchUp, Overlap, RunOutcome};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write;
use std::process::ExitCode;

/// `dts schedule ...`.
#[derive(Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Subcommand)]
enum ScheduleCommand {
    /// Add a schedule: the task, given as `dts submit` takes it (a task
    /// file, or a template and its inputs), is submitted at every firing
    /// of a cron expression.
    ///
    /// `dts schedule add NAME --cron EXPR 'TEMPLATE' ::: a b c`, or
    /// `dts schedule add NAME --cron EXPR task.json`. The task flags
    /// (--timeout, --retries, --var, -j, ...) are `dts submit`'s. Each
    /// firing's task is named after the schedule unless --name names it.
    Add(Box<AddArgs>),
    /// List the schedules: state, next firing, tasks fired, firings skipped
    /// for overlap, and the newest firing's outcome and task.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one schedule and its latest firings, newest first.
    Show {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a schedule; the tasks it fired stay.
    Rm {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a schedule: it does not fire until resumed.
    Pause {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused schedule: it fires from now on; the firings that
    /// came due while it was paused do not run.
    Resume {
        /// The schedule's name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `dts schedule add`.
#[derive(Args)]
struct AddArgs {
    /// The schedule's name: 1 to 100 letters, digits, `.`, `_` or `-`.
    #[arg(value_name = "NAME")]
    schedule: String,
    /// When it fires: a cron expression of 5 fields (minute hour day month
    /// weekday), or 6 with seconds first ('*/10 * * * * *').
    #[arg(long, value_name = "EXPR")]
    cron: String,
    /// The IANA time zone the expression is read in (default UTC).
    #[arg(long, value_name = "TZ")]
    timezone: Option<String>,
    /// A firing while the previous task still runs: skip it (the default),
    /// allow it (tasks run side by side), or cancel the previous task.
    #[arg(long, value_name = "WHAT", value_parser = PossibleValuesParser::new(Overlap::NAMES))]
    overlap: Option<String>,
    /// Firings missed while no server ran: none are run (the default), or
    /// the last of them once.
    #[arg(long, value_name = "WHICH", value_parser = PossibleValuesParser::new(CatchUp::NAMES))]
    catch_up: Option<String>,
    #[command(flatten)]
    task: TaskArgs,
    /// Refused: a scheduled task cannot wait for other tasks.
    #[arg(long, value_name = "ID", hide = true)]
    after: Vec<String>,
    #[command(flatten)]
    client: ClientArgs,
}

impl AddArgs {
    /// The `POST /v1/schedules` body; the task built as `dts submit`
    /// builds it.
    fn body(&self) -> Result<Value> {
        if let Some(id) = self.after.first() {
            bail!(
                "--after {id}: a scheduled task cannot wait for other tasks: every firing \
                 would wait for the same ones, which end only once"
            );
        }
        let command = format!("schedule add {} --cron EXPR", self.schedule);
        let task = self.task.task_json(&command)?;
        if task.get("after").is_some_and(|after| !after.is_null()) {
            bail!(
                "the task has `after`: a scheduled task cannot wait for other tasks: every \
                 firing would wait for the same ones, which end only once"
            );
        }
        let mut body = json!({ "name": self.schedule, "cron": self.cron, "task": task });
        if let Some(timezone) = &self.timezone {
            body["timezone"] = json!(timezone);
        }
        if let Some(overlap) = &self.overlap {
            body["overlap"] = json!(overlap);
        }
        if let Some(catch_up) = &self.catch_up {
            body["catchUp"] = json!(catch_up);
        }
        Ok(body)
    }
}

/// A schedule as the server shows it (`dts_api`'s `ScheduleView`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleView {
    name: String,
    cron: String,
    timezone: String,
    task: Value,
    overlap: Overlap,
    catch_up: CatchUp,
    paused: bool,
    created_at: String,
    next_firing: Option<String>,
    fired: u64,
    skipped_overlaps: u64,
    runs: Vec<RunView>,
}

/// One handled firing, as the server shows it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunView {
    at: String,
    outcome: RunOutcome,
    task_id: Option<String>,
    task_status: Option<TaskStatus>,
    note: Option<String>,
}

/// How many characters of a task id `ls` shows: enough for `dts status`.
const ID_PREFIX: usize = 8;

/// Runs a `dts schedule` command.
pub async fn run(args: ScheduleArgs) -> Result<ExitCode> {
    match args.command {
        ScheduleCommand::Add(add) => {
            // Built before connecting: bad input is refused, naming the
            // flag, without a server.
            let body = serde_json::to_vec(&add.body()?)?;
            let client = add.client.connect()?;
            let console = &mut add.client.console();
            let (view, raw) = client
                .fetch::<ScheduleView>(Method::POST, "/v1/schedules", Some(body))
                .await?;
            if add.client.json {
                print_json(&mut console.out, &raw)?;
            } else {
                let next = match &view.next_firing {
                    Some(next) => format!("next firing {next}"),
                    None => "it never fires (the expression matches no time to come)".into(),
                };
                writeln!(
                    console.out,
                    "added schedule {}: cron {:?} in {}, {next}",
                    view.name, view.cron, view.timezone
                )?;
            }
        }
        ScheduleCommand::Ls { client } => {
            let console = &mut client.console();
            let (list, raw) = client
                .connect()?
                .fetch::<Vec<ScheduleView>>(Method::GET, "/v1/schedules", None)
                .await?;
            if client.json {
                print_json(&mut console.out, &raw)?;
            } else {
                print_table(&mut console.out, &list)?;
            }
        }
        ScheduleCommand::Show { name, client } => {
            let console = &mut client.console();
            let (view, raw) = client
                .connect()?
                .fetch::<ScheduleView>(Method::GET, &path(&name)?, None)
                .await?;
            if client.json {
                print_json(&mut console.out, &raw)?;
            } else {
                print_schedule(&mut console.out, &view)?;
            }
        }
        ScheduleCommand::Rm { name, client } => {
            let view = change(&client, Method::DELETE, path(&name)?).await?;
            if let Some(view) = view {
                let fired = match view.fired {
                    0 => "it fired no task".to_string(),
                    1 => "the task it fired stays".to_string(),
                    n => format!("the {n} tasks it fired stay"),
                };
                let console = &mut client.console();
                writeln!(console.out, "deleted schedule {} ({fired})", view.name)?;
            }
        }
        ScheduleCommand::Pause { name, client } => {
            let view = change(&client, Method::POST, format!("{}/pause", path(&name)?)).await?;
            if let Some(view) = view {
                let console = &mut client.console();
                writeln!(
                    console.out,
                    "paused schedule {0}: it does not fire until `dts schedule resume {0}`",
                    view.name
                )?;
            }
        }
        ScheduleCommand::Resume { name, client } => {
            let view = change(&client, Method::POST, format!("{}/resume", path(&name)?)).await?;
            if let Some(view) = view {
                let next = view.next_firing.as_deref().unwrap_or("none");
                let console = &mut client.console();
                writeln!(
                    console.out,
                    "resumed schedule {}: next firing {next}",
                    view.name
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The URL path of the schedule `name`. A name no schedule can have is
/// refused here, as the server would (404), since it need not fit in a
/// URL.
fn path(name: &str) -> Result<String> {
    if !schedule::is_valid_name(name) {
        bail!(
            "no schedule named {name:?}: a schedule's name is 1 to {} letters, digits, `.`, `_` \
             or `-`, not starting with `.`",
            schedule::MAX_NAME_BYTES
        );
    }
    Ok(format!("/v1/schedules/{name}"))
}

/// Sends `rm`, `pause` or `resume`'s request; with `--json` prints the
/// server's answer and returns `None`, else returns the schedule.
async fn change(client: &ClientArgs, method: Method, path: String) -> Result<Option<ScheduleView>> {
    let (view, raw) = client
        .connect()?
        .fetch::<ScheduleView>(method, &path, None)
        .await?;
    if client.json {
        print_json(&mut client.console().out, &raw)?;
        return Ok(None);
    }
    Ok(Some(view))
}

/// A value of the API's enums as the API spells it (`skipped-overlap`).
fn spelled(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text,
        _ => "?".into(),
    }
}

/// `active` or `paused`.
fn state(view: &ScheduleView) -> &'static str {
    if view.paused { "paused" } else { "active" }
}

/// The newest firing, for `ls`'s last column: its outcome, its task's id
/// prefix and the task's status now (`fired 6f1c1a39 (COMPLETED)`); `-`
/// before the first.
fn last_run(view: &ScheduleView) -> String {
    let Some(run) = view.runs.first() else {
        return "-".into();
    };
    let mut shown = spelled(run.outcome);
    if let Some(id) = &run.task_id {
        shown.push(' ');
        shown.extend(id.chars().take(ID_PREFIX));
    }
    if let Some(status) = run.task_status {
        shown.push_str(&format!(" ({status})"));
    }
    shown
}

/// The table of `dts schedule ls`, one schedule a line; the name, cron and
/// time zone columns as wide as their widest value.
fn print_table(out: &mut impl Write, list: &[ScheduleView]) -> Result<()> {
    let width = |header: &str, field: fn(&ScheduleView) -> &str| {
        list.iter()
            .map(|view| field(view).chars().count())
            .chain([header.len()])
            .max()
            .unwrap_or_default()
    };
    let name = width("name", |view| &view.name);
    let cron = width("cron", |view| &view.cron);
    let timezone = width("timezone", |view| &view.timezone);
    writeln!(
        out,
        "{:<name$}  {:<cron$}  {:<timezone$}  {:<6}  {:<24}  {:>5}  {:>7}  last",
        "name", "cron", "timezone", "state", "next", "fired", "skipped"
    )?;
    for view in list {
        writeln!(
            out,
            "{:<name$}  {:<cron$}  {:<timezone$}  {:<6}  {:<24}  {:>5}  {:>7}  {}",
            view.name,
            view.cron,
            view.timezone,
            state(view),
            view.next_firing.as_deref().unwrap_or("-"),
            view.fired,
            view.skipped_overlaps,
            last_run(view)
        )?;
    }
    Ok(())
}

/// `dts schedule show NAME`: the schedule, then its latest firings.
fn print_schedule(out: &mut impl Write, view: &ScheduleView) -> Result<()> {
    writeln!(out, "name:      {}", view.name)?;
    writeln!(out, "cron:      {} ({})", view.cron, view.timezone)?;
    writeln!(out, "state:     {}", state(view))?;
    writeln!(
        out,
        "next:      {}",
        view.next_firing.as_deref().unwrap_or("-")
    )?;
    writeln!(out, "overlap:   {}", spelled(view.overlap))?;
    writeln!(out, "catch-up:  {}", spelled(view.catch_up))?;
    writeln!(out, "created:   {}", view.created_at)?;
    writeln!(
        out,
        "fired:     {}, {} skipped for overlap",
        count(view.fired, "task"),
        count(view.skipped_overlaps, "firing")
    )?;
    if let Some(template) = view.task["templateFunction"].as_str() {
        match view.task["inputList"].as_array() {
            Some(inputs) => writeln!(
                out,
                "task:      {template} ({})",
                count(inputs.len() as u64, "item")
            )?,
            None => writeln!(out, "task:      {template}")?,
        }
    }
    if view.runs.is_empty() {
        writeln!(out, "runs:      -")?;
        return Ok(());
    }
    writeln!(out, "runs, newest first:")?;
    for run in &view.runs {
        let mut line = format!("  {}  {:<15}", run.at, spelled(run.outcome));
        if let Some(id) = &run.task_id {
            line.push_str(&format!("  {id}"));
        }
        if let Some(status) = run.task_status {
            line.push_str(&format!("  {status}"));
        }
        if let Some(note) = &run.note {
            line.push_str(&format!("  ({note})"));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        schedule: ScheduleArgs,
    }

    fn add(args: &[&str]) -> AddArgs {
        let all = ["dts", "add"].into_iter().chain(args.iter().copied());
        match Cli::try_parse_from(all).unwrap().schedule.command {
            ScheduleCommand::Add(add) => *add,
            _ => panic!("not add"),
        }
    }

    /// A schedule view as the server writes it, with `fields` changed.
    fn view(fields: Value) -> ScheduleView {
        let mut view = json!({
            "name": "nightly",
            "cron": "0 2 * * *",
            "timezone": "UTC",
            "task": {"templateFunction": "echo $1", "inputList": ["a", "b"]},
            "overlap": "skip",
            "catchUp": "none",
            "paused": false,
            "createdAt": "2024-01-01T00:00:00.000Z",
            "nextFiring": "2024-01-02T02:00:00.000Z",
            "fired": 0,
            "skippedOverlaps": 0,
            "runs": [],
        });
        for (key, value) in fields.as_object().unwrap() {
            view[key] = value.clone();
        }
        serde_json::from_value(view).unwrap()
    }

    #[test]
    fn add_builds_the_task_as_submit_does_and_sends_only_the_flags_given() {
        let body = add(&[
            "nightly",
            "--cron",
            "0 2 * * *",
            "--overlap",
            "allow",
            "echo $1",
            ":::",
            "a",
            "b",
            "--timeout",
            "5",
            "-j",
            "2",
        ])
        .body()
        .unwrap();
        assert_eq!(
            body,
            json!({
                "name": "nightly",
                "cron": "0 2 * * *",
                "overlap": "allow",
                "task": {
                    "templateFunction": "echo $1",
                    "variableJson": {},
                    "inputList": ["a", "b"],
                    "timeoutSecs": 5,
                    "maxConcurrency": 2,
                },
            })
        );
    }

    #[test]
    fn add_refuses_after_and_an_unknown_overlap_naming_them() {
        let error = add(&["n", "--cron", "* * * * *", "echo", "a", "--after", "abcd"])
            .body()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--after abcd: a scheduled task cannot wait"),
            "{error}"
        );
        let dir = tempfile::TempDir::new().unwrap();
        let file = dir.path().join("t.json");
        std::fs::write(&file, r#"{"templateFunction": "echo", "after": ["x"]}"#).unwrap();
        let error = add(&["n", "--cron", "* * * * *", file.to_str().unwrap()])
            .body()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("the task has `after`"), "{error}");
        let all = [
            "dts",
            "add",
            "n",
            "--cron",
            "* * * * *",
            "--overlap",
            "never",
        ];
        let error = Cli::try_parse_from(all).err().unwrap().to_string();
        assert!(error.contains("--overlap"), "{error}");
    }

    #[test]
    fn ls_shows_state_next_counts_and_the_newest_run() {
        let list = [
            view(json!({
                "fired": 12,
                "skippedOverlaps": 3,
                "runs": [
                    {"at": "2024-01-01T02:00:00.000Z", "outcome": "fired",
                     "taskId": "6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10", "taskStatus": "COMPLETED"},
                    {"at": "2024-01-01T01:00:00.000Z", "outcome": "skipped-overlap"},
                ],
            })),
            view(json!({"name": "a-much-longer-name", "paused": true, "nextFiring": null})),
        ];
        let mut out = Vec::new();
        print_table(&mut out, &list).unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert_eq!(
            shown,
            "name                cron       timezone  state   next                      fired  skipped  last\n\
             nightly             0 2 * * *  UTC       active  2024-01-02T02:00:00.000Z     12        3  fired 6f1c1a39 (COMPLETED)\n\
             a-much-longer-name  0 2 * * *  UTC       paused  -                             0        0  -\n"
        );
    }

    #[test]
    fn show_lists_the_runs_newest_first_with_their_tasks_and_notes() {
        let schedule = view(json!({
            "fired": 1,
            "runs": [
                {"at": "2024-01-01T02:00:00.000Z", "outcome": "missed", "note": "no server ran"},
                {"at": "2024-01-01T01:00:00.000Z", "outcome": "fired",
                 "taskId": "6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10", "taskStatus": "FAILED"},
            ],
        }));
        let mut out = Vec::new();
        print_schedule(&mut out, &schedule).unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert!(
            shown.ends_with(
                "fired:     1 task, 0 firings skipped for overlap\n\
                 task:      echo $1 (2 items)\n\
                 runs, newest first:\n\
                 \x20 2024-01-01T02:00:00.000Z  missed           (no server ran)\n\
                 \x20 2024-01-01T01:00:00.000Z  fired            6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10  FAILED\n"
            ),
            "{shown}"
        );
    }

    #[test]
    fn a_name_no_schedule_can_have_is_refused_without_a_request() {
        assert_eq!(path("nightly.v2").unwrap(), "/v1/schedules/nightly.v2");
        for bad in ["", "..", "a/b", "x?y"] {
            let error = path(bad).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("no schedule named {bad:?}")),
                "{error}"
            );
        }
    }
}
