//! `dts run`: one task on this machine, start to finish, without a server —
//! the embedded engine in this process, in memory — as GNU parallel runs
//! one (docs/cli.md has the table of parallel's options).
//!
//! Each item's stdout is printed as soon as it can be: in input order as
//! the next item ends (`parallel -k`), or with `--as-finished` in the order
//! items end. Its stderr goes to stderr. On a terminal, control characters
//! in that output are shown escaped unless `--raw` is given (see
//! [`super::terminal`]); a pipe or a file gets the bytes as they are. An
//! item's output is kept whole (no `executor.output-cap-bytes` unless the
//! user sets one), in memory until it is printed.
//!
//! ```text
//! ls *.jpg | dts run 'convert "$1" "${1%.jpg}.png"'
//! dts run 'echo {{greeting}} $1' --var greeting=hi a b c
//! dts run -j 4 --halt now,fail=1 'gzip -k "$1"' ::: a.txt b.txt
//! dts run --joblog jobs.tsv --results out 'wc -l "$1"' :::: list.txt
//! dts run --task task.json --timeout 5
//! ```
//!
//! The inputs come from exactly one source: the arguments after the
//! template (with or without GNU parallel's `:::`), the files after `::::`,
//! `--inputs FILE`, or standard input. Two sources are refused, naming
//! both: GNU parallel would run every combination of them, but a dts item
//! has one input, so combining them silently would run something else than
//! a parallel user expects. With `--task FILE`, the flags `--timeout`,
//! `--retries`, `--interpreter`, `--halt`, `--speculate` and `--var`
//! override the file's fields.
//!
//! SIGINT, SIGTERM and SIGHUP kill the running items (they run in process
//! groups of their own, so the terminal's Ctrl-C does not reach them), and
//! `dts run` exits 130, 143 or 129, as a shell reports a process those
//! signals ended.

