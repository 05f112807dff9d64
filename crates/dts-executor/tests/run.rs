//! Runs real child processes through `Executor::run`: how items reach scripts,
//! what scripts can see, output capture, and how items are stopped.
//!
//! One corpus runs six ways: as `dts run` runs items (the worker's own user
//! and directory) and as the service modes do (an unprivileged user when
//! this runs as root, a private directory per item) with each containment
//! mechanism, each with fresh processes and with warm shells.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dts_executor::{
    ContainmentChoice, ExecOutcome, ExecSettings, Executor, IsolationSettings, ItemContext,
    ItemLimits, Program,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Long enough never to fire in a passing test; a deadlock shows up as
/// `timed_out` instead of a hung test run.
const GENEROUS: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_millis(200);
/// Room a loaded 2-core machine may need beyond what an outcome should
/// take. Bounds on how long an item took are `expected + SLACK`, never
/// sub-second: each such test fails on what the bound guards against (an
/// item held for its 100 s sleep or the 10 s [`GENEROUS`] timeout), and
/// the outcome's flags and signal say which way it ended.
const SLACK: Duration = Duration::from_secs(5);
const TEST_PATH: &str = "/usr/bin:/bin";

/// How the corpus runs items in one of its six ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Way {
    /// Bash items in subshells of a warm shell.
    warm: bool,
    /// The service modes' isolation with this containment; `None` is `dts
    /// run`'s (the worker's user and directory, containment chosen
    /// automatically).
    isolated: Option<ContainmentChoice>,
}

thread_local! {
    /// The way this test runs; set by the wrappers `every_way!` makes.
    static WAY: std::cell::Cell<Way> = const {
        std::cell::Cell::new(Way { warm: false, isolated: None })
    };
}

/// Whether this process runs as root (and so items switch to `nobody`).
fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The user items run as in this way, when it is not this process's:
/// (name, home).
fn item_user() -> Option<(&'static str, &'static str)> {
    (WAY.get().isolated.is_some() && is_root()).then_some(("nobody", "/nonexistent"))
}

fn isolation(way: Way) -> IsolationSettings {
    match way.isolated {
        None => IsolationSettings::default(),
        Some(containment) => IsolationSettings {
            run_as: is_root().then(|| "nobody".to_owned()),
            private_workdir: true,
            scratch_root: None,
            containment,
        },
    }
}

fn settings() -> ExecSettings {
    let way = WAY.get();
    ExecSettings {
        kill_grace: GRACE,
        warm_shell: way.warm,
        isolation: isolation(way),
        ..ExecSettings::default()
    }
}

/// Whether this machine can run a way's tests. Cgroups need root (or a
/// delegated cgroup); where they are missing, the cgroup ways are skipped
/// with a message — unless `DTS_TEST_REQUIRE_CGROUPS` is set, as the test
/// script sets it when it runs as root, and then they fail.
fn way_available(way: Way) -> bool {
    let probe = Executor::with_base_env(
        ExecSettings {
            isolation: isolation(way),
            ..ExecSettings::default()
        },
        base_env(),
    );
    match probe {
        Ok(_) => true,
        Err(e) if std::env::var_os("DTS_TEST_REQUIRE_CGROUPS").is_none() => {
            eprintln!("skipping {way:?} on this machine: {e}");
            false
        }
        Err(e) => panic!("{way:?} must work here (DTS_TEST_REQUIRE_CGROUPS): {e}"),
    }
}

/// Runs each named `async fn` six ways: `fresh_process::<name>` (every item
/// a new `bash -c`, as `dts run` runs it), `warm_shell::<name>` (items in
/// subshells of a warm shell), and both again isolated as the service modes
/// run items, with a cgroup per item (`cgroup`, `cgroup_warm`) and with the
/// subreaper fallback (`subreaper`, `subreaper_warm`). One corpus, so every
/// mechanism is shown to give the same results wherever the docs do not say
/// otherwise.
macro_rules! every_way {
    ($($name:ident),* $(,)?) => {
        every_way!(@way fresh_process, false, None; $($name),*);
        every_way!(@way warm_shell, true, None; $($name),*);
        every_way!(@way cgroup, false, Some(dts_executor::ContainmentChoice::Cgroup); $($name),*);
        every_way!(@way cgroup_warm, true, Some(dts_executor::ContainmentChoice::Cgroup); $($name),*);
        every_way!(@way subreaper, false, Some(dts_executor::ContainmentChoice::Subreaper); $($name),*);
        every_way!(@way subreaper_warm, true, Some(dts_executor::ContainmentChoice::Subreaper); $($name),*);
    };
    (@way $module:ident, $warm:expr, $isolated:expr; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $name() {
                    let way = super::Way { warm: $warm, isolated: $isolated };
                    if !super::way_available(way) {
                        return;
                    }
                    super::WAY.set(way);
                    super::$name().await;
                }
            )*
        }
    };
}

/// A temporary directory every user may use, so items that run as
/// `nobody` can enter it, write to it and run programs from it.
fn shared_dir() -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// The worker's environment as tests pretend it is: two allowed variables
/// and two secrets.
fn base_env() -> Vec<(OsString, OsString)> {
    [
        ("PATH", TEST_PATH),
        ("HOME", "/home/dts-test"),
        ("DTS_WORKER_TOKEN", "hunter2"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}

fn executor_with(settings: ExecSettings) -> Executor {
    Executor::with_base_env(settings, base_env()).expect("executor")
}

fn executor() -> Executor {
    executor_with(settings())
}

fn bash(script: &str) -> Program {
    Program::Script {
        interpreter: "bash".into(),
        script: script.into(),
    }
}

fn item(input: &str) -> ItemContext<'_> {
    item_bytes(input.as_bytes())
}

fn item_bytes(input: &[u8]) -> ItemContext<'_> {
    ItemContext {
        task_id: "task-1",
        shard_index: 2,
        index: 7,
        attempt: 2,
        worker_id: "worker-9",
        input,
        limits: ItemLimits::default(),
    }
}

async fn run(executor: &Executor, program: &Program, input: &str) -> ExecOutcome {
    run_for(executor, program, input, GENEROUS).await
}

