//! `dts run`: one task on this machine, start to finish, without a server —
//! the embedded engine in this process, in memory. Each item's stdout is
//! printed in input order (and its stderr to stderr), as `parallel -k` does;
//! the exit status says whether every item succeeded. On a terminal, control
//! characters in that output are shown escaped unless `--raw` is given (see
//! [`super::terminal`]); a pipe or a file gets the bytes as they are.
//!
//! ```text
//! ls *.jpg | dts run 'convert "$1" "${1%.jpg}.png"'
//! dts run 'echo {{greeting}} $1' --var greeting=hi a b c
//! dts run 'gzip -k "$1"' ::: a.txt b.txt
//! dts run 'wc -l "$1"' :::: list.txt
//! dts run --task task.json --timeout 5
//! ```
//!
//! The inputs come from exactly one source: the arguments after the
//! template (with or without GNU parallel's `:::`), the files after `::::`,
//! `--inputs FILE`, or standard input. Two sources are refused, naming
//! both: GNU parallel would run every combination of them, but a dts item
//! has one input, so combining them silently would run something else than
//! a parallel user expects. With `--task FILE`, the flags `--timeout`,
//! `--retries`, `--interpreter`, `--speculate` and `--var` override the
//! file's fields.

use super::args::{ConfigArgs, ExecArgs};
use super::process;
use super::task_args::{TaskFlags, check_placeholders, task_file};
use super::terminal::{Mode, Sanitized, count};
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_api::views::ResultView;
use dts_model::{TaskStatus, submit};
use dts_node::embedded::{EmbeddedNode, Role};
use dts_node::wiring;
use dts_store::ResultFilter;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the task is looked at while it runs (an in-memory read).
const POLL: Duration = Duration::from_millis(5);
/// Results read per page when printing.
const PAGE: u64 = 10_000;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The script template, run once per input ($1 is the input).
    template: Option<String>,
    /// The inputs: `a b c`, or as GNU parallel takes them, `::: a b c` or
    /// `:::: FILE` (one input per line). Without any, they are read one per
    /// line from --inputs or standard input. One source only: several are
    /// refused (GNU parallel would combine them). Bytes, as the OS gives
    /// them: an input need not be UTF-8.
    inputs: Vec<std::ffi::OsString>,
    /// A task file as for `dts submit` instead of a template and inputs;
    /// --timeout, --retries, --interpreter, --speculate and --var override
    /// its fields.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["template", "inputs", "inputs_file", "null"])]
    task: Option<PathBuf>,
    #[command(flatten)]
    flags: TaskFlags,
    #[command(flatten)]
    exec: ExecArgs,
    /// Let an idle core run a copy of an item that has run far longer than
    /// the others (straggler speculation); the first to finish counts. Off
    /// by default here, as in xargs and GNU parallel: a copied item runs
    /// twice, which a script with side effects must not.
    #[arg(long)]
    speculate: bool,
    /// Print the results as JSON instead of the items' output.
    #[arg(long)]
    json: bool,
    /// Print control characters in the items' output as they are. By
    /// default a terminal shows them escaped (\x1b); output to a pipe or a
    /// file is never changed.
    #[arg(long)]
    raw: bool,
}

impl RunArgs {
    /// The task as the API would receive it.
    fn task_body(&self) -> Result<Value> {
        let mut body = match &self.task {
            Some(file) => task_file(file, self.flags.variables()?)?,
            None => {
                let Some(template) = &self.template else {
                    bail!("give a template (dts run 'echo \"$1\"' a b c) or --task FILE");
                };
                self.flags.template_task("run", template, &self.inputs)?
            }
        };
        // Flags override the task file's fields (and there is no file
        // otherwise): a flag the user typed is never ignored.
        if self.speculate || self.task.is_none() {
            body["speculation"] = json!(self.speculate);
        }
        self.flags.apply(&mut body);
        check_placeholders(&body)?;
        Ok(body)
    }
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let mut flags = vec![("store.ephemeral".to_string(), "true".to_string())];
    args.exec.push_flags(&mut flags);
    let settings = args.config.load(flags)?;
    let new =
        submit::from_json(&args.task_body()?, &wiring::submit_limits(&settings)).map_err(|e| {
            anyhow::anyhow!(
                "{}{}",
                e.message,
                e.field
                    .map(|f| format!(" (field: {f})"))
                    .unwrap_or_default()
            )
        })?;

    let started = Instant::now();
    // In memory: `store.ephemeral` is set above.
    let (store, _) = dts_node::open_store(&settings).await?;
    let node = EmbeddedNode::start(&settings, store, Role::Run, process::inherited()).await?;
    let task = node.submitter.submit(new).await?;
    let task = loop {
        let current = node
            .store
            .task(&task.id)
            .await?
            .context("the task disappeared")?;
        if current.status.is_terminal() {
            break current;
        }
        tokio::time::sleep(POLL).await;
    };
    let elapsed = started.elapsed();
    match print_results(&node, &task.id, args.json, args.raw).await {
        // `dts run ... | head`: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => {}
        other => other?,
    }
    node.stop().await;

    if std::io::stderr().is_terminal() {
        eprintln!(
            "dts: {}, {} succeeded, {} failed in {:.2} s",
            count(task.items_total, "item"),
            task.items_succeeded,
            task.items_failed,
            elapsed.as_secs_f64()
        );
    }
    Ok(if task.status == TaskStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Each item's stdout to stdout and stderr to stderr, in input order; or all
/// results as one JSON array. Each stream is escaped if it is a terminal,
/// unless `raw`.
async fn print_results(node: &EmbeddedNode, id: &str, json: bool, raw: bool) -> Result<()> {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let out_mode = Mode::for_stream(stdout.is_terminal(), raw);
    let err_mode = Mode::for_stream(stderr.is_terminal(), raw);
    let mut stdout = Sanitized::new(stdout.lock(), out_mode);
    let mut stderr = Sanitized::new(stderr.lock(), err_mode);
    let mut offset = 0;
    let mut first = true;
    if json {
        write!(stdout, "[")?;
    }
    loop {
        let (total, page) = node
            .store
            .results(id, ResultFilter::All, offset, PAGE)
            .await?;
        for result in &page {
            if json {
                let separator = if first { "" } else { "," };
                first = false;
                // The same view as the API's results.
                let view = ResultView {
                    succeeded: result.succeeded(),
                    result: result.clone(),
                };
                let text = serde_json::to_string(&view)?;
                write!(stdout, "{separator}{}", out_mode.show_json(&text))?;
                continue;
            }
            stdout.write_all(result.stdout.as_bytes())?;
            stderr.write_all(result.stderr.as_bytes())?;
            if !result.succeeded() {
                let why = match (&result.error, result.exit_code, result.signal) {
                    (Some(error), _, _) => error.clone(),
                    (None, _, _) if result.timed_out => "timed out".to_string(),
                    (None, Some(code), _) => format!("exit {code}"),
                    (None, None, Some(signal)) => format!("killed by signal {signal}"),
                    _ => "failed".to_string(),
                };
                writeln!(
                    stderr,
                    "dts: item {} ({:?}) failed: {why}",
                    result.index, result.input
                )?;
            }
        }
        offset += page.len() as u64;
        if page.is_empty() || offset >= total {
            break;
        }
    }
    if json {
        writeln!(stdout, "]")?;
    }
    stdout.flush()?;
    Ok(())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
