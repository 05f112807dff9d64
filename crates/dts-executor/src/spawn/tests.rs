//! The spawn module against `std::process::Command`, which it replaces for
//! items: the same errors, exit statuses, signal state, streams and
//! process group, plus what `std` never did (killing and reaping a dropped
//! child, the SIGCHLD fallback). The executor's corpus (`tests/run.rs`)
//! covers the confinement steps six ways.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::*;

/// Runs `command` to its end: (status, stdout, stderr).
async fn output(command: &mut Command) -> (ExitStatus, String, String) {
    output_watching(command, Exits::supported()).await
}

async fn output_watching(command: &mut Command, exits: Exits) -> (ExitStatus, String, String) {
    let mut child = command.spawn_watching(exits).expect("spawn");
    let (mut out, mut err) = (String::new(), String::new());
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let (read_out, read_err) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err)
    );
    read_out.unwrap();
    read_err.unwrap();
    let status = child.wait().await.expect("wait");
    (status, out, err)
}

use std::process::ExitStatus;

fn sh(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(script).arg("sh");
    command
}

/// Whether process `pid` is gone: not running and not a zombie either.
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn executable(dir: &Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test]
async fn arguments_environment_and_directory_reach_the_program_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = sh(r#"printf '%s|' "$0" "$@"; echo; pwd; env | sort"#);
    command
        .arg("a b")
        .arg("")
        .arg("c'\"$d")
        .env("ZED", "last")
        .env("ALPHA", "first")
        .env("ALPHA", "replaced")
        .current_dir(dir.path());
    let (status, out, err) = output(&mut command).await;
    assert!(status.success(), "{status:?} {err}");
    let pwd = dir.path().canonicalize().unwrap();
    // sh adds PWD (and may add SHLVL, `_`) to what it was given.
    let env: Vec<&str> = out
        .lines()
        .skip(2)
        .filter(|line| {
            !line.starts_with("PWD=") && !line.starts_with("SHLVL=") && !line.starts_with("_=")
        })
        .collect();
    assert_eq!(out.lines().next(), Some("sh|a b||c'\"$d|"), "{out}");
    assert_eq!(out.lines().nth(1), Some(pwd.to_str().unwrap()), "{out}");
    assert_eq!(env, ["ALPHA=replaced", "ZED=last"], "{out}");
}

#[tokio::test]
async fn the_child_leads_its_own_process_group() {
    let (_, out, _) = output(&mut sh(
        "echo $$; ps -o pgid= -p $$ 2>/dev/null || cut -d' ' -f5 /proc/$$/stat",
    ))
    .await;
    let mut lines = out.lines().map(str::trim);
    let pid = lines.next().unwrap();
    assert_eq!(lines.next(), Some(pid), "{out}");
}

