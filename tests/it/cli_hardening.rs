//! Safe by default, the process and client side (issue 9): what reaches a
//! terminal, the data directory's permissions, descriptors and limits a node
//! inherits, and tokens kept off the command line.

use crate::common::{DEADLINE, DtsUp, dts_binary, run_dts, task};
use serde_json::json;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// Terminal injection (finding 6)
// ---------------------------------------------------------------------------

/// What the hostile item prints on stdout: OSC 52 (write the clipboard),
/// erase the line, OSC 0 (set the window title), and the C1 CSI.
const HOSTILE_STDOUT: &[u8] = b"\x1b]52;c;aGVsbG8=\x07\x1b[2K\x1b]0;title\x07\xc2\x9bX\n";
/// The same as a terminal should show it.
const HOSTILE_SHOWN: &str = "\\x1b]52;c;aGVsbG8=\\x07\\x1b[2K\\x1b]0;title\\x07\\x9bX";
/// What the hostile item prints on stderr.
const HOSTILE_STDERR: &[u8] = b"err\x1b[31m\n";
/// The template that prints them.
const HOSTILE_TEMPLATE: &str = r"printf '\033]52;c;aGVsbG8=\007\033[2K\033]0;title\007\302\233X\n'; printf 'err\033[31m\n' >&2";

/// Which of a command's streams is the terminal.
#[derive(Clone, Copy)]
pub(crate) enum Screen {
    Stdout,
    Stderr,
}

/// What a command wrote to the terminal and to the other stream (a pipe).
pub(crate) struct Shown {
    pub(crate) screen: Vec<u8>,
    pub(crate) piped: Vec<u8>,
    pub(crate) status: ExitStatus,
}

/// A new pseudo-terminal, in the mode a terminal starts in (cooked: line
/// editing, Ctrl-C sends SIGINT): its master and its slave end. Both ends
/// are close-on-exec from the start, so only the child we hand the slave to
/// holds it (else reading the master would not end when that child exits).
pub(crate) fn open_pty() -> (File, OwnedFd) {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: posix_openpt returns a new descriptor (or -1).
    let master = unsafe { libc::posix_openpt(flags) };
    assert!(
        master >= 0,
        "posix_openpt: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the descriptor is new and owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: grantpt, unlockpt and ptsname_r act on the master we own and
    // write at most `name.len()` bytes into `name`.
    unsafe {
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
    }
    // SAFETY: `name` is a NUL-terminated path written by ptsname_r.
    let slave = unsafe { libc::open(name.as_ptr(), flags) };
    assert!(
        slave >= 0,
        "open the slave: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the descriptor is new and owned by nobody else.
    (File::from(master), unsafe { OwnedFd::from_raw_fd(slave) })
}

/// A pseudo-terminal in raw mode (no `\n` to `\r\n`): the master end reads
/// exactly the bytes the program wrote to the slave end.
fn pseudo_terminal() -> (File, OwnedFd) {
    let (master, slave) = open_pty();
    // SAFETY: the termios calls act on the slave we own and a struct we own.
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut termios), 0);
        libc::cfmakeraw(&mut termios);
        assert_eq!(
            libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &termios),
            0
        );
    }
    (master, slave)
}

/// Reads `reader` to its end on a thread of its own; a terminal's master
/// ends with EIO once no process holds the slave.
fn read_to_end(mut reader: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buffer = [0; 4096];
        // ends: at EOF or an error; the caller's receive has the deadline.
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => all.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(all);
    });
    rx
}

/// Waits for `child` to exit, or kills it and panics at the deadline
/// saying `what`.
fn wait_for_exit(child: &mut Child, what: &str) -> ExitStatus {
    dts_testkit::wait_for_exit(child, DEADLINE, what)
}

