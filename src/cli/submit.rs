//! `dts submit`: a task to a server, from a JSON task file or from a
//! command line as `dts run` takes it.
//!
//! ```text
//! dts submit task.json --wait
//! dts submit 'gzip -k "$1"' ::: /data/a.txt /data/b.txt
//! dts submit 'wc -l "$1"' --inputs list.txt --var k=v --timeout 60
//! ```
//!
//! The first argument is a task file when it is `-` (JSON on standard
//! input), ends in `.json`, or names an existing file, and nothing else on
//! the command line belongs to a template; otherwise it is the template.
//! Inputs or template flags with `-` or a `.json` file are refused, naming
//! both, rather than guessed at.
//!
//! GNU parallel's habits mean here what they can for a task that runs on
//! a server: `-j N` is the task's `maxConcurrency` (its items at once,
//! across the cluster, not this machine's cores); `--dry-run` prints the
//! commands and sends nothing; `--tag`, `--output-only`, `--joblog` and
//! `--results` need `--wait` and are written once the task has ended, from
//! the results API, by the same code as `dts run`'s.

use super::ClientArgs;
use super::client;
use super::commands::{Commands, Keeper, any_server, dry_run, new_task, show_output};
use super::task_args::{TaskFlags, check_placeholders, quoted_list};
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_model::scheduling::MAX_CONCURRENCY;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// The task a command line names, as `dts submit` and `dts schedule add`
/// take it: a JSON task file, or a template with its inputs and flags.
#[derive(Args)]
pub(crate) struct TaskArgs {
    /// A JSON task file ({"templateFunction": "...", "inputList": [...],
    /// "variableJson": {...}}; - for standard input), sent as it is; or the
    /// script template, run once per input ($1 is the input).
    #[arg(value_name = "FILE|TEMPLATE")]
    first: String,
    /// With a template, its inputs as for `dts run`: `a b c`, `::: a b c`
    /// or `:::: FILE`; without any, --inputs FILE or standard input, one
    /// per line (NUL-separated with -0). One source only. Bytes, as the OS
    /// gives them: an input need not be UTF-8.
    #[arg(value_name = "INPUTS")]
    inputs: Vec<std::ffi::OsString>,
    #[command(flatten)]
    flags: TaskFlags,
    /// A name for the task, shown by `dts status`.
    #[arg(long)]
    name: Option<String>,
    /// The task's priority: a higher one runs first (docs/scheduling.md).
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i64>,
    /// Seconds after submission when items stop starting and running ones
    /// are killed (deadlineSecs).
    #[arg(long, value_name = "SECS")]
    deadline: Option<u64>,
    /// Let an idle core run a copy of a straggling item. Without this flag
    /// or --no-speculate, the server's default applies (it speculates).
    #[arg(long, conflicts_with = "no_speculate")]
    speculate: bool,
    /// Never run a copy of an item: for scripts whose side effects must
    /// not happen twice.
    #[arg(long)]
    no_speculate: bool,
    /// At most N of the task's items run at once, across the cluster (the
    /// task's maxConcurrency). Unlike `dts run -j`, not this machine's
    /// cores: the task runs on the server's workers.
    #[arg(short = 'j', long = "jobs", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENCY)))]
    jobs: Option<u32>,
}

/// `dts submit`'s arguments: the task, then what to do once it is sent.
#[derive(Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Run only after task ID has ended (repeatable): the task waits
    /// (WAITING) until every one has COMPLETED, or ended at all with
    /// --after-status ENDED; if one ends otherwise it is SKIPPED. The
    /// task's `after`; with a task file, added to the file's own.
    #[arg(long, value_name = "ID")]
    after: Vec<String>,
    /// How the --after tasks must end: COMPLETED (the default) or ENDED.
    #[arg(long, value_name = "STATUS", requires = "after", value_parser = after_status_flag)]
    after_status: Option<String>,
    /// Wait for the task to end, showing progress; exit 1 unless it completed.
    #[arg(long)]
    wait: bool,
    /// Print the command each item would run, shell-quoted, one per line
    /// (as `dts run --dry-run`); send nothing.
    #[arg(long, conflicts_with_all = ["wait", "json"])]
    dry_run: bool,
    /// With --wait: print the items' output, each line after its input and
    /// a tab, as `dts run --tag` does, instead of the task's summary.
    #[arg(long, conflicts_with = "json")]
    tag: bool,
    /// With --wait: print the items' output, stdout to stdout and stderr to
    /// stderr, in input order, as `dts run` does, instead of the task's
    /// summary.
    #[arg(long, conflicts_with = "json")]
    output_only: bool,
    /// With --wait: write GNU parallel's job log to FILE once the task has
    /// ended, as `dts run --joblog` does (Host is the worker).
    #[arg(long, value_name = "FILE")]
    joblog: Option<PathBuf>,
    /// With --wait: keep each item's input, stdout, stderr and exit code in
    /// DIR/SEQ/ once the task has ended, as `dts run --results` does.
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,
    /// With --wait: the progress bar --wait draws (accepted for GNU
    /// parallel's habits).
    #[arg(long)]
    bar: bool,
    /// The same as --bar (GNU parallel's --eta).
    #[arg(long)]
    eta: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// `--after-status`, checked as the task's `afterStatus` is, so a bad
