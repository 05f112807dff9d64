//! The fallback where cgroups are not writable: the worker becomes a child
//! subreaper, and so does every item's first process, so no descendant of an
//! item escapes to init.
//!
//! While an item's first process runs, its orphaned descendants (a `setsid`
//! daemon whose parent exited, say) are reparented to it instead of to init.
//! When it exits, whatever is left is reparented to the worker, which kills
//! and reaps every child it did not start itself ([`kill_orphans`]). The
//! executor records the children it starts ([`spawn`]) with their start
//! times, so a reused pid is never mistaken for one of them. A warm shell is
//! a subreaper too: what its items leave is killed through
//! [`kill_children_of`] when each item ends.
//!
//! What this cannot do that a cgroup can: an item that double-forks a
//! process while its first process is being killed, in the instant between
//! the two, may leave a process that the next sweep kills a little later
//! rather than at once; and there are no memory or CPU limits from it.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::spawn::{Child, Command};

/// The children this process started through the executor, as (pid, start
/// time in clock ticks since boot). Anything else among its children was
/// reparented to it: an orphan of an item that ended.
static STARTED: Mutex<BTreeSet<(libc::pid_t, u64)>> = Mutex::new(BTreeSet::new());

/// How long the orphan sweeps keep killing and reaping before they give up.
const SWEEP_LIMIT: Duration = Duration::from_secs(2);

/// Whether this process is a child subreaper; only then are children
/// recorded (reading their start time costs a `/proc` read per item that
/// the other modes need not pay). Changed under the `STARTED` lock only.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`).
///
/// Its children at this point were started by this process (nothing could
/// be reparented to it yet), so they are recorded as started first: a
/// sweep kills only orphans, and every child spawned from now on is
/// recorded as it starts.
pub(crate) fn become_subreaper() -> io::Result<()> {
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if !SUBREAPER.load(Ordering::Relaxed) {
        let me = std::process::id() as libc::pid_t;
        for pid in children_of(me) {
            if let Some(since) = start_time(pid) {
                started.insert((pid, since));
            }
        }
    }
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    SUBREAPER.store(true, Ordering::Relaxed);
    Ok(())
}

/// Spawns `command` and, once this process is a subreaper, records the
/// child as one the executor started. Spawning and recording happen under
/// one lock, so a sweep never sees a new child before it is recorded.
pub(crate) fn spawn(command: &mut Command) -> io::Result<Child> {
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    let child = command.spawn()?;
    if SUBREAPER.load(Ordering::Relaxed) {
        if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            if let Some(since) = start_time(pid) {
                started.insert((pid, since));
            }
        }
    }
    Ok(child)
}

/// Forgets a child the executor started, once it was waited for.
pub(crate) fn forget(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    started.retain(|(known, _)| *known != pid);
}

/// Kills and reaps every child of this process that the executor did not
/// start: what items left behind when their first process ended. Returns
/// how many it killed.
pub(crate) async fn kill_orphans() -> usize {
    let me = std::process::id() as libc::pid_t;
    let deadline = Instant::now() + SWEEP_LIMIT;
    let mut killed = 0;
    let mut pending: BTreeSet<libc::pid_t> = BTreeSet::new();
    loop {
        {
            let started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
            for pid in children_of(me) {
                let known = start_time(pid).is_some_and(|since| started.contains(&(pid, since)));
                if !known && pending.insert(pid) {
                    killed += 1;
                }
            }
        }
        for &pid in &pending {
            // SAFETY: `pid` is an unreaped child of this process, so the pid
            // cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        pending.retain(|&pid| !reaped(pid));
        if pending.is_empty() {
            // Killing a process reparents its own children here: look again.
            let more = {
                let started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
                children_of(me).into_iter().any(|pid| {
                    !start_time(pid).is_some_and(|since| started.contains(&(pid, since)))
                })
            };
            if !more {
                return killed;
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(left = pending.len(), "processes left by items do not die");
            return killed;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Kills every child of `pid` (a warm shell, which reaps them) until it has
/// none left. Returns how many it killed.
pub(crate) async fn kill_children_of(pid: u32) -> usize {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return 0;
    };
    let deadline = Instant::now() + SWEEP_LIMIT;
    let mut seen: BTreeSet<libc::pid_t> = BTreeSet::new();
    loop {
        let children = children_of(pid);
        if children.is_empty() {
            return seen.len();
        }
        for child in children {
            seen.insert(child);
            // SAFETY: kill has no memory-safety preconditions. `child` is
            // listed as a child of the shell, which reaps it, so at worst
            // the signal reaches a process that just ended.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        if Instant::now() >= deadline {
            tracing::warn!(shell = pid, "processes left in a warm shell do not die");
            return seen.len();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reaps `pid` if it has ended; true when it is gone.
fn reaped(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waitpid on one pid that is our child (or no longer is).
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc == pid || (rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// The children of process `pid`, from every thread's `children` file
/// (children belong to the thread that forked them, and orphans to whichever
/// thread the kernel picks), or from a scan of `/proc` where the kernel has
/// no such files.
pub(crate) fn children_of(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let mut children = Vec::new();
    let tasks = match fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(tasks) => tasks,
        Err(_) => return children,
    };
    let mut any_file = false;
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            any_file = true;
            children.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<libc::pid_t>().ok()),
            );
        }
    }
    if !any_file {
        children = scan_for_children(pid);
    }
    children.sort_unstable();
    children.dedup();
    children
}

/// Every process whose parent is `pid`, by reading each `/proc/<n>/stat`.
fn scan_for_children(pid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&candidate| stat_field(candidate, 4) == Some(pid as u64))
        .collect()
}

/// When process `pid` started, in clock ticks since boot.
fn start_time(pid: libc::pid_t) -> Option<u64> {
    stat_field(pid, 22)
}

/// Field `n` (1-based, as proc(5) numbers them) of `/proc/<pid>/stat`, for
/// the numeric fields after the command name.
fn stat_field(pid: libc::pid_t, n: usize) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_and_start_time_of_this_process_are_read_from_proc() {
        let me = std::process::id() as libc::pid_t;
        // SAFETY: getppid cannot fail.
        let parent = unsafe { libc::getppid() };
        assert_eq!(stat_field(me, 4), Some(parent as u64));
        assert!(start_time(me).is_some());
        assert_eq!(start_time(i32::MAX), None);
    }
}