/// Runs `dts ARGS` with its `screen` stream on a terminal and the other on
/// a pipe.
pub(crate) fn on_terminal(args: &[&str], screen: Screen) -> Shown {
    let (master, slave) = pseudo_terminal();
    let mut command = Command::new(dts_binary());
    command
        .args(args)
        .env_remove("DTS_AUTH_TOKEN")
        .stdin(Stdio::null());
    match screen {
        Screen::Stdout => command.stdout(slave).stderr(Stdio::piped()),
        Screen::Stderr => command.stdout(Stdio::piped()).stderr(slave),
    };
    let mut child = command.spawn().expect("start dts");
    // The command holds our copy of the slave: drop it, so the master
    // reads to its end when dts exits.
    drop(command);
    let piped: Box<dyn Read + Send> = match screen {
        Screen::Stdout => Box::new(child.stderr.take().expect("stderr")),
        Screen::Stderr => Box::new(child.stdout.take().expect("stdout")),
    };
    let (on_screen, on_pipe) = (read_to_end(master), read_to_end(piped));
    let what = format!("dts {args:?}");
    let screen = on_screen
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what} did not finish writing to the terminal"));
    let piped = on_pipe
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{what} did not finish writing to its pipe"));
    let status = wait_for_exit(&mut child, &what);
    Shown {
        screen,
        piped,
        status,
    }
}

