//! A spawned child: its pipes, waiting for its exit, and killing it when it
//! is dropped before that.
//!
//! The exit is watched through a pidfd (`CLONE_PIDFD`, readable once the
//! child has exited) registered with tokio, and reaped with
//! `waitid(P_PIDFD)`: nothing can mistake another process for the child.
//! Kernels before 5.4 cannot wait on a pidfd; there the child is reaped by
//! pid (`waitpid`, safe while it is an unreaped child of ours) whenever a
//! SIGCHLD arrives, as tokio's own process support does.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::OnceLock;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// How this process learns that its children exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exits {
    /// A pidfd per child (Linux 5.4).
    Pidfd,
    /// SIGCHLD, then `waitpid` by pid.
    Sigchld,
}

impl Exits {
    /// The way this kernel supports, found once: `waitid(P_PIDFD)` on a
    /// descriptor that is not open fails with EBADF where pidfds can be
    /// waited on (and EINVAL where the kernel does not know `P_PIDFD`).
    pub(super) fn supported() -> Exits {
        static SUPPORTED: OnceLock<Exits> = OnceLock::new();
        *SUPPORTED.get_or_init(|| {
            // SAFETY: siginfo_t is a plain C struct; all zeroes is valid.
            let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
            // SAFETY: waitid writes at most the struct on this stack.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PIDFD,
                    i32::MAX as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG,
                )
            };
            if rc == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EBADF) {
                Exits::Pidfd
            } else {
                Exits::Sigchld
            }
        })
    }
}

/// What the exit of one child is watched through.
#[derive(Debug)]
enum Watch {
    Pidfd(AsyncFd<OwnedFd>),
    Sigchld(Signal),
    /// The child was reaped (or is someone else's to reap).
    Done,
}

/// A child process started by [`super::Command::spawn`]. It leads its own
/// process group. Dropped before it was waited for, it is killed (SIGKILL)
/// and reaped in the background, so it never stays a zombie.
#[derive(Debug)]
pub(crate) struct Child {
    pid: libc::pid_t,
    watch: Watch,
    status: Option<ExitStatus>,
    /// The write end of its stdin, when piped.
    pub(crate) stdin: Option<pipe::Sender>,
    /// The read end of its stdout, when piped.
    pub(crate) stdout: Option<pipe::Receiver>,
    /// The read end of its stderr, when piped.
    pub(crate) stderr: Option<pipe::Receiver>,
}

/// The parent's ends of a child's pipes.
#[derive(Debug, Default)]
pub(super) struct ParentEnds {
    pub(super) stdin: Option<OwnedFd>,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
}

impl Child {
    /// Takes charge of the child `pid` that was just started: registers
    /// its pidfd (or SIGCHLD) and the parent's pipe ends (nonblocking
    /// already) with tokio. If that fails, the child is killed and reaped
    /// and the error returned.
    pub(super) fn adopt(
        pid: libc::pid_t,
        pidfd: Option<OwnedFd>,
        ends: ParentEnds,
    ) -> io::Result<Child> {
        let registered = (|| {
            let watch = match pidfd {
                // SAFETY: the AsyncFd owns the pidfd, which stays open and
                // the same until it is dropped or taken back.
                Some(fd) => Watch::Pidfd(unsafe {
                    AsyncFd::register_with_interest(fd, Interest::READABLE)?
                }),
                None => Watch::Sigchld(signal(SignalKind::child())?),
            };
            Ok::<_, io::Error>(Child {
                pid,
                watch,
                status: None,
                stdin: ends
                    .stdin
                    .map(pipe::Sender::from_owned_fd_unchecked)
                    .transpose()?,
                stdout: ends
                    .stdout
                    .map(pipe::Receiver::from_owned_fd_unchecked)
                    .transpose()?,
                stderr: ends
                    .stderr
                    .map(pipe::Receiver::from_owned_fd_unchecked)
                    .transpose()?,
            })
        })();
        registered.inspect_err(|_| {
            // SAFETY: `pid` is our child and not reaped yet, so it cannot
            // name another process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = reap(pid, None, true);
        })
    }

    /// The child's pid, until it has been waited for.
    pub(crate) fn id(&self) -> Option<u32> {
        match self.status {
            None => u32::try_from(self.pid).ok(),
            Some(_) => None,
        }
    }

