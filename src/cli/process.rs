//! Process-wide start-up steps that make dts safer to run, called by
//! [`super::main`] before a command starts: which steps run depends on the
//! command (see [`Role`]). Each step is small, says why it exists, and is
//! not fatal: a machine that lacks a mechanism gets a warning in the log and
//! dts runs as before.

use std::io;
use tracing::{debug, warn};

/// What kind of process this command is, for the start-up steps it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `dts up`, `dts server`, `dts worker`: long-running, holds the store,
    /// the token and the configuration, and (but `server`) runs items.
    Service,
    /// `dts run`: the user's own process, as GNU parallel is, running items.
    Run,
    /// The client commands: a few HTTP calls, no items.
    Client,
}

/// The first step, for every command, before any thread or child starts:
/// see [`close_inherited_on_exec`]. Returns its outcome, to be logged once
/// logging is set up.
pub fn before_anything() -> io::Result<()> {
    close_inherited_on_exec()
}

/// The steps for `role` once logging is set up; `inherited` is what
/// [`before_anything`] returned.
pub fn harden(role: Role, inherited: io::Result<()>) {
    if let Err(e) = inherited {
        warn!(error = %e, "cannot mark inherited file descriptors close-on-exec; items may inherit them");
    }
    if matches!(role, Role::Service | Role::Run) {
        match raise_open_files_limit() {
            Ok(limit) => debug!(limit, "open-files soft limit"),
            Err(e) => warn!(error = %e, "cannot raise the open-files soft limit"),
        }
    }
    if role == Role::Service {
        if let Err(e) = forbid_inspection() {
            warn!(error = %e, "cannot mark dts not dumpable; processes of the same user may read its memory");
        }
    }
}

/// Marks every descriptor above 2 close-on-exec. Whatever started dts may
/// have left descriptors open without `FD_CLOEXEC` (a pipe's write end, a
/// socket, a file); each item would inherit them, could use them, and could
/// keep a reader waiting for an end of file that never comes. dts opens its
/// own descriptors close-on-exec, so this only concerns inherited ones.
///
/// Uses `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)` (Linux 5.11), or walks
/// `/proc/self/fd` where that system call is missing.
pub fn close_inherited_on_exec() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it closes nothing and touches no memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        // No such system call, or a kernel without the CLOEXEC flag.
        Some(libc::ENOSYS | libc::EINVAL | libc::EPERM) => cloexec_through_proc(),
        _ => Err(error),
    }
}

/// The fallback of [`close_inherited_on_exec`]: every descriptor listed in
/// `/proc/self/fd` above 2.
fn cloexec_through_proc() -> io::Result<()> {
    // Collected first: the directory's own descriptor is in the listing
    // while it is read (and is close-on-exec already).
    let fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; one that was closed in the
        // meantime fails with EBADF, which is ignored.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// The open-files soft limit dts was started with, before it raised its
/// own: what its items get back (programs that use `select()` break above
/// 1024 descriptors, which is why the usual soft limit is that low).
static ITEMS_OPEN_FILES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// What items should get back of what dts was started with, once
/// [`raise_open_files_limit`] ran: the node passes it to the executor.
pub fn inherited() -> dts_node::Inherited {
    dts_node::Inherited {
        open_files: ITEMS_OPEN_FILES.get().copied(),
    }
}

/// Raises the soft limit on open files to the hard limit and returns it.
/// A node holds a socket per connection and three pipes per running item;
/// the usual soft limit of 1024 runs out long before the machine does, and
/// the hard limit is what the administrator allows.
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let _ = ITEMS_OPEN_FILES.set(limit.rlim_cur);
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Marks this process not dumpable. Items often run as the same user as
/// dts; a dumpable dts would let them read its `/proc/<pid>/environ` (the
/// auth token), its memory and its descriptors (the store), or attach a
/// debugger. Not dumpable, those belong to root only, and no core file is
/// written. Items are not affected: the flag is reset when they exec.
pub fn forbid_inspection() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE) only changes a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Each test changes its own process: nextest runs every test in a
    //! process of its own.

    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn is_cloexec(fd: &OwnedFd) -> bool {
        // SAFETY: F_GETFD on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert!(flags >= 0, "fcntl: {}", io::Error::last_os_error());
        flags & libc::FD_CLOEXEC != 0
    }

    /// A pipe whose ends are inheritable, as a parent could leave them.
    fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into the array, which we then own.
        let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "pipe: {}", io::Error::last_os_error());
        use std::os::fd::FromRawFd;
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        let (read, write) = inheritable_pipe();
        assert!(!is_cloexec(&read) && !is_cloexec(&write));
        close_inherited_on_exec().unwrap();
        assert!(is_cloexec(&read) && is_cloexec(&write));
    }

    #[test]
    fn the_proc_fallback_marks_inherited_descriptors_too() {
        let (read, write) = inheritable_pipe();
        cloexec_through_proc().unwrap();
        assert!(is_cloexec(&read) && is_cloexec(&write));
    }

    #[test]
    fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
        let raised = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(raised, limit.rlim_max);
    }

    #[test]
    fn a_service_process_is_not_dumpable() {
        forbid_inspection().unwrap();
        // SAFETY: PR_GET_DUMPABLE only reads a flag of this process.
        assert_eq!(unsafe { libc::prctl(libc::PR_GET_DUMPABLE) }, 0);
    }
}