/// Panics unless every byte is a newline, a tab or printable ASCII: no
/// escape, no BEL, no C1, no carriage return reached the terminal.
fn assert_inert(screen: &[u8]) {
    for &byte in screen {
        assert!(
            byte == b'\n' || byte == b'\t' || (0x20..0x7f).contains(&byte),
            "byte {byte:#04x} reached the terminal: {:?}",
            text(screen)
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A task on `up` whose one item prints [`HOSTILE_STDOUT`] and
/// [`HOSTILE_STDERR`]; returns its id once it ended.
async fn hostile_task(up: &DtsUp) -> String {
    let id = up.submit(task(HOSTILE_TEMPLATE, &["a".into()])).await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let results = up.all_results(&id, "").await;
    assert_eq!(
        results[0]["stdout"].as_str().map(str::as_bytes),
        Some(HOSTILE_STDOUT),
        "the item's output as stored"
    );
    id
}

#[tokio::test]
async fn results_on_a_terminal_show_escape_sequences_an_item_printed_as_text() {
    let up = DtsUp::start(&[]);
    let id = hostile_task(&up).await;

    let shown = on_terminal(&["results", &id, "--server", &up.base], Screen::Stdout);
    assert!(shown.status.success(), "{}", text(&shown.piped));
    assert_inert(&shown.screen);
    let screen = text(&shown.screen);
    assert!(
        screen.contains(&format!("  stdout| {HOSTILE_SHOWN}\n")),
        "{screen}"
    );
    assert!(screen.contains("  stderr| err\\x1b[31m\n"), "{screen}");

    let json = on_terminal(
        &["results", &id, "--server", &up.base, "--json"],
        Screen::Stdout,
    );
    assert_inert(&json.screen);
    let results: serde_json::Value = serde_json::from_slice(&json.screen).expect("JSON");
    assert_eq!(
        results[0]["stdout"].as_str().map(str::as_bytes),
        Some(HOSTILE_STDOUT)
    );
}

#[tokio::test]
async fn results_with_raw_or_into_a_pipe_give_the_items_bytes_unchanged() {
    let up = DtsUp::start(&[]);
    let id = hostile_task(&up).await;
    let mut expected = b"  stdout| ".to_vec();
    expected.extend_from_slice(HOSTILE_STDOUT);

    let raw = on_terminal(
        &["results", &id, "--server", &up.base, "--raw"],
        Screen::Stdout,
    );
    assert!(raw.status.success(), "{}", text(&raw.piped));
    assert!(contains(&raw.screen, &expected), "{:?}", text(&raw.screen));

    let piped = run_dts(
        Command::new(dts_binary())
            .args(["results", &id, "--server", &up.base])
            .env_remove("DTS_AUTH_TOKEN"),
    );
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    assert!(
        contains(&piped.stdout, &expected),
        "{:?}",
        text(&piped.stdout)
    );
}

#[test]
fn dts_run_escapes_each_stream_only_when_it_is_a_terminal() {
    let args = ["run", HOSTILE_TEMPLATE, "a", "b"];
    let twice = |bytes: &[u8]| [bytes, bytes].concat();

    let stdout_on_screen = on_terminal(&args, Screen::Stdout);
    assert!(stdout_on_screen.status.success());
    assert_inert(&stdout_on_screen.screen);
    assert_eq!(
        text(&stdout_on_screen.screen),
        format!("{HOSTILE_SHOWN}\n{HOSTILE_SHOWN}\n")
    );
    assert_eq!(stdout_on_screen.piped, twice(HOSTILE_STDERR));

    let stderr_on_screen = on_terminal(&args, Screen::Stderr);
    assert!(stderr_on_screen.status.success());
    assert_inert(&stderr_on_screen.screen);
    assert!(
        text(&stderr_on_screen.screen).starts_with("err\\x1b[31m\nerr\\x1b[31m\n"),
        "{}",
        text(&stderr_on_screen.screen)
    );
    assert_eq!(stderr_on_screen.piped, twice(HOSTILE_STDOUT));

    let raw = on_terminal(&["run", "--raw", HOSTILE_TEMPLATE, "a"], Screen::Stdout);
    assert_eq!(raw.screen, HOSTILE_STDOUT);
}

/// A server that answers every request with `status` and `body`, as a
/// hostile server (or whatever stands between) could; serves a few
/// connections, then stops. Returns its URL.
fn canned_server(status: &'static str, body: String) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(DEADLINE));
            // A GET has no body: the request ends with an empty line.
            let mut request = Vec::new();
            let mut byte = [0; 1];
            // ends: at the blank line, or when the client closes.
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                request.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn status_and_error_messages_from_a_hostile_server_reach_a_terminal_escaped() {
    // A whole task view: the client reads the server's answer as one.
    let mut task = json!({
        "id": "6f1c1a39-52bb-4a57-9d0a-3d2b1f5a9e10",
        "name": "\x1b]0;owned\x07nice",
        "status": "FAILED",
        "templateFunction": "echo $1", "interpreter": "bash",
        "timeoutSecs": 60, "retries": 0, "deadlineSecs": null,
        "memoryMb": null, "cpus": null,
        "error": "\x1b]52;c;aGk=\x07boom",
        "itemsTotal": 1, "itemsSucceeded": 0, "itemsFailed": 1,
        "chunksToExecute": 1, "chunksExecuted": 1,
        "createdAt": "2024-01-01T00:00:00.000Z", "startedAt": null, "finishedAt": null,
    });
    let server = canned_server("200 OK", task.to_string());
    let status = on_terminal(&["status", "x", "--server", &server], Screen::Stdout);
    assert!(status.status.success(), "{}", text(&status.piped));
    assert_inert(&status.screen);
    let screen = text(&status.screen);
    assert!(
        screen.contains("name:      \\x1b]0;owned\\x07nice\n"),
        "{screen}"
    );
    assert!(screen.contains("status:    FAILED\n"), "{screen}");
    assert!(
        screen.contains("error:     \\x1b]52;c;aGk=\\x07boom\n"),
        "{screen}"
    );

    // A status dts does not know is refused, and the refusal quotes it escaped.
    task["status"] = json!("FAILED\x1b[2K");
    let server = canned_server("200 OK", task.to_string());
    let unknown = on_terminal(&["status", "x", "--server", &server], Screen::Stderr);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown.piped));
    assert_inert(&unknown.screen);
    let screen = text(&unknown.screen);
    assert!(
        screen.contains("unknown variant `FAILED\\x1b[2K`"),
        "{screen}"
    );

    let error = json!({"error": {"message": "no task \x1b]0;owned\x07 here"}});
    let server = canned_server("404 Not Found", error.to_string());
    for extra in [&[][..], &["--raw"][..]] {
        let mut args = vec!["status", "x", "--server", &server];
        args.extend_from_slice(extra);
        let failed = on_terminal(&args, Screen::Stderr);
        assert_eq!(failed.status.code(), Some(2), "{extra:?}");
        assert_inert(&failed.screen);
        let screen = text(&failed.screen);
        assert!(
            screen.contains("dts: error: no task \\x1b]0;owned\\x07 here (HTTP 404)"),
            "{extra:?}: {screen}"
        );
    }
}

// ---------------------------------------------------------------------------
// World-readable state (finding 7)
// ---------------------------------------------------------------------------

/// Every entry of `dir`, and `dir`, with its mode; none may give its group
/// or others any access.
fn assert_private(dir: &std::path::Path) {
    let mut entries = vec![dir.to_path_buf()];
    for entry in std::fs::read_dir(dir).expect("read the data directory") {
        entries.push(entry.expect("entry").path());
    }
    assert!(entries.len() >= 4, "dts up left too few files: {entries:?}");
    for path in entries {
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }
}

/// A umask that lets everyone read what is created, as most users have.
fn readable_umask(command: &mut Command) {
    // SAFETY: umask is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
}

#[tokio::test]
async fn the_data_directory_and_every_file_in_it_are_private_to_dts_user() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let up = DtsUp::start_in_with(&data, &[], &[], readable_umask);
    let id = up.submit(task("echo secret $1", &["a".into()])).await;
    up.wait_ended(&id).await;
    let files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("-wal")),
        "no WAL file to check: {files:?}"
    );
    assert_private(&data);
}

