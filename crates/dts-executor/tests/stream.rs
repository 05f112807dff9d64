//! Streamed runs (`Executor::run_streamed`): the stdin of a task's `reduce`
//! step, every result of the task as a line, comes from a producer through a
//! small bounded channel and is never held in memory whole.
//!
//! Every case runs the six ways `tests/run.rs` runs its corpus: fresh
//! processes and warm shells, each as `dts run` runs items and isolated as
//! the service modes do, with a cgroup per item and with the subreaper.

use std::ffi::OsString;
use std::time::Duration;

use dts_executor::{
    ContainmentChoice, ExecOutcome, ExecSettings, Executor, IsolationSettings, ItemContext,
    ItemLimits, Program, StdinSource,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Long enough never to fire in a passing test.
const GENEROUS: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_millis(200);
/// Room a loaded 2-core machine may need beyond what a wait should take.
const SLACK: Duration = Duration::from_secs(5);
/// The channel's bound: the producer is at most this many chunks ahead.
const CAPACITY: usize = 4;
/// Lines in the large stream, and how many go in one chunk.
const LINES: u64 = 200_000;
const LINES_PER_CHUNK: u64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Way {
    warm: bool,
    isolated: Option<ContainmentChoice>,
}

thread_local! {
    static WAY: std::cell::Cell<Way> = const {
        std::cell::Cell::new(Way { warm: false, isolated: None })
    };
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
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

fn base_env() -> Vec<(OsString, OsString)> {
    [("PATH", "/usr/bin:/bin"), ("HOME", "/home/dts-test")]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

/// Whether this machine can run a way (cgroups need root or a delegated
/// cgroup; `DTS_TEST_REQUIRE_CGROUPS` makes their absence a failure).
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

fn executor() -> Executor {
    let way = WAY.get();
    let settings = ExecSettings {
        kill_grace: GRACE,
        warm_shell: way.warm,
        isolation: isolation(way),
        ..ExecSettings::default()
    };
    Executor::with_base_env(settings, base_env()).expect("executor")
}

/// Runs each named `async fn` six ways, as `tests/run.rs` does.
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

fn bash(script: &str) -> Program {
    Program::Script {
        interpreter: "bash".into(),
        script: script.into(),
    }
}

/// The reduce step's context: its `input` must not reach the script.
fn reduce_context() -> ItemContext<'static> {
    ItemContext {
        task_id: "task-1",
        shard_index: 0,
        index: 3,
        attempt: 1,
        worker_id: "worker-9",
        input: b"not for a streamed run",
        limits: ItemLimits::default(),
    }
}

async fn run_streamed(
    executor: &Executor,
    program: &Program,
    stdin: StdinSource,
    timeout: Duration,
    cancel: &CancellationToken,
) -> ExecOutcome {
    executor
        .run_streamed(program, &reduce_context(), stdin, timeout, cancel, (), None)
        .await
}

/// Waits for `future`, failing the test after `limit`.
async fn within<F: std::future::Future>(limit: Duration, what: &str, future: F) -> F::Output {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than {limit:?}"))
}

/// The POSIX `cksum` of a stream, computed as it goes.
#[derive(Debug, Default)]
struct Cksum {
    crc: u32,
    len: u64,
}

impl Cksum {
    fn update(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.byte(byte);
        }
        self.len += bytes.len() as u64;
    }

    fn byte(&mut self, byte: u8) {
        self.crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            self.crc = if self.crc & 0x8000_0000 != 0 {
                (self.crc << 1) ^ 0x04C1_1DB7
            } else {
                self.crc << 1
            };
        }
    }

    /// `cksum`'s output line: the CRC over the bytes and then their length.
    fn line(mut self) -> String {
        let mut len = self.len;
        // ends: `len` loses a byte each turn.
        while len != 0 {
            self.byte((len & 0xff) as u8);
            len >>= 8;
        }
        format!("{} {}\n", !self.crc, self.len)
    }
}

#[test]
fn the_tests_cksum_agrees_with_posix() {
    assert_eq!(Cksum::default().line(), "4294967295 0\n");
    let mut check = Cksum::default();
    check.update(b"123456789");
    assert_eq!(check.line(), "930766865 9\n");
}

