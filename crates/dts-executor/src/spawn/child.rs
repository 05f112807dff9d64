//! What runs in the child between `clone` and `execve`.
//!
//! The child shares the worker's memory (`CLONE_VM`); the thread that
//! cloned it waits (`CLONE_VFORK`), but the worker's other threads keep
//! running and may hold any lock. So everything here:
//! - only makes system calls, through glibc's thin wrappers (`write`,
//!   `dup2`, `execve`...) or `syscall`, on data the parent prepared in the
//!   [`Plan`]: no allocation, no lock, no logging, nothing from the Rust
//!   standard library that might do either;
//! - cannot panic: no indexing, no arithmetic that could overflow, no
//!   `unwrap` (the lints below enforce it), since a panic would unwind or
//!   abort on the worker's memory (glibc's `abort` signals the *parent's*
//!   thread: the child runs with the parent's thread pointer);
//! - never calls glibc's `setuid`, `setgid` or `setgroups`: in a process
//!   glibc knows to be multi-threaded, those make every thread of the worker
//!   change its ids too (the `SIGSETXID` broadcast). The raw system calls
//!   change only the child;
//! - writes to the worker's memory only the [`Plan`]'s error slot and the
//!   `/bin/sh` fallback's argument slot, which the parent reads once
//!   `clone` has returned;
//! - runs with every signal blocked (the parent blocked them before
//!   `clone`) until just before `execve`, and resets every handler first,
//!   so no handler of the worker ever runs in the child.
//!
//! The errno a failed step leaves goes back to the parent, which turns it
//! into the `io::Error` of the spawn.

#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]

use std::ffi::CStr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::{c_char, c_int, c_void};

/// Everything the child does, prepared by the parent before `clone`.
///
/// Every descriptor here is above 2 (the parent makes sure), so moving the
/// standard streams into place cannot overwrite one still needed.
pub(super) struct Plan<'a> {
    /// The paths `execve` tries in turn, as `execvp` would: the program
    /// itself when it has a `/`, otherwise the program in each directory of
    /// the child's `PATH`.
    pub(super) candidates: &'a [&'a CStr],
    /// `argv`, ending with a null pointer.
    pub(super) argv: &'a [*const c_char],
    /// The environment as `NAME=value` strings, ending with a null pointer.
    pub(super) envp: &'a [*const c_char],
    /// `/bin/sh`, a slot for the candidate, then `argv` from its second
    /// element on, ending with a null pointer: how `execvp` runs a file
    /// the kernel cannot execute (`ENOEXEC`, a script without `#!`). Points
    /// into a buffer of the parent of at least two elements.
    pub(super) sh_argv: *mut *const c_char,
    /// What becomes stdin, stdout and stderr.
    pub(super) stdio: [RawFd; 3],
    pub(super) cwd: Option<&'a CStr>,
    /// `cgroup.procs` files to join by writing `0`.
    pub(super) cgroup_procs: &'a [RawFd],
    /// Become a child subreaper (kept across `execve`).
    pub(super) subreaper: bool,
    /// The open-files soft limit (at most the hard limit).
    pub(super) open_files: Option<u64>,
    /// A descriptor the program gets as its descriptor 3.
    pub(super) pass_as_3: Option<RawFd>,
    /// Switch to this uid and gid (the only group).
    pub(super) user: Option<(libc::uid_t, libc::gid_t)>,
    /// The errno of the step that failed; 0 while none did.
    pub(super) error: AtomicI32,
}