/// value is a usage error naming it before anything is sent.
fn after_status_flag(text: &str) -> Result<String, String> {
    text.parse::<dts_model::AfterStatus>()
        .map(|status| status.as_str().to_string())
}

/// What the first argument is.
#[derive(Debug, PartialEq)]
enum Form<'a> {
    /// A JSON task file, or `-`: sent as it is.
    File(&'a Path),
    /// A template, with inputs and flags as `dts run` takes them.
    Template(&'a str),
}

impl TaskArgs {
    /// What on the command line belongs to a template, as the user typed it.
    fn template_parts(&self) -> Vec<String> {
        let mut parts = Vec::new();
        if !self.inputs.is_empty() {
            parts.push(format!("the inputs {}", quoted_list(&self.inputs)));
        }
        parts.extend(self.flags.given());
        if let Some(name) = &self.name {
            parts.push(format!("--name {name}"));
        }
        if let Some(priority) = self.priority {
            parts.push(format!("--priority {priority}"));
        }
        if let Some(deadline) = self.deadline {
            parts.push(format!("--deadline {deadline}"));
        }
        if self.speculate {
            parts.push("--speculate".into());
        }
        if self.no_speculate {
            parts.push("--no-speculate".into());
        }
        if let Some(jobs) = self.jobs {
            parts.push(format!("-j {jobs}"));
        }
        parts
    }

    /// A task file or a template: see the module's documentation.
    fn form(&self) -> Result<Form<'_>> {
        let first = self.first.as_str();
        let named_file = first == "-" || first.ends_with(".json");
        match self.template_parts().first() {
            None if named_file || Path::new(first).is_file() => Ok(Form::File(Path::new(first))),
            Some(part) if named_file => {
                let file = if first == "-" {
                    "- (a JSON task on standard input)".to_string()
                } else {
                    format!("the task file {first}")
                };
                bail!(
                    "{file} and {part} cannot go together: a task file is sent as it is; \
                     give the file alone, or a template with its inputs and flags"
                )
            }
            _ => Ok(Form::Template(first)),
        }
    }

    /// The task a template form makes, as the API receives it, checked for
    /// placeholders no `--var` fills. `command` (`submit`, `schedule add
    /// ...`) is for the example in an error.
    fn template_task(&self, command: &str, template: &str) -> Result<Value> {
        let mut body = self.flags.template_task(command, template, &self.inputs)?;
        self.flags.apply(&mut body);
        if let Some(name) = &self.name {
            body["name"] = json!(name);
        }
        if let Some(priority) = self.priority {
            body["priority"] = json!(priority);
        }
        if let Some(deadline) = self.deadline {
            body["deadlineSecs"] = json!(deadline);
        }
        // Only when asked: otherwise the server's default holds.
        if self.speculate || self.no_speculate {
            body["speculation"] = json!(self.speculate);
        }
        if let Some(jobs) = self.jobs {
            body["maxConcurrency"] = json!(jobs);
        }
        check_placeholders(&body)?;
        Ok(body)
    }

    /// The task as JSON, in either form: a task file's as it is read, a
    /// template's as [`TaskArgs::template_task`] makes it.
    pub(crate) fn task_json(&self, command: &str) -> Result<Value> {
        match self.form()? {
            Form::File(file) => {
                let body = client::read_task(file)?;
                serde_json::from_slice(&body)
                    .with_context(|| format!("{}: the task is not valid JSON", file.display()))
            }
            Form::Template(template) => self.template_task(command, template),
        }
    }
}

