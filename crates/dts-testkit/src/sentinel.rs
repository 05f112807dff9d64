//! [`RedisSentinel`]: a Redis primary with AOF, one replica and three
//! sentinels watching them, each on a free port in a temp directory of its
//! own, for tests that fail Redis over.
//!
//! The sentinels decide fast (`down-after-milliseconds` 1000,
//! `failover-timeout` 3000, quorum 2), so a killed primary is replaced
//! within a few seconds. Every server binds the one `host` it is started on
//! and announces it, so the sentinels name that address (the chaos runner
//! puts its servers on an address workers in other network namespaces can
//! reach).

use crate::process::{find_program, free_port, kill, stop};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "dts-primary";

/// How long starting the set, or a failover, may take before a test fails.
const SETTLE: Duration = Duration::from_secs(60);

/// One redis-server process (a data node or a sentinel) with its port and
/// directory, restartable on both.
struct Process {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

/// A primary, a replica and three sentinels, killed when dropped.
pub struct RedisSentinel {
    host: String,
    /// Data nodes: 0 started as the primary, 1 as its replica.
    nodes: Vec<Process>,
    sentinels: Vec<Process>,
}

impl RedisSentinel {
    /// Starts the set on 127.0.0.1.
    pub fn start() -> RedisSentinel {
        RedisSentinel::start_on("127.0.0.1")
    }