#[tokio::test]
async fn a_data_directory_an_older_dts_left_readable_is_made_private() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let first = DtsUp::start_in(&data, &[], &[]);
    let id = first.submit(task("echo $1", &["a".into()])).await;
    first.wait_ended(&id).await;
    first.terminate();
    // As an older dts left it: everyone may read.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let up = DtsUp::start_in_with(&data, &[], &[], readable_umask);
    let id = up.submit(task("echo $1", &["b".into()])).await;
    up.wait_ended(&id).await;
    assert_private(&data);
}

// ---------------------------------------------------------------------------
// Leaked descriptors (finding 10)
// ---------------------------------------------------------------------------

/// The descriptor number the inherited pipe's write end gets.
const INHERITED_FD: libc::c_int = 5;

/// A pipe, both ends close-on-exec in this process.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are new and owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Makes `command` inherit `fd` as [`INHERITED_FD`], without close-on-exec,
/// as a careless parent would.
fn inherit(command: &mut Command, fd: &OwnedFd) {
    let fd = fd.as_raw_fd();
    // SAFETY: dup2 and fcntl are async-signal-safe; they act on the child's
    // descriptor table only.
    unsafe {
        command.pre_exec(move || {
            let rc = if fd == INHERITED_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, INHERITED_FD)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// An item that lists its own shell's descriptors (the `; echo` keeps
/// bash from exec-ing `ls` in its place).
const LIST_FDS: &str = "ls /proc/$$/fd; echo listed";

#[tokio::test]
async fn items_of_dts_up_do_not_inherit_descriptors_dts_inherited() {
    let (_read, write) = pipe();
    let dir = tempfile::TempDir::new().unwrap();
    let up = DtsUp::start_in_with(&dir.path().join("data"), &[], &[], |command| {
        inherit(command, &write)
    });
    // The pipe did reach dts, and dts marked it close-on-exec.
    let target = std::fs::read_link(format!("/proc/{}/fd/{INHERITED_FD}", up.pid()))
        .expect("dts up holds the inherited descriptor");
    assert!(target.to_string_lossy().starts_with("pipe:"), "{target:?}");
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/{INHERITED_FD}", up.pid()))
        .expect("fdinfo");
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .expect("flags in fdinfo");
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "{fdinfo}");

    let id = up.submit(task(LIST_FDS, &["a".into()])).await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let results = up.all_results(&id, "").await;
    assert_eq!(results[0]["stdout"], "0\n1\n2\nlisted\n", "{}", results[0]);
}

#[test]
fn items_of_dts_run_do_not_inherit_descriptors_dts_inherited() {
    let (_read, write) = pipe();
    let mut command = Command::new(dts_binary());
    command
        .args(["run", LIST_FDS, "a"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    inherit(&mut command, &write);
    let mut child = command.spawn().expect("start dts run");
    drop(command);
    let (stdout, stderr) = (
        read_to_end(child.stdout.take().expect("stdout")),
        read_to_end(child.stderr.take().expect("stderr")),
    );
    let status = wait_for_exit(&mut child, "dts run");
    let stdout = stdout.recv_timeout(DEADLINE).expect("dts run's output");
    let stderr = stderr.recv_timeout(DEADLINE).expect("dts run's errors");
    assert!(status.success(), "{}", text(&stderr));
    assert_eq!(text(&stdout), "0\n1\n2\nlisted\n");
}

// ---------------------------------------------------------------------------
// Open-files limit (finding 2)
// ---------------------------------------------------------------------------

/// The soft and hard open-files limits of process `pid`.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("an open-files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().expect("soft").to_string();
    let hard = fields.next().expect("hard").to_string();
    (soft, hard)
}

#[test]
fn dts_up_raises_its_open_files_soft_limit_to_the_hard_limit() {
    let mut ours = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut ours) },
        0
    );
    let low = libc::rlimit {
        rlim_cur: 256,
        rlim_max: ours.rlim_max.min(4096),
    };
    assert!(
        low.rlim_max > low.rlim_cur,
        "the hard limit is too low to test"
    );
    let dir = tempfile::TempDir::new().unwrap();
    let up = DtsUp::start_in_with(&dir.path().join("data"), &[], &[], |command| {
        // SAFETY: setrlimit is async-signal-safe and acts on the child only.
        unsafe {
            command.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &low) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let (soft, hard) = open_files_limits(up.pid());
    assert_eq!(hard, low.rlim_max.to_string());
    assert_eq!(soft, hard, "the soft limit was not raised");
}

// ---------------------------------------------------------------------------
// Tokens off the command line (finding 11, client part)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn client_commands_read_the_token_from_a_file_or_the_environment() {
    const TOKEN: &str = "a-token-of-more-than-16-bytes";
    let dir = tempfile::TempDir::new().unwrap();
    let up = DtsUp::start_in(&dir.path().join("data"), &[], &[("DTS_AUTH_TOKEN", TOKEN)]);
    let dts = |args: &[&str], env_token: Option<&str>| {
        let mut command = Command::new(dts_binary());
        command
            .args(["tasks", "--server", &up.base])
            .args(args)
            .env_remove("DTS_AUTH_TOKEN");
        if let Some(token) = env_token {
            command.env("DTS_AUTH_TOKEN", token);
        }
        run_dts(&mut command)
    };
    let with_newline = dir.path().join("token");
    std::fs::write(&with_newline, format!("{TOKEN}\n")).unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-token-at-all-but-long").unwrap();
    let file = with_newline.to_str().unwrap();

    let none = dts(&[], None);
    assert_eq!(none.status.code(), Some(2), "no token was refused");
    assert!(text(&none.stderr).contains("401"), "{}", text(&none.stderr));

    let from_file = dts(&["--token-file", file], None);
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));
    assert!(text(&from_file.stdout).starts_with("id "));

    let from_env = dts(&[], Some(TOKEN));
    assert!(from_env.status.success(), "{}", text(&from_env.stderr));

    let file_wins = dts(&["--token-file", file], Some("wrong-token-in-environment"));
    assert!(file_wins.status.success(), "{}", text(&file_wins.stderr));

    let wrong = dts(&["--token-file", wrong.to_str().unwrap()], None);
    assert_eq!(wrong.status.code(), Some(2));

    let both = dts(&["--token-file", file, "--token", TOKEN], None);
    assert_eq!(both.status.code(), Some(2), "two token flags were refused");
    let stderr = text(&both.stderr);
    assert!(
        stderr.contains("--token-file") && stderr.contains("--token <TOKEN>"),
        "the error names both flags: {stderr}"
    );

    let missing = dir.path().join("missing");
    let unreadable = dts(&["--token-file", missing.to_str().unwrap()], Some(TOKEN));
    assert_eq!(unreadable.status.code(), Some(2));
    let stderr = text(&unreadable.stderr);
    assert!(
        stderr.contains(&format!("cannot read the token file {}", missing.display())),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Progress and a server that is not dts (issue 12)
// ---------------------------------------------------------------------------

/// The frames a progress bar drew: indicatif redraws a line after `\r`.
pub(crate) fn frames(screen: &[u8]) -> Vec<String> {
    text(screen)
        .split(['\r', '\n'])
        .filter(|frame| frame.contains("items"))
        .map(|frame| frame.replace("\x1b[2K", "").trim_end().to_string())
        .collect()
}

#[tokio::test]
async fn the_progress_bar_starts_without_a_zero_rate_and_shows_failures_as_they_happen() {
    let up = DtsUp::start(&["--cores", "2"]);
    let inputs: Vec<String> = ["bad", "a", "b"].map(String::from).to_vec();
    let id = up
        .submit(task("[ \"$1\" = bad ] && exit 1; sleep 2", &inputs))
        .await;
    let shown = on_terminal(&["watch", &id, "--server", &up.base], Screen::Stderr);
    assert_eq!(shown.status.code(), Some(1), "{}", text(&shown.piped));
    let frames = frames(&shown.screen);
    assert!(!frames.is_empty(), "{:?}", text(&shown.screen));
    for frame in &frames {
        assert!(
            !frame.contains("eta 0s") && !frame.contains(" 0/s"),
            "{frame:?}"
        );
        // At most one decimal: `2.5/s`, never `2.5000/s`.
        if let Some(end) = frame.find("/s, eta ") {
            let rate = frame[..end].rsplit(' ').next().unwrap_or_default();
            let decimals = rate.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 1 && rate.parse::<f64>().is_ok(), "{frame:?}");
        }
    }
    assert!(
        frames
            .iter()
            .any(|f| f.contains("INPROGRESS") && f.contains("/3 items, 1 failed")),
        "the failure shows while the task runs: {frames:?}"
    );
    let last = frames.last().map(String::as_str).unwrap_or_default();
    assert!(last.ends_with("FAILED     3/3 items, 1 failed"), "{last:?}");
}

