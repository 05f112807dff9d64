//! A private Kafka-protocol broker (tansu) with in-memory storage.
//!
//! Its quirks (`../shared/notes/kafka-broker.md`): create topics explicitly,
//! use short group timeouts in tests, `auto.offset.reset=earliest`, and
//! `fetch.wait.max.ms` of 10–50. [`Broker::client_settings`] gives those.

use crate::process::{find_program, free_port, kill, stop, wait_for_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Broker {
    /// Starts a fresh broker on a free port.
    pub fn start() -> Broker {
        let dir = TempDir::new().expect("temp dir for the broker");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, &dir) {
                return Broker {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!(
            "the broker did not start (see {})",
            dir.path().join("broker.log").display()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bootstrap address, `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("broker.log")
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

    /// Stops the broker. Its in-memory topics and offsets are lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Duration::from_secs(5));
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is
    /// answered, as when a broker hangs or the network drops its packets.
    pub fn pause(&self) {
        if let Some(child) = &self.child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
        }
    }

    /// Lets a paused broker run again (SIGCONT), with its data intact.
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
        }
    }

    /// Kills the broker with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Starts it again on the same port (in-memory storage starts empty).
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if let Some(child) = spawn(self.port, &self.dir) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the broker did not restart on port {}", self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

fn spawn(port: u16, dir: &TempDir) -> Option<Child> {
    let log = std::fs::File::create(dir.path().join("broker.log")).expect("broker log");
    let url = format!("tcp://127.0.0.1:{port}");
    let mut child = Command::new(find_program("tansu", "DTS_TANSU"))
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start the broker (tansu)");
    // If another process took the port first, tansu exits: not ours.
    if wait_for_port(port, Duration::from_secs(10)) && {
        std::thread::sleep(Duration::from_millis(50));
        matches!(child.try_wait(), Ok(None))
    } {
        Some(child)
    } else {
        kill(&mut child);
        None
    }
}
