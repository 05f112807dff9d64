//! What a child does between `clone` and `exec` to confine itself: join its
//! cgroups, become a subreaper, mark every inherited descriptor
//! close-on-exec, and give up root for the items' user.
//!
//! This is only the description, built before the child starts; the
//! `spawn` module's child carries it out, with raw system calls only.

use std::os::fd::RawFd;

/// The steps for one child; built before it starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Confinement {
    /// `cgroup.procs` files opened for writing, which the child joins by
    /// writing `0` (the kernel checks the opener's rights, so this works
    /// after the child gave up root too, but it is done first anyway).
    pub(crate) cgroup_procs: Vec<RawFd>,
    /// Set `PR_SET_CHILD_SUBREAPER`: the child's orphaned descendants are
    /// reparented to it instead of init (see the `reaper` module). Kept
    /// across `exec`.
    pub(crate) subreaper: bool,
    /// Switch to this uid and gid (its only group) and forbid gaining
    /// privileges again (`PR_SET_NO_NEW_PRIVS`: setuid programs do not run
    /// as their owner).
    pub(crate) user: Option<(libc::uid_t, libc::gid_t)>,
    /// The open-files soft limit to give the program (at most the hard
    /// limit), when the worker raised its own.
    pub(crate) open_files: Option<u64>,
    /// A descriptor to hand the program as its descriptor 3 (a warm shell's
    /// channel to the executor); every other one above 2 closes.
    pub(crate) pass_as_3: Option<RawFd>,
}
