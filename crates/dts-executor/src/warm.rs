//! Warm shells: a `bash` kept running per slot that forks a subshell per item.
//!
//! Starting `bash` costs about 1.2 ms of CPU, most of what a small item
//! costs; forking a `bash` that is already running costs a tenth of that. With
//! [`crate::ExecSettings::warm_shell`] on, a bash script's item runs in a
//! subshell of a long-lived shell (the "host") instead of a fresh `bash -c`.
//!
//! The host runs [`HOST_SCRIPT`] and talks to the executor over a socket
//! that is its descriptor 3: requests one way, reports (one per line) the
//! other. An item cannot reach that channel: its subshell closes descriptor
//! 3 before the script runs, and a socket cannot be opened again through
//! `/proc/<pid>/fd/` the way a pipe can, so a script can neither forge a
//! report nor read or inject a request. (Not stdin: bash takes a socket on
//! stdin for an ssh session and reads `~/.bashrc`.) The host's stdin, stdout
//! and stderr are `/dev/null`.
//!
//! For each item the executor makes three named pipes in the host's private
//! directory and opens its own ends; the subshell opens the others by path
//! as its stdin, stdout and stderr, so output is captured per item exactly
//! as for a child process (a streamed run's stdin goes through the same
//! pipe, written through a write-only end once the subshell has opened it:
//! `feed::warm`). Before it does, it waits for one byte from the
//! executor, which first moves it into the item's cgroup: everything the
//! script starts is in that cgroup. The host has job control on (`set -m`),
//! so every subshell leads its own process group, and the executor stops it
//! like any other item: SIGTERM, SIGKILL after the grace, and SIGKILL to
//! whatever is left once it exits.
//!
//! What a script can tell apart from `bash -c` (docs/warm-shell.md has the
//! table; `tests/run.rs` runs every other case both ways): `$$` is the host's
//! pid (`$BASHPID` is the item's), `$!` holds the previous item's pid before
//! the script starts a job, a script killed by a signal the executor did not
//! send reports exit code 128+N instead of the signal, an expansion error
//! ends the script rather than the line (a subshell's rule), and the item's
//! shell itself does not ignore SIGQUIT.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::pipe;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::executor::ItemContext;
use crate::isolation::{Confinement, Scratch, reaper, workdir};
use crate::spawn::{Child, Command, Stdio};