async fn run_for(
    executor: &Executor,
    program: &Program,
    input: &str,
    timeout: Duration,
) -> ExecOutcome {
    executor
        .run(program, &item(input), timeout, &CancellationToken::new())
        .await
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No such process, or only its zombie (a killed orphan that init has not
/// reaped yet; pid 1 in a container may never reap it).
fn process_is_gone(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    if unsafe { libc::kill(pid, 0) } == -1
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return true;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    state == Some('Z')
}

/// Output the test knows to be text, as text.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8 ({e}): {bytes:?}"))
}

fn first_line_pid(stdout: &[u8]) -> i32 {
    text(stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"))
}

/// Creates an executable file through a child shell, so this process never
/// holds a write descriptor that a concurrently forked child could inherit
/// (which makes exec fail with ETXTBSY).
fn write_executable(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    let status = std::process::Command::new("sh")
        .args(["-c", r#"printf '%s' "$2" > "$1" && chmod 755 "$1""#, "sh"])
        .arg(&path)
        .arg(content)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// Kills a process the test let escape, even when the test fails.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: plain kill of a pid this test started.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// Items that would run code, split words or look like options if they were
/// ever pasted into a script or parsed as flags.
fn hostile_items(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        format!("$(touch {d}/dollar-paren)"),
        format!("`touch {d}/backtick`"),
        format!("'; touch {d}/single-quote; echo '"),
        format!("\"; touch {d}/double-quote; echo \""),
        format!("x; touch {d}/semicolon"),
        format!("x | touch {d}/pipe"),
        format!("x && touch {d}/and\ntouch {d}/newline\n"),
        "${HOME} $PATH $1 $0 *".to_owned(),
        "-n".to_owned(),
        "--help".to_owned(),
        "-e".to_owned(),
        "back\\slash \\n %s %d".to_owned(),
        "héllo wörld ✓ 日本語 🎉".to_owned(),
        "  leading and trailing spaces  ".to_owned(),
        String::new(),
    ]
}

fn assert_nothing_created(dir: &Path) {
    let created: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(created.is_empty(), "an item ran code: {created:?}");
}

async fn the_item_is_dollar_one_and_dollar_zero_is_dts_item() {
    let out = run(
        &executor(),
        &bash(r#"printf '%s|%s|%s' "$0" "$#" "$1""#),
        "apple pie",
    )
    .await;
    assert_eq!(text(&out.stdout), "dts-item|1|apple pie");
    assert!(out.succeeded(), "{out:?}");
}

async fn the_item_is_written_to_stdin_with_a_newline_and_stdin_is_closed() {
    let out = run(&executor(), &bash("cat"), "line one\nline two").await;
    assert_eq!(text(&out.stdout), "line one\nline two\n");
    assert!(out.succeeded(), "{out:?}");
}

async fn the_dts_variables_describe_the_item() {
    let script = r#"printf '%s|%s|%s|%s|%s|%s' "$DTS_ITEM" "$DTS_ITEM_INDEX" "$DTS_TASK_ID" "$DTS_SHARD_INDEX" "$DTS_ATTEMPT" "$DTS_WORKER_ID""#;
    let out = run(&executor(), &bash(script), "pear").await;
    assert_eq!(text(&out.stdout), "pear|7|task-1|2|2|worker-9");
}

async fn hostile_items_reach_the_script_verbatim_and_run_nothing() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let script = bash(r#"printf '%s\0' "$1" "$DTS_ITEM" "$#"; cat"#);
    for input in hostile_items(dir.path()) {
        let out = run(&executor, &script, &input).await;
        assert_eq!(
            text(&out.stdout),
            format!("{input}\0{input}\x001\0{input}\n"),
            "item {input:?}"
        );
        assert_eq!(text(&out.stderr), "", "item {input:?}");
        assert!(out.succeeded(), "item {input:?}: {out:?}");
    }
    assert_nothing_created(dir.path());
}

async fn hostile_items_reach_a_direct_program_as_its_only_argument() {
    let bin = shared_dir();
    let work = shared_dir();
    let tool = write_executable(
        bin.path(),
        "tool",
        "#!/bin/sh\nprintf '%s\\0' \"$#\" \"$@\"\n",
    );
    let executor = executor_with(ExecSettings {
        workdir: Some(work.path().into()),
        ..settings()
    });
    for input in hostile_items(work.path()) {
        let out = run(&executor, &Program::Direct(tool.clone()), &input).await;
        assert_eq!(text(&out.stdout), format!("1\0{input}\0"), "item {input:?}");
        assert!(out.succeeded(), "item {input:?}: {out:?}");
    }
    assert_nothing_created(work.path());
}

async fn a_long_item_reaches_dollar_one_stdin_and_dts_item_whole() {
    let input = "0123456789".repeat(10_000);
    let script = r#"s=$(cat); [ "$s" = "$1" ] && [ "$1" = "$DTS_ITEM" ] && printf '%s' "${#1}""#;
    let out = run(&executor(), &bash(script), &input).await;
    assert_eq!(text(&out.stdout), "100000");
    assert!(out.succeeded(), "{out:?}");
}

async fn an_item_too_long_for_an_argument_is_a_clear_error() {
    let input = "x".repeat(200_000);
    let out = run(&executor(), &bash("true"), &input).await;
    let error = out.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("could not start `bash`: Argument list too long"),
        "{error}"
    );
    assert!(error.contains("(200000 bytes)"), "{error}");
    assert!(!out.succeeded());
}

async fn the_longest_item_the_system_accepts_still_runs() {
    let input = "z".repeat(128 * 1024 - "DTS_ITEM=".len() - 1);
    let out = run(&executor(), &bash(r#"printf '%s' "${#DTS_ITEM}""#), &input).await;
    assert_eq!(
        text(&out.stdout),
        input.len().to_string(),
        "{:?}",
        out.error
    );
}

async fn an_item_with_a_nul_byte_is_a_clear_error() {
    let out = run(&executor(), &bash("true"), "a\0b").await;
    assert_eq!(
        out.error.as_deref(),
        Some(
            "could not start `bash`: the item contains a NUL byte, which a process argument cannot carry"
        )
    );
    assert_eq!(out.exit_code, None);
}

async fn a_script_that_never_reads_stdin_does_not_block_on_a_large_item() {
    // Larger than a pipe's 64 KiB buffer, so the stdin write cannot finish.
    let input = "y".repeat(120_000);
    let out = run(&executor(), &bash("sleep 0.2; echo ok"), &input).await;
    assert_eq!(text(&out.stdout), "ok\n");
    assert!(out.succeeded(), "{out:?}");
}

async fn scripts_see_only_the_allow_listed_variables_and_dts_ones() {
    // What the programs a script starts get: the allow-list, `DTS_*`, and
    // what bash itself adds (PWD, SHLVL and `_`).
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let out = run(&executor, &bash("env | sort"), "x").await;
    // Items that run as another user get its name and home instead of the
    // worker's.
    let (user, home) = match item_user() {
        Some((name, home)) => (format!("LOGNAME={name}\n"), home),
        None => (String::new(), "/home/dts-test"),
    };
    let user_line = match item_user() {
        Some((name, _)) => format!("USER={name}\n"),
        None => String::new(),
    };
    assert_eq!(
        text(&out.stdout),
        format!(
            "DTS_ATTEMPT=2\nDTS_ITEM=x\nDTS_ITEM_INDEX=7\nDTS_SHARD_INDEX=2\nDTS_TASK_ID=task-1\n\
             DTS_WORKER_ID=worker-9\n\
             HOME={home}\n{user}PATH=/usr/bin:/bin\nPWD={}\nSHLVL=1\n{user_line}_=/usr/bin/env\n",
            dir.path().display()
        )
    );
}

async fn path_falls_back_to_the_system_directories_when_the_worker_has_none() {
    let executor =
        Executor::with_base_env(settings(), [("HOME".into(), "/h".into())]).expect("executor");
    let out = run(&executor, &bash(r#"printf '%s' "$PATH""#), "x").await;
    assert_eq!(text(&out.stdout), "/usr/local/bin:/usr/bin:/bin");
    assert_eq!(
        executor.path_var(),
        Some("/usr/local/bin:/usr/bin:/bin".as_ref())
    );
}

#[test]
fn a_new_executor_takes_path_from_the_process_environment() {
    let expected =
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    assert_eq!(
        Executor::new(ExecSettings::default())
            .expect("executor")
            .path_var(),
        Some(expected.as_os_str())
    );
}

async fn scripts_run_in_the_configured_workdir() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let out = run(&executor, &bash("pwd -P"), "x").await;
    assert_eq!(
        text(&out.stdout),
        format!("{}\n", dir.path().canonicalize().unwrap().display())
    );
}

async fn prepare_runs_a_single_word_relative_to_the_workdir_directly() {
    let dir = shared_dir();
    write_executable(dir.path(), "tool", "#!/bin/sh\necho \"tool got $1\"\n");
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let program = executor.prepare(" ./tool \n", "bash");
    assert_eq!(program, Program::Direct("./tool".into()));
    let out = run(&executor, &program, "plum").await;
    assert_eq!(text(&out.stdout), "tool got plum\n");
}

async fn prepare_looks_up_a_bare_word_in_the_scripts_path() {
    let executor = executor();
    let program = executor.prepare("echo", "bash");
    assert!(
        matches!(&program, Program::Direct(p) if p.ends_with("echo")),
        "{program:?}"
    );
    assert_eq!(run(&executor, &program, "fig").await.stdout, b"fig\n");
}

async fn a_missing_interpreter_is_an_outcome_naming_it() {
    let program = Program::Script {
        interpreter: "bashx".into(),
        script: "true".into(),
    };
    let out = run(&executor(), &program, "x").await;
    assert_eq!(
        out.error.as_deref(),
        Some("could not start `bashx`: No such file or directory (os error 2)")
    );
    assert_eq!((out.exit_code, out.signal), (None, None));
    assert!(!out.succeeded());
}

async fn a_direct_program_without_execute_permission_is_an_outcome_naming_it() {
    let dir = shared_dir();
    let path = dir.path().join("plain");
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    let out = run(&executor(), &Program::Direct(path.clone()), "x").await;
    assert_eq!(
        out.error,
        Some(format!(
            "could not start `{}`: Permission denied (os error 13)",
            path.display()
        ))
    );
}

async fn a_missing_workdir_is_named_in_the_error() {
    let executor = executor_with(ExecSettings {
        workdir: Some("/nonexistent/dts-dir".into()),
        ..settings()
    });
    let out = run(&executor, &bash("true"), "x").await;
    assert_eq!(
        out.error.as_deref(),
        Some(
            "could not start `bash` in `/nonexistent/dts-dir`: No such file or directory (os error 2)"
        )
    );
}

async fn the_exit_code_is_recorded() {
    let out = run(&executor(), &bash("echo failing >&2; exit 3"), "x").await;
    assert_eq!((out.exit_code, out.signal), (Some(3), None));
    assert_eq!(text(&out.stderr), "failing\n");
    assert!(!out.succeeded());
    assert_eq!(out.error, None);
}

#[tokio::test]
async fn a_signal_that_kills_the_script_is_recorded() {
    let out = run(&executor(), &bash("kill -KILL $$"), "x").await;
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGKILL)));
    assert!(!out.timed_out && !out.cancelled);
    assert!(!out.succeeded());
}

async fn the_wall_duration_is_recorded() {
    let out = run(&executor(), &bash("sleep 0.3"), "x").await;
    assert!(
        out.duration >= Duration::from_millis(300),
        "{:?}",
        out.duration
    );
    assert!(
        out.duration < Duration::from_millis(300) + SLACK,
        "{:?}",
        out.duration
    );
}

async fn a_megabyte_on_stderr_before_any_stdout_does_not_deadlock() {
    let script = "head -c 1048576 /dev/zero | tr '\\0' e >&2; echo done";
    let out = run(&executor(), &bash(script), "x").await;
    assert_eq!(text(&out.stdout), "done\n");
    assert!(!out.stdout_truncated);
    assert_eq!(text(&out.stderr), "e".repeat(64 * 1024));
    assert!(out.stderr_truncated);
    assert!(
        out.succeeded(),
        "timed out or failed: {:?}",
        (out.timed_out, out.exit_code)
    );
}

async fn each_stream_is_capped_separately() {
    let executor = executor_with(ExecSettings {
        output_cap_bytes: 5,
        ..settings()
    });
    let out = run(&executor, &bash("printf hello; printf 'hello!' >&2"), "x").await;
    assert_eq!((text(&out.stdout), out.stdout_truncated), ("hello", false));
    assert_eq!((text(&out.stderr), out.stderr_truncated), ("hello", true));
    assert_eq!((out.stdout_bytes, out.stderr_bytes), (5, 6));
}

async fn output_past_the_cap_is_counted_in_full() {
    let executor = executor_with(ExecSettings {
        output_cap_bytes: 1000,
        ..settings()
    });
    let out = run(&executor, &bash("head -c 588895 /dev/zero"), "x").await;
    assert_eq!(out.stdout, vec![0u8; 1000]);
    assert!(out.stdout_truncated);
    assert_eq!(out.stdout_bytes, 588_895);
}

/// Latin-1 "café\tx", a byte that is never UTF-8 and an invalid sequence:
/// an input is bytes, and the script gets exactly those.
const NOT_UTF8: &[u8] = b"caf\xe9\tx \xff\xfe";
const NOT_UTF8_HEX: &str = "63 61 66 e9 09 78 20 ff fe";

async fn an_input_that_is_not_utf8_reaches_dollar_one_dts_item_and_stdin_exactly() {
    let script = r#"for s in "$1" "$DTS_ITEM" "$(cat)"; do printf %s "$s" | od -An -tx1 | tr -s ' \n' ' '; echo; done"#;
    let out = executor()
        .run(
            &bash(script),
            &item_bytes(NOT_UTF8),
            GENEROUS,
            &CancellationToken::new(),
        )
        .await;
    assert!(out.succeeded(), "{out:?}");
    let line = format!(" {NOT_UTF8_HEX} \n");
    assert_eq!(text(&out.stdout), line.repeat(3));
}

async fn binary_output_is_kept_byte_for_byte() {
    let out = run(&executor(), &bash(r#"printf '\377\376ok\000end'"#), "x").await;
    assert_eq!(out.stdout, b"\xff\xfeok\x00end");
}

async fn a_timeout_kills_the_script_and_its_background_children() {
    let out = run_for(
        &executor(),
        &bash("sleep 100 & echo $!; wait"),
        "x",
        Duration::from_millis(300),
    )
    .await;
    assert!(out.timed_out && !out.cancelled, "{out:?}");
    assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGTERM)));
    assert!(
        out.duration < Duration::from_millis(300) + SLACK,
        "{:?}",
        out.duration
    );
    assert!(!out.succeeded());
    let child = first_line_pid(&out.stdout);
    assert!(
        wait_until(GENEROUS, || process_is_gone(child)).await,
        "sleep {child} survived"
    );
}

async fn a_script_ignoring_sigterm_is_killed_after_the_grace() {
    let timeout = Duration::from_millis(200);
    let out = run_for(
        &executor(),
        &bash("trap '' TERM; sleep 100; echo survived"),
        "x",
        timeout,
    )
    .await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(libc::SIGKILL));
    assert_eq!(text(&out.stdout), "");
    assert!(out.duration >= timeout + GRACE, "{:?}", out.duration);
    assert!(out.duration < timeout + GRACE + SLACK, "{:?}", out.duration);
}

async fn cancelling_kills_the_script_within_the_grace() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let started = dir.path().join("started");
    let cancel = CancellationToken::new();
    let program = bash("sleep 100 & echo $!; touch started; wait");
    let ctx = item("x");
    let (out, cancelled_at) =
        tokio::join!(executor.run(&program, &ctx, GENEROUS, &cancel), async {
            assert!(wait_until(GENEROUS, || started.exists()).await);
            cancel.cancel();
            Instant::now()
        },);
    // `run` is the last of the two to finish.
    let ended_at = Instant::now();
    assert!(out.cancelled && !out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(libc::SIGTERM));
    assert!(ended_at - cancelled_at < GRACE + SLACK);
    let child = first_line_pid(&out.stdout);
    assert!(
        wait_until(GENEROUS, || process_is_gone(child)).await,
        "sleep {child} survived"
    );
}

async fn cancelling_a_script_that_ignores_sigterm_kills_its_group_after_the_grace() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let started = dir.path().join("started");
    let cancel = CancellationToken::new();
    let program =
        bash("trap '' TERM; sleep 100 & echo $!; touch started; wait; wait; echo survived");
    let ctx = item("x");
    let (out, cancelled_at) =
        tokio::join!(executor.run(&program, &ctx, GENEROUS, &cancel), async {
            assert!(wait_until(GENEROUS, || started.exists()).await);
            cancel.cancel();
            Instant::now()
        },);
    let ended_at = Instant::now();
    assert!(out.cancelled && !out.timed_out, "{out:?}");
    assert_eq!(out.signal, Some(libc::SIGKILL));
    assert!(ended_at - cancelled_at >= GRACE);
    assert!(ended_at - cancelled_at < GRACE + SLACK);
    let child = first_line_pid(&out.stdout);
    assert!(
        wait_until(GENEROUS, || process_is_gone(child)).await,
        "sleep {child} survived"
    );
}

