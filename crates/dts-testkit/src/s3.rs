//! A private S3 emulator (moto's server): the broker's durable storage in
//! the tests that restart the broker. tansu keeps topics, records and
//! committed offsets in the bucket, so a broker restart is a real one and
//! loses nothing, as with a real Kafka's disks.
//!
//! Why S3 and not PostgreSQL: the pinned tansu binary is built with its
//! memory and S3 storage engines only (docs/kafka-broker.md).

use crate::process::{Server, find_program, kill, wait_for_port};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// The bucket the broker keeps its log in.
pub(crate) const BUCKET: &str = "tansu";

/// A private moto S3 server on a free loopback port, with the broker's
/// bucket created; stopped when dropped. Its data lives in its memory, so
/// it outlives broker restarts but not its own.
pub(crate) struct S3Server {
    server: Server,
}

impl S3Server {
    pub(crate) fn start() -> S3Server {
        S3Server {
            server: Server::start("the S3 emulator (moto)", spawn),
        }
    }

    /// `http://127.0.0.1:PORT`, for `AWS_ENDPOINT`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The environment the broker needs to use it: the endpoint, plain
    /// HTTP, and dummy credentials (the emulator checks none).
    pub(crate) fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_ACCESS_KEY_ID", "dts-test".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "dts-test".to_string()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_string()),
        ]
    }
}

fn spawn(port: u16, dir: &TempDir) -> Option<Child> {
    let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
    let program = find_moto();
    let mut child = Command::new(program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start the S3 emulator (moto_server)");
    if wait_for_port(port, Duration::from_secs(30))
        && matches!(child.try_wait(), Ok(None))
        && create_bucket(port)
    {
        Some(child)
    } else {
        kill(&mut child);
        None
    }
}

/// `PUT /tansu`: S3's create-bucket, answered 200 by our emulator only.
fn create_bucket(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!(
        "PUT /{BUCKET} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).is_ok() && &status == b"HTTP/1.1 200"
}

/// moto's server is installed into `.tools/venv` by
/// scripts/install-test-deps.sh; `DTS_MOTO_SERVER` overrides.
fn find_moto() -> PathBuf {
    let venv = crate::process::workspace_root().join(".tools/venv/bin/moto_server");
    if std::env::var_os("DTS_MOTO_SERVER").is_none() && venv.is_file() {
        return venv;
    }
    find_program("moto_server", "DTS_MOTO_SERVER")
}