/// The host's loop, on one line so that `eval` numbers the script's lines
/// from 1, as `bash -c` does.
///
/// Requests (on descriptor 3): `S` NUL task NUL shard NUL worker NUL script NUL sets what the
/// next items run (once per shard, not per item); `I <index> <attempt>` NUL pipes NUL dir NUL
/// home NUL item NUL runs one item: `pipes` is the path its named pipes
/// share (`.in`, `.out`, `.err`), `dir` the directory it runs in and `home`
/// its `HOME` (each empty to keep the host's). Then the subshell waits for a
/// `g` on the same channel. Few and short fields on purpose: bash reads a
/// socket a byte at a time. Reports, one per line: `s<pid>` (the subshell
/// started), `o` (it opened its stdio), `x<status>` (it ended; always last).
/// The subshell drops every `__dts_` variable before the script runs, and
/// sets `$1`, the `DTS_*` variables, `OLDPWD`, `BASH_SUBSHELL` and
/// `BASH_EXECUTION_STRING` as `bash -c` has them.
const HOST_SCRIPT: &str = concat!(
    "set -m; ",
    "while IFS=' ' read -r -d '' -u 3 __dts_op __dts_index __dts_attempt; do ",
    "if [[ $__dts_op == S ]]; then IFS= read -r -d '' -u 3 __dts_task; ",
    "IFS= read -r -d '' -u 3 __dts_shard; IFS= read -r -d '' -u 3 __dts_worker; ",
    "IFS= read -r -d '' -u 3 __dts_script; continue; fi; ",
    "IFS= read -r -d '' -u 3 __dts_pipes; IFS= read -r -d '' -u 3 __dts_dir; ",
    "IFS= read -r -d '' -u 3 __dts_home; IFS= read -r -d '' -u 3 __dts_item; ",
    "( IFS= read -r -N 1 -u 3 __dts_go; [[ $__dts_go == g ]] || exit 125; ",
    "exec <\"$__dts_pipes.in\" >\"$__dts_pipes.out\" 2>\"$__dts_pipes.err\"; ",
    "printf 'o\\n' >&3; exec 3>&-; ",
    "if [[ -n $__dts_dir ]]; then cd -- \"$__dts_dir\" || exit 126; unset OLDPWD; export OLDPWD; fi; ",
    "if [[ -n $__dts_home ]]; then export HOME=\"$__dts_home\"; fi; ",
    "set +m; export DTS_ITEM=\"$__dts_item\" DTS_ITEM_INDEX=\"$__dts_index\" ",
    "DTS_TASK_ID=\"$__dts_task\" DTS_SHARD_INDEX=\"$__dts_shard\" ",
    "DTS_ATTEMPT=\"$__dts_attempt\" DTS_WORKER_ID=\"$__dts_worker\"; ",
    "set -- \"$__dts_item\"; BASH_SUBSHELL=0; BASH_EXECUTION_STRING=$__dts_script; ",
    "eval \"unset \\${!__dts_@}; $__dts_script\" ) & ",
    "__dts_pid=$!; printf 's%s\\n' \"$__dts_pid\" >&3; wait \"$__dts_pid\"; printf 'x%s\\n' \"$?\" >&3; ",
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
    requests: OwnedWriteHalf,
    reports: Lines<BufReader<OwnedReadHalf>>,
    /// The host's private directory, where its items' named pipes are made.
    dir: PathBuf,
    /// Who owns the pipes: the items' user.
    owner: Option<(libc::uid_t, libc::gid_t)>,
    /// Numbers the items' pipes, so a path is never used twice.
    items: u64,
    /// The task, shard and script the host runs items of, sent once per
    /// change.
    current: Option<(String, u32, String)>,
}