/// Line `i` of the large stream: about 65 bytes, like a result's JSON line.
fn result_line(i: u64) -> String {
    format!("{{\"index\":{i},\"attempt\":1,\"exitCode\":0,\"stdout\":\"result {i:06}\"}}\n")
}

/// What the producer of the large stream sent, summed up as it went.
#[derive(Debug)]
struct Produced {
    lines: u64,
    cksum: String,
    /// The most bytes the producer ever held at once: its current chunk.
    most_held: usize,
}

/// Produces the large stream lazily in a task of its own, a chunk at a
/// time, keeping only a checksum of what it sent.
fn produce_results() -> (StdinSource, JoinHandle<Produced>) {
    let (sender, source) = StdinSource::channel(CAPACITY);
    let producer = tokio::spawn(async move {
        let mut cksum = Cksum::default();
        let mut most_held = 0;
        let mut i = 0;
        // ends: `i` grows each turn, up to LINES.
        while i < LINES {
            let mut chunk = Vec::new();
            for _ in 0..LINES_PER_CHUNK.min(LINES - i) {
                chunk.extend_from_slice(result_line(i).as_bytes());
                i += 1;
            }
            cksum.update(&chunk);
            most_held = most_held.max(chunk.len());
            sender.send(chunk).await.expect("the run took every chunk");
        }
        Produced {
            lines: i,
            cksum: cksum.line(),
            most_held,
        }
    });
    (source, producer)
}

/// A producer that sends 1 KiB chunks until a send fails; it reports how
/// many it sent and whether it ever found the channel full (so was held
/// back by the child).
fn produce_forever() -> (StdinSource, JoinHandle<(u64, bool)>) {
    let (sender, source) = StdinSource::channel(CAPACITY);
    let producer = tokio::spawn(async move {
        let mut sent = 0;
        let mut blocked = false;
        // ends: when a send fails, which the run makes happen by dropping
        // the source (the test's own deadline bounds the run).
        loop {
            blocked |= sender.capacity() == 0;
            if sender.send(vec![b'x'; 1024]).await.is_err() {
                return (sent, blocked);
            }
            sent += 1;
        }
    });
    (source, producer)
}

async fn a_large_stream_reaches_wc_whole_and_in_order() {
    let (source, producer) = produce_results();
    let out = run_streamed(
        &executor(),
        &bash("wc -l"),
        source,
        GENEROUS,
        &CancellationToken::new(),
    )
    .await;
    let produced = within(SLACK, "the producer", producer).await.unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(produced.lines, LINES);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{LINES}\n"));
}

async fn a_large_stream_reaches_cksum_byte_for_byte() {
    let (source, producer) = produce_results();
    let out = run_streamed(
        &executor(),
        &bash("cksum"),
        source,
        GENEROUS,
        &CancellationToken::new(),
    )
    .await;
    let produced = within(SLACK, "the producer", producer).await.unwrap();
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), produced.cksum);
    // About 13 MB went through; the producer never held more than a chunk.
    let total: u64 = produced
        .cksum
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > 12_000_000, "{total}");
    assert!(produced.most_held < 2048, "{}", produced.most_held);
}

async fn an_empty_stream_is_a_closed_stdin() {
    let (sender, source) = StdinSource::channel(CAPACITY);
    drop(sender);
    let out = run_streamed(
        &executor(),
        &bash("wc -c"),
        source,
        GENEROUS,
        &CancellationToken::new(),
    )
    .await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n");
}

async fn a_streamed_run_gets_no_item_in_dollar_one_or_dts_item() {
    let (sender, source) = StdinSource::channel(CAPACITY);
    let producer = tokio::spawn(async move {
        sender.send(b"first\n".to_vec()).await.is_ok()
            && sender.send(b"second\n".to_vec()).await.is_ok()
    });
    let script = r#"printf '[%s] [%s] %s %s %s\n' "$1" "$DTS_ITEM" "$#" "$DTS_ITEM_INDEX" "$DTS_TASK_ID"; cat"#;
    let out = run_streamed(
        &executor(),
        &bash(script),
        source,
        GENEROUS,
        &CancellationToken::new(),
    )
    .await;
    assert!(within(SLACK, "the producer", producer).await.unwrap());
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[] [] 1 3 task-1\nfirst\nsecond\n"
    );
}

