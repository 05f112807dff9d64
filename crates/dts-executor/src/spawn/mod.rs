//! Starting item processes without copying the worker: `clone` with
//! `CLONE_VM | CLONE_VFORK`, as glibc's `posix_spawn` does, plus the steps
//! that confine an item.
//!
//! Why this exists: every item's child must join the item's cgroups, switch
//! user, and so on between `fork` and `exec` (`isolation::Confinement`).
//! With a `pre_exec` closure for that, `std::process::Command` can no longer
//! use `posix_spawn` and forks the whole multi-threaded worker instead: the
//! kernel copies the worker's page tables for every item and tears them
//! down again at `exec` (`copy_page_range`, `dup_mmap`, `exit_mmap`,
//! `unmap_page_range` in `perf`), several times what the rest of the
//! worker spends per item (docs/design-notes.md has the measurements).
//!
//! Here the child shares the worker's memory while the calling thread waits
//! for it to `exec` or exit, so nothing is copied. The price is what the
//! child may do, which `child` spells out: system calls only, on data
//! prepared here beforehand (paths, `argv`, the environment, descriptors,
//! ids), on a stack of its own (mapped here, with a guard page), with every
//! signal blocked from `clone` on and every handler reset before they are
//! unblocked; no allocation, no lock, no panic; glibc's set-id wrappers
//! never (raw system calls instead). What it does, in order: reset signal
//! handlers (SIGPIPE to the default too), join the item's cgroups, put the
//! pipes on 0, 1 and 2, change directory, lead a new process group, become a
//! subreaper if asked, mark every descriptor above 2 close-on-exec, set the
//! open-files soft limit if asked, put a warm shell's socket on 3, switch
//! user (groups, gid, uid, `PR_SET_NO_NEW_PRIVS`), empty the signal mask,
//! and `execve` the program as `execvp` would (the `PATH` of the child's
//! environment, `/bin/sh` for a file without `#!`). A step that fails
//! leaves its errno in shared memory and exits with 127; `clone` returns
//! once the child has executed the program or exited, so the parent then
//! knows which, reaps a failed child, and returns the errno as the
//! `io::Error` `std` would have returned.
//!
//! The child is then watched through a pidfd (see [`Child`]).

mod child;
mod process;

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

pub(crate) use process::Child;
use process::{Exits, ParentEnds};

use crate::isolation::Confinement;

/// Where a child's stdin, stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stdio {
    /// Pipes to the parent ([`Child::stdin`], `stdout`, `stderr`).
    Piped,
    /// `/dev/null`.
    Null,
}

/// A program to start, like `std::process::Command` with what the executor
/// needs: the environment is only what is set here, the child leads a new
/// process group, and it is killed if its [`Child`] is dropped early.
#[derive(Debug)]
pub(crate) struct Command {
    program: CString,
    /// `argv`, the program first.
    args: Vec<CString>,
    env: BTreeMap<OsString, OsString>,
    cwd: Option<CString>,
    stdio: Stdio,
    confinement: Confinement,
    /// A string had a NUL byte, which no argument can carry.
    saw_nul: bool,
}

/// The stack the child runs on (it only makes system calls).
const STACK_BYTES: usize = 64 * 1024;

impl Command {
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Command {
        let mut saw_nul = false;
        let program = c_string(program.as_ref(), &mut saw_nul);
        Command {
            args: vec![program.clone()],
            program,
            env: BTreeMap::new(),
            cwd: None,
            stdio: Stdio::Piped,
            confinement: Confinement::default(),
            saw_nul,
        }
    }

