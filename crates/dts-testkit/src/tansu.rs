//! A private Kafka-protocol broker (tansu), its log in memory or, for the
//! tests that restart it, in durable storage (an S3 bucket on a private
//! emulator, [`Broker::start_durable`]).
//!
//! Its quirks, and what tests do about them: topics are created explicitly
//! (auto-created ones get 4 partitions), group timeouts are short (it holds
//! every join for half the session timeout), `auto.offset.reset=earliest`
//! (its "latest" offset is off by a batch), and `fetch.wait.max.ms` is
//! 10–50 (it does not wake a waiting fetch when data arrives).
//! [`Broker::client_settings`] gives those.

use crate::process::{Server, find_program, kill, wait_for_port_on};
use crate::s3::{BUCKET, S3Server};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A private Kafka-protocol broker (tansu), stopped when dropped.
pub struct Broker {
    server: Server,
    /// The address it listens on and advertises.
    host: Ipv4Addr,
    /// Where a durable broker keeps its log; declared after `server` so the
    /// broker stops before its storage does.
    storage: Option<S3Server>,
}

impl Broker {
    /// Starts a fresh broker on a free port, its log in memory: a restart
    /// loses topics, records and offsets.
    pub fn start() -> Broker {
        Broker {
            server: Server::start("the broker (tansu)", |port, dir| {
                spawn(Ipv4Addr::LOCALHOST, port, dir, "memory://tansu/", &[])
            }),
            host: Ipv4Addr::LOCALHOST,
            storage: None,
        }
    }

    /// Starts a fresh broker whose log is durable: topics, records and
    /// committed offsets live in an S3 bucket on a private emulator, so
    /// [`Broker::restart`] and [`Broker::kill`] lose nothing, as with a
    /// real Kafka's disks.
    pub fn start_durable() -> Broker {
        Broker::start_durable_on(Ipv4Addr::LOCALHOST)
    }

    /// [`Broker::start_durable`] listening on, and advertising, `host`: a
    /// local address of its own, so that a client in another network
    /// namespace can reach it and a fault can cut that route alone (the
    /// chaos soak's partitions). Its storage stays on 127.0.0.1: only the
    /// broker talks to it.
    pub fn start_durable_on(host: Ipv4Addr) -> Broker {
        let storage = S3Server::start();
        let env = storage.client_env();
        Broker {
            server: Server::start("the broker (tansu, durable)", move |port, dir| {
                spawn(host, port, dir, &format!("s3://{BUCKET}/"), &env)
            }),
            host,
            storage: Some(storage),
        }
    }

    /// Whether its log survives a restart.
    pub fn is_durable(&self) -> bool {
        self.storage.is_some()
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// The bootstrap address, `HOST:PORT` (`127.0.0.1:PORT` unless started
    /// on another address).
    pub fn bootstrap(&self) -> String {
        format!("{}:{}", self.host, self.port())
    }

    /// Its log file, for a failing test to show.
    pub fn log_path(&self) -> PathBuf {
        self.server.dir.path().join("broker.log")
    }

    /// librdkafka settings tests need with this broker: short group
    /// timeouts (every JoinGroup waits half the session timeout) and a short
    /// fetch wait (the broker does not wake a waiting fetch).
    pub fn client_settings() -> Vec<(&'static str, &'static str)> {
        vec![
            ("session.timeout.ms", "3000"),
            ("heartbeat.interval.ms", "500"),
            ("fetch.wait.max.ms", "20"),
        ]
    }

    /// Stops the broker. A broker in memory loses its topics and offsets.
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is
    /// answered, as when a broker hangs or the network drops its packets.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused broker run again (SIGCONT), with its data intact.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = self.server.child() {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Kills the broker with SIGKILL.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port: a durable broker with its log, a
    /// broker in memory empty.
    pub fn restart(&mut self) {
        self.server.restart();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // A paused process ignores SIGTERM until continued.
        self.resume();
    }
}

fn spawn(
    host: Ipv4Addr,
    port: u16,
    dir: &TempDir,
    storage_engine: &str,
    env: &[(&'static str, String)],
) -> Option<Child> {
    // Appended to, so a restarted broker's log follows the first one's.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("broker.log"))
        .expect("broker log");
    let url = format!("tcp://{host}:{port}");
    let mut child = Command::new(find_program("tansu", "DTS_TANSU"))
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", storage_engine])
        .envs(env.iter().map(|(name, value)| (name, value)))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start the broker (tansu)");
    // If another process took the port first, tansu exits: not ours.
    if wait_for_port_on(host, port, Duration::from_secs(10)) && {
        std::thread::sleep(Duration::from_millis(50));
        matches!(child.try_wait(), Ok(None))
    } {
        Some(child)
    } else {
        kill(&mut child);
        None
    }
}
