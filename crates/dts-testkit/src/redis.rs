//! A private `redis-server` with AOF persistence, so a restart keeps its data
//! (as the docs recommend for production).

use crate::process::{find_program, free_port, kill, stop, wait_for_port};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a fresh server on a free port.
    pub fn start() -> RedisServer {
        let dir = TempDir::new().expect("temp dir for redis");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, &dir) {
                return RedisServer {
                    child: Some(child),
                    port,
                    dir,
                };
            }
        }
        panic!(
            "redis-server did not start (see {})",
            dir.path().join("redis.log").display()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Stops the server (SIGTERM: it flushes its AOF).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Duration::from_secs(5));
        }
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if let Some(child) = spawn(self.port, &self.dir) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
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

/// Whether a Redis server answers PING on `port`.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
