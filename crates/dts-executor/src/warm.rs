//! Warm shells: a `bash` kept running per slot that forks a subshell per item.
//!
//! Starting `bash` costs about 1.2 ms of CPU, most of what a small item
//! costs; forking a `bash` that is already running costs a tenth of that. With
//! [`crate::ExecSettings::warm_shell`] on, a bash script's item runs in a
//! subshell of a long-lived shell (the "host") instead of a fresh `bash -c`.
//!
//! The host runs [`HOST_SCRIPT`] and talks to the executor over its stdin
//! (requests) and stdout (reports, one per line). For each item the executor
//! makes three pipes and sends their descriptor numbers; the subshell opens
//! them through `/proc/<worker>/fd/` as its stdin, stdout and stderr, so
//! output is captured per item exactly as for a child process. The host has job control on
//! (`set -m`), so every subshell leads its own process group, and the
//! executor stops it like any other item: SIGTERM, SIGKILL after the grace,
//! and SIGKILL to whatever is left once it exits.
//!
//! What a script can tell apart from `bash -c` (docs/warm-shell.md has the
//! table; `tests/run.rs` runs every other case both ways): `$$` is the host's
//! pid (`$BASHPID` is the item's), `$!` holds the previous item's pid before
//! the script starts a job, a script killed by a signal the executor did not
//! send reports exit code 128+N instead of the signal, an expansion error
//! ends the script rather than the line (a subshell's rule), and the item's
//! shell itself does not ignore SIGQUIT.

use std::io;
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::executor::ItemContext;

/// The host's loop, on one line so that `eval` numbers the script's lines
/// from 1, as `bash -c` does.
///
/// Requests: `S` NUL task NUL shard NUL script NUL sets what the next items
/// run (once per shard, not per item); `I <index> <stdin fd> <stdout fd>
/// <stderr fd>` NUL item NUL runs one item, whose stdio are the executor's
/// descriptors opened through `/proc/$PPID/fd` (`$PPID` is the executor's
/// process). Few and short fields on purpose: bash reads a pipe a byte at a
/// time. Reports, one per line: `s<pid>` (the subshell started), `o` (it
/// opened its stdio), `x<status>` (it ended; always last). The subshell drops
/// every `__dts_` variable before the script runs, and sets `$1`, the `DTS_*`
/// variables, `BASH_SUBSHELL` and `BASH_EXECUTION_STRING` as `bash -c` has
/// them.
const HOST_SCRIPT: &str = concat!(
    "set -m; ",
    "while IFS=' ' read -r -d '' __dts_op __dts_index __dts_in __dts_out __dts_err; do ",
    "if [[ $__dts_op == S ]]; then IFS= read -r -d '' __dts_task; ",
    "IFS= read -r -d '' __dts_shard; IFS= read -r -d '' __dts_script; continue; fi; ",
    "IFS= read -r -d '' __dts_item; ",
    "( exec 3>&1 <\"/proc/$PPID/fd/$__dts_in\" >\"/proc/$PPID/fd/$__dts_out\" ",
    "2>\"/proc/$PPID/fd/$__dts_err\"; printf 'o\\n' >&3; exec 3>&-; ",
    "set +m; export DTS_ITEM=\"$__dts_item\" DTS_ITEM_INDEX=\"$__dts_index\" ",
    "DTS_TASK_ID=\"$__dts_task\" DTS_SHARD_INDEX=\"$__dts_shard\"; ",
    "set -- \"$__dts_item\"; BASH_SUBSHELL=0; BASH_EXECUTION_STRING=$__dts_script; ",
    "eval \"unset \\${!__dts_@}; $__dts_script\" ) & ",
    "__dts_pid=$!; printf 's%s\\n' \"$__dts_pid\"; wait \"$__dts_pid\"; printf 'x%s\\n' \"$?\"; ",
    "done"
);

/// Whether `interpreter` is a bash, the only shell the host script is
/// written for.
pub(crate) fn is_bash(interpreter: &str) -> bool {
    std::path::Path::new(interpreter)
        .file_name()
        .is_some_and(|name| name == "bash")
}

/// Idle hosts, at most one per slot that ran a warm item.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    idle: Mutex<Vec<Host>>,
}

impl Pool {
    /// An idle host for `interpreter` that is still running, if there is
    /// one. (A host can die while idle: killed by someone, or by the OOM
    /// killer; it is dropped here rather than failing an item.)
    pub(crate) fn take(&self, interpreter: &str) -> Option<Host> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(at) = idle.iter().position(|h| h.interpreter == interpreter) {
            let mut host = idle.swap_remove(at);
            if host.is_running() {
                return Some(host);
            }
            tracing::debug!("a warm shell ended while idle; starting another");
        }
        None
    }

    /// Gives a host that finished an item cleanly back for the next one.
    pub(crate) fn put(&self, host: Host) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.push(host);
    }
}

/// What a host reported about the item it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// The subshell started; its pid is its process group.
    Started(u32),
    /// The subshell opened its stdin, stdout and stderr.
    Opened,
    /// The subshell ended with this status (`$?`: 128+N for signal N).
    Exited(i32),
}

/// One running host shell.
#[derive(Debug)]
pub(crate) struct Host {
    interpreter: String,
    /// Killed on drop: a host whose item went wrong is never reused.
    child: Child,
    requests: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
    /// The task, shard and script the host runs items of, sent once per
    /// change.
    current: Option<(String, u32, String)>,
}