#[tokio::test]
async fn the_progress_bar_of_a_cancelled_task_shows_the_items_that_ran() {
    let up = DtsUp::start(&[]);
    let mut body = task("echo $1", &["a".into(), "b".into()]);
    // No worker has this label: nothing runs before the cancel.
    body["requires"] = json!({"gpu": "none-here"});
    let id = up.submit(body).await;
    let (status, _) = up
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert!(status.is_success(), "{status}");
    let shown = on_terminal(&["watch", &id, "--server", &up.base], Screen::Stderr);
    assert_eq!(shown.status.code(), Some(1), "{}", text(&shown.piped));
    let frames = frames(&shown.screen);
    let last = frames.last().map(String::as_str).unwrap_or_default();
    assert!(last.ends_with("CANCELLED  0/2 items"), "{frames:?}");
    assert!(!text(&shown.screen).contains("2/2"), "{frames:?}");
}

#[test]
fn a_web_page_from_something_that_is_not_dts_is_not_dumped() {
    let page = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
                <center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n\
                </body>\r\n</html>\r\n";
    let server = canned_server("404 Not Found", page.to_string());
    let out = run_dts(
        Command::new(dts_binary())
            .args(["status", "6f1c1a39", "--server", &server])
            .env_remove("DTS_AUTH_TOKEN"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr),
        format!(
            "dts: error: {server} answered HTTP 404 Not Found with a web page, \
             not dts's JSON: is --server the URL of a dts server?\n"
        )
    );
}
