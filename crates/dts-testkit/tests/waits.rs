//! The wait helpers: a wait that never ends fails saying what it waited for.

use dts_testkit::{
    finish_within, output_within, wait_for, wait_for_blocking, wait_for_exit, wait_until,
};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A deadline these tests let pass on purpose.
const SHORT: Duration = Duration::from_millis(100);

/// The message of a panic payload.
fn message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// Runs `f`, which must panic, and returns its message.
fn panic_of(f: impl FnOnce()) -> String {
    let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("the wait should have failed");
    message(payload)
}

/// Runs the future on a task of its own, which must panic; returns its message.
async fn async_panic_of(f: impl std::future::Future<Output = ()> + Send + 'static) -> String {
    let error = tokio::spawn(f)
        .await
        .expect_err("the wait should have failed");
    message(error.into_panic())
}

#[tokio::test]
async fn a_wait_returns_the_checks_value_on_the_first_check_that_holds() {
    let mut checks = 0;
    let value = wait_for(Duration::from_secs(30), "the third check", || {
        checks += 1;
        let seen = checks;
        async move { if seen == 3 { Ok(seen * 10) } else { Err(seen) } }
    })
    .await;
    assert_eq!((value, checks), (30, 3));
}

#[test]
fn a_wait_for_what_never_happens_fails_naming_it_and_what_was_last_seen() {
    let failure = panic_of(|| {
        wait_for_blocking(SHORT, "the answer to be 42", || Err::<(), _>(41));
    });
    assert!(failure.contains("for the answer to be 42"), "{failure}");
    assert!(failure.contains("last seen: 41"), "{failure}");
}

#[tokio::test]
async fn an_async_wait_for_what_never_happens_fails_naming_it() {
    let failure = async_panic_of(async {
        wait_until(SHORT, "a condition that stays false", || async { false }).await;
    })
    .await;
    assert!(
        failure.contains("for a condition that stays false"),
        "{failure}"
    );
}

#[tokio::test]
async fn a_check_that_hangs_is_cut_off_at_the_deadline() {
    let failure = async_panic_of(async {
        wait_for(SHORT, "an answer", || {
            std::future::pending::<Result<(), &'static str>>()
        })
        .await;
    })
    .await;
    assert!(
        failure.contains("an answer (the last check hung)"),
        "{failure}"
    );
}

#[test]
fn a_process_that_does_not_exit_is_killed_at_the_deadline() {
    let mut child = Command::new("sleep")
        .arg("100")
        .spawn()
        .expect("start sleep");
    let failure = panic_of(|| {
        wait_for_exit(&mut child, SHORT, "sleep 100");
    });
    assert!(
        failure.contains("sleep 100 to exit (now killed)"),
        "{failure}"
    );
    let status = child.try_wait().expect("try_wait").expect("reaped");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn output_within_gives_both_streams_and_the_status() {
    let output = output_within(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        Duration::from_secs(30),
        "sh",
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
}

#[test]
fn a_leftover_process_holding_the_output_pipe_fails_at_the_deadline() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 100 & echo $! > '{}'", pid_file.display());
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sh");
    let failure = panic_of(|| {
        finish_within(&mut child, SHORT, "sh");
    });
    // The shell wrote the pid and exited before its stdout could close.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the pid file")
        .trim()
        .parse()
        .expect("a pid");
    // SAFETY: a signal to the `sleep` this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(failure.contains("sh to close its stdout"), "{failure}");
}
