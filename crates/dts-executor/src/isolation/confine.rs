//! What a child does between `fork` and `exec` to confine itself: join its
//! cgroups, become a subreaper, mark every inherited descriptor
//! close-on-exec, and give up root for the items' user.
//!
//! This runs in the forked child of a multi-threaded process, so it only
//! makes system calls on data prepared before the fork: no allocation, no
//! locks, no logging.

use std::io;
use std::os::fd::RawFd;

use tokio::process::Command;

/// The steps for one child; built before the fork.
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

/// `close_range`'s flag: mark the descriptors close-on-exec instead of
/// closing them, so the standard library's own pipe that reports a failed
/// `exec` keeps working.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

impl Confinement {
    /// Makes `command`'s child run these steps before it executes the
    /// program (after its working directory and process group were set).
    pub(crate) fn apply(self, command: &mut Command) {
        // SAFETY: the closure only makes async-signal-safe system calls on
        // data owned by the closure, as a pre_exec closure must.
        unsafe {
            command.pre_exec(move || self.in_child());
        }
    }

    fn in_child(&self) -> io::Result<()> {
        for &fd in &self.cgroup_procs {
            // SAFETY: writing two bytes from a static buffer to a descriptor
            // the parent opened for this.
            let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            if written != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        if self.subreaper {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // Every descriptor above stderr, inherited by dts from whoever
        // started it or opened by another thread between the fork and now,
        // closes at exec. Kernels before 5.11 lack the flag; dts marks its
        // inherited descriptors at start-up as well.
        // SAFETY: close_range with integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
        }
        if let Some(soft) = self.open_files {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit and setrlimit on a struct on this stack.
            unsafe {
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
            }
        }
        if let Some(fd) = self.pass_as_3 {
            // dup2 leaves the copy open across exec.
            // SAFETY: dup2 on descriptors this process holds.
            if unsafe { libc::dup2(fd, 3) } != 3 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some((uid, gid)) = self.user {
            // SAFETY: plain system calls; `gid` lives in this closure.
            unsafe {
                if libc::setgroups(1, &gid) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                    || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}