impl Host {
    /// Starts a host with the environment items get (without `DTS_*`, which
    /// the host sets per item), confined as items are, in `cwd` (its own
    /// private directory when `None`).
    pub(crate) fn start(
        interpreter: &str,
        env: &[(OsString, OsString)],
        cwd: Option<&Path>,
        script_name: &str,
        confinement: Confinement,
        scratch: &Scratch,
    ) -> io::Result<Host> {
        let dir = scratch.make_dir("warm")?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        let mut confinement = confinement;
        confinement.pass_as_3 = Some(theirs.as_raw_fd());
        let mut command = Command::new(interpreter);
        command
            .arg("-c")
            .arg(HOST_SCRIPT)
            .arg(script_name)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdio(Stdio::Null)
            .current_dir(cwd.unwrap_or(&dir))
            .confine(confinement);
        let child = match reaper::spawn(&mut command) {
            Ok(child) => child,
            Err(e) => {
                let _ = workdir::remove_tree(&dir);
                return Err(e);
            }
        };
        drop(theirs);
        ours.set_nonblocking(true)?;
        let (reports, requests) = tokio::net::UnixStream::from_std(ours)?.into_split();
        Ok(Host {
            interpreter: interpreter.to_owned(),
            child,
            requests,
            reports: BufReader::new(reports).lines(),
            dir,
            owner: scratch.owner(),
            items: 0,
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

    /// The host's pid (what its items leave behind are its children).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Makes the named pipes of the host's next item.
    pub(crate) fn item_pipes(&mut self) -> io::Result<ItemPipes> {
        self.items += 1;
        ItemPipes::create(self.dir.join(self.items.to_string()), self.owner)
    }

    /// Asks the host to run `item` of `script` with `pipes` as its stdio,
    /// in `dir` with `HOME` set to `home` (each unchanged when `None`).
    pub(crate) async fn send(
        &mut self,
        script: &str,
        item: &ItemContext<'_>,
        pipes: &ItemPipes,
        dir: Option<&Path>,
        home: Option<&Path>,
    ) -> io::Result<()> {
        let mut request = Vec::with_capacity(item.input.len() + 256);
        let shard = item.shard_index.to_string();
        let same = self
            .current
            .as_ref()
            .is_some_and(|(task, shard_index, text)| {
                task == item.task_id && *shard_index == item.shard_index && text == script
            });
        if !same {
            for field in ["S", item.task_id, &shard, item.worker_id, script] {
                request.extend_from_slice(field.as_bytes());
                request.push(0);
            }
            self.current = Some((item.task_id.to_owned(), item.shard_index, script.to_owned()));
        }
        let head = format!("I {} {}", item.index, item.attempt);
        for field in [
            head.as_bytes(),
            pipes.base.as_os_str().as_bytes(),
            path_bytes(dir),
            path_bytes(home),
            item.input,
        ] {
            request.extend_from_slice(field);
            request.push(0);
        }
        self.requests.write_all(&request).await
    }

    /// Lets the started subshell go on (it is in its cgroup now).
    pub(crate) async fn go(&mut self) -> io::Result<()> {
        self.requests.write_all(b"g").await
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
            tracing::warn!(report = %line.escape_debug(), "the warm shell sent an unexpected report");
        }
        parsed
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        reaper::forget(self.child.id());
        if let Err(e) = workdir::remove_tree(&self.dir) {
            tracing::debug!(dir = %self.dir.display(), error = %e, "could not remove a warm shell's directory");
        }
    }
}

/// The three named pipes of one item. The executor keeps a writer of the
/// stdin pipe open until the subshell has opened it (see `keeper`); its ends
/// of stdout and stderr see end-of-file when the item's processes are done.
pub(crate) struct ItemPipes {
    /// The pipes' paths without their `.in`, `.out`, `.err` suffix.
    base: PathBuf,
    pub(crate) stdin: Option<pipe::Sender>,
    pub(crate) stdout: Option<pipe::Receiver>,
    pub(crate) stderr: Option<pipe::Receiver>,
    /// A second writer of the stdin pipe, held until the subshell has
    /// opened it: opening a named pipe for reading waits for a writer, and
    /// what was written must not be lost if the feed is done first.
    keeper: Option<pipe::Sender>,
}

impl ItemPipes {
    fn create(base: PathBuf, owner: Option<(libc::uid_t, libc::gid_t)>) -> io::Result<ItemPipes> {
        let path = |suffix: &str| {
            let mut name = base.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let (input, output, error) = (path(".in"), path(".out"), path(".err"));
        let made = [&input, &output, &error]
            .into_iter()
            .try_for_each(|fifo| make_fifo(fifo, owner));
        let opened = made.and_then(|()| {
            Ok(ItemPipes {
                stdout: Some(pipe::OpenOptions::new().open_receiver(&output)?),
                stderr: Some(pipe::OpenOptions::new().open_receiver(&error)?),
                keeper: Some(
                    pipe::OpenOptions::new()
                        .read_write(true)
                        .open_sender(&input)?,
                ),
                // Read-write, so opening does not wait for the subshell.
                stdin: Some(
                    pipe::OpenOptions::new()
                        .read_write(true)
                        .open_sender(&input)?,
                ),
                base: base.clone(),
            })
        });
        if opened.is_err() {
            for fifo in [&input, &output, &error] {
                let _ = std::fs::remove_file(fifo);
            }
        }
        opened
    }

    /// The subshell opened its ends: stop keeping the stdin pipe alive.
    pub(crate) fn close_child_ends(&mut self) {
        self.keeper = None;
    }
}

impl Drop for ItemPipes {
    fn drop(&mut self) {
        for suffix in [".in", ".out", ".err"] {
            let mut name = self.base.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
    }
}

/// A path as request bytes; `None` is empty.
fn path_bytes(path: Option<&Path>) -> &[u8] {
    path.map_or(&[], |p| p.as_os_str().as_bytes())
}

/// Makes a named pipe only its owner (the items' user) can open.
fn make_fifo(path: &Path, owner: Option<(libc::uid_t, libc::gid_t)>) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a pipe's path"))?;
    // SAFETY: mkfifo reads a NUL-terminated path that lives for the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
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