async fn an_item_whose_task_is_already_cancelled_is_not_started() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = executor
        .run(&bash("touch ran"), &item("x"), GENEROUS, &cancel)
        .await;
    assert!(out.cancelled, "{out:?}");
    assert_eq!((out.exit_code, out.signal, out.error), (None, None, None));
    assert_nothing_created(dir.path());
}

async fn a_background_process_left_behind_is_killed_without_delaying_the_item() {
    let out = run(&executor(), &bash("sleep 100 & echo $!"), "x").await;
    // Not held for the 100 s its leftover `sleep` holds the output pipe
    // (the item would time out): the group was killed when the script
    // exited. Whether the pipe closed before the executor's one-second
    // drain limit would take a sub-second bound, which a loaded machine
    // breaks.
    assert!(out.succeeded(), "{out:?}");
    assert!(out.duration < SLACK, "{:?}", out.duration);
    let child = first_line_pid(&out.stdout);
    assert!(
        wait_until(GENEROUS, || process_is_gone(child)).await,
        "sleep {child} survived"
    );
}

async fn a_process_that_escaped_the_group_cannot_hang_the_item() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    // The escapee keeps stdout open; wait until it is in its own session.
    let script = "setsid sh -c 'touch escaped; exec sleep 30' & echo $!; \
                  while [ ! -e escaped ]; do sleep 0.01; done; echo parent done";
    let out = run(&executor, &bash(script), "x").await;
    let _escapee = KillOnDrop(first_line_pid(&out.stdout));
    assert!(out.succeeded(), "{out:?}");
    assert!(
        text(&out.stdout).ends_with("\nparent done\n"),
        "{:?}",
        out.stdout
    );
    // Not held for the escapee's 30 s.
    assert!(out.duration < SLACK, "{:?}", out.duration);
}

