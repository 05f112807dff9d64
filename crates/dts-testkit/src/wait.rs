//! Waiting in tests, always with a deadline: a test that waits for something
//! that never happens fails saying what it waited for, instead of hanging
//! the run until nextest kills it with no word about why.
//!
//! A check answers `Ok(value)` when the condition holds, or `Err(seen)` with
//! what it saw instead; the last `seen` goes into the failure message.

use std::fmt::Debug;
use std::future::Future;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one wait may take in a test before it fails: long enough for a
/// loaded 2-core machine, far shorter than nextest's slow-test kill.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The first pause between checks; it doubles up to [`MAX_PAUSE`], so quick
/// conditions are seen quickly and slow ones do not cost a busy loop.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);

fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(MAX_PAUSE)
}

fn give_up(within: Duration, what: &str, seen: Option<&dyn Debug>) -> ! {
    match seen {
        Some(seen) => panic!("waited {within:?} for {what}; last seen: {seen:?}"),
        None => panic!("waited {within:?} for {what}, in vain"),
    }
}

/// Checks until `check` gives `Ok`, and returns its value; panics naming
/// `what` (and the last `Err`) once `within` has passed. A check that hangs
/// is cut off at the deadline too.
pub async fn wait_for<T, S, Fut>(within: Duration, what: &str, mut check: impl FnMut() -> Fut) -> T
where
    S: Debug,
    Fut: Future<Output = Result<T, S>>,
{
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = match tokio::time::timeout(left, check()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => seen,
            Err(_) => give_up(within, &format!("{what} (the last check hung)"), None),
        };
        if Instant::now() >= deadline {
            give_up(within, what, Some(&seen));
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = next_pause(pause);
    }
}

/// [`wait_for`] a condition that has nothing to show while it does not hold.
pub async fn wait_until<Fut>(within: Duration, what: &str, mut check: impl FnMut() -> Fut)
where
    Fut: Future<Output = bool>,
{
    wait_for(within, what, || {
        let holds = check();
        async move { if holds.await { Ok(()) } else { Err("not yet") } }
    })
    .await
}

/// [`wait_for`] for code that is not async: sleeps the thread between checks.
pub fn wait_for_blocking<T, S: Debug>(
    within: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, S>,
) -> T {
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        let seen = match check() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            give_up(within, what, Some(&seen));
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = next_pause(pause);
    }
}

/// [`wait_until`] for code that is not async.
pub fn wait_until_blocking(within: Duration, what: &str, mut check: impl FnMut() -> bool) {
    wait_for_blocking(
        within,
        what,
        || if check() { Ok(()) } else { Err("not yet") },
    )
}

/// Waits for `child` to exit; at the deadline kills it and panics naming
/// `what`, so a process that should have ended cannot hang the test.
pub fn wait_for_exit(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(e) => panic!("cannot wait for {what}: {e}"),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            give_up(within, &format!("{what} to exit (now killed)"), None);
        }
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = next_pause(pause);
    }
}

/// Like [`Command::output`] (stdin closed, stdout and stderr captured), but
/// the process is killed and the test fails if it has not exited within
/// `within`.
pub fn output_within(command: &mut Command, within: Duration, what: &str) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    finish_within(&mut child, within, what)
}

/// Reads what `child` writes to its piped stdout and stderr (each on a
/// thread of its own, so neither pipe can fill and stall it) until it
/// exits, or kills it and fails the test at the deadline.
pub fn finish_within(child: &mut Child, within: Duration, what: &str) -> Output {
    fn read_all(stream: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut all);
            }
            all
        })
    }
    let deadline = Instant::now() + within;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let status = wait_for_exit(child, within, what);
    // The pipes end when the child and everything that inherited them have
    // exited; a leftover process holding them would hang a plain read, so
    // the reads share the deadline.
    let collect = |reader: std::thread::JoinHandle<Vec<u8>>, which: &str| {
        let left = deadline.saturating_duration_since(Instant::now());
        wait_until_blocking(left, &format!("{what} to close its {which}"), || {
            reader.is_finished()
        });
        reader.join().unwrap_or_default()
    };
    Output {
        status,
        stdout: collect(stdout, "stdout"),
        stderr: collect(stderr, "stderr"),
    }
}