#[tokio::test]
async fn stdin_is_a_pipe_from_the_parent_and_closes_at_wait() {
    let mut child = sh("read line; echo got \"$line\"; cat >/dev/null; echo eof")
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(out, "got hello\neof\n");
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn exit_statuses_are_those_std_reports() {
    for script in [
        "exit 0",
        "exit 3",
        "exit 255",
        "kill -KILL $$",
        "kill -TERM $$",
        "kill -PIPE $$",
        "ulimit -c 0; kill -SEGV $$",
        "ulimit -c 0; kill -QUIT $$",
    ] {
        let std_status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .status()
            .unwrap();
        let (ours, _, _) = output(&mut sh(script)).await;
        assert_eq!(ours.into_raw(), std_status.into_raw(), "{script}");
        assert_eq!(
            (ours.code(), ours.signal()),
            (std_status.code(), std_status.signal()),
            "{script}"
        );
        let (fallback, _, _) = output_watching(&mut sh(script), Exits::Sigchld).await;
        assert_eq!(
            fallback.into_raw(),
            std_status.into_raw(),
            "{script} (SIGCHLD)"
        );
    }
}

/// The errno of a spawn that fails, ours and `std`'s (which the executor's
/// messages were written for).
async fn spawn_errors(program: &Path, cwd: Option<&Path>, arg: &str) -> (Option<i32>, Option<i32>) {
    let mut ours = Command::new(program);
    let mut theirs = std::process::Command::new(program);
    ours.arg(arg).env("PATH", "/usr/bin:/bin");
    theirs.arg(arg).env_clear().env("PATH", "/usr/bin:/bin");
    if let Some(dir) = cwd {
        ours.current_dir(dir);
        theirs.current_dir(dir);
    }
    let ours = ours.spawn().err().and_then(|e| e.raw_os_error());
    let theirs = theirs.spawn().err().and_then(|e| e.raw_os_error());
    (ours, theirs)
}

#[tokio::test]
async fn a_spawn_that_fails_returns_the_same_errno_as_std() {
    let dir = tempfile::tempdir().unwrap();
    let plain = executable(dir.path(), "plain", "#!/bin/sh\n", 0o644);
    let missing_interpreter = executable(dir.path(), "orphan", "#!/nonexistent/sh\n", 0o755);
    let cases: [(&Path, Option<&Path>, String, i32); 7] = [
        (
            Path::new("/nonexistent/dts-program"),
            None,
            "x".into(),
            libc::ENOENT,
        ),
        (
            Path::new("no-such-program-dts"),
            None,
            "x".into(),
            libc::ENOENT,
        ),
        (&plain, None, "x".into(), libc::EACCES),
        (dir.path(), None, "x".into(), libc::EACCES),
        (&missing_interpreter, None, "x".into(), libc::ENOENT),
        (
            Path::new("/bin/true"),
            Some(Path::new("/nonexistent/dts-dir")),
            "x".into(),
            libc::ENOENT,
        ),
        (
            Path::new("/bin/true"),
            None,
            "x".repeat(200 * 1024),
            libc::E2BIG,
        ),
    ];
    for (program, cwd, arg, errno) in cases {
        let (ours, theirs) = spawn_errors(program, cwd, &arg).await;
        assert_eq!(ours, Some(errno), "{program:?} in {cwd:?}");
        assert_eq!(ours, theirs, "{program:?} in {cwd:?}");
    }
}

#[tokio::test]
async fn a_nul_byte_is_refused_as_std_refuses_it() {
    let mut command = sh("true");
    command.arg("a\0b");
    let error = command.spawn().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(error.to_string(), "nul byte found in provided data");
    let mut command = sh("true");
    command.env("NAME", "a\0b");
    assert_eq!(
        command.spawn().unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn a_bare_name_is_looked_up_in_the_childs_path_as_execvp_does() {
    let dir = tempfile::tempdir().unwrap();
    let denied = tempfile::tempdir().unwrap();
    executable(
        dir.path(),
        "dts-tool",
        "#!/bin/sh\necho tool \"$1\"\n",
        0o755,
    );
    executable(denied.path(), "dts-tool", "#!/bin/sh\necho denied\n", 0o644);
    // A file that is not executable is skipped for a later one...
    let path = format!(
        "/nonexistent:{}:{}",
        denied.path().display(),
        dir.path().display()
    );
    let mut command = Command::new("dts-tool");
    command.arg("x").env("PATH", &path);
    let (status, out, _) = output(&mut command).await;
    assert!(status.success());
    assert_eq!(out, "tool x\n");
    // ...and is what is reported when there is no other.
    let mut command = Command::new("dts-tool");
    command.env("PATH", denied.path());
    assert_eq!(
        command.spawn().unwrap_err().raw_os_error(),
        Some(libc::EACCES)
    );
    // Without PATH, glibc's default path.
    let (status, out, _) = output(Command::new("sh").arg("-c").arg("echo default")).await;
    assert!(status.success());
    assert_eq!(out, "default\n");
    // An empty entry is the working directory.
    let mut command = Command::new("dts-tool");
    command.env("PATH", ":/nonexistent").current_dir(dir.path());
    assert_eq!(output(&mut command).await.1, "tool \n");
    assert_eq!(
        Command::new("").spawn().unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
}

#[tokio::test]
async fn an_executable_without_a_shebang_runs_with_bin_sh_as_execvp_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = executable(dir.path(), "bare", "echo from sh: \"$1\"\n", 0o755);
    let (status, out, err) = output(Command::new(&script).arg("x")).await;
    assert!(status.success(), "{err}");
    assert_eq!(out, "from sh: x\n");
}

/// Bits of a signal set as /proc/<pid>/status shows it (hex).
fn signal_set(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

fn bit(signal: libc::c_int) -> u64 {
    1 << (signal - 1)
}

#[tokio::test]
async fn the_child_starts_with_default_handlers_sigpipe_default_and_an_empty_mask() {
    // SAFETY: signal dispositions and this thread's mask, set for the test:
    // a handler, an ignored signal, and blocked signals. Rust ignores SIGPIPE.
    unsafe {
        extern "C" fn handler(_: libc::c_int) {}
        let handler: extern "C" fn(libc::c_int) = handler;
        libc::signal(libc::SIGUSR1, handler as libc::sighandler_t);
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        assert_eq!(libc::signal(libc::SIGPIPE, libc::SIG_IGN), libc::SIG_IGN);
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut blocked);
        libc::sigaddset(&mut blocked, libc::SIGTERM);
        libc::sigaddset(&mut blocked, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &blocked, std::ptr::null_mut());
    }
    let mine = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let (status, out, _) = output(Command::new("/bin/cat").arg("/proc/self/status")).await;
    assert!(status.success());
    assert_eq!(signal_set(&out, "SigBlk:"), 0, "{out}");
    assert_eq!(signal_set(&out, "SigCgt:"), 0, "{out}");
    let ignored = signal_set(&out, "SigIgn:");
    assert_eq!(ignored & bit(libc::SIGPIPE), 0, "SIGPIPE is ignored: {out}");
    assert_ne!(
        ignored & bit(libc::SIGUSR2),
        0,
        "SIGUSR2 is not ignored: {out}"
    );
    // The parent's mask is back as it was.
    let after = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert_eq!(signal_set(&after, "SigBlk:"), signal_set(&mine, "SigBlk:"));
    assert_ne!(signal_set(&after, "SigBlk:") & bit(libc::SIGTERM), 0);
    // SAFETY: unblocks what this test blocked in its thread.
    unsafe {
        let mut blocked: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut blocked);
        libc::sigaddset(&mut blocked, libc::SIGTERM);
        libc::sigaddset(&mut blocked, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &blocked, std::ptr::null_mut());
    }
}

#[tokio::test]
async fn descriptors_above_2_do_not_reach_the_program_but_the_one_passed_as_3() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, write) = pipe().unwrap();
    // SAFETY: a pipe without O_CLOEXEC, as one inherited from a parent is.
    let mut leaky = [0; 2];
    assert_eq!(unsafe { libc::pipe(leaky.as_mut_ptr()) }, 0);
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg("echo through 3 >&3; echo ready; read line")
        .confine(Confinement {
            pass_as_3: Some(write.as_raw_fd()),
            ..Confinement::default()
        })
        .spawn()
        .unwrap();
    drop(write);
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    stdout.read_line(&mut ready).await.unwrap();
    assert_eq!(ready, "ready\n");
    // The shell waits in `read`: its descriptors, as it has them.
    let pid = child.id().unwrap();
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    fds.sort_unstable();
    assert_eq!(fds, [0, 1, 2, 3]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"done\n").await.unwrap();
    assert!(child.wait().await.unwrap().success());
    let mut through = String::new();
    pipe::Receiver::from_owned_fd(read)
        .unwrap()
        .read_to_string(&mut through)
        .await
        .unwrap();
    assert_eq!(through, "through 3\n");
    // SAFETY: closing the two descriptors this test made.
    unsafe {
        libc::close(leaky[0]);
        libc::close(leaky[1]);
    }
}