impl SubmitArgs {
    /// The flags that only mean something once the task has ended, as the
    /// user typed them.
    fn after_wait(&self) -> Vec<String> {
        let mut given = Vec::new();
        if self.tag {
            given.push("--tag".to_string());
        }
        if self.output_only {
            given.push("--output-only".to_string());
        }
        if let Some(file) = &self.joblog {
            given.push(format!("--joblog {}", file.display()));
        }
        if let Some(dir) = &self.results {
            given.push(format!("--results {}", dir.display()));
        }
        if self.bar {
            given.push("--bar".to_string());
        }
        if self.eta {
            given.push("--eta".to_string());
        }
        given
    }

    /// Refuses a flag that needs `--wait` without it, naming both: without
    /// `--wait` dts submit returns once the task is sent, before there is
    /// any result to write.
    fn check_wait(&self) -> Result<()> {
        match self.after_wait().first() {
            Some(flag) if !self.wait => bail!(
                "{flag} needs --wait: without --wait dts submit returns as soon as the task \
                 is sent, before any item has run (dts results ID shows them later)"
            ),
            _ => Ok(()),
        }
    }

    /// Whether the items' results are read once the task has ended.
    fn reads_results(&self) -> bool {
        self.tag || self.output_only || self.joblog.is_some() || self.results.is_some()
    }

    /// Adds `--after` and `--after-status` to a task's body: after the
    /// ids the body names itself, each once.
    fn apply_after(&self, body: &mut Value) -> Result<()> {
        if self.after.is_empty() {
            return Ok(());
        }
        let mut after: Vec<Value> = match body.get("after") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) => ids.clone(),
            Some(_) => {
                bail!("the task's `after` is not a list of task ids, so --after cannot add to it")
            }
        };
        for id in &self.after {
            let id = json!(id);
            if !after.contains(&id) {
                after.push(id);
            }
        }
        body["after"] = Value::Array(after);
        if let Some(status) = &self.after_status {
            body["afterStatus"] = json!(status);
        }
        Ok(())
    }

    /// The task a template form makes, with `--after`.
    fn template_task(&self, template: &str) -> Result<Value> {
        let mut body = self.task.template_task("submit", template)?;
        self.apply_after(&mut body)?;
        Ok(body)
    }
}

pub async fn run(args: SubmitArgs) -> Result<ExitCode> {
    args.check_wait()?;
    let console = &mut args.client.console();
    let (wait, json) = (args.wait, args.client.json);
    // Built before connecting: bad input is refused, naming the flag,
    // without a server.
    let body = match args.task.form()? {
        Form::File(file) if !args.after.is_empty() => {
            let read = client::read_task(file)?;
            let mut task: Value = serde_json::from_slice(&read)
                .with_context(|| format!("{}: the task is not valid JSON", file.display()))?;
            args.apply_after(&mut task)?;
            serde_json::to_vec(&task)?
        }
        Form::File(file) => client::read_task(file)?,
        Form::Template(template) => serde_json::to_vec(&args.template_task(template)?)?,
    };
    if args.dry_run || args.reads_results() {
        let task: Value = serde_json::from_slice(&body).context("the task is not valid JSON")?;
        let new = new_task(&task, &any_server())?;
        let commands = Commands::of(&new)?;
        if args.dry_run {
            return dry_run(&new, &commands);
        }
        // Created first: a path that cannot be written is refused before
        // the task is sent.
        let keeper = Keeper::new(commands, args.joblog.as_deref(), args.results.as_deref())?;
        let server = args.client.connect()?;
        return wait_and_keep(&args, &server, console, body, keeper).await;
    }
    let server = args.client.connect()?;
    client::send_task(&server, console, body, wait, json).await
}

