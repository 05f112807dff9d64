//! A private `redis-server` with AOF persistence, so a restart keeps its data
//! (as the docs recommend for production).

use crate::process::{Server, find_program, kill, wait_for_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// A private redis-server in a temp directory, stopped when dropped.
pub struct RedisServer {
    server: Server,
}

impl RedisServer {
    /// Starts a fresh server on a free port.
    pub fn start() -> RedisServer {
        RedisServer {
            server: Server::start("redis-server", spawn),
        }
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port())
    }

    /// Its log file, for a failing test to show.
    pub fn log_path(&self) -> PathBuf {
        self.server.dir.path().join("redis.log")
    }

    /// Stops the server (SIGTERM: it flushes its AOF).
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.server.restart();
    }
}

fn spawn(port: u16, dir: &TempDir) -> Option<Child> {
    let log = dir.path().join("redis.log");
    let mut child = Command::new(find_program("redis-server", "DTS_REDIS_SERVER"))
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir.path())
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ])
        .args(["--daemonize", "no", "--protected-mode", "yes"])
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    // The port may have been taken by another process between finding it
    // free and redis binding it: then redis exits, and what answers on the
    // port is not ours.
    if wait_for_port(port, Duration::from_secs(10))
        && answers_ping(port)
        && matches!(child.try_wait(), Ok(None))
    {
        Some(child)
    } else {
        kill(&mut child);
        None
    }
}

/// Whether a Redis server answers PING on `port`. A server still loading
/// its AOF answers `-LOADING` (a restart after a busy run can take seconds):
/// it is ours, so it is asked again until it answers or 30 s pass.
fn answers_ping(port: u16) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // ends: at the deadline.
    loop {
        match ping(port) {
            Some(reply) if reply.starts_with(b"+PONG") => return true,
            Some(reply)
                if reply.starts_with(b"-LOADING") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return false,
        }
    }
}

/// Sends PING and returns the first bytes of the reply.
fn ping(port: u16) -> Option<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"PING\r\n").ok()?;
    let mut reply = [0u8; 8];
    let n = stream.read(&mut reply).ok()?;
    Some(reply[..n].to_vec())
}
