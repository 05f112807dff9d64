//! Runs one item: spawn, feed, capture, stop, and report.
//!
//! The worker builds one [`Executor`] at start-up and calls [`Executor::run`]
//! for every item, several at once. A run is a single future with no extra
//! task or thread: the child's exit, both output streams, the stdin feed, the
//! timeout and the cancellation token are all polled together, so nothing can
//! block anything else.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::env::filter_env;
use crate::feed::{self, StdinSource};
use crate::isolation::{
    CgroupError, Containment, Isolation, IsolationReport, ItemCgroup, SetupError, reaper, workdir,
};
use crate::kill::{ItemProcesses, ProcessGroup};
use crate::outcome::ExecOutcome;
use crate::output::{Capture, OutputStream, OutputTap, Tap};
use crate::program::{Convention, Program, SCRIPT_NAME};
use crate::settings::ExecSettings;
use crate::spawn::{Child, Command};
use crate::warm::{self, Host, ItemPipes, Report};

/// How long to wait for stdout and stderr to close once the main process has
/// exited and its processes were killed. Only a process that escaped every
/// kill (one in an uninterruptible sleep, say) can hold a pipe open that
/// long, and it must not hang the item.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The longest item Linux accepts: one argument or environment string,
/// terminating NUL included, is limited to 128 KiB (`MAX_ARG_STRLEN`), and
/// the item is also passed as `DTS_ITEM=<item>`.
const MAX_ITEM_BYTES: usize = 128 * 1024 - "DTS_ITEM=".len() - 1;

/// The resources a task allows each of its items (`memoryMb`, `cpus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ItemLimits {
    /// Memory the item's processes may use together, in MiB.
    pub memory_mb: Option<u64>,
    /// CPU time per second of wall time the item may use, in thousandths
    /// of a CPU (1500 is one and a half).
    pub milli_cpus: Option<u32>,
}

/// Which item is running, exported to the script as `DTS_*` variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemContext<'a> {
    /// The task's id (`DTS_TASK_ID`).
    pub task_id: &'a str,
    /// The shard the item belongs to (`DTS_SHARD_INDEX`).
    pub shard_index: u32,
    /// The item's index in the task's input list (`DTS_ITEM_INDEX`).
    pub index: u64,
    /// Which attempt at the item this is, from 1 (`DTS_ATTEMPT`): an item
    /// with side effects can tell a retry from a first run.
    pub attempt: u32,
    /// The worker running it (`DTS_WORKER_ID`), so an item's own records
    /// say where it ran.
    pub worker_id: &'a str,
    /// The item itself: `$1`, stdin and `DTS_ITEM`. Bytes, passed exactly:
    /// an input need not be UTF-8 (a file name), only free of NUL. Not used
    /// by [`Executor::run_streamed`], whose stdin is a stream (a separate
    /// argument there, so this stays a plain `Copy` value).
    pub input: &'a [u8],
    /// The task's limits for each item.
    pub limits: ItemLimits,
}

/// Runs items as child processes; one per worker, shared by all its slots.
#[derive(Debug)]
pub struct Executor {
    settings: ExecSettings,
    /// The allow-listed part of the worker's environment (with `USER`,
    /// `LOGNAME` and `HOME` of the items' user when items switch user),
    /// built once so each item only copies it.
    env: Vec<(OsString, OsString)>,
    /// Idle warm shells ([`ExecSettings::warm_shell`]).
    warm: warm::Pool,
    /// The items' user, private directories and containment.
    isolation: Isolation,
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
         (its named pipes)"
    )]
    WarmPipes { program: String },
    #[error("could not make the item's private working directory: {0}")]
    Workdir(#[source] io::Error),
    #[error("could not set up the item's cgroup: {0}")]
    Cgroup(#[source] CgroupError),
}

impl ExecError {
    /// Whether the item did not start because this worker ran short of
    /// descriptors, processes, memory or disk: not the item's fault.
    fn is_worker_fault(&self) -> bool {
        let errno = match self {
            ExecError::Spawn { source, .. }
            | ExecError::WarmSend { source, .. }
            | ExecError::Workdir(source) => source.raw_os_error(),
            ExecError::Cgroup(e) => e.os_error(),
            _ => None,
        };
        matches!(
            errno,
            Some(
                libc::EMFILE
                    | libc::ENFILE
                    | libc::EAGAIN
                    | libc::ENOMEM
                    | libc::ENOSPC
                    | libc::EDQUOT
            )
        )
    }
}

/// Where one item runs: its private directory and its cgroup, each when it
/// has one. Given back through [`Executor::release`]; dropped half-way (the
/// run was aborted), it kills and removes what it holds.
#[derive(Debug, Default)]
struct Place {
    dir: Option<PathBuf>,
    cgroup: Option<ItemCgroup>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = workdir::remove_tree(&dir);
        }
    }
}