impl Host {
    /// Starts a host with the environment items get (without `DTS_*`, which
    /// the host sets per item).
    pub(crate) fn start(
        interpreter: &str,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        workdir: Option<&std::path::Path>,
        script_name: &str,
    ) -> io::Result<Host> {
        let mut command = Command::new(interpreter);
        command
            .arg("-c")
            .arg(HOST_SCRIPT)
            .arg(script_name)
            .env_clear()
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = workdir {
            command.current_dir(dir);
        }
        let mut child = command.spawn()?;
        let (Some(requests), Some(reports)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the shell's pipes were not set up"));
        };
        Ok(Host {
            interpreter: interpreter.to_owned(),
            child,
            requests,
            reports: BufReader::new(reports).lines(),
            current: None,
        })
    }

    /// Whether the host process has not exited.
    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The interpreter this host is.
    pub(crate) fn interpreter(&self) -> &str {
        &self.interpreter
    }

    /// Asks the host to run `item` of `script` with `pipes` as its stdio.
    pub(crate) async fn send(
        &mut self,
        script: &str,
        item: &ItemContext<'_>,
        pipes: &ItemPipes,
    ) -> io::Result<()> {
        let mut request = Vec::with_capacity(item.input.len() + 64);
        let shard = item.shard_index.to_string();
        let same = self
            .current
            .as_ref()
            .is_some_and(|(task, shard_index, text)| {
                task == item.task_id && *shard_index == item.shard_index && text == script
            });
        if !same {
            for field in ["S", item.task_id, &shard, script] {
                request.extend_from_slice(field.as_bytes());
                request.push(0);
            }
            self.current = Some((item.task_id.to_owned(), item.shard_index, script.to_owned()));
        }
        let [stdin, stdout, stderr] = pipes.child_fds();
        let head = format!("I {} {stdin} {stdout} {stderr}", item.index);
        for field in [head.as_str(), item.input] {
            request.extend_from_slice(field.as_bytes());
            request.push(0);
        }
        self.requests.write_all(&request).await
    }

    /// The host's next report. Cancel safe. `None` when the host has exited
    /// (or said something this executor does not understand).
    pub(crate) async fn next_report(&mut self) -> Option<Report> {
        let line = match self.reports.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "reading the warm shell's reports failed");
                return None;
            }
        };
        let parsed = match line.split_at_checked(1) {
            Some(("s", pid)) => pid.parse().ok().map(Report::Started),
            Some(("o", "")) => Some(Report::Opened),
            Some(("x", status)) => status.parse().ok().map(Report::Exited),
            _ => None,
        };
        if parsed.is_none() {
            tracing::warn!(report = %line, "the warm shell sent an unexpected report");
        }
        parsed
    }
}

/// The three pipes of one item. The executor keeps the subshell's ends open
/// only until the subshell has opened them (by path), so that the executor's
/// ends see end-of-file when the item's processes are done.
pub(crate) struct ItemPipes {
    pub(crate) stdin: Option<pipe::Sender>,
    pub(crate) stdout: Option<pipe::Receiver>,
    pub(crate) stderr: Option<pipe::Receiver>,
    child_ends: Option<ChildEnds>,
}

/// The ends the subshell opens through `/proc`.
struct ChildEnds {
    stdin: pipe::Receiver,
    stdout: pipe::Sender,
    stderr: pipe::Sender,
}

impl ItemPipes {
    pub(crate) fn new() -> io::Result<ItemPipes> {
        let (stdin_tx, stdin_rx) = pipe::pipe()?;
        let (stdout_tx, stdout_rx) = pipe::pipe()?;
        let (stderr_tx, stderr_rx) = pipe::pipe()?;
        Ok(ItemPipes {
            stdin: Some(stdin_tx),
            stdout: Some(stdout_rx),
            stderr: Some(stderr_rx),
            child_ends: Some(ChildEnds {
                stdin: stdin_rx,
                stdout: stdout_tx,
                stderr: stderr_tx,
            }),
        })
    }

    /// The executor's descriptors of the subshell's ends, which it opens as
    /// `/proc/<executor>/fd/<n>`: opening that path for a pipe opens the pipe
    /// anew, in the mode asked for, as for a named pipe. `-1` once closed
    /// (the subshell then fails to open it, reported as a start failure).
    fn child_fds(&self) -> [i32; 3] {
        match &self.child_ends {
            Some(ends) => [
                ends.stdin.as_raw_fd(),
                ends.stdout.as_raw_fd(),
                ends.stderr.as_raw_fd(),
            ],
            None => [-1; 3],
        }
    }

    /// Closes the executor's copies of the subshell's ends.
    pub(crate) fn close_child_ends(&mut self) {
        self.child_ends = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bash_gets_a_warm_shell() {
        assert!(is_bash("bash"));
        assert!(is_bash("/usr/bin/bash"));
        assert!(!is_bash("sh"));
        assert!(!is_bash("/bin/dash"));
        assert!(!is_bash("python3"));
        assert!(!is_bash("bashful"));
    }

    #[test]
    fn the_host_script_is_one_line() {
        // `eval` counts the script's lines from the line it is on.
        assert!(!HOST_SCRIPT.contains('\n'));
    }
}