async fn dropping_a_running_item_kills_its_process_group() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        ..settings()
    });
    let bg_pid = dir.path().join("bg-pid");
    let program = bash("sleep 100 & echo $! > bg-pid.tmp; mv bg-pid.tmp bg-pid; wait");
    let ctx = item("x");
    let cancel = CancellationToken::new();
    let mut run = Box::pin(executor.run(&program, &ctx, GENEROUS, &cancel));
    tokio::select! {
        out = &mut run => panic!("the item ended on its own: {out:?}"),
        ready = wait_until(GENEROUS, || bg_pid.exists()) => assert!(ready),
    }
    drop(run);
    let child: i32 = std::fs::read_to_string(&bg_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until(GENEROUS, || process_is_gone(child)).await,
        "sleep {child} survived"
    );
}

#[test]
fn executors_can_be_shared_and_runs_spawned_on_any_thread() {
    fn assert_send<T: Send>(_: &T) {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Executor>();
    let (executor, program, ctx, cancel) = (
        executor(),
        bash("true"),
        item("x"),
        CancellationToken::new(),
    );
    let run = executor.run(&program, &ctx, GENEROUS, &cancel);
    assert_send(&run);
}

/// Finding 4 of the security review: `setsid sleep 1006 & sleep 100` with a
/// timeout was recorded as timed out while `sleep 1006` kept running,
/// reparented to init.
async fn a_process_that_escaped_with_setsid_dies_when_its_item_times_out() {
    let out = run_for(
        &executor(),
        &bash("setsid sleep 1006 & echo $!; sleep 100"),
        "x",
        Duration::from_millis(300),
    )
    .await;
    assert!(out.timed_out, "{out:?}");
    let escapee = first_line_pid(&out.stdout);
    let _cleanup = KillOnDrop(escapee);
    assert!(
        wait_until(GENEROUS, || process_is_gone(escapee)).await,
        "the setsid escapee {escapee} survived its item"
    );
}

async fn a_process_that_escaped_with_setsid_dies_when_its_item_exits() {
    // A double fork: the escapee's parent exits at once, so the escapee is
    // an orphan while the item still runs, and must die only when it ends.
    let script = "(setsid sleep 1007 & echo $! >&3) 3>&1; sleep 0.2; \
                  echo still-running; exit 0";
    let out = run(&executor(), &bash(script), "x").await;
    assert!(out.succeeded(), "{out:?}");
    assert!(
        text(&out.stdout).ends_with("still-running\n"),
        "{:?}",
        out.stdout
    );
    let escapee = first_line_pid(&out.stdout);
    let _cleanup = KillOnDrop(escapee);
    assert!(
        wait_until(GENEROUS, || process_is_gone(escapee)).await,
        "the double-forked escapee {escapee} survived its item"
    );
}

/// Finding 10: descriptors the worker inherited (a pipe's write end, say)
/// reached every item.
async fn items_get_no_descriptor_beyond_stdin_stdout_and_stderr() {
    let mut ends = [0; 2];
    // SAFETY: pipe fills the two-element array it is given. Without
    // O_CLOEXEC, as a descriptor inherited from a parent is.
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    // No pipe in the script (bash would hold its ends while `ls` looks), and
    // not `ls` alone (bash would exec it, and `ls` would list its own).
    let out = run(&executor(), &bash("ls /proc/$BASHPID/fd; exit 0"), "x").await;
    assert_eq!(text(&out.stdout), "0\n1\n2\n", "{out:?}");
    // SAFETY: closing the two descriptors this test made.
    unsafe {
        libc::close(ends[0]);
        libc::close(ends[1]);
    }
}

async fn each_item_runs_in_a_fresh_private_directory_removed_afterwards() {
    if WAY.get().isolated.is_none() {
        // `dts run` runs items where it was started, on purpose.
        return;
    }
    let executor = executor();
    let program = bash("pwd -P; ls -A | wc -l; stat -c '%a %U' .; echo data > mine");
    let first = run(&executor, &program, "x").await;
    let second = run(&executor, &program, "x").await;
    assert!(
        first.succeeded() && second.succeeded(),
        "{first:?} {second:?}"
    );
    let lines = |out: &ExecOutcome| -> Vec<String> {
        text(&out.stdout).lines().map(String::from).collect()
    };
    let (one, two) = (lines(&first), lines(&second));
    assert_ne!(one[0], two[0], "two items shared a directory");
    let owner = item_user().map_or_else(whoami, |(name, _)| name.to_owned());
    for lines in [&one, &two] {
        assert_eq!(lines[1], "0", "the directory was not empty: {lines:?}");
        assert_eq!(lines[2], format!("700 {owner}"), "{lines:?}");
        assert!(
            !Path::new(&lines[0]).exists(),
            "{} was not removed",
            lines[0]
        );
    }
}

/// The name of this process's user.
fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Finding 3: items read the worker's environment (and with it its token)
/// from `/proc/$PPID/environ`, and its files.
async fn an_item_running_as_another_user_cannot_read_the_workers_process_or_files() {
    if item_user().is_none() {
        // Same user: nothing but dts's own hardening (PR_SET_DUMPABLE, which
        // the dts binary sets at start) stands between them; tested there.
        return;
    }
    // Private to this process's user, as dts's data and configuration are.
    let secret_dir = tempfile::tempdir().unwrap();
    let private = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    private(secret_dir.path(), 0o700);
    let secret = secret_dir.path().join("dts.properties");
    std::fs::write(&secret, "server.auth-token=hunter2hunter2hunter2\n").unwrap();
    private(&secret, 0o600);
    let me = std::process::id();
    let script = format!(
        "cat /proc/{me}/environ; cat /proc/{me}/cmdline >/dev/null && echo cmdline-readable; \
         ls /proc/{me}/fd; cat {}; ls {}; echo end",
        secret.display(),
        secret_dir.path().display()
    );
    let out = run(&executor(), &bash(&script), "x").await;
    assert!(!text(&out.stdout).contains("hunter2"), "{out:?}");
    assert!(!text(&out.stdout).contains("DTS_WORKER_TOKEN"), "{out:?}");
    assert_eq!(text(&out.stdout), "cmdline-readable\nend\n", "{out:?}");
    assert_eq!(
        text(&out.stderr).matches("Permission denied").count(),
        4,
        "{out:?}"
    );
}

/// Finding 8: with warm shells, an item could write to its shell's report
/// channel (`/proc/$$/fd/1`), was recorded as exit 0 without finishing, and
/// the next item's output was attributed to the wrong index.
async fn an_item_cannot_forge_its_warm_shells_reports() {
    if !WAY.get().warm {
        // A fresh process has no warm shell to forge reports of.
        return;
    }
    let executor = executor();
    let forge = bash(
        r#"for fd in /proc/$$/fd/*; do printf 'x0\ns1\no\nx0\n' > "$fd"; done 2>/dev/null
           printf 'x0\n' >&3; printf 'x0\n' >&4
           sleep 0.3; echo finished; exit 7"#,
    );
    let out = run(&executor, &forge, "x").await;
    assert_eq!(
        (out.exit_code, text(&out.stdout), &out.error),
        (Some(7), "finished\n", &None),
        "{out:?}"
    );
    let next = run(&executor, &bash(r#"echo "next $1 $DTS_ITEM_INDEX""#), "y").await;
    assert_eq!(text(&next.stdout), "next y 7\n", "{next:?}");
    assert!(next.succeeded(), "{next:?}");
}

/// dts raises its own open-files soft limit; items get the one it was given.
async fn items_start_with_the_open_files_limit_dts_was_given() {
    let executor = executor_with(ExecSettings {
        items_open_files: Some(1000),
        ..settings()
    });
    let out = run(&executor, &bash("ulimit -n"), "x").await;
    assert_eq!(text(&out.stdout), "1000\n", "{out:?}");
}

/// dts ignores SIGPIPE (as Rust programs do) and blocks every signal in the
/// thread that starts an item: an item's programs still get SIGPIPE's
/// default (a writer into a closed pipe dies of it) and no blocked signal.
/// (The mask of the shell itself is bash's business: a warm item's subshell
/// blocks SIGCHLD, and unblocks it for the programs it runs.)
async fn items_start_with_sigpipe_default_and_no_blocked_signal() {
    let script = "yes | head -n 1 >/dev/null; echo \"${PIPESTATUS[0]}\"; \
                  grep '^SigBlk:' /proc/self/status; exit 0";
    let out = run(&executor(), &bash(script), "x").await;
    assert_eq!(
        text(&out.stdout),
        "141\nSigBlk:\t0000000000000000\n",
        "{out:?}"
    );
}

// --- Warm shells: what must be the same as a fresh process, and what differs.

fn warm_executor() -> Executor {
    executor_with(ExecSettings {
        warm_shell: true,
        ..settings()
    })
}

fn fresh_executor() -> Executor {
    executor_with(ExecSettings {
        warm_shell: false,
        ..settings()
    })
}

/// Everything a script can observe about its shell that is not per process:
/// arguments, flags, options, traps, functions, variables, limits, the
/// signal dispositions commands inherit, open descriptors, and how errors are
/// numbered and worded. The expansion error is last on purpose (see
/// `in_a_warm_shell_an_expansion_error_ends_the_script`).
const SHELL_STATE_PROBE: &str = r#"printf '%s|' "$0" "$#" "$1" "$-" "$BASH_SUBSHELL" "$LINENO" "$SHLVL" "$BASH_EXECUTION_STRING" "$PPID"; echo
set -o; shopt -p; trap -p; declare -F; alias; umask; ulimit -a
declare -p | grep -vE '^declare -[-a-zA-Z]+ (BASHPID|BASH_COMMAND|RANDOM|SRANDOM|EPOCHREALTIME|EPOCHSECONDS|SECONDS|_)(=|$)'
grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/$BASHPID/fd
no-such-command-dts; echo "status $?"; (exit 3); echo "status $?"
read -r line; echo "stdin [$line]"
f() { return 4; }; f; echo "status $?"
echo "$(( 1 + ))"; echo "not reached: an expansion error ends the line""#;

/// Fails naming the first line where a warm item's output differs.
fn assert_same_lines(warm: &str, fresh: &str, round: u32) {
    let differs = warm
        .lines()
        .zip(fresh.lines())
        .enumerate()
        .find(|(_, (w, f))| w != f);
    if let Some((line, (w, f))) = differs {
        panic!("round {round}, line {}: warm {w:?}, fresh {f:?}", line + 1);
    }
    assert_eq!(
        warm.lines().count(),
        fresh.lines().count(),
        "round {round}: {warm:?} vs {fresh:?}"
    );
}

#[tokio::test]
async fn a_script_sees_the_same_shell_in_a_warm_shell_as_in_a_fresh_process() {
    let (fresh, warm) = (fresh_executor(), warm_executor());
    let program = bash(SHELL_STATE_PROBE);
    let expected = run(&fresh, &program, "it em").await;
    assert_eq!(expected.exit_code, Some(1), "{expected:?}");
    // A second warm item too: the first one must not have changed the shell.
    for round in 1..=2 {
        let got = run(&warm, &program, "it em").await;
        assert_same_lines(text(&got.stdout), text(&expected.stdout), round);
        assert_same_lines(text(&got.stderr), text(&expected.stderr), round);
        assert_eq!(
            (got.exit_code, got.signal, &got.error),
            (Some(1), None, &None),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn an_item_changes_nothing_the_next_item_in_the_same_warm_shell_sees() {
    let dir = shared_dir();
    let executor = executor_with(ExecSettings {
        workdir: Some(dir.path().into()),
        warm_shell: true,
        ..settings()
    });
    let change = bash(
        "x=1; export Y=2; f() { :; }; cd /; umask 077; alias a=b; set -e; \
         shopt -s nullglob; trap 'echo trapped' EXIT; ulimit -n 64; sleep 100 & true",
    );
    let look = bash(
        r#"echo "x=${x-unset} Y=${Y-unset} $(declare -F) $(pwd -P) $(umask) $(alias) $- \
           $(shopt -p nullglob) $(ulimit -n) $$""#,
    );
    let before = run(&executor, &look, "x").await;
    let changed = run(&executor, &change, "x").await;
    assert_eq!(text(&changed.stdout), "trapped\n", "{changed:?}");
    let after = run(&executor, &look, "x").await;
    assert_eq!(after.stdout, before.stdout);
    assert!(
        text(&after.stdout).starts_with("x=unset Y=unset  "),
        "{:?}",
        text(&after.stdout)
    );
}

#[tokio::test]
async fn items_running_at_the_same_time_get_warm_shells_of_their_own() {
    let dir = shared_dir();
    let executor = warm_executor();
    // Each item marks that it started and waits for the other's mark: items
    // run one after the other (in one shell) would wait for a mark that
    // never comes, until the timeout.
    let program = bash(&format!(
        r#"cd '{}'; touch "started-$1"; other=$([ "$1" = a ] && echo b || echo a)
        while [ ! -e "started-$other" ]; do sleep 0.01; done; echo $$"#,
        dir.path().display()
    ));
    let (a, b) = tokio::join!(run(&executor, &program, "a"), run(&executor, &program, "b"));
    assert!(
        a.succeeded() && b.succeeded(),
        "each item saw the other running: {a:?} {b:?}"
    );
    assert_ne!(
        text(&a.stdout),
        text(&b.stdout),
        "two items shared one shell"
    );
}

#[tokio::test]
async fn in_a_warm_shell_dollar_dollar_is_the_shell_and_bashpid_the_item() {
    // Documented differences: `$$` stays the same from item to item, and
    // `$!` starts as the previous item's pid instead of empty.
    let executor = warm_executor();
    let program = bash(r#"echo "$$ $BASHPID"; echo "[$!]" >&2"#);
    let first = run(&executor, &program, "x").await;
    let second = run(&executor, &program, "x").await;
    let pids = |out: &ExecOutcome| -> (String, String) {
        let (shell, item) = text(&out.stdout).trim().split_once(' ').unwrap();
        (shell.to_owned(), item.to_owned())
    };
    let ((shell1, item1), (shell2, item2)) = (pids(&first), pids(&second));
    assert_eq!(text(&first.stderr), "[]\n");
    assert_eq!(text(&second.stderr), format!("[{item1}]\n"));
    assert_eq!(shell1, shell2);
    assert_ne!(item1, item2);
    assert_ne!(shell1, item1);
}

#[tokio::test]
async fn in_a_warm_shell_a_signal_dts_did_not_send_is_an_exit_code_of_128_plus_n() {
    // Documented difference: bash reports a subshell killed by signal N as
    // `$?` = 128+N, which cannot be told from `exit 128+N`.
    let out = run(&warm_executor(), &bash("kill -KILL $BASHPID"), "x").await;
    assert_eq!(
        (out.exit_code, out.signal),
        (Some(128 + libc::SIGKILL), None)
    );
    assert!(!out.succeeded());
}

#[tokio::test]
async fn a_script_that_kills_its_warm_shell_fails_clearly_and_the_next_item_runs() {
    let executor = warm_executor();
    let out = run(&executor, &bash("kill -KILL $$; sleep 100"), "x").await;
    let error = out.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("the warm shell `bash` ended while running the item"),
        "{out:?}"
    );
    // Not held for the `sleep 100`, nor until the 10 s timeout.
    assert!(out.duration < SLACK, "{:?}", out.duration);
    assert!(!out.succeeded());
    let next = run(&executor, &bash("echo fine"), "x").await;
    assert_eq!(text(&next.stdout), "fine\n", "{next:?}");
}

#[tokio::test]
async fn in_a_warm_shell_an_expansion_error_ends_the_script() {
    // Documented difference: after an expansion error a fresh `bash -c` goes
    // on with the next line; a subshell (which a warm item is) stops there.
    let program = bash("echo \"$(( $1 ))\"\necho next line");
    let fresh = run(&fresh_executor(), &program, "1 +").await;
    assert_eq!(
        (text(&fresh.stdout), fresh.exit_code),
        ("next line\n", Some(0))
    );
    let warm = run(&warm_executor(), &program, "1 +").await;
    assert_eq!((text(&warm.stdout), warm.exit_code), ("", Some(1)));
    assert_eq!(warm.stderr, fresh.stderr);
}

#[tokio::test]
async fn in_a_warm_shell_the_items_shell_does_not_ignore_sigquit() {
    // Documented difference: a fresh bash ignores SIGQUIT in itself; a
    // subshell of the warm shell (job control on) has it at its default.
    // Where this process already ignores SIGQUIT, both inherit that and
    // there is no difference to show.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .unwrap();
    if ignored & (1 << (libc::SIGQUIT - 1)) != 0 {
        eprintln!("SIGQUIT is ignored by the test process: nothing to compare");
        return;
    }
    let program = bash("kill -QUIT $BASHPID; echo after");
    let fresh = run(&fresh_executor(), &program, "x").await;
    assert_eq!((text(&fresh.stdout), fresh.exit_code), ("after\n", Some(0)));
    let warm = run(&warm_executor(), &program, "x").await;
    assert_eq!(text(&warm.stdout), "");
    assert_eq!(warm.exit_code, Some(128 + libc::SIGQUIT), "{warm:?}");
}

#[tokio::test]
async fn a_warm_shell_that_died_while_idle_is_replaced_without_failing_an_item() {
    let executor = warm_executor();
    let program = bash("echo $$");
    let first = run(&executor, &program, "x").await;
    let shell = first_line_pid(&first.stdout);
    // SAFETY: plain kill of the warm shell this test's executor started.
    unsafe { libc::kill(shell, libc::SIGKILL) };
    assert!(wait_until(GENEROUS, || process_is_gone(shell)).await);
    let second = run(&executor, &program, "x").await;
    assert!(second.succeeded(), "{second:?}");
    assert_ne!(first_line_pid(&second.stdout), shell);
}

#[tokio::test]
async fn only_bash_scripts_run_in_a_warm_shell() {
    // Another interpreter runs as a fresh process: its `$$` is its own.
    let executor = warm_executor();
    let program = Program::Script {
        interpreter: "sh".into(),
        script: r#"[ "$$" = "$(cut -d' ' -f4 /proc/self/stat)" ] && echo own"#.into(),
    };
    assert_eq!(run(&executor, &program, "x").await.stdout, b"own\n");
}

every_way!(
    the_item_is_dollar_one_and_dollar_zero_is_dts_item,
    the_item_is_written_to_stdin_with_a_newline_and_stdin_is_closed,
    the_dts_variables_describe_the_item,
    hostile_items_reach_the_script_verbatim_and_run_nothing,
    hostile_items_reach_a_direct_program_as_its_only_argument,
    a_long_item_reaches_dollar_one_stdin_and_dts_item_whole,
    an_item_too_long_for_an_argument_is_a_clear_error,
    the_longest_item_the_system_accepts_still_runs,
    an_item_with_a_nul_byte_is_a_clear_error,
    a_script_that_never_reads_stdin_does_not_block_on_a_large_item,
    scripts_see_only_the_allow_listed_variables_and_dts_ones,
    path_falls_back_to_the_system_directories_when_the_worker_has_none,
    scripts_run_in_the_configured_workdir,
    prepare_runs_a_single_word_relative_to_the_workdir_directly,
    prepare_looks_up_a_bare_word_in_the_scripts_path,
    a_missing_interpreter_is_an_outcome_naming_it,
    a_direct_program_without_execute_permission_is_an_outcome_naming_it,
    a_missing_workdir_is_named_in_the_error,
    the_exit_code_is_recorded,
    the_wall_duration_is_recorded,
    a_megabyte_on_stderr_before_any_stdout_does_not_deadlock,
    each_stream_is_capped_separately,
    binary_output_is_kept_byte_for_byte,
    output_past_the_cap_is_counted_in_full,
    an_input_that_is_not_utf8_reaches_dollar_one_dts_item_and_stdin_exactly,
    a_timeout_kills_the_script_and_its_background_children,
    a_script_ignoring_sigterm_is_killed_after_the_grace,
    cancelling_kills_the_script_within_the_grace,
    cancelling_a_script_that_ignores_sigterm_kills_its_group_after_the_grace,
    an_item_whose_task_is_already_cancelled_is_not_started,
    a_background_process_left_behind_is_killed_without_delaying_the_item,
    a_process_that_escaped_the_group_cannot_hang_the_item,
    dropping_a_running_item_kills_its_process_group,
    a_process_that_escaped_with_setsid_dies_when_its_item_times_out,
    a_process_that_escaped_with_setsid_dies_when_its_item_exits,
    items_get_no_descriptor_beyond_stdin_stdout_and_stderr,
    each_item_runs_in_a_fresh_private_directory_removed_afterwards,
    an_item_running_as_another_user_cannot_read_the_workers_process_or_files,
    an_item_cannot_forge_its_warm_shells_reports,
    items_start_with_the_open_files_limit_dts_was_given,
    items_start_with_sigpipe_default_and_no_blocked_signal,
);

// --- Resource limits: a task's memoryMb and cpus, enforced by cgroups.

/// An executor for the limit tests (each way of running: fresh and warm),
/// or `None` where this machine cannot enforce `limit` (then the test is
/// skipped, unless `DTS_TEST_REQUIRE_CGROUPS` says it must run).
fn limiting_executor(warm: bool, limit: &str) -> Option<Executor> {
    let executor = executor_with(ExecSettings {
        warm_shell: warm,
        ..settings()
    });
    if executor.isolation().limits.contains(&limit) {
        return Some(executor);
    }
    assert!(
        std::env::var_os("DTS_TEST_REQUIRE_CGROUPS").is_none(),
        "{limit} must be enforceable here (DTS_TEST_REQUIRE_CGROUPS): {:?}",
        executor.isolation()
    );
    eprintln!("skipping: this machine cannot enforce {limit}");
    None
}

fn limited(input: &str, limits: ItemLimits) -> ItemContext<'_> {
    ItemContext {
        limits,
        ..item(input)
    }
}

#[tokio::test]
async fn an_item_over_its_memory_limit_is_killed_and_says_so() {
    for warm in [false, true] {
        let Some(executor) = limiting_executor(warm, "memoryMb") else {
            return;
        };
        let hog = bash("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}");
        let small = ItemLimits {
            memory_mb: Some(64),
            milli_cpus: None,
        };
        let out = executor
            .run(
                &hog,
                &limited("x", small),
                GENEROUS,
                &CancellationToken::new(),
            )
            .await;
        assert!(!out.succeeded(), "warm {warm}: {out:?}");
        assert_eq!(
            out.error.as_deref(),
            Some("killed: the item used more memory than the task allows (memoryMb = 64)"),
            "warm {warm}: {out:?}"
        );
        // The same cgroup, reused, lets the next item use what it is allowed.
        let enough = ItemLimits {
            memory_mb: Some(512),
            milli_cpus: None,
        };
        let fits = bash("x=$(head -c 50000000 /dev/zero | tr '\\0' a); echo ${#x}");
        let out = executor
            .run(
                &fits,
                &limited("x", enough),
                GENEROUS,
                &CancellationToken::new(),
            )
            .await;
        assert_eq!(text(&out.stdout), "50000000\n", "warm {warm}: {out:?}");
        assert!(out.succeeded(), "warm {warm}: {out:?}");
    }
}

/// Prints how often the item's own cgroup was throttled, from whichever
/// hierarchy holds its `cpu` controller (v1 `cpu`, or v2).
const THROTTLED_PROBE: &str = r#"timeout 0.6 sh -c 'while :; do :; done'
v1=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' /proc/self/cgroup)
v2=$(awk -F: '$1 == 0 {print $3}' /proc/self/cgroup)
for f in /sys/fs/cgroup/cpu$v1/cpu.stat /sys/fs/cgroup/cpu,cpuacct$v1/cpu.stat \
         /sys/fs/cgroup$v2/cpu.stat /sys/fs/cgroup/unified$v2/cpu.stat; do
  n=$(awk '$1 == "nr_throttled" {print $2}' "$f" 2>/dev/null)
  if [ -n "$n" ]; then echo "$n"; exit 0; fi
done
echo none"#;

#[tokio::test]
async fn an_item_limited_to_a_fraction_of_a_cpu_is_throttled() {
    for warm in [false, true] {
        let Some(executor) = limiting_executor(warm, "cpus") else {
            return;
        };
        let fifth = ItemLimits {
            memory_mb: None,
            milli_cpus: Some(200),
        };
        let out = executor
            .run(
                &bash(THROTTLED_PROBE),
                &limited("x", fifth),
                GENEROUS,
                &CancellationToken::new(),
            )
            .await;
        let throttled: u64 = text(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("warm {warm}: {out:?}"));
        assert!(
            throttled > 0,
            "warm {warm}: never throttled at 0.2 CPU: {out:?}"
        );
    }
}

/// Every interpreter convention passes the input as an argument of its own,
/// so it arrives exactly, bytes that are not UTF-8 included. (node turns
/// its arguments into text, so it cannot see such bytes; it is left out.)
#[tokio::test]
async fn every_interpreter_convention_gets_an_input_that_is_not_utf8_exactly() {
    let hex = NOT_UTF8_HEX.replace(' ', "");
    let cases = [
        ("sh", r#"printf %s "$1" | od -An -tx1 | tr -d ' \n'"#),
        (
            "python3",
            "import os, sys; print(os.fsencode(sys.argv[1]).hex(), end='')",
        ),
        ("perl", r#"print unpack("H*", $ARGV[0])"#),
        ("ruby", r#"print ARGV[0].unpack1("H*")"#),
    ];
    let executor = executor_with(ExecSettings {
        kill_grace: GRACE,
        ..ExecSettings::default()
    });
    for (interpreter, script) in cases {
        if !Path::new("/usr/bin").join(interpreter).exists() {
            eprintln!("skipping {interpreter}: not installed");
            continue;
        }
        let program = Program::Script {
            interpreter: interpreter.into(),
            script: script.into(),
        };
        let out = executor
            .run(
                &program,
                &item_bytes(NOT_UTF8),
                GENEROUS,
                &CancellationToken::new(),
            )
            .await;
        assert!(out.succeeded(), "{interpreter}: {out:?}");
        assert_eq!(text(&out.stdout), hex, "{interpreter}");
    }
}