    /// Starts the set on `host`, a local address every process binds and
    /// the sentinels report. Returns once the replica is in sync and every
    /// sentinel knows the replica and the two other sentinels, so a
    /// failover can start at once.
    pub fn start_on(host: &str) -> RedisSentinel {
        let mut set = RedisSentinel {
            host: host.to_string(),
            nodes: Vec::new(),
            sentinels: Vec::new(),
        };
        let primary = set.start_node(None);
        set.nodes.push(primary);
        let primary_port = set.nodes[0].port;
        let replica = set.start_node(Some(primary_port));
        set.nodes.push(replica);
        set.wait_until("the replica is in sync with the primary", |set| {
            set.info(set.nodes[1].port, "replication")
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
        for _ in 0..3 {
            let sentinel = set.start_sentinel(primary_port);
            set.sentinels.push(sentinel);
        }
        set.wait_until(
            "every sentinel knows the replica and the other two sentinels",
            |set| {
                set.sentinels.iter().all(|sentinel| {
                    let count = |what: &str| {
                        command(&set.host, sentinel.port, &["SENTINEL", what, MASTER_NAME])
                            .ok()
                            .and_then(|reply| match reply {
                                Reply::Array(items) => Some(items.len()),
                                _ => None,
                            })
                    };
                    count("replicas") == Some(1) && count("sentinels") == Some(2)
                })
            },
        );
        set
    }

    /// The master name, for `spring.redis.sentinel.master`.
    pub fn master_name(&self) -> &'static str {
        MASTER_NAME
    }

    /// `host:port,host:port,host:port`, for `spring.redis.sentinel.nodes`.
    pub fn sentinel_nodes(&self) -> String {
        self.sentinels
            .iter()
            .map(|sentinel| format!("{}:{}", self.host, sentinel.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of each data node, by node number (0 started as primary).
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// The port of the primary the sentinels name now (the first sentinel
    /// that answers).
    ///
    /// # Panics
    /// If no sentinel names a primary.
    pub fn primary_port(&self) -> u16 {
        self.named_primary()
            .unwrap_or_else(|| panic!("no sentinel names a primary for {MASTER_NAME}"))
    }

    /// The node number of the primary the sentinels name now.
    pub fn primary(&self) -> usize {
        let port = self.primary_port();
        self.nodes
            .iter()
            .position(|node| node.port == port)
            .unwrap_or_else(|| panic!("the sentinels name port {port}, which is no node of ours"))
    }

    /// Fails over with `SENTINEL FAILOVER` and returns once every sentinel
    /// names the other node and that node says it is a primary. Returns
    /// the new primary's port.
    pub fn failover(&mut self) -> u16 {
        self.try_failover()
            .unwrap_or_else(|why| panic!("{why}; {}", self.log_places()))
    }

    /// As [`RedisSentinel::failover`], but what Sentinel refuses is an
    /// `Err` with the reason, not a panic: for the chaos soak, where a
    /// failover asked for right after another Redis fault may find no
    /// replica in sync (`NOGOODSLAVE`), or sentinels that do not agree on
    /// the outcome within 60 s.
    pub fn try_failover(&mut self) -> Result<u16, String> {
        let before = self.primary_port();
        let reply = self
            .sentinels
            .iter()
            .find_map(|sentinel| {
                command(
                    &self.host,
                    sentinel.port,
                    &["SENTINEL", "FAILOVER", MASTER_NAME],
                )
                .ok()
            })
            .ok_or_else(|| "no sentinel took SENTINEL FAILOVER".to_string())?;
        if reply != Reply::Simple("OK".to_string()) {
            return Err(format!(
                "SENTINEL FAILOVER {MASTER_NAME} answered {reply:?}"
            ));
        }
        self.new_primary_within(before).ok_or_else(|| {
            format!("the sentinels did not agree on a new primary within {SETTLE:?}")
        })
    }

    /// SIGKILLs the primary and returns its node number; the sentinels
    /// promote the replica after `down-after-milliseconds` (see
    /// [`RedisSentinel::wait_for_new_primary`]).
    pub fn kill_primary(&mut self) -> usize {
        let primary = self.primary();
        self.kill(primary);
        primary
    }

    /// Stops data node `node` with SIGTERM (it flushes its AOF), primary
    /// or not; [`RedisSentinel::restart`] starts it again.
    pub fn stop(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            stop(&mut child, Duration::from_secs(5));
        }
    }

    /// SIGKILLs data node `node`, primary or not.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            kill(&mut child);
        }
    }

    /// Freezes data node `node` (SIGSTOP): its connections stay open, so
    /// its primary still counts it as a connected replica, but it confirms
    /// nothing until [`RedisSentinel::thaw`].
    pub fn freeze(&self, node: usize) {
        self.signal(node, libc::SIGSTOP);
    }

    /// Lets a frozen data node run again (SIGCONT).
    pub fn thaw(&self, node: usize) {
        self.signal(node, libc::SIGCONT);
    }

    fn signal(&self, node: usize, signal: i32) {
        if let Some(child) = &self.nodes[node].child {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// Returns once every sentinel names a primary other than the one on
    /// port `before`, and that server says it is a primary; its port.
    pub fn wait_for_new_primary(&self, before: u16) -> u16 {
        self.new_primary_within(before).unwrap_or_else(|| {
            panic!(
                "waited {SETTLE:?} until the sentinels agree on a new primary; {}",
                self.log_places()
            )
        })
    }

    /// The new primary's port once every sentinel names a primary other
    /// than the one on port `before` and that server says it is a primary;
    /// `None` if that does not happen within [`SETTLE`].
    fn new_primary_within(&self, before: u16) -> Option<u16> {
        let deadline = Instant::now() + SETTLE;
        // ends: at `deadline`.
        loop {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|sentinel| ask_primary(&self.host, sentinel.port))
                .collect();
            if let Some(Some(first)) = named.first().copied() {
                if first != before
                    && named.iter().all(|port| *port == Some(first))
                    && role(&self.host, first).as_deref() == Some("master")
                {
                    return Some(first);
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts data node `node` again on its port and directory, as a replica
    /// of the current primary unless it is that primary (the sentinels would
    /// turn a stale primary into a replica anyway; this is only sooner).
    pub fn restart(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            stop(&mut child, Duration::from_secs(5));
        }
        let primary = self
            .named_primary()
            .filter(|port| *port != self.nodes[node].port);
        let child = spawn_node(
            &self.host,
            self.nodes[node].port,
            &self.nodes[node].dir,
            primary,
        )
        .unwrap_or_else(|| panic!("redis node {node} did not restart"));
        self.nodes[node].child = Some(child);
    }

    /// The log of data node `node`, for a failing test to show.
    pub fn node_log(&self, node: usize) -> PathBuf {
        self.nodes[node].dir.path().join("redis.log")
    }

    /// The log of sentinel `sentinel`, for a failing test to show.
    pub fn sentinel_log(&self, sentinel: usize) -> PathBuf {
        self.sentinels[sentinel].dir.path().join("sentinel.log")
    }

    fn named_primary(&self) -> Option<u16> {
        self.sentinels
            .iter()
            .find_map(|sentinel| ask_primary(&self.host, sentinel.port))
    }

    fn info(&self, port: u16, section: &str) -> Option<String> {
        match command(&self.host, port, &["INFO", section]) {
            Ok(Reply::Bulk(text)) => Some(text),
            _ => None,
        }
    }

    /// Polls `done` until it holds, or panics after [`SETTLE`] naming what
    /// it waited for and where the logs are.
    fn wait_until(&self, what: &str, mut done: impl FnMut(&RedisSentinel) -> bool) {
        let deadline = Instant::now() + SETTLE;
        while !done(self) {
            if Instant::now() > deadline {
                panic!("waited {SETTLE:?} until {what}; {}", self.log_places());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the nodes' and the sentinels' logs are, for a failure message.
    fn log_places(&self) -> String {
        let dirs = |processes: &[Process]| {
            processes
                .iter()
                .map(|p| p.dir.path().display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "logs in {} and the sentinels' in {}",
            dirs(&self.nodes),
            dirs(&self.sentinels)
        )
    }

    fn start_node(&self, replica_of: Option<u16>) -> Process {
        let dir = TempDir::new().expect("temp dir for redis");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn_node(&self.host, port, &dir, replica_of) {
                return Process {
                    port,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!(
            "redis-server did not start (files in {})",
            dir.path().display()
        );
    }

    fn start_sentinel(&self, primary_port: u16) -> Process {
        let dir = TempDir::new().expect("temp dir for a sentinel");
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn_sentinel(&self.host, port, &dir, primary_port) {
                return Process {
                    port,
                    dir,
                    child: Some(child),
                };
            }
        }
        panic!(
            "a sentinel did not start (files in {})",
            dir.path().display()
        );
    }
}

/// A data node: AOF on, as the docs recommend; a replica of `replica_of`
/// if given. Announces `host` so the sentinels report it.
fn spawn_node(host: &str, port: u16, dir: &TempDir, replica_of: Option<u16>) -> Option<Child> {
    let mut command = Command::new(find_program("redis-server", "DTS_REDIS_SERVER"));
    command
        .args(["--bind", host, "--port", &port.to_string()])
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
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .args(["--replica-announce-ip", host])
        .arg("--logfile")
        .arg(dir.path().join("redis.log"));
    if let Some(primary) = replica_of {
        command.args(["--replicaof", host, &primary.to_string()]);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    answering(child, host, port)
}

/// A sentinel (`redis-server <conf> --sentinel`) with a config file of its
/// own, which it rewrites as it learns the set.
fn spawn_sentinel(host: &str, port: u16, dir: &TempDir, primary_port: u16) -> Option<Child> {
    let conf = dir.path().join("sentinel.conf");
    let text = format!(
        "port {port}\n\
         bind {host}\n\
         protected-mode no\n\
         daemonize no\n\
         dir {dir}\n\
         logfile {log}\n\
         sentinel announce-ip {host}\n\
         sentinel monitor {MASTER_NAME} {host} {primary_port} 2\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 3000\n\
         sentinel parallel-syncs {MASTER_NAME} 1\n",
        dir = dir.path().display(),
        log = dir.path().join("sentinel.log").display(),
    );
    std::fs::write(&conf, text).expect("write sentinel.conf");
    let child = Command::new(find_program("redis-server", "DTS_REDIS_SERVER"))
        .arg(&conf)
        .arg("--sentinel")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a sentinel");
    answering(child, host, port)
}

/// The child once it answers PING on `host:port`; killed and `None` if it
/// does not within 10 s (the port was taken, say).
fn answering(mut child: Child, host: &str, port: u16) -> Option<Child> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            break;
        }
        if command(host, port, &["PING"]) == Ok(Reply::Simple("PONG".to_string())) {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(&mut child);
    None
}

/// The primary's port as the sentinel on `port` names it.
fn ask_primary(host: &str, port: u16) -> Option<u16> {
    match command(
        host,
        port,
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
    ) {
        Ok(Reply::Array(items)) => match items.get(1) {
            Some(Reply::Bulk(port)) => port.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// What the server on `port` says it is: `master`, `slave`.
fn role(host: &str, port: u16) -> Option<String> {
    match command(host, port, &["ROLE"]) {
        Ok(Reply::Array(items)) => match items.first() {
            Some(Reply::Bulk(role)) => Some(role.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// A RESP2 reply, as far as these few commands need.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(String),
    Nil,
    Array(Vec<Reply>),
}

/// Sends one command and reads its reply, within a few seconds.
fn command(host: &str, port: u16, args: &[&str]) -> Result<Reply, String> {
    let address = format!("{host}:{port}");
    let socket = address
        .parse()
        .map_err(|e| format!("bad address {address}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(1))
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send to {address}: {e}"))?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader)
}

fn read_reply(reader: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at_checked(1).ok_or("empty reply")?;
    let number = || rest.parse::<i64>().map_err(|e| format!("{line:?}: {e}"));
    match kind {
        "+" => Ok(Reply::Simple(rest.to_string())),
        "-" => Ok(Reply::Error(rest.to_string())),
        ":" => Ok(Reply::Integer(number()?)),
        "$" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Nil);
            };
            let mut bytes = vec![0; len + 2];
            reader.read_exact(&mut bytes).map_err(|e| e.to_string())?;
            bytes.truncate(len);
            Ok(Reply::Bulk(String::from_utf8_lossy(&bytes).into_owned()))
        }
        "*" => {
            let Ok(len) = usize::try_from(number()?) else {
                return Ok(Reply::Nil);
            };
            (0..len)
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        _ => Err(format!("unknown reply {line:?}")),
    }
}