/// One item's run, as the two ways of running it share it.
struct Run<'a> {
    program: &'a Program,
    item: &'a ItemContext<'a>,
    timeout: Duration,
    cancel: &'a CancellationToken,
    place: &'a Place,
    started: Instant,
    /// Sees the output as it is read (live logs), if anyone asked.
    tap: Option<&'a dyn OutputTap>,
}

impl Run<'_> {
    fn failed(&self, error: ExecError) -> ExecOutcome {
        failed(error, self.started)
    }

    fn tap(&self, stream: OutputStream) -> Tap<'_> {
        self.tap.map(|tap| (tap, stream))
    }
}

fn failed(error: ExecError, started: Instant) -> ExecOutcome {
    ExecOutcome {
        worker_fault: error.is_worker_fault(),
        error: Some(error.to_string()),
        duration: started.elapsed(),
        ..ExecOutcome::default()
    }
}

impl Executor {
    /// An executor whose scripts get the allow-listed variables of this
    /// process's environment. Fails when the isolation asked for cannot be
    /// set up (an unknown `run_as` user, cgroups required but not writable).
    pub fn new(settings: ExecSettings) -> Result<Self, SetupError> {
        Self::with_base_env(settings, std::env::vars_os())
    }

    /// An executor whose scripts get the allow-listed variables of `env`
    /// instead of the process's (tests, or a worker with its own view).
    pub fn with_base_env(
        settings: ExecSettings,
        env: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Result<Self, SetupError> {
        let isolation = Isolation::setup(&settings.isolation, settings.items_open_files)?;
        let mut env = filter_env(&settings.env_allow, env);
        if let Some(user) = &isolation.user {
            // The worker's own HOME and USER would point items at the
            // worker's files.
            set_var(&mut env, "USER", user.name.as_str().into());
            set_var(&mut env, "LOGNAME", user.name.as_str().into());
            set_var(&mut env, "HOME", user.home.as_os_str().to_owned());
        }
        Ok(Self {
            settings,
            env,
            warm: warm::Pool::default(),
            isolation,
        })
    }

    /// The settings this executor was built with.
    pub fn settings(&self) -> &ExecSettings {
        &self.settings
    }

    /// How this executor isolates items, for heartbeats and logs.
    pub fn isolation(&self) -> IsolationReport {
        self.isolation.report(self.settings.workdir.is_some())
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
    /// SIGTERM, then SIGKILL (with its whole cgroup) after
    /// [`ExecSettings::kill_grace`]. When the main process ends, whatever
    /// is left of the item is killed. An item whose token is already
    /// cancelled is not started.
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
        self.run_tapped(program, item, timeout, cancel, held, None)
            .await
    }

    /// [`Executor::run_holding`], also handing every chunk of output to
    /// `tap` as it is read (live logs); the capture is the same either way.
    pub async fn run_tapped<H>(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        timeout: Duration,
        cancel: &CancellationToken,
        held: H,
        tap: Option<&dyn OutputTap>,
    ) -> ExecOutcome {
        self.run_fed(program, item, None, timeout, cancel, held, tap)
            .await
    }

    /// [`Executor::run_tapped`] with `stdin` as the child's standard input
    /// instead of the item: a task's `reduce` step, one run that reads every
    /// result of the task on its stdin (see [`StdinSource`]).
    ///
    /// The chunks are written in order as the child reads them and stdin is
    /// closed when the source ends. `item.input` is not used: `$1` and
    /// `DTS_ITEM` are empty; the other `DTS_*` variables come from `item` as
    /// for any item. A child that exits or closes its stdin before the end is
    /// fine, and so are timeout and cancellation, which stop the feeding
    /// with the child: in every case `stdin` is dropped as soon as the run
    /// stops feeding, so the producer's next `send` fails rather than
    /// waiting. Isolation, warm shells included, is as for items.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_streamed<H>(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        stdin: StdinSource,
        timeout: Duration,
        cancel: &CancellationToken,
        held: H,
        tap: Option<&dyn OutputTap>,
    ) -> ExecOutcome {
        let item = ItemContext {
            input: &[],
            ..*item
        };
        self.run_fed(program, &item, Some(stdin), timeout, cancel, held, tap)
            .await
    }