    /// Waits for the child to exit and reaps it; closes its stdin first.
    /// Cancel safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = wait_for(self.pid, &mut self.watch).await?;
        self.finished(status);
        Ok(status)
    }

    /// The child's exit status if it has exited (reaping it), without
    /// waiting.
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let reaped = reap(self.pid, self.watch.pidfd(), false)?;
        if let Some(status) = reaped {
            self.finished(status);
        }
        Ok(reaped)
    }

    fn finished(&mut self, status: ExitStatus) {
        self.status = Some(status);
        self.watch = Watch::Done;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let watch = mem::replace(&mut self.watch, Watch::Done);
        match &watch {
            // SAFETY: a signal through the child's own pidfd.
            Watch::Pidfd(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            },
            // SAFETY: `pid` is our child and not reaped yet, so it cannot
            // name another process.
            Watch::Sigchld(_) => unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            },
            Watch::Done => return,
        }
        let orphan = Orphan {
            pid: self.pid,
            watch,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(orphan.reap());
            }
            // Dropping it reaps it on a thread of its own.
            Err(_) => drop(orphan),
        }
    }
}

/// A killed child still to be reaped, by a task of the runtime; if the
/// task never finishes (the runtime shuts down first) or there is no
/// runtime, by a thread that blocks in `waitid` until it is gone.
struct Orphan {
    pid: libc::pid_t,
    watch: Watch,
}

impl Orphan {
    async fn reap(mut self) {
        if wait_for(self.pid, &mut self.watch).await.is_ok() {
            self.watch = Watch::Done;
        }
    }
}

impl Drop for Orphan {
    fn drop(&mut self) {
        let pid = self.pid;
        let pidfd = match mem::replace(&mut self.watch, Watch::Done) {
            Watch::Done => return,
            Watch::Pidfd(fd) => Some(fd.into_inner()),
            Watch::Sigchld(_) => None,
        };
        let spawned = std::thread::Builder::new()
            .name("dts-reap".into())
            .spawn(move || {
                let _ = reap(pid, pidfd.as_ref().map(AsRawFd::as_raw_fd), true);
            });
        if spawned.is_err() {
            // No thread either: the child was killed, so this is short.
            let _ = reap(pid, None, true);
        }
    }
}

impl Watch {
    fn pidfd(&self) -> Option<RawFd> {
        match self {
            Watch::Pidfd(fd) => Some(fd.as_raw_fd()),
            _ => None,
        }
    }
}

/// Waits until child `pid` exits and reaps it. Cancel safe.
async fn wait_for(pid: libc::pid_t, watch: &mut Watch) -> io::Result<ExitStatus> {
    loop {
        match watch {
            Watch::Pidfd(fd) => {
                let mut ready = fd.readable().await?;
                match reap(pid, Some(fd.as_raw_fd()), false)? {
                    Some(status) => return Ok(status),
                    None => ready.clear_ready(),
                }
            }
            Watch::Sigchld(sigchld) => {
                // The signal stream exists since `adopt`: an exit after this
                // check wakes the `recv` below, one before it is seen here.
                if let Some(status) = reap(pid, None, false)? {
                    return Ok(status);
                }
                if sigchld.recv().await.is_none() {
                    return Err(io::Error::other("tokio's signal driver has shut down"));
                }
            }
            Watch::Done => {
                return Err(io::Error::other("the child was already reaped"));
            }
        }
    }
}

/// Reaps child `pid` through `pidfd` (or by pid) if it has exited, or
/// waits for it to when `block`.
fn reap(pid: libc::pid_t, pidfd: Option<RawFd>, block: bool) -> io::Result<Option<ExitStatus>> {
    let nohang = if block { 0 } else { libc::WNOHANG };
    loop {
        let reaped = match pidfd {
            Some(fd) => {
                // SAFETY: siginfo_t is a plain C struct; all zeroes is valid.
                let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
                // SAFETY: waitid writes at most the struct on this stack.
                let rc = unsafe {
                    libc::waitid(
                        libc::P_PIDFD,
                        fd as libc::id_t,
                        &mut info,
                        libc::WEXITED | nohang,
                    )
                };
                // SAFETY: waitid filled in a SIGCHLD siginfo (or left it
                // zeroed: no child had exited).
                (rc == 0).then(|| unsafe { (info.si_pid() != 0).then(|| status_of(&info)) })
            }
            None => {
                let mut status = 0;
                // SAFETY: waitpid writes the status on this stack.
                let rc = unsafe { libc::waitpid(pid, &mut status, nohang) };
                (rc != -1).then(|| (rc == pid).then(|| ExitStatus::from_raw(status)))
            }
        };
        match reaped {
            Some(reaped) => return Ok(reaped),
            None => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// The exit status `waitpid` would have given for `info`, so that
/// `code()` and `signal()` answer as for a `std` child.
///
/// # Safety
///
/// `info` must have been filled in by `waitid` for an exited child.
unsafe fn status_of(info: &libc::siginfo_t) -> ExitStatus {
    // SAFETY: the caller says this is a SIGCHLD siginfo.
    let status = unsafe { info.si_status() };
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    };
    ExitStatus::from_raw(raw)
}