use super::args::{ConfigArgs, ExecArgs};
use super::commands::{Commands, Keeper, dry_run, new_task, show_output};
use super::process;
use super::task_args::{TaskFlags, check_placeholders, task_file};
use super::terminal::{Mode, Progress, Rate, Sanitized, count, progress_bar, progress_text};
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_api::views::ResultView;
use dts_model::{Halt, ItemResult, Task, TaskStatus};
use dts_node::embedded::{EmbeddedNode, Role};
use dts_node::wiring;
use dts_store::{DynStore, ResultFilter};
use indicatif::ProgressBar;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Stderr, Stdout, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How often the task's new results are looked for (in-memory reads).
const POLL: Duration = Duration::from_millis(20);
/// Results read per page.
const PAGE: u64 = 10_000;
/// `worker.drain-grace-ms` for `dts run`: after `--halt soon`, running
/// items finish (their own timeouts still apply); a kill does not wait for
/// it.
const DRAIN_GRACE_MS: &str = "31536000000";

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
    /// --timeout, --retries, --interpreter, --halt, --speculate and --var
    /// override its fields.
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
    /// Print each item's output as soon as it ends, in the order items end,
    /// instead of input order. `--ungroup` is taken as the same: dts never
    /// mixes the lines of two items.
    #[arg(long, visible_alias = "ungroup", short = 'u')]
    as_finished: bool,
    /// Input order, GNU parallel's `-k`: dts's default, accepted for
    /// parallel's habits.
    #[arg(long, short = 'k', conflicts_with = "as_finished")]
    keep_order: bool,
    /// Print the command each item would run, shell-quoted, one per line;
    /// run nothing.
    #[arg(long, conflicts_with_all = ["json", "joblog", "results"])]
    dry_run: bool,
    /// Prefix each line an item prints with its input and a tab.
    #[arg(long, conflicts_with = "json")]
    tag: bool,
    /// Write GNU parallel's job log to FILE: one tab-separated line per
    /// item (Seq Host Starttime JobRuntime Send Receive Exitval Signal
    /// Command) after a header line.
    #[arg(long, value_name = "FILE")]
    joblog: Option<PathBuf>,
    /// Keep each item's input, stdout, stderr and exit code in files:
    /// DIR/SEQ/input, stdout, stderr, exitcode (SEQ counts from 1).
    #[arg(long, value_name = "DIR")]
    results: Option<PathBuf>,
    /// A progress bar with the rate and time left on stderr, when it is a
    /// terminal.
    #[arg(long)]
    bar: bool,
    /// The same as --bar (GNU parallel's --eta).
    #[arg(long)]
    eta: bool,
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
    let mut flags = vec![
        ("store.ephemeral".to_string(), "true".to_string()),
        // Nothing cut by default: a user who pipes `dts run` somewhere wants
        // every byte, as with parallel (`--set` can still set a cap).
        (
            "executor.output-cap-bytes".to_string(),
            usize::MAX.to_string(),
        ),
        (
            "worker.drain-grace-ms".to_string(),
            DRAIN_GRACE_MS.to_string(),
        ),
    ];
    args.exec.push_flags(&mut flags);
    let settings = args.config.load(flags)?;
    let new = new_task(&args.task_body()?, &wiring::submit_limits(&settings))?;
    // The task's own halt (`--halt`, or a task file's `halt`): the store
    // ends the task when it is reached; this prints why and picks the exit.
    let halt = new.halt;
    let commands = Commands::of(&new)?;
    if args.dry_run {
        return dry_run(&new, &commands);
    }
    // Listening before anything is drawn: once the bar shows, Ctrl-C stops
    // dts run the documented way (exit 130, items killed).
    let mut signals = Signals::new()?;
    let mut printer = Printer::new(&args, commands, new.inputs.len() as u64)?;

    let started = Instant::now();
    // In memory: `store.ephemeral` is set above.
    let (store, _) = dts_node::open_store(&settings).await?;
    let node = EmbeddedNode::start(&settings, store, Role::Run, process::inherited()).await?;
    let (store, items, shutdown) = (node.store.clone(), node.items(), node.shutdown.clone());
    let task = node.submitter.submit(new).await?;
    let total = task.items_total;
    let mut node = Some(node);
    let mut stopping: Option<tokio::task::JoinHandle<()>> = None;
    let mut ending: Option<Ending> = None;
    let mut broken_pipe = false;
    let mut reader = Reader::new(args.as_finished, total);
    // An error while the items run (the store, writing the output) must
    // not leave them running: they are killed before it is returned.
    let watched: Result<()> = async {
        // ends: the node stops once the task ended, a halt, a signal or a closed
        // output stopped it; stopping waits for its items (killed, or finishing
        // after `soon`).
        loop {
            let finished = stopping.as_ref().is_some_and(|s| s.is_finished());
            let new = reader.read(&store, &task.id, finished).await?;
            match printer.print(&new) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    // `dts run ... | head`: the reader has what it wanted.
                    broken_pipe = true;
                    if stopping.is_none() {
                        items.kill();
                    }
                }
                other => other?,
            }
            if finished {
                break;
            }
            // The task's counters move as results are recorded, before they
            // are printed: a halt does not wait for earlier items to end.
            let current = store.task(&task.id).await?;
            let (failed, over) = current
                .as_ref()
                .map_or((0, true), |t| (t.items_failed, t.status.is_terminal()));
            if ending.is_none() {
                if let Some(halt) = halt.filter(|h| h.crossed(failed, total)) {
                    let running = items.running();
                    if halt.now {
                        cancel(&store, &task.id).await;
                        items.kill();
                    }
                    ending = Some(Ending::Halted {
                        halt,
                        failed,
                        running,
                        exit: first_failure(&store, &task.id).await?,
                    });
                }
            }
            let ended = ending.is_some() || broken_pipe || over;
            if ended && stopping.is_none() {
                if let Some(node) = node.take() {
                    shutdown.cancel();
                    stopping = Some(tokio::spawn(node.stop()));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                signal = signals.next(), if !matches!(ending, Some(Ending::Signal { .. })) => {
                    let running = items.running();
                    cancel(&store, &task.id).await;
                    items.kill();
                    ending = Some(Ending::Signal { signal, running });
                }
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = watched {
        items.kill();
        shutdown.cancel();
        match (node.take(), stopping.take()) {
            (Some(node), _) => node.stop().await,
            (None, Some(stopping)) => {
                let _ = stopping.await;
            }
            (None, None) => {}
        }
        return Err(e);
    }
    if let Some(stopping) = stopping {
        let _ = stopping.await;
    }
    let elapsed = started.elapsed();
    printer.finish()?;

    let done = printer.done;
    let all = format!("{done} of {}", total);
    let exit = match ending {
        Some(Ending::Signal { signal, running }) => {
            say(&format!(
                "dts: interrupted: killed {}, {all} done",
                count(u64::from(running), "running item")
            ));
            return Ok(ExitCode::from(signal.exit_status()));
        }
        Some(Ending::Halted {
            halt,
            failed,
            running,
            exit,
        }) => {
            let what = if halt.now {
                format!("killed {}", count(u64::from(running), "running item"))
            } else {
                format!("let {} finish", count(u64::from(running), "running item"))
            };
            say(&format!(
                "dts: halted (--halt {halt}): {} failed; {what}, {all} done",
                count(failed, "item"),
            ));
            exit
        }
        None if args.flags.reduce.is_some() => {
            let ended = store.task(&task.id).await?;
            printer.show_reduce(ended.as_ref())?
        }
        None if printer.failed > 0 || done < total => 1,
        None => 0,
    };
    if broken_pipe {
        return Ok(ExitCode::from(exit));
    }
    if std::io::stderr().is_terminal() {
        say(&format!(
            "dts: {}, {} succeeded, {} failed in {:.2} s",
            count(total, "item"),
            done - printer.failed,
            printer.failed,
            elapsed.as_secs_f64()
        ));
    }
    Ok(ExitCode::from(exit))
}

/// One line on stderr; nobody is left to tell if that fails (a closed
/// terminal after SIGHUP).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Cancels the task, so its state says it did not run to its end; the
/// items are killed by [`dts_node::embedded::RunningItems::kill`], not by this.
async fn cancel(store: &DynStore, id: &str) {
    if let Err(e) = store.transition(id, TaskStatus::Cancelled, None).await {
        tracing::debug!(error = %e, "cannot mark the interrupted task cancelled");
    }
}

/// The exit status of the first failed item in input order, as parallel
/// exits after `--halt`: 1 when it has none (a signal or a timeout ended
/// it) or one that does not fit.
async fn first_failure(store: &DynStore, id: &str) -> Result<u8> {
    let (_, first) = store.results(id, ResultFilter::Failed, 0, 1).await?;
    Ok(first
        .first()
        .and_then(|r| r.exit_code)
        .and_then(|c| u8::try_from(c).ok())
        .filter(|c| *c != 0)
        .unwrap_or(1))
}

/// Why `dts run` stopped before its task's end.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// A signal: the running items were killed.
    Signal { signal: Caught, running: u32 },
    /// `--halt`, once `failed` items had failed: `exit` is the exit status
    /// of the first of them.
    Halted {
        halt: Halt,
        failed: u64,
        running: u32,
        exit: u8,
    },
}