/// The child's entry point, given to `clone` with a pointer to a [`Plan`].
/// Never returns: the child executes the program or exits with 127.
pub(super) extern "C" fn main(plan: *mut c_void) -> c_int {
    // SAFETY: the parent passes a pointer to a `Plan` that lives on its
    // stack until `clone` returns, which is after this child executed a
    // program or exited; the parent does not touch it meanwhile.
    let plan = unsafe { &*plan.cast::<Plan<'_>>() };
    let errno = match prepare(plan) {
        Ok(()) => exec(plan),
        Err(errno) => errno,
    };
    plan.error.store(errno, Ordering::Relaxed);
    // SAFETY: _exit ends only this process (its own thread group), without
    // running anything of the worker's (no atexit handlers, no flushing).
    unsafe { libc::_exit(127) }
}

/// The steps before `execve`, in order: no handler of the worker's can run
/// from here on, the child is in the item's cgroups before it can start
/// anything, then what `std` did (streams, directory, process group) and
/// the confinement that was its `pre_exec` closure, the user last.
fn prepare(plan: &Plan<'_>) -> Result<(), c_int> {
    reset_signal_handlers()?;
    for &fd in plan.cgroup_procs {
        // SAFETY: a one-byte write from a static buffer.
        match unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } {
            1 => {}
            -1 => return Err(errno()),
            _ => return Err(libc::EIO),
        }
    }
    let [stdin, stdout, stderr] = plan.stdio;
    into_place(stdin, 0)?;
    into_place(stdout, 1)?;
    into_place(stderr, 2)?;
    if let Some(dir) = plan.cwd {
        // SAFETY: a NUL-terminated path the parent keeps alive.
        check(unsafe { libc::chdir(dir.as_ptr()) })?;
    }
    // SAFETY: integer arguments.
    check(unsafe { libc::setpgid(0, 0) })?;
    if plan.subreaper {
        // SAFETY: integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) })?;
    }
    // Every descriptor above stderr, inherited by dts from whoever started
    // it or opened by another thread without O_CLOEXEC, closes at exec.
    // Kernels before 5.11 lack the flag; dts marks its inherited
    // descriptors at start-up as well, so a failure is not fatal.
    // SAFETY: integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    if let Some(soft) = plan.open_files {
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
    if let Some(fd) = plan.pass_as_3 {
        into_place(fd, 3)?;
    }
    if let Some((uid, gid)) = plan.user {
        become_user(uid, gid)?;
    }
    // Last: an empty signal mask, as the program must start with.
    let empty: u64 = 0;
    // SAFETY: the kernel reads a 64-signal set from this stack.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_BYTES,
        )
    })
}

/// The size of the kernel's signal set: 64 signals on every architecture
/// but MIPS (128), where the kernel refuses these calls, so every spawn
/// fails with EINVAL (the parent blocks signals the same way) rather than
/// run a child with the wrong mask.
const KERNEL_SIGSET_BYTES: usize = 8;

/// Every signal whose handler is a function of the worker's goes back to
/// its default (`execve` would do the same, but a signal arriving between
/// unblocking and `execve` would run the handler on the worker's memory),
/// and SIGPIPE, which Rust programs ignore, is the default too, as `std`
/// spawns children. Ignored signals stay ignored, as with `std`.
fn reset_signal_handlers() -> Result<(), c_int> {
    for signal in 1..=64 {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction is a plain C struct; all zeroes is valid.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: glibc's sigaction only converts the struct on this stack
        // and makes the system call.
        let queried = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
        if queried != 0 {
            // glibc refuses its own two real-time signals (SIGCANCEL,
            // SIGSETXID), whose handlers it installs: set them straight.
            set_default_raw(signal);
            continue;
        }
        let handler = old.sa_sigaction;
        if signal != libc::SIGPIPE && (handler == libc::SIG_DFL || handler == libc::SIG_IGN) {
            continue;
        }
        // SAFETY: as above; all zeroes is SIG_DFL with no flags.
        let default: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        check(unsafe { libc::sigaction(signal, &default, std::ptr::null_mut()) })?;
    }
    Ok(())
}

/// Sets `signal` to SIG_DFL with the system call itself. All zeroes is
/// SIG_DFL, no flags and an empty mask in every architecture's kernel
/// `struct sigaction`; the buffer is larger than any of them.
fn set_default_raw(signal: c_int) {
    let default = [0u64; 8];
    // SAFETY: the kernel reads a `struct sigaction` from the buffer.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signal,
            default.as_ptr(),
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_BYTES,
        );
    }
}