use tokio::net::unix::pipe;

#[tokio::test]
async fn the_open_files_soft_limit_is_set_when_asked() {
    let mut command = sh("ulimit -n");
    command.confine(Confinement {
        open_files: Some(1000),
        ..Confinement::default()
    });
    assert_eq!(output(&mut command).await.1, "1000\n");
}

#[tokio::test]
async fn a_child_dropped_before_it_exits_is_killed_and_reaped() {
    for exits in [Exits::supported(), Exits::Sigchld] {
        let child = Command::new("/bin/sleep")
            .arg("100")
            .spawn_watching(exits)
            .unwrap();
        let pid = child.id().unwrap();
        drop(child);
        assert!(
            eventually(|| gone(pid)).await,
            "{pid} still exists ({exits:?})"
        );
    }
}

#[test]
fn a_child_dropped_after_its_runtime_is_still_killed_and_reaped() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let child = runtime.block_on(async { Command::new("/bin/sleep").arg("100").spawn().unwrap() });
    let pid = child.id().unwrap();
    drop(runtime);
    drop(child);
    for _ in 0..400 {
        if gone(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{pid} still exists");
}

#[tokio::test]
async fn try_wait_reaps_an_exited_child_once() {
    for exits in [Exits::supported(), Exits::Sigchld] {
        let mut child = sh("exit 7").spawn_watching(exits).unwrap();
        let pid = child.id().unwrap();
        assert!(eventually(|| matches!(child.try_wait(), Ok(Some(_)))).await);
        assert_eq!(child.try_wait().unwrap().and_then(|s| s.code()), Some(7));
        assert_eq!(child.id(), None);
        assert_eq!(child.wait().await.unwrap().code(), Some(7));
        assert!(gone(pid));
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn a_child_switched_to_another_user_has_only_its_ids_and_no_new_privileges() {
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let mut command = sh(
        "grep -E '^(Uid|Gid|Groups|NoNewPrivs):' /proc/self/status; LD_SHOW_AUXV=1 /bin/true | grep AT_SECURE",
    );
    command.confine(Confinement {
        user: Some((65534, 65534)),
        ..Confinement::default()
    });
    let (status, out, err) = output(&mut command).await;
    assert!(status.success(), "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [
            vec!["Uid:", "65534", "65534", "65534", "65534"],
            // The saved gid, 0 until execve, is the gid after it.
            vec!["Gid:", "65534", "65534", "65534", "65534"],
            vec!["Groups:", "65534"],
            vec!["NoNewPrivs:", "1"],
            // Not a set-id execution (glibc would drop LD_* variables).
            vec!["AT_SECURE:", "0"],
        ],
        "{out}"
    );
}
