//! Runs one item: spawn, feed, capture, stop, and report.
//!
//! The worker builds one [`Executor`] at start-up and calls [`Executor::run`]
//! for every item, several at once. A run is a single future with no extra
//! task or thread: the child's exit, both output streams, the stdin feed, the
//! timeout and the cancellation token are all polled together, so nothing can
//! block anything else.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::{Pin, pin};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::env::filter_env;
use crate::kill::ProcessGroup;
use crate::outcome::ExecOutcome;
use crate::output::Capture;
use crate::program::Program;
use crate::settings::ExecSettings;
use crate::warm::{self, Host, ItemPipes, Report};

/// How long to wait for stdout and stderr to close once the main process has
/// exited and its group was killed. Only a process that left the group (with
/// `setsid`) can hold a pipe open that long, and it must not hang the item.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The longest item Linux accepts: one argument or environment string,
/// terminating NUL included, is limited to 128 KiB (`MAX_ARG_STRLEN`), and
/// the item is also passed as `DTS_ITEM=<item>`.
const MAX_ITEM_BYTES: usize = 128 * 1024 - "DTS_ITEM=".len() - 1;

/// `$0` of scripts, so that `$1` is the item.
const SCRIPT_NAME: &str = "dts-item";

/// Which item is running, exported to the script as `DTS_*` variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemContext<'a> {
    /// The task's id (`DTS_TASK_ID`).
    pub task_id: &'a str,
    /// The shard the item belongs to (`DTS_SHARD_INDEX`).
    pub shard_index: u32,
    /// The item's index in the task's input list (`DTS_ITEM_INDEX`).
    pub index: u64,
    /// The item itself: `$1`, stdin and `DTS_ITEM`.
    pub input: &'a str,
}

/// Runs items as child processes; one per worker, shared by all its slots.
#[derive(Debug)]
pub struct Executor {
    settings: ExecSettings,
    /// The allow-listed part of the worker's environment, filtered once so
    /// each item only copies it.
    env: Vec<(OsString, OsString)>,
    /// Idle warm shells ([`ExecSettings::warm_shell`]).
    warm: warm::Pool,
}

/// Why the executor stopped an item before it ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// Why an item could not run; its message becomes [`ExecOutcome::error`].
#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error("could not start `{program}`{place}: {source}")]
    Spawn {
        program: String,
        place: String,
        source: io::Error,
    },
    #[error(
        "could not start `{program}`: {source}; the item ({len} bytes) is passed as an argument \
         and as DTS_ITEM, and the system limits each to 128 KiB"
    )]
    ItemTooLong {
        program: String,
        len: usize,
        source: io::Error,
    },
    #[error(
        "could not start `{program}`: the item contains a NUL byte, which a process argument cannot carry"
    )]
    NulInItem { program: String },
    #[error("could not wait for `{program}`: {source}")]
    Wait { program: String, source: io::Error },
    #[error("the warm shell `{program}` could not take the item: {source}")]
    WarmSend { program: String, source: io::Error },
    #[error(
        "the warm shell `{program}` ended while running the item (a script that signals `$$` \
         signals the warm shell, not the item)"
    )]
    WarmHostDied { program: String },
    #[error(
        "the warm shell `{program}` could not connect the item's stdin, stdout and stderr \
         (it opens them under /proc/{pid}/fd)",
        pid = std::process::id()
    )]
    WarmPipes { program: String },
}

impl Executor {
    /// An executor whose scripts get the allow-listed variables of this
    /// process's environment.
    pub fn new(settings: ExecSettings) -> Self {
        Self::with_base_env(settings, std::env::vars_os())
    }

    /// An executor whose scripts get the allow-listed variables of `env`
    /// instead of the process's (tests, or a worker with its own view).
    pub fn with_base_env(
        settings: ExecSettings,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Self {
        let env = filter_env(&settings.env_allow, env);
        Self {
            settings,
            env,
            warm: warm::Pool::default(),
        }
    }

    /// The settings this executor was built with.
    pub fn settings(&self) -> &ExecSettings {
        &self.settings
    }

    /// The `PATH` scripts get; pass it to [`Program::prepare`].
    pub fn path_var(&self) -> Option<&OsStr> {
        self.env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str())
    }