    /// Runs an item whose stdin is `stdin` when given, the item otherwise.
    /// Returning before the child is started drops `stdin`.
    #[allow(clippy::too_many_arguments)]
    async fn run_fed<H>(
        &self,
        program: &Program,
        item: &ItemContext<'_>,
        stdin: Option<StdinSource>,
        timeout: Duration,
        cancel: &CancellationToken,
        held: H,
        tap: Option<&dyn OutputTap>,
    ) -> ExecOutcome {
        let started = Instant::now();
        if cancel.is_cancelled() {
            return ExecOutcome {
                cancelled: true,
                ..ExecOutcome::default()
            };
        }
        let warm = self.warm_script(program);
        if item.input.contains(&0) {
            return failed(
                ExecError::NulInItem {
                    program: program.display_name().into_owned(),
                },
                started,
            );
        }
        if let Some((interpreter, _)) = warm.filter(|_| item.input.len() > MAX_ITEM_BYTES) {
            // The same limit as a fresh process, so a task behaves the same
            // either way (scripts' own commands get DTS_ITEM too).
            return failed(
                ExecError::ItemTooLong {
                    program: interpreter.to_owned(),
                    len: item.input.len(),
                    source: io::Error::from_raw_os_error(libc::E2BIG),
                },
                started,
            );
        }
        let place = match self.place(item) {
            Ok(place) => place,
            Err(error) => return failed(error, started),
        };
        let run = Run {
            program,
            item,
            timeout,
            cancel,
            place: &place,
            started,
            tap,
        };
        let mut outcome = match warm {
            Some(warm) => self.run_warm(&run, warm, stdin, held).await,
            None => self.run_fresh(&run, stdin, held).await,
        };
        self.release(place, item, &mut outcome).await;
        outcome
    }

    /// The item's private directory and cgroup, as configured.
    fn place(&self, item: &ItemContext<'_>) -> Result<Place, ExecError> {
        let mut place = Place {
            cgroup: self
                .isolation
                .cgroups
                .take(&item.limits)
                .map_err(ExecError::Cgroup)?,
            dir: None,
        };
        if self.isolation.private_workdir && self.settings.workdir.is_none() {
            match self.isolation.scratch.make_dir("item") {
                Ok(dir) => place.dir = Some(dir),
                Err(e) => {
                    if let Some(cgroup) = place.cgroup.take() {
                        self.isolation.cgroups.put(cgroup);
                    }
                    return Err(ExecError::Workdir(e));
                }
            }
        }
        Ok(place)
    }