/// Makes `fd` the descriptor `target`, open across `execve`.
fn into_place(fd: RawFd, target: RawFd) -> Result<(), c_int> {
    if fd == target {
        // dup2 to itself would leave FD_CLOEXEC set.
        // SAFETY: integer arguments.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) })
    } else {
        // SAFETY: integer arguments; dup2 leaves the copy open across exec.
        check(unsafe { libc::dup2(fd, target) })
    }
}

#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
use libc::{
    SYS_setgroups as SYS_SETGROUPS, SYS_setresgid as SYS_SETRESGID, SYS_setresuid as SYS_SETRESUID,
};
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
use libc::{
    SYS_setgroups32 as SYS_SETGROUPS, SYS_setresgid32 as SYS_SETRESGID,
    SYS_setresuid32 as SYS_SETRESUID,
};

/// Gives up root for `uid`, with `gid` as the only group, for good
/// (`PR_SET_NO_NEW_PRIVS`: setuid programs do not run as their owner).
///
/// The saved gid stays 0 until `execve` (which sets it to the effective
/// gid): until then this process shares the worker's memory, and the kernel
/// lets only a process with the same real, effective *and saved* ids trace
/// it or open its `/proc/<pid>/mem`, so the items' user cannot reach the
/// worker's memory through it even where `fs.suid_dumpable` is 1. For the
/// same reason the memory is marked not dumpable again: changing ids set it
/// to `fs.suid_dumpable`, for the worker too.
fn become_user(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), c_int> {
    let groups = [gid];
    // SAFETY: the kernel reads one gid from this stack; the other calls
    // take integers. Raw system calls: see the module's documentation.
    unsafe {
        check_long(libc::syscall(
            SYS_SETGROUPS,
            1 as libc::c_long,
            groups.as_ptr(),
        ))?;
        check_long(libc::syscall(SYS_SETRESGID, gid, gid, 0 as libc::gid_t))?;
        check_long(libc::syscall(SYS_SETRESUID, uid, uid, uid))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))?;
    }
    Ok(())
}

/// Executes the program as `execvp` does, returning the errno when no
/// candidate could be executed: a candidate that is missing, not a
/// directory's file, or not executable is skipped (EACCES wins over the
/// others in the end); any other error stops the search; a file the kernel
/// does not know how to execute runs with `/bin/sh`.
fn exec(plan: &Plan<'_>) -> c_int {
    let mut denied = false;
    let mut last = libc::ENOENT;
    for path in plan.candidates {
        // SAFETY: NUL-terminated strings and null-terminated arrays the
        // parent keeps alive; execve only returns on failure.
        unsafe { libc::execve(path.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
        let mut error = errno();
        if error == libc::ENOEXEC {
            // SAFETY: `sh_argv` has at least two elements (see `Plan`); the
            // second is this child's to fill. Then as above.
            unsafe {
                plan.sh_argv.add(1).write(path.as_ptr());
                libc::execve(
                    c"/bin/sh".as_ptr(),
                    plan.sh_argv.cast_const(),
                    plan.envp.as_ptr(),
                );
            }
            error = errno();
        }
        match error {
            libc::EACCES => denied = true,
            libc::ENOENT | libc::ESTALE | libc::ENOTDIR | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return error,
        }
        last = error;
    }
    if denied { libc::EACCES } else { last }
}

/// The calling thread's errno (the child runs on the parent thread's
/// thread-local storage, which is fine: that thread is suspended).
fn errno() -> c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn check(rc: c_int) -> Result<(), c_int> {
    if rc == -1 { Err(errno()) } else { Ok(()) }
}

fn check_long(rc: libc::c_long) -> Result<(), c_int> {
    if rc == -1 { Err(errno()) } else { Ok(()) }
}