    pub(crate) fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        let arg = c_string(arg.as_ref(), &mut self.saw_nul);
        self.args.push(arg);
        self
    }

    /// Sets an environment variable (the last value of a name wins).
    pub(crate) fn env(
        &mut self,
        name: impl AsRef<OsStr>,
        value: impl AsRef<OsStr>,
    ) -> &mut Command {
        self.env
            .insert(name.as_ref().to_owned(), value.as_ref().to_owned());
        self
    }

    pub(crate) fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Command {
        for (name, value) in vars {
            self.env(name, value);
        }
        self
    }

    pub(crate) fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.cwd = Some(c_string(dir.as_ref().as_os_str(), &mut self.saw_nul));
        self
    }

    /// Where all three standard streams go; piped by default.
    pub(crate) fn stdio(&mut self, stdio: Stdio) -> &mut Command {
        self.stdio = stdio;
        self
    }

    /// The confinement steps the child takes before it executes the program.
    pub(crate) fn confine(&mut self, confinement: Confinement) -> &mut Command {
        self.confinement = confinement;
        self
    }

    /// Starts the program. Fails with the errno of the step that failed,
    /// as `std` would (ENOENT for a missing program or directory, EACCES,
    /// E2BIG for arguments too long, EMFILE, EAGAIN...), and the child is
    /// then already reaped. Must be called within a tokio runtime.
    pub(crate) fn spawn(&mut self) -> io::Result<Child> {
        self.spawn_watching(Exits::supported())
    }

    fn spawn_watching(&mut self, exits: Exits) -> io::Result<Child> {
        if self.saw_nul {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nul byte found in provided data",
            ));
        }
        let env = self.env_strings()?;
        let envp = pointers(&env);
        let argv = pointers(&self.args);
        let mut sh_argv = Vec::with_capacity(self.args.len() + 2);
        sh_argv.extend([c"/bin/sh".as_ptr(), ptr::null()]);
        sh_argv.extend(self.args.iter().skip(1).map(|arg| arg.as_ptr()));
        sh_argv.push(ptr::null());
        let searched = self.search_path();
        let candidates: Vec<&CStr> = if self.program.as_bytes().contains(&b'/') {
            vec![self.program.as_c_str()]
        } else {
            searched.iter().map(CString::as_c_str).collect()
        };

        let (ends, theirs) = self.streams()?;
        // A warm shell's socket must survive the streams' moves onto 0-2.
        let pass_as_3 = match self.confinement.pass_as_3 {
            Some(fd) if fd <= 2 => Some(dup_above_stdio(fd)?),
            _ => None,
        };
        let plan = child::Plan {
            candidates: &candidates,
            argv: &argv,
            envp: &envp,
            sh_argv: sh_argv.as_mut_ptr(),
            stdio: theirs.each().map(|fd| fd.as_raw_fd()),
            cwd: self.cwd.as_deref(),
            cgroup_procs: &self.confinement.cgroup_procs,
            subreaper: self.confinement.subreaper,
            open_files: self.confinement.open_files,
            pass_as_3: pass_as_3
                .as_ref()
                .map(AsRawFd::as_raw_fd)
                .or(self.confinement.pass_as_3),
            user: self.confinement.user,
            error: AtomicI32::new(0),
        };
        let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
        if exits == Exits::Pidfd {
            flags |= libc::CLONE_PIDFD;
        }
        let mut pidfd: libc::c_int = -1;
        let (pid, clone_error) = Stack::with(|stack| {
            // The child starts with every signal blocked, so none of the
            // worker's handlers can run on its stack before it resets them.
            let _blocked = BlockedSignals::all()?;
            // SAFETY: `child::main` only makes system calls (see `child`) on
            // `plan`, which with everything it points to lives until after
            // `clone` returns; CLONE_VFORK makes `clone` return only once
            // the child has executed a program or exited, so it no longer
            // uses `stack` or `plan` then. CLONE_PIDFD writes the new
            // pidfd to `pidfd`.
            let pid = unsafe {
                libc::clone(
                    child::main,
                    stack.top(),
                    flags,
                    (&raw const plan).cast_mut().cast(),
                    &raw mut pidfd,
                )
            };
            Ok((pid, io::Error::last_os_error()))
        })?;
        if pid == -1 {
            return Err(clone_error);
        }
        // SAFETY: with CLONE_PIDFD, clone made a new descriptor that nothing
        // else owns (a kernel without it leaves -1).
        let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        match plan.error.load(Ordering::Relaxed) {
            0 => Child::adopt(pid, pidfd, ends),
            errno => {
                let _ = reap_now(pid);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }

    /// The environment as `NAME=value` strings, sorted by name as `std`
    /// passes it.
    fn env_strings(&self) -> io::Result<Vec<CString>> {
        self.env
            .iter()
            .map(|(name, value)| {
                let mut pair = Vec::with_capacity(name.len() + value.len() + 2);
                pair.extend_from_slice(name.as_bytes());
                pair.push(b'=');
                pair.extend_from_slice(value.as_bytes());
                CString::new(pair).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "nul byte found in provided data",
                    )
                })
            })
            .collect()
    }

    /// Where `execvp` would look for a program without a `/`: each
    /// directory of the child's `PATH` (glibc's `/bin:/usr/bin` without
    /// one), an empty entry meaning the working directory. None for an
    /// empty program name (ENOENT).
    fn search_path(&self) -> Vec<CString> {
        let name = self.program.as_bytes();
        if name.is_empty() || name.contains(&b'/') {
            return Vec::new();
        }
        let path = self
            .env
            .get(OsStr::new("PATH"))
            .map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
        path.split(|&b| b == b':')
            .filter_map(|dir| {
                let mut full = Vec::with_capacity(dir.len() + name.len() + 1);
                full.extend_from_slice(dir);
                if !dir.is_empty() {
                    full.push(b'/');
                }
                full.extend_from_slice(name);
                CString::new(full).ok()
            })
            .collect()
    }

    /// The parent's ends and the child's descriptors of its standard
    /// streams, all close-on-exec and above 2; the parent's nonblocking.
    fn streams(&self) -> io::Result<(ParentEnds, ChildStreams)> {
        match self.stdio {
            Stdio::Null => {
                // SAFETY: a NUL-terminated static path.
                let fd =
                    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
                if fd == -1 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: open just returned this descriptor.
                let null = above_stdio(unsafe { OwnedFd::from_raw_fd(fd) })?;
                Ok((ParentEnds::default(), ChildStreams::Shared(null)))
            }
            Stdio::Piped => {
                let (stdin, to_stdin) = pipe()?;
                let (from_stdout, stdout) = pipe()?;
                let (from_stderr, stderr) = pipe()?;
                for end in [&to_stdin, &from_stdout, &from_stderr] {
                    set_nonblocking(end)?;
                }
                let ends = ParentEnds {
                    stdin: Some(to_stdin),
                    stdout: Some(from_stdout),
                    stderr: Some(from_stderr),
                };
                Ok((ends, ChildStreams::Own([stdin, stdout, stderr])))
            }
        }
    }
}