async fn a_child_that_reads_nothing_ends_at_once_and_the_producer_stops() {
    let (source, producer) = produce_forever();
    let out = within(
        SLACK,
        "the run",
        run_streamed(
            &executor(),
            &bash("true"),
            source,
            GENEROUS,
            &CancellationToken::new(),
        ),
    )
    .await;
    assert!(out.succeeded(), "{out:?}");
    // The producer's send fails instead of waiting forever.
    let (sent, _) = within(SLACK, "the producer", producer).await.unwrap();
    assert!(sent < 1_000_000, "{sent}");
}

async fn a_child_that_closes_stdin_stops_the_producer_while_it_runs() {
    let (source, producer) = produce_forever();
    let executor = executor();
    let program = bash("read -r -n 10 _; exec 0<&-; sleep 100");
    let cancel = CancellationToken::new();
    let run = run_streamed(&executor, &program, source, GENEROUS, &cancel);
    tokio::pin!(run);
    let (sent, _) = tokio::select! {
        stopped = producer => stopped.unwrap(),
        out = &mut run => panic!("the run ended before the producer stopped: {out:?}"),
        () = tokio::time::sleep(SLACK) => panic!("the producer still sends {SLACK:?} after stdin was closed"),
    };
    assert!(sent >= 1, "{sent}");
    cancel.cancel();
    let out = within(GRACE + SLACK, "the cancelled run", run).await;
    assert!(out.cancelled && !out.timed_out, "{out:?}");
}

async fn a_child_past_its_timeout_is_killed_while_the_producer_waits() {
    let (source, producer) = produce_forever();
    let timeout = Duration::from_secs(1);
    let out = within(
        timeout + GRACE + SLACK,
        "the run",
        run_streamed(
            &executor(),
            &bash("sleep 100"),
            source,
            timeout,
            &CancellationToken::new(),
        ),
    )
    .await;
    assert!(out.timed_out && !out.cancelled, "{out:?}");
    assert_eq!(out.signal, Some(libc::SIGTERM), "{out:?}");
    assert!(out.duration >= timeout, "{:?}", out.duration);
    let (sent, blocked) = within(SLACK, "the producer", producer).await.unwrap();
    // The child read nothing: the pipe (64 KiB) and the channel filled up
    // and the producer waited on the full channel until the kill.
    assert!(blocked, "the producer never waited ({sent} chunks sent)");
    assert!(sent < 1024, "{sent}");
}

async fn a_cancelled_run_is_not_started_and_the_producer_stops() {
    let (source, producer) = produce_forever();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = run_streamed(&executor(), &bash("cat"), source, GENEROUS, &cancel).await;
    assert!(out.cancelled, "{out:?}");
    assert_eq!(out.exit_code, None);
    let (sent, _) = within(SLACK, "the producer", producer).await.unwrap();
    assert!(sent <= CAPACITY as u64, "{sent}");
}

every_way!(
    a_large_stream_reaches_wc_whole_and_in_order,
    a_large_stream_reaches_cksum_byte_for_byte,
    an_empty_stream_is_a_closed_stdin,
    a_streamed_run_gets_no_item_in_dollar_one_or_dts_item,
    a_child_that_reads_nothing_ends_at_once_and_the_producer_stops,
    a_child_that_closes_stdin_stops_the_producer_while_it_runs,
    a_child_past_its_timeout_is_killed_while_the_producer_waits,
    a_cancelled_run_is_not_started_and_the_producer_stops,
);

/// The worker runs items from `async_trait` methods, whose futures must be
/// `Send`: so must a streamed run's be.
#[test]
fn a_streamed_run_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let executor = Executor::with_base_env(ExecSettings::default(), base_env()).expect("executor");
    let program = bash("cat");
    let context = reduce_context();
    let cancel = CancellationToken::new();
    let (_sender, source) = StdinSource::channel(1);
    let run = executor.run_streamed(&program, &context, source, GENEROUS, &cancel, (), None);
    assert_send(&run);
}

/// A receiver made elsewhere is a source too.
#[test]
fn a_receiver_is_a_source() {
    let (_sender, receiver) = mpsc::channel::<Vec<u8>>(1);
    let _source: StdinSource = receiver.into();
}