/// `--wait` with `--tag`, `--output-only`, `--joblog` or `--results`:
/// sends the task, follows it to its end, then reads its results a page
/// at a time, in input order, into the job log, the results directory and
/// the output.
async fn wait_and_keep(
    args: &SubmitArgs,
    server: &client::Client,
    console: &mut super::terminal::Console,
    body: Vec<u8>,
    mut keeper: Keeper,
) -> Result<ExitCode> {
    let (task, _) = client::post_task(server, console, body, true).await?;
    let Some((task, raw)) = client::follow(server, console, &task.id).await? else {
        return Ok(ExitCode::from(client::INTERRUPTED));
    };
    // The API keeps no time of day per item: the job log's Starttime is
    // when dts saw the task end, less the item's run time, as `dts run`'s
    // is when it saw the item end, less its run time.
    let ended = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let prints = args.tag || args.output_only;
    client::each_result(server, &task.id, false, |item| {
        let result = &item.view.result;
        keeper.keep(result, ended, &result.worker)?;
        if prints {
            show_output(
                &mut console.out,
                &mut console.err,
                result,
                args.tag,
                client::SERVER_CAP,
            )?;
        }
        Ok(())
    })
    .await?;
    keeper.finish()?;
    if args.client.json {
        client::print_json(&mut console.out, &raw)?;
    } else if !prints {
        client::print_task(&mut console.out, &task)?;
    }
    console.out.flush()?;
    Ok(client::ended_status(&task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        submit: SubmitArgs,
    }

    fn parse(args: &[&str]) -> SubmitArgs {
        Cli::try_parse_from(std::iter::once("submit").chain(args.iter().copied()))
            .unwrap()
            .submit
    }

    #[test]
    fn a_lone_json_file_or_dash_is_a_task_file_and_anything_with_inputs_is_a_template() {
        assert_eq!(
            parse(&["task.json"]).task.form().unwrap(),
            Form::File(Path::new("task.json"))
        );
        assert_eq!(
            parse(&["-"]).task.form().unwrap(),
            Form::File(Path::new("-"))
        );
        assert_eq!(
            parse(&["echo $1", ":::", "a"]).task.form().unwrap(),
            Form::Template("echo $1")
        );
        assert_eq!(
            parse(&["echo $1"]).task.form().unwrap(),
            Form::Template("echo $1")
        );
        // An existing file with inputs after it is a template (a script).
        let file = tempfile::NamedTempFile::new().unwrap();
        let path = file.path().to_str().unwrap();
        assert_eq!(parse(&[path]).task.form().unwrap(), Form::File(file.path()));
        assert_eq!(
            parse(&[path, "a"]).task.form().unwrap(),
            Form::Template(path)
        );
    }

    #[test]
    fn a_task_file_with_inputs_or_template_flags_is_refused_naming_both() {
        let error = |args: &[&str]| parse(args).task.form().unwrap_err().to_string();
        let why = "cannot go together: a task file is sent as it is; \
                   give the file alone, or a template with its inputs and flags";
        assert_eq!(
            error(&["task.json", ":::", "a"]),
            format!("the task file task.json and the inputs \":::\" \"a\" {why}")
        );
        assert_eq!(
            error(&["-", "--var", "k=v"]),
            format!("- (a JSON task on standard input) and --var k=v {why}")
        );
        assert_eq!(
            error(&["t.json", "--no-speculate"]),
            format!("the task file t.json and --no-speculate {why}")
        );
    }

    #[test]
    fn speculation_is_sent_only_when_a_flag_asks() {
        let body = |args: &[&str]| parse(args).template_task("echo $1").unwrap();
        assert_eq!(body(&["echo $1", "a"]).get("speculation"), None);
        assert_eq!(body(&["echo $1", "a", "--speculate"])["speculation"], true);
        assert_eq!(
            body(&["echo $1", "a", "--no-speculate"])["speculation"],
            false
        );
        assert!(
            Cli::try_parse_from(["submit", "t", "a", "--speculate", "--no-speculate"]).is_err()
        );
    }

    #[test]
    fn jobs_is_the_tasks_max_concurrency_and_a_task_file_refuses_it() {
        let body = parse(&["echo $1", "a", "-j", "3"])
            .template_task("echo $1")
            .unwrap();
        assert_eq!(body["maxConcurrency"], 3);
        assert_eq!(
            parse(&["echo $1", "a"])
                .template_task("echo $1")
                .unwrap()
                .get("maxConcurrency"),
            None
        );
        assert!(
            parse(&["t.json", "--jobs", "2"])
                .task
                .form()
                .unwrap_err()
                .to_string()
                .starts_with("the task file t.json and -j 2 cannot go together")
        );
        assert!(Cli::try_parse_from(["submit", "t", "a", "-j", "0"]).is_err());
    }

    #[test]
    fn halt_is_sent_as_the_tasks_halt_and_a_bad_one_is_refused_naming_it() {
        let body = |args: &[&str]| parse(args).template_task("echo $1").unwrap();
        assert_eq!(body(&["echo $1", "a"]).get("halt"), None);
        assert_eq!(
            body(&["echo $1", "a", "--halt", "soon,fail=10%"])["halt"],
            "soon,fail=10%"
        );
        let err = Cli::try_parse_from(["submit", "t", "a", "--halt", "now,done=1"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("\"done=1\" in \"now,done=1\": only fail=N is supported"),
            "{err}"
        );
        assert_eq!(
            parse(&["t.json", "--halt", "now,fail=1"])
                .task
                .form()
                .unwrap_err()
                .to_string(),
            "the task file t.json and --halt now,fail=1 cannot go together: a task file is sent as it is; \
             give the file alone, or a template with its inputs and flags"
        );
    }
}