/// The child's ends of its standard streams.
enum ChildStreams {
    Own([OwnedFd; 3]),
    /// One descriptor for all three (`/dev/null`).
    Shared(OwnedFd),
}

impl ChildStreams {
    fn each(&self) -> [&OwnedFd; 3] {
        match self {
            ChildStreams::Own([a, b, c]) => [a, b, c],
            ChildStreams::Shared(fd) => [fd, fd, fd],
        }
    }
}

fn c_string(text: &OsStr, saw_nul: &mut bool) -> CString {
    CString::new(text.as_bytes()).unwrap_or_else(|_| {
        *saw_nul = true;
        CString::default()
    })
}

/// A null-terminated array of pointers to `strings`.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    let mut pointers = Vec::with_capacity(strings.len() + 1);
    pointers.extend(strings.iter().map(|s| s.as_ptr()));
    pointers.push(ptr::null());
    pointers
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these descriptors, owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl with integer arguments on a descriptor we own. A fresh
    // pipe end has no other status flag to keep.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fd` itself, or a copy of it above 2 where it is 0, 1 or 2 (only when
/// this process runs with a standard stream closed).
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    dup_above_stdio(fd.as_raw_fd())
}

/// A close-on-exec copy of `fd` numbered 3 or more.
fn dup_above_stdio(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl with integer arguments; the caller keeps `fd` open.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if copy == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned this descriptor, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// Reaps a child that failed before `execve` (it has exited or is about
/// to: its `clone` returned).
fn reap_now(pid: libc::pid_t) -> io::Result<()> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own unreaped child, writing to this stack.
        if unsafe { libc::waitpid(pid, &mut status, 0) } != -1 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// The child's stack: an anonymous mapping whose lowest page is a guard (a
/// stack overflow faults instead of writing over other memory). Each thread
/// keeps one for all its spawns: mapping and unmapping one per spawn cost
/// the worker a TLB shootdown on every core it runs on, and page faults.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

thread_local! {
    static STACK: std::cell::RefCell<Option<Stack>> = const { std::cell::RefCell::new(None) };
}

impl Stack {
    /// Runs `f` with this thread's stack, made on first use.
    ///
    /// `f` must not return while a child still runs on the stack; `clone`
    /// with CLONE_VFORK returns only once the child has executed a program
    /// or exited, which is what makes reusing it sound.
    fn with<T>(f: impl FnOnce(&Stack) -> io::Result<T>) -> io::Result<T> {
        let mut f = Some(f);
        let kept = STACK.try_with(|cell| {
            // Never borrowed twice: nothing `f` does spawns.
            let mut slot = cell.try_borrow_mut().ok()?;
            let stack = match &mut *slot {
                Some(stack) => stack,
                empty => match Stack::new() {
                    Ok(stack) => empty.insert(stack),
                    Err(e) => return Some(Err(e)),
                },
            };
            f.take().map(|f| f(stack))
        });
        match (kept, f) {
            (Ok(Some(done)), _) => done,
            // A thread whose thread-locals are being destroyed: a stack
            // for this spawn only.
            (_, Some(f)) => f(&Stack::new()?),
            (_, None) => Err(io::Error::other("the child stack could not be used")),
        }
    }

    fn new() -> io::Result<Stack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .unwrap_or(4096)
            .max(4096);
        let len = STACK_BYTES.next_multiple_of(page) + page;
        // SAFETY: a new private anonymous mapping; no existing memory is
        // affected.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack { base, len };
        // SAFETY: the lowest page of the mapping made above.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The highest address: stacks grow down.
    fn top(&self) -> *mut libc::c_void {
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, which no child uses any more
        // (see `with`).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Every signal blocked in the calling thread, the previous mask restored
/// on drop. With the system call itself: glibc's `pthread_sigmask` would
/// leave its own two signals unblocked.
struct BlockedSignals {
    previous: u64,
}

impl BlockedSignals {
    fn all() -> io::Result<BlockedSignals> {
        let all: u64 = !0;
        let mut previous: u64 = 0;
        // SAFETY: the kernel reads and writes one 64-signal set each, on
        // this stack.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const all,
                &raw mut previous,
                std::mem::size_of::<u64>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(BlockedSignals { previous })
    }
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: as in `all`.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &raw const self.previous,
                ptr::null_mut::<u64>(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

#[cfg(test)]
mod tests;