    /// Gives the item's place back: its cgroup to the pool (saying whether
    /// the item went over its memory limit), its directory removed.
    async fn release(&self, mut place: Place, item: &ItemContext<'_>, outcome: &mut ExecOutcome) {
        if let Some(cgroup) = place.cgroup.take() {
            if let Some(mb) = item.limits.memory_mb.filter(|_| cgroup.oom_killed()) {
                if !outcome.succeeded() {
                    outcome.error = Some(format!(
                        "killed: the item used more memory than the task allows (memoryMb = {mb})"
                    ));
                }
            }
            self.isolation.cgroups.put(cgroup);
        }
        if let Some(dir) = place.dir.take() {
            // An empty directory goes at once; a full one off this thread.
            if std::fs::remove_dir(&dir).is_err() {
                let removed = tokio::task::spawn_blocking(move || {
                    workdir::remove_tree(&dir).map_err(|e| (dir, e))
                })
                .await;
                if let Ok(Err((dir, e))) = removed {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove an item's private directory");
                }
            }
        }
    }

    /// Runs the item as a new process, with `stdin` as its stdin when given.
    async fn run_fresh<H>(
        &self,
        run: &Run<'_>,
        stdin: Option<StdinSource>,
        held: H,
    ) -> ExecOutcome {
        let mut command = self.command(run);
        let mut child = match reaper::spawn(&mut command) {
            Ok(child) => child,
            Err(source) => return run.failed(self.spawn_error(run, source)),
        };
        let pid = child.id();
        let mut processes = ItemProcesses {
            group: ProcessGroup::new(pid),
            cgroup: run.place.cgroup.as_ref(),
        };
        let feed = feed::fresh(child.stdin.take(), run.item.input, stdin);
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let mut out = Capture::new(self.settings.output_cap_bytes);
        let mut err = Capture::new(self.settings.output_cap_bytes);

        let (ended, stop) = {
            let both = pin!(async {
                tokio::join!(
                    out.fill_from(stdout, run.tap(OutputStream::Stdout)),
                    err.fill_from(stderr, run.tap(OutputStream::Stderr))
                )
            });
            let mut readers = Readers { both, done: false };
            let mut watched = Watched::Fresh {
                child: &mut child,
                program: run.program,
            };
            let ended = self
                .supervise(&mut watched, &mut processes, &mut readers, feed, run)
                .await;
            self.after_exit(&mut processes, &mut readers, held, run.item, None)
                .await;
            ended
        };
        reaper::forget(pid);
        outcome(ended, stop, out, err, run.started)
    }

    /// Runs the item in a subshell of a warm shell (see the `warm` module):
    /// the same supervision, with the host's reports standing in for the
    /// child's exit. A stream (`stdin`) goes through the subshell's stdin
    /// pipe as an item does.
    async fn run_warm<H>(
        &self,
        run: &Run<'_>,
        (interpreter, script): (&str, &str),
        stdin: Option<StdinSource>,
        held: H,
    ) -> ExecOutcome {
        let name = || interpreter.to_owned();
        let mut host = match self.warm.take(interpreter) {
            Some(host) => host,
            None => match Host::start(
                interpreter,
                &self.env,
                self.host_dir(),
                SCRIPT_NAME,
                self.isolation.confinement(),
                &self.isolation.scratch,
            ) {
                Ok(host) => host,
                Err(source) => return run.failed(self.spawn_error(run, source)),
            },
        };
        let mut pipes = match host.item_pipes() {
            Ok(pipes) => pipes,
            Err(source) => {
                return run.failed(ExecError::WarmSend {
                    program: name(),
                    source,
                });
            }
        };
        let dir = run.place.dir.as_deref();
        let home = dir.filter(|_| self.isolation.user.is_some());
        if let Err(source) = host.send(script, run.item, &pipes, dir, home).await {
            return run.failed(ExecError::WarmSend {
                program: name(),
                source,
            });
        }
        let host_pid = host.pid();
        let opened = Notify::new();
        let feed = feed::warm(pipes.stdin.take(), run.item.input, stdin, &opened);
        let (stdout, stderr) = (pipes.stdout.take(), pipes.stderr.take());
        let mut out = Capture::new(self.settings.output_cap_bytes);
        let mut err = Capture::new(self.settings.output_cap_bytes);
        let mut processes = ItemProcesses {
            group: ProcessGroup::new(None),
            cgroup: run.place.cgroup.as_ref(),
        };

        let (ended, stop) = {
            let both = pin!(async {
                tokio::join!(
                    out.fill_from(stdout, run.tap(OutputStream::Stdout)),
                    err.fill_from(stderr, run.tap(OutputStream::Stderr))
                )
            });
            let mut readers = Readers { both, done: false };
            let mut watched = Watched::Warm {
                host: &mut host,
                pipes: &mut pipes,
                opened: false,
                stdin_opened: &opened,
            };
            let ended = self
                .supervise(&mut watched, &mut processes, &mut readers, feed, run)
                .await;
            self.after_exit(&mut processes, &mut readers, held, run.item, host_pid)
                .await;
            ended
        };
        drop(pipes);
        if ended.is_ok() {
            self.warm.put(host);
        }
        outcome(ended, stop, out, err, run.started)
    }