    /// [`Program::prepare`] with this executor's `PATH`, resolving relative
    /// paths against its working directory. Call once per shard.
    pub fn prepare(&self, script: &str, interpreter: &str) -> Program {
        Program::prepare_in(
            script,
            interpreter,
            self.path_var(),
            self.settings.workdir.as_deref(),
        )
    }

    /// Runs one item to its end and reports it. Never panics on process or OS
    /// failures: those are outcomes with [`ExecOutcome::error`] set.
    ///
    /// On `timeout` or when `cancel` fires, the item's process group gets
    /// SIGTERM, then SIGKILL after [`ExecSettings::kill_grace`]. When the main
    /// process ends, whatever is left in its group is killed. An item whose
    /// token is already cancelled is not started.
    pub async fn run(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> ExecOutcome {
        self.run_holding(program, item, timeout, cancel, ()).await
    }

    /// [`Executor::run`], dropping `held` as soon as the item's main process
    /// has exited — before its output is drained and its outcome built. A
    /// worker passes its core slot here, so the next item starts while this
    /// one's bookkeeping is still going on.
    pub async fn run_holding<H>(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        timeout: Duration,
        cancel: &CancellationToken,
        held: H,
    ) -> ExecOutcome {
        let started = Instant::now();
        if cancel.is_cancelled() {
            return ExecOutcome {
                cancelled: true,
                ..ExecOutcome::default()
            };
        }
        let failed = |error: ExecError| ExecOutcome {
            error: Some(error.to_string()),
            duration: started.elapsed(),
            ..ExecOutcome::default()
        };
        if item.input.contains('\0') {
            return failed(ExecError::NulInItem {
                program: program.display_name().into_owned(),
            });
        }
        if let Some((interpreter, script)) = self.warm_script(program) {
            if item.input.len() > MAX_ITEM_BYTES {
                // The same limit as a fresh process, so a task behaves the
                // same either way (scripts' own commands get DTS_ITEM too).
                return failed(ExecError::ItemTooLong {
                    program: interpreter.to_owned(),
                    len: item.input.len(),
                    source: io::Error::from_raw_os_error(libc::E2BIG),
                });
            }
            return self
                .run_warm(
                    program,
                    (interpreter, script),
                    item,
                    timeout,
                    cancel,
                    held,
                    started,
                )
                .await;
        }
        let mut child = match self.command(program, item).spawn() {
            Ok(child) => child,
            Err(source) => return failed(self.spawn_error(program, item, source)),
        };
        let mut group = ProcessGroup::new(child.id());
        let feed = feed_stdin(child.stdin.take(), item.input);
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut out = Capture::new(self.settings.output_cap_bytes);
        let mut err = Capture::new(self.settings.output_cap_bytes);

        let (waited, stop) = {
            let both = pin!(async { tokio::join!(out.fill_from(stdout), err.fill_from(stderr)) });
            let mut readers = Readers { both, done: false };
            let ended = self
                .supervise(&mut child, &group, &mut readers, feed, timeout, cancel)
                .await;
            after_exit(&mut group, &mut readers, held, item).await;
            ended
        };
        outcome(program, waited, stop, out, err, started)
    }

    /// Waits for the main process to exit while reading its output and
    /// feeding its stdin, and stops its group on timeout or cancellation:
    /// SIGTERM first, SIGKILL after the grace.
    async fn supervise<F: Future<Output = ((), ())>>(
        &self,
        child: &mut Child,
        group: &ProcessGroup,
        readers: &mut Readers<'_, F>,
        feed: impl Future<Output = ()>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> (io::Result<ExitStatus>, Option<Stop>) {
        let mut feed = pin!(feed);
        let mut feed_done = false;
        let mut deadline = pin!(tokio::time::sleep_until(after(timeout)));
        let mut stopper = Stopper::new(self.settings.kill_grace);
        loop {
            tokio::select! {
                biased;
                waited = child.wait() => return (waited, stopper.stop),
                () = readers.finish(), if !readers.done => {}
                () = &mut feed, if !feed_done => feed_done = true,
                // `kill_at` is Some whenever this branch is enabled.
                () = tokio::time::sleep_until(stopper.kill_at.unwrap_or(deadline.deadline())), if stopper.kill_at.is_some() => {
                    stopper.escalate(group);
                }
                () = cancel.cancelled(), if stopper.stop.is_none() => stopper.begin(Stop::Cancelled, group),
                () = &mut deadline, if stopper.stop.is_none() => stopper.begin(Stop::TimedOut, group),
            }
        }
    }

    /// The child for `item`: its own process group, a cleared environment plus
    /// the allow-list and `DTS_*`, and piped stdio.
    fn command(&self, program: &Program, item: &ItemContext<'_>) -> Command {
        let mut command = match program {
            Program::Direct(path) => Command::new(path),
            Program::Script {
                interpreter,
                script,
            } => {
                let mut command = Command::new(interpreter);
                command.arg("-c").arg(script).arg(SCRIPT_NAME);
                command
            }
        };
        command
            .arg(item.input)
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("DTS_ITEM", item.input)
            .env("DTS_ITEM_INDEX", item.index.to_string())
            .env("DTS_TASK_ID", item.task_id)
            .env("DTS_SHARD_INDEX", item.shard_index.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &self.settings.workdir {
            command.current_dir(dir);
        }
        command
    }

    /// The interpreter and script of `program` when it runs in a warm shell:
    /// the setting is on and it is a bash script (one with a NUL byte could
    /// not be sent, and fails as a fresh process would).
    fn warm_script<'p>(&self, program: &'p Program) -> Option<(&'p str, &'p str)> {
        match program {
            Program::Script {
                interpreter,
                script,
            } if self.settings.warm_shell
                && warm::is_bash(interpreter)
                && !script.contains('\0') =>
            {
                Some((interpreter, script))
            }
            _ => None,
        }
    }

    /// [`Executor::run_holding`] for an item run in a subshell of a warm
    /// shell (see the `warm` module): the same supervision, with the host's
    /// reports standing in for the child's exit.
    #[allow(clippy::too_many_arguments)]
    async fn run_warm<H>(
        &self,
        program: &Program,
        (interpreter, script): (&str, &str),
        item: &ItemContext<'_>,
        timeout: Duration,
        cancel: &CancellationToken,
        held: H,
        started: Instant,
    ) -> ExecOutcome {
        let failed = |error: ExecError| ExecOutcome {
            error: Some(error.to_string()),
            duration: started.elapsed(),
            ..ExecOutcome::default()
        };
        let name = || interpreter.to_owned();
        let mut host = match self.warm.take(interpreter) {
            Some(host) => host,
            None => match Host::start(
                interpreter,
                &self.env,
                self.settings.workdir.as_deref(),
                SCRIPT_NAME,
            ) {
                Ok(host) => host,
                Err(source) => return failed(self.spawn_error(program, item, source)),
            },
        };
        let mut pipes = match ItemPipes::new() {
            Ok(pipes) => pipes,
            Err(source) => {
                return failed(ExecError::WarmSend {
                    program: name(),
                    source,
                });
            }
        };
        if let Err(source) = host.send(script, item, &pipes).await {
            return failed(ExecError::WarmSend {
                program: name(),
                source,
            });
        }
        let feed = feed_stdin(pipes.stdin.take(), item.input);
        let (stdout, stderr) = (pipes.stdout.take(), pipes.stderr.take());
        let mut out = Capture::new(self.settings.output_cap_bytes);
        let mut err = Capture::new(self.settings.output_cap_bytes);
        let mut group = ProcessGroup::new(None);

        let (ended, stop) = {
            let both = pin!(async { tokio::join!(out.fill_from(stdout), err.fill_from(stderr)) });
            let mut readers = Readers { both, done: false };
            let ended = self
                .supervise_warm(
                    &mut host,
                    &mut pipes,
                    &mut group,
                    &mut readers,
                    feed,
                    timeout,
                    cancel,
                )
                .await;
            after_exit(&mut group, &mut readers, held, item).await;
            ended
        };
        match ended {
            Ok(status) => {
                self.warm.put(host);
                outcome(program, Ok(status), stop, out, err, started)
            }
            Err(error) => {
                let mut result = outcome(
                    program,
                    Ok(ExitStatus::from_raw(0)),
                    stop,
                    out,
                    err,
                    started,
                );
                result.exit_code = None;
                result.error = Some(error.to_string());
                result
            }
        }
    }

    /// [`Executor::supervise`] for a warm item: waits for the host to report
    /// the subshell's end, closing the executor's copies of the item's pipe
    /// ends once the subshell has opened its own.
    #[allow(clippy::too_many_arguments)]
    async fn supervise_warm<F: Future<Output = ((), ())>>(
        &self,
        host: &mut Host,
        pipes: &mut ItemPipes,
        group: &mut ProcessGroup,
        readers: &mut Readers<'_, F>,
        feed: impl Future<Output = ()>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> (Result<ExitStatus, ExecError>, Option<Stop>) {
        let program = host.interpreter().to_owned();
        let mut feed = pin!(feed);
        let mut feed_done = false;
        let mut deadline = pin!(tokio::time::sleep_until(after(timeout)));
        let mut stopper = Stopper::new(self.settings.kill_grace);
        let mut opened = false;
        loop {
            tokio::select! {
                biased;
                report = host.next_report() => match report {
                    Some(Report::Started(pid)) => {
                        *group = ProcessGroup::new(Some(pid));
                        // A stop that came before the pid is delivered now.
                        stopper.resend(group);
                    }
                    Some(Report::Opened) => {
                        opened = true;
                        pipes.close_child_ends();
                    }
                    Some(Report::Exited(status)) => {
                        pipes.close_child_ends();
                        if !opened {
                            return (Err(ExecError::WarmPipes { program }), stopper.stop);
                        }
                        return (Ok(warm_status(status, &stopper)), stopper.stop);
                    }
                    None => {
                        pipes.close_child_ends();
                        return (Err(ExecError::WarmHostDied { program }), stopper.stop);
                    }
                },
                () = readers.finish(), if !readers.done => {}
                () = &mut feed, if !feed_done => feed_done = true,
                // `kill_at` is Some whenever this branch is enabled.
                () = tokio::time::sleep_until(stopper.kill_at.unwrap_or(deadline.deadline())), if stopper.kill_at.is_some() => {
                    stopper.escalate(group);
                }
                () = cancel.cancelled(), if stopper.stop.is_none() => stopper.begin(Stop::Cancelled, group),
                () = &mut deadline, if stopper.stop.is_none() => stopper.begin(Stop::TimedOut, group),
            }
        }
    }

    fn spawn_error(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        source: io::Error,
    ) -> ExecError {
        let program = program.display_name().into_owned();
        if source.raw_os_error() == Some(libc::E2BIG) && item.input.len() > MAX_ITEM_BYTES {
            return ExecError::ItemTooLong {
                program,
                len: item.input.len(),
                source,
            };
        }
        let place = match &self.settings.workdir {
            Some(dir) => format!(" in `{}`", dir.display()),
            None => String::new(),
        };
        ExecError::Spawn {
            program,
            place,
            source,
        }
    }
}

/// Stopping an item on timeout or cancellation: SIGTERM to its group, then
/// SIGKILL once the grace has passed.
struct Stopper {
    /// Why the item is being stopped, once it is.
    stop: Option<Stop>,
    /// When SIGKILL is due, while it is.
    kill_at: Option<Instant>,
    grace: Duration,
    /// The signals sent, as a bit set (a warm item's status needs them).
    sent: u64,
}

impl Stopper {
    fn new(grace: Duration) -> Self {
        Self {
            stop: None,
            kill_at: None,
            grace,
            sent: 0,
        }
    }

    /// Starts stopping the item: SIGTERM now, SIGKILL after the grace.
    fn begin(&mut self, why: Stop, group: &ProcessGroup) {
        self.stop = Some(why);
        self.signal(group, libc::SIGTERM);
        self.kill_at = Some(after(self.grace));
    }

    /// The grace is over.
    fn escalate(&mut self, group: &ProcessGroup) {
        self.signal(group, libc::SIGKILL);
        self.kill_at = None;
    }

    /// Sends the signals sent so far again, to a group learnt of late.
    fn resend(&self, group: &ProcessGroup) {
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            if self.sent(signal) {
                group.signal_logged(signal);
            }
        }
    }

    fn signal(&mut self, group: &ProcessGroup, signal: libc::c_int) {
        group.signal_logged(signal);
        self.sent |= 1 << signal;
    }

    /// Whether `signal` was sent.
    fn sent(&self, signal: i32) -> bool {
        (1..64).contains(&signal) && self.sent & (1 << signal) != 0
    }
}

/// What follows the end of an item's main process, either way it ran: the
/// slot goes back, whatever is left of its group is killed (nothing may
/// outlive the item or keep its pipes open), and the output still in the
/// pipes is read, for at most [`DRAIN_LIMIT`].
async fn after_exit<F: Future<Output = ((), ())>, H>(
    group: &mut ProcessGroup,
    readers: &mut Readers<'_, F>,
    held: H,
    item: &ItemContext<'_>,
) {
    drop(held);
    group.signal_logged(libc::SIGKILL);
    group.disarm();
    if tokio::time::timeout(DRAIN_LIMIT, readers.finish())
        .await
        .is_err()
    {
        tracing::debug!(
            task = item.task_id,
            index = item.index,
            "item output still open after its process exited; keeping what was read"
        );
    }
}

/// Both output streams being read; polled alongside the child and then
/// drained, so it keeps its progress (and the bytes already captured) across
/// the two phases.
struct Readers<'a, F> {
    both: Pin<&'a mut F>,
    done: bool,
}

impl<F: Future<Output = ((), ())>> Readers<'_, F> {
    /// Reads until both streams close. Cancel safe: dropping this future keeps
    /// the readers' progress.
    async fn finish(&mut self) {
        if !self.done {
            self.both.as_mut().await;
            self.done = true;
        }
    }
}

