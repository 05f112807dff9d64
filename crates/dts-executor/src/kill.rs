//! Signals to every process of an item.
//!
//! Every item runs in its own process group (its pid is the group id), so a
//! timeout or a cancellation reaches the script's own children too, not just
//! the shell. SIGKILL also goes to the item's cgroup, when it has one, which
//! holds the processes that left the group (`setsid`). Used by the executor
//! only.

use std::io;

use crate::isolation::ItemCgroup;

/// The process group of one running item. Dropping it SIGKILLs the group
/// unless [`ProcessGroup::disarm`] was called, so an item whose future is
/// dropped half-way (the worker aborted it) leaves no processes behind.
#[derive(Debug)]
pub(crate) struct ProcessGroup {
    /// `None` when the pid could not be a group id we may signal (see `new`).
    pgid: Option<libc::pid_t>,
    armed: bool,
}

impl ProcessGroup {
    /// The group led by the child `pid`. A pid of 0 or 1, or one that does not
    /// fit, is refused: `killpg(0)` would signal the worker's own group.
    pub(crate) fn new(pid: Option<u32>) -> Self {
        let pgid = pid
            .and_then(|p| libc::pid_t::try_from(p).ok())
            .filter(|&p| p > 1);
        Self { pgid, armed: true }
    }

    /// Sends `signal` to every process in the group. A group that is already
    /// gone (ESRCH) is not an error.
    pub(crate) fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        let Some(pgid) = self.pgid else { return Ok(()) };
        // SAFETY: killpg has no memory-safety preconditions; `pgid` > 1.
        if unsafe { libc::killpg(pgid, signal) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ESRCH) => Ok(()),
            _ => Err(err),
        }
    }

    /// Like [`ProcessGroup::signal`], logging a failure instead of returning
    /// it: there is nothing better to do with it where the executor stops
    /// an item.
    pub(crate) fn signal_logged(&self, signal: libc::c_int) {
        if let Err(e) = self.signal(signal) {
            tracing::warn!(pgid = ?self.pgid, signal, error = %e, "could not signal item process group");
        }
    }

    /// The group was dealt with; dropping it no longer kills anything.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.armed {
            self.signal_logged(libc::SIGKILL);
        }
    }
}

/// Every process of one running item: its process group, and its cgroup
/// when it has one.
#[derive(Debug)]
pub(crate) struct ItemProcesses<'a> {
    pub(crate) group: ProcessGroup,
    pub(crate) cgroup: Option<&'a ItemCgroup>,
}

impl ItemProcesses<'_> {
    /// Sends `signal` to the group; SIGKILL also kills the whole cgroup.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        self.group.signal_logged(signal);
        if signal == libc::SIGKILL {
            if let Some(cgroup) = self.cgroup {
                cgroup.kill();
            }
        }
    }

    /// Kills everything of the item that is left; the group need not be
    /// killed again when this value is dropped.
    pub(crate) fn kill_all(&mut self) {
        self.signal(libc::SIGKILL);
        self.group.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_that_would_signal_the_wrong_group_are_refused() {
        assert_eq!(ProcessGroup::new(None).pgid, None);
        assert_eq!(ProcessGroup::new(Some(0)).pgid, None);
        assert_eq!(ProcessGroup::new(Some(1)).pgid, None);
        assert_eq!(ProcessGroup::new(Some(u32::MAX)).pgid, None);
        let mut refused = ProcessGroup::new(Some(0));
        assert!(refused.signal(libc::SIGKILL).is_ok());
        refused.disarm();
    }

    #[test]
    fn signalling_a_group_that_does_not_exist_is_not_an_error() {
        // Pid numbers stop well below i32::MAX (pid_max <= 4_194_304).
        let mut group = ProcessGroup::new(Some(i32::MAX as u32));
        assert!(group.signal(libc::SIGTERM).is_ok());
        group.disarm();
    }
}