    /// Where a warm shell runs: the configured working directory, or its
    /// own private directory when items get private ones (never the
    /// worker's), or the worker's otherwise.
    fn host_dir(&self) -> Option<&Path> {
        match &self.settings.workdir {
            Some(dir) => Some(dir),
            None if self.isolation.private_workdir => None,
            None => Some(Path::new(".")),
        }
    }

    /// Waits for the item's main process (or warm subshell) to end while
    /// reading its output and feeding its stdin, and stops it on timeout or
    /// cancellation: SIGTERM first, SIGKILL after the grace.
    async fn supervise<F: Future<Output = ((), ())>>(
        &self,
        watched: &mut Watched<'_>,
        processes: &mut ItemProcesses<'_>,
        readers: &mut Readers<'_, F>,
        feed: impl Future<Output = ()>,
        run: &Run<'_>,
    ) -> (Result<ExitStatus, ExecError>, Option<Stop>) {
        let mut feed = pin!(feed);
        let mut feed_done = false;
        let mut deadline = pin!(tokio::time::sleep_until(after(run.timeout)));
        let mut stopper = Stopper::new(self.settings.kill_grace);
        loop {
            let event = tokio::select! {
                biased;
                event = watched.next() => event,
                () = readers.finish(), if !readers.done => continue,
                () = &mut feed, if !feed_done => {
                    feed_done = true;
                    continue;
                }
                // `kill_at` is Some whenever this branch is enabled.
                () = tokio::time::sleep_until(stopper.kill_at.unwrap_or(deadline.deadline())), if stopper.kill_at.is_some() => {
                    stopper.escalate(processes);
                    continue;
                }
                () = run.cancel.cancelled(), if stopper.stop.is_none() => {
                    stopper.begin(Stop::Cancelled, processes);
                    continue;
                }
                () = &mut deadline, if stopper.stop.is_none() => {
                    stopper.begin(Stop::TimedOut, processes);
                    continue;
                }
            };
            match event {
                Event::Nothing => {}
                Event::Ended(ended) => {
                    let status = ended.map(|ended| match ended {
                        Ended::Status(status) => status,
                        Ended::Shell(status) => warm_status(status, &stopper),
                    });
                    return (status, stopper.stop);
                }
                Event::Started(pid) => {
                    processes.group = ProcessGroup::new(Some(pid));
                    if let Err(error) = self.admit(watched, processes, pid).await {
                        processes.signal(libc::SIGKILL);
                        return (Err(error), stopper.stop);
                    }
                    // A stop that came before the pid is delivered now.
                    stopper.resend(processes);
                }
            }
        }
    }