/// The outcome of an item whose process was started.
fn outcome(
    program: &Program,
    waited: io::Result<ExitStatus>,
    stop: Option<Stop>,
    out: Capture,
    err: Capture,
    started: Instant,
) -> ExecOutcome {
    let (stdout, stdout_truncated) = out.finish();
    let (stderr, stderr_truncated) = err.finish();
    let (exit_code, signal, error) = match waited {
        Ok(status) => (status.code(), status.signal(), None),
        Err(source) => {
            let program = program.display_name().into_owned();
            (
                None,
                None,
                Some(ExecError::Wait { program, source }.to_string()),
            )
        }
    };
    ExecOutcome {
        exit_code,
        signal,
        timed_out: stop == Some(Stop::TimedOut),
        cancelled: stop == Some(Stop::Cancelled),
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        duration: started.elapsed(),
        error,
    }
}

/// Writes the item and a newline to the child's stdin, then closes it. A
/// child that exits or closes stdin without reading is fine (broken pipe).
async fn feed_stdin<W: AsyncWrite + Unpin>(stdin: Option<W>, input: &str) {
    let Some(mut stdin) = stdin else { return };
    let written = match stdin.write_all(input.as_bytes()).await {
        Ok(()) => stdin.write_all(b"\n").await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        if e.kind() != io::ErrorKind::BrokenPipe {
            tracing::debug!(error = %e, "could not write the item to the child's stdin");
        }
    }
}

/// `now + d`, saturating far in the future instead of overflowing.
fn after(d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(60 * 60 * 24 * 365 * 30);
    let now = Instant::now();
    now.checked_add(d).unwrap_or_else(|| now + FAR)
}

/// The exit status of a warm item from its shell's `$?`: 128+N is the signal
/// N when the executor sent N (a timeout or a cancel), an exit code otherwise
/// (bash reports both the same way).
fn warm_status(status: i32, stopper: &Stopper) -> ExitStatus {
    let signal = status - 128;
    if stopper.sent(signal) {
        ExitStatus::from_raw(signal)
    } else {
        ExitStatus::from_raw((status & 0xff) << 8)
    }
}