/// A signal that stops `dts run`.
#[derive(Debug, Clone, Copy)]
enum Caught {
    Interrupt,
    Terminate,
    Hangup,
}

impl Caught {
    /// 128 + the signal's number, as a shell reports a process it ended.
    fn exit_status(self) -> u8 {
        match self {
            Caught::Interrupt => 130,
            Caught::Terminate => 143,
            Caught::Hangup => 129,
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, listened for from before the task starts.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot listen for {name}"))
        };
        Ok(Signals {
            interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            terminate: listen(SignalKind::terminate(), "SIGTERM")?,
            hangup: listen(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    async fn next(&mut self) -> Caught {
        tokio::select! {
            _ = self.interrupt.recv() => Caught::Interrupt,
            _ = self.terminate.recv() => Caught::Terminate,
            _ = self.hangup.recv() => Caught::Hangup,
        }
    }
}

/// Reads each recorded result once, as soon as it may be printed.
///
/// Every index below `low` has been read, so it has a result: the results
/// page from offset `low` starts at index `low` or after, and a poll reads
/// only what is new (the window of items that ended out of order), not
/// everything again.
struct Reader {
    as_finished: bool,
    /// The task's items.
    total: u64,
    /// The lowest index not read yet.
    low: u64,
    /// Indices at or above `low` already read (`--as-finished` only).
    read: BTreeSet<u64>,
    /// When each recorded index not read yet was first seen: about when
    /// its item ended, for the job log (a result holds no time of day).
    seen: HashMap<u64, Duration>,
}

/// A result, and about when its item ended (since the epoch).
struct Ended {
    result: ItemResult,
    at: Duration,
}

/// Now, since the epoch.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Reader {
    fn new(as_finished: bool, total: u64) -> Reader {
        Reader {
            as_finished,
            total,
            low: 0,
            read: BTreeSet::new(),
            seen: HashMap::new(),
        }
    }

    /// [`Reader::results`], each with about when its item ended.
    async fn read(&mut self, store: &DynStore, id: &str, last: bool) -> Result<Vec<Ended>> {
        let results = self.results(store, id, last).await?;
        let now = since_epoch();
        Ok(results
            .into_iter()
            .map(|result| Ended {
                at: self.seen.remove(&result.index).unwrap_or(now),
                result,
            })
            .collect())
    }

    /// The results to print next: in input order, those from `low` on
    /// without a gap; with `--as-finished`, every new one. `last` (the
    /// node has stopped: nothing more will come) reads every result left,
    /// gaps and all.
    async fn results(&mut self, store: &DynStore, id: &str, last: bool) -> Result<Vec<ItemResult>> {
        let mut out = Vec::new();
        if last {
            let mut offset = self.low;
            loop {
                let (total, page) = store.results(id, ResultFilter::All, offset, PAGE).await?;
                offset += page.len() as u64;
                out.extend(page.into_iter().filter(|r| !self.read.contains(&r.index)));
                if offset >= total {
                    break;
                }
            }
            return Ok(out);
        }
        let end = if self.as_finished {
            self.total
        } else {
            self.total.min(self.low + PAGE)
        };
        let recorded = store.recorded_indices(id, self.low, end).await?;
        let now = since_epoch();
        for index in &recorded {
            self.seen.entry(*index).or_insert(now);
        }
        if !self.as_finished {
            let run = recorded
                .iter()
                .enumerate()
                .take_while(|(i, index)| **index == self.low + *i as u64)
                .count() as u64;
            if run > 0 {
                let (_, page) = store.results(id, ResultFilter::All, self.low, run).await?;
                self.low += page.len() as u64;
                out = page;
            }
            return Ok(out);
        }
        // Runs of new indices, each read in one page: a result's offset is
        // `low` plus its position among the recorded indices from `low`.
        let mut position = 0;
        while position < recorded.len() {
            if self.read.contains(&recorded[position]) {
                position += 1;
                continue;
            }
            let start = position;
            while position < recorded.len() && !self.read.contains(&recorded[position]) {
                position += 1;
            }
            let (_, page) = store
                .results(
                    id,
                    ResultFilter::All,
                    self.low + start as u64,
                    (position - start) as u64,
                )
                .await?;
            out.extend(page);
        }
        self.read.extend(out.iter().map(|r| r.index));
        while self.read.remove(&self.low) {
            self.low += 1;
        }
        Ok(out)
    }
}

/// Where each result goes: the terminal's or pipe's streams (or one JSON
/// array), the job log, the results directory, the progress bar.
struct Printer {
    out: Sanitized<Stdout>,
    err: Sanitized<Stderr>,
    json: bool,
    tag: bool,
    keeper: Keeper,
    bar: Option<(ProgressBar, Rate)>,
    total: u64,
    /// With --reduce: the items' output is the reduce's input, not
    /// printed; the reduce's own output is.
    reducing: bool,
    /// Results printed so far, and how many of them failed.
    done: u64,
    failed: u64,
}

impl Printer {
    fn new(args: &RunArgs, commands: Commands, total: u64) -> Result<Printer> {
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        let out_mode = Mode::for_stream(stdout.is_terminal(), args.raw);
        let err_mode = Mode::for_stream(stderr.is_terminal(), args.raw);
        let keeper = Keeper::new(commands, args.joblog.as_deref(), args.results.as_deref())?;
        let bar = ((args.bar || args.eta) && stderr.is_terminal()).then(|| {
            let bar = progress_bar(total);
            bar.set_message(progress_text("", 0, total, 0, Progress::Running(None)));
            (bar, Rate::new(0))
        });
        let mut printer = Printer {
            out: Sanitized::new(stdout, out_mode),
            err: Sanitized::new(stderr, err_mode),
            json: args.json,
            tag: args.tag,
            keeper,
            bar,
            total,
            reducing: args.flags.reduce.is_some() && !args.json,
            done: 0,
            failed: 0,
        };
        if printer.json {
            write!(printer.out, "[")?;
        }
        Ok(printer)
    }

    /// Prints `results` and notes them in the job log, the results
    /// directory and the bar.
    fn print(&mut self, results: &[Ended]) -> std::io::Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        for Ended { result, at } in results {
            self.done += 1;
            if !result.succeeded() {
                self.failed += 1;
            }
            self.keeper.keep(result, *at, ":")?;
            match self.bar.take() {
                Some((bar, rate)) => {
                    let shown = bar.suspend(|| self.show(result));
                    self.bar = Some((bar, rate));
                    shown?;
                }
                None => self.show(result)?,
            }
        }
        if let Some((bar, rate)) = &self.bar {
            bar.set_position(self.done);
            bar.set_message(progress_text(
                "",
                self.done,
                self.total,
                self.failed,
                Progress::Running(rate.per_sec(self.done)),
            ));
        }
        self.out.flush()?;
        self.err.flush()
    }

    /// The item's output on stdout and stderr (or its JSON), and why it
    /// failed or was cut.
    fn show(&mut self, result: &ItemResult) -> std::io::Result<()> {
        if self.json {
            let separator = if self.done == 1 { "" } else { "," };
            // The same view as the API's results.
            let view = ResultView {
                succeeded: result.succeeded(),
                result: result.clone(),
            };
            let text = serde_json::to_string(&view)?;
            let shown = self.out.mode().show_json(&text).into_owned();
            return write!(self.out, "{separator}{shown}");
        }
        if self.reducing {
            return Ok(());
        }
        show_output(
            &mut self.out,
            &mut self.err,
            result,
            self.tag,
            "dts run was given executor.output-cap-bytes",
        )
    }

    /// The reduce's output on stdout and stderr (not with --json, whose
    /// array is the items'), and the exit status it gives `dts run`: the
    /// reduce's own exit code when it failed, 1 when items failed (and
    /// the reduce did not run, or ran with `--reduce-when always`), else 0.
    fn show_reduce(&mut self, task: Option<&Task>) -> Result<u8> {
        let items_failed = self.failed > 0 || self.done < self.total;
        let Some(result) = task.and_then(|t| t.reduce_result.as_ref()) else {
            say(&format!(
                "dts: the reduce did not run: {} of {} items failed",
                self.failed, self.total
            ));
            return Ok(1);
        };
        if !self.json {
            self.out.write_all(result.stdout.as_bytes())?;
            self.err.write_all(result.stderr.as_bytes())?;
            self.out.flush()?;
            self.err.flush()?;
        }
        if let Some(reason) = result.failure_reason() {
            say(&format!("dts: {reason}"));
            let code = result
                .exit_code
                .and_then(|code| u8::try_from(code).ok())
                .filter(|code| *code != 0)
                .unwrap_or(1);
            return Ok(code);
        }
        Ok(u8::from(items_failed))
    }

    /// Closes the JSON array, flushes the job log, clears the bar.
    fn finish(&mut self) -> Result<()> {
        // The line `dts run` ends with says the counts instead.
        if let Some((bar, _)) = &self.bar {
            bar.finish_and_clear();
        }
        self.keeper.finish()?;
        if self.json {
            match writeln!(self.out, "]").and_then(|()| self.out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                other => other?,
            }
        }
        Ok(())
    }
}