    /// Puts a warm item's subshell into the item's cgroup and lets it go on.
    async fn admit(
        &self,
        watched: &mut Watched<'_>,
        processes: &ItemProcesses<'_>,
        pid: u32,
    ) -> Result<(), ExecError> {
        if let Some(cgroup) = processes.cgroup {
            cgroup.add(pid).map_err(ExecError::Cgroup)?;
        }
        if let Watched::Warm { host, .. } = watched {
            host.go().await.map_err(|source| ExecError::WarmSend {
                program: host.interpreter().to_owned(),
                source,
            })?;
        }
        Ok(())
    }

    /// What follows the end of an item's main process, either way it ran:
    /// the slot goes back, every process left of the item is killed
    /// (nothing may outlive the item or keep its pipes open) — with the
    /// subreaper, also those that left its process group, which are now
    /// children of this process (or of the warm shell `host`) — and the
    /// output still in the pipes is read, for at most [`DRAIN_LIMIT`].
    async fn after_exit<F: Future<Output = ((), ())>, H>(
        &self,
        processes: &mut ItemProcesses<'_>,
        readers: &mut Readers<'_, F>,
        held: H,
        item: &ItemContext<'_>,
        host: Option<u32>,
    ) {
        drop(held);
        processes.kill_all();
        if self.isolation.containment == Containment::Subreaper {
            let killed = match host {
                Some(pid) => reaper::kill_children_of(pid).await,
                None => reaper::kill_orphans().await,
            };
            if killed > 0 {
                tracing::debug!(
                    task = item.task_id,
                    index = item.index,
                    killed,
                    "killed processes the item left behind"
                );
            }
        }
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

    /// The child for an item: its own process group and place, a cleared
    /// environment plus the allow-list and `DTS_*`, piped stdio, and the
    /// isolation's confinement.
    fn command(&self, run: &Run<'_>) -> Command {
        let item = run.item;
        let mut command = match run.program {
            Program::Direct(path) => Command::new(path),
            Program::Script {
                interpreter,
                script,
            } => {
                let mut command = Command::new(interpreter);
                for arg in Convention::of(interpreter).args(script) {
                    command.arg(arg);
                }
                command
            }
        };
        command
            .arg(OsStr::from_bytes(item.input))
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("DTS_ITEM", OsStr::from_bytes(item.input))
            .env("DTS_ITEM_INDEX", item.index.to_string())
            .env("DTS_TASK_ID", item.task_id)
            .env("DTS_SHARD_INDEX", item.shard_index.to_string())
            .env("DTS_ATTEMPT", item.attempt.to_string())
            .env("DTS_WORKER_ID", item.worker_id);
        if let Some(dir) = self.item_dir(run.place) {
            command.current_dir(dir);
        }
        if let (Some(dir), Some(_)) = (&run.place.dir, &self.isolation.user) {
            command.env("HOME", dir);
        }
        let mut confinement = self.isolation.confinement();
        if let Some(cgroup) = &run.place.cgroup {
            confinement.cgroup_procs = cgroup.procs_fds();
        }
        command.confine(confinement);
        command
    }

    /// The directory an item runs in: its private one, the configured one,
    /// or (`None`) the worker's.
    fn item_dir<'p>(&'p self, place: &'p Place) -> Option<&'p Path> {
        place.dir.as_deref().or(self.settings.workdir.as_deref())
    }

    /// The interpreter and script of `program` when it runs in a warm
    /// shell: the setting is on and it is a bash script (one with a NUL byte
    /// could not be sent, and fails as a fresh process would).
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

    fn spawn_error(&self, run: &Run<'_>, source: io::Error) -> ExecError {
        let program = run.program.display_name().into_owned();
        if source.raw_os_error() == Some(libc::E2BIG) && run.item.input.len() > MAX_ITEM_BYTES {
            return ExecError::ItemTooLong {
                program,
                len: run.item.input.len(),
                source,
            };
        }
        // A configured directory can be wrong; a private one is dts's own.
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

/// Replaces (or adds) `name` in `env`.
fn set_var(env: &mut Vec<(OsString, OsString)>, name: &str, value: OsString) {
    env.retain(|(k, _)| k != name);
    env.push((name.into(), value));
}

/// What the executor watches for the end of an item.
enum Watched<'a> {
    /// A process of its own.
    Fresh {
        child: &'a mut Child,
        program: &'a Program,
    },
    /// A subshell of a warm shell, reported on by the host.
    Warm {
        host: &'a mut Host,
        pipes: &'a mut ItemPipes,
        /// The subshell opened its stdio.
        opened: bool,
        /// Notified when it does (the stdin feed waits for it).
        stdin_opened: &'a Notify,
    },
}

/// What happened to the watched item.
enum Event {
    /// The subshell started with this pid (a warm item's group).
    Started(u32),
    /// Something the watcher handled itself.
    Nothing,
    Ended(Result<Ended, ExecError>),
}

/// How the item's main process ended.
enum Ended {
    /// As the kernel reported it.
    Status(ExitStatus),
    /// As a warm shell reported it (`$?`).
    Shell(i32),
}

impl Watched<'_> {
    /// The next event. Cancel safe.
    async fn next(&mut self) -> Event {
        match self {
            Watched::Fresh { child, program } => {
                Event::Ended(child.wait().await.map(Ended::Status).map_err(|source| {
                    ExecError::Wait {
                        program: program.display_name().into_owned(),
                        source,
                    }
                }))
            }
            Watched::Warm {
                host,
                pipes,
                opened,
                stdin_opened,
            } => {
                let report = host.next_report().await;
                let program = || host.interpreter().to_owned();
                match report {
                    Some(Report::Started(pid)) => Event::Started(pid),
                    Some(Report::Opened) => {
                        *opened = true;
                        pipes.close_child_ends();
                        stdin_opened.notify_one();
                        Event::Nothing
                    }
                    Some(Report::Exited(status)) => {
                        pipes.close_child_ends();
                        Event::Ended(if *opened {
                            Ok(Ended::Shell(status))
                        } else {
                            Err(ExecError::WarmPipes { program: program() })
                        })
                    }
                    None => {
                        pipes.close_child_ends();
                        Event::Ended(Err(ExecError::WarmHostDied { program: program() }))
                    }
                }
            }
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
    fn begin(&mut self, why: Stop, processes: &ItemProcesses<'_>) {
        self.stop = Some(why);
        self.signal(processes, libc::SIGTERM);
        self.kill_at = Some(after(self.grace));
    }

    /// The grace is over.
    fn escalate(&mut self, processes: &ItemProcesses<'_>) {
        self.signal(processes, libc::SIGKILL);
        self.kill_at = None;
    }

    /// Sends the signals sent so far again, to a group learnt of late.
    fn resend(&self, processes: &ItemProcesses<'_>) {
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            if self.sent(signal) {
                processes.signal(signal);
            }
        }
    }

    fn signal(&mut self, processes: &ItemProcesses<'_>, signal: libc::c_int) {
        processes.signal(signal);
        self.sent |= 1 << signal;
    }

    /// Whether `signal` was sent.
    fn sent(&self, signal: i32) -> bool {
        (1..64).contains(&signal) && self.sent & (1 << signal) != 0
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
    ended: Result<ExitStatus, ExecError>,
    stop: Option<Stop>,
    out: Capture,
    err: Capture,
    started: Instant,
) -> ExecOutcome {
    let (out, err) = (out.finish(), err.finish());
    let (exit_code, signal, error) = match ended {
        Ok(status) => (status.code(), status.signal(), None),
        Err(error) => (None, None, Some(error.to_string())),
    };
    ExecOutcome {
        exit_code,
        signal,
        timed_out: stop == Some(Stop::TimedOut),
        cancelled: stop == Some(Stop::Cancelled),
        stdout: out.bytes,
        stderr: err.bytes,
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        stdout_bytes: out.total,
        stderr_bytes: err.total,
        duration: started.elapsed(),
        error,
        worker_fault: false,
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
