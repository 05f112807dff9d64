//! The cluster under test: Redis and the broker ([`Services`]), two
//! `dts server`s, three `dts worker`s, and one embedded `dts up` fed by the
//! same workload. Every dts process is a [`Node`] that the faults can kill,
//! freeze and start again with the same port, data and arguments.

use crate::ChaosError;
use crate::netns::Partitions;
use dts_testkit::{Broker, RedisSentinel};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tempfile::TempDir;

/// How long a dts process may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How long a restart may keep failing (the services it needs may be in a
/// fault of their own) before the node counts as lost.
const RESTART_WITHIN: Duration = Duration::from_secs(120);

/// The services dts depends on, each behind its own lock so a fault can
/// restart one while the others run: Redis as a primary with AOF, a replica
/// and three sentinels (dts follows a failover through them), and the
/// broker with its log in durable storage (so a restart loses nothing).
pub struct Services {
    /// Redis through Sentinel: the store of the distributed nodes.
    pub redis: Mutex<RedisSentinel>,
    /// The Kafka-protocol broker, durable.
    pub broker: Mutex<Broker>,
    sentinel_nodes: String,
    bootstrap: String,
}

impl Services {
    /// Starts Redis and the broker, on the two addresses given (each of
    /// its own, so a partition can cut one alone), or both on 127.0.0.1.
    pub fn start(hosts: Option<(Ipv4Addr, Ipv4Addr)>) -> Services {
        let (redis, broker) = match hosts {
            Some((redis, broker)) => (
                RedisSentinel::start_on(&redis.to_string()),
                Broker::start_durable_on(broker),
            ),
            None => (RedisSentinel::start(), Broker::start_durable()),
        };
        Services {
            sentinel_nodes: redis.sentinel_nodes(),
            bootstrap: broker.bootstrap(),
            redis: Mutex::new(redis),
            broker: Mutex::new(broker),
        }
    }

    /// The `--set` flags that point a dts node at these services, with the
    /// short heartbeat and group timeouts the fault tests use, so a lost
    /// worker's shards move within seconds. `spring.redis.port` points at
    /// nothing: a node that ignored the sentinels would fail at once.
    pub fn node_args(&self) -> Vec<String> {
        let mut settings = vec![
            format!("pubsub.namespace={}", self.bootstrap),
            "spring.redis.host=127.0.0.1".to_string(),
            "spring.redis.port=1".to_string(),
            format!("spring.redis.sentinel.master={}", dts_testkit::MASTER_NAME),
            format!("spring.redis.sentinel.nodes={}", self.sentinel_nodes),
            "worker.heartbeat-interval-ms=500".to_string(),
            "worker.heartbeat-ttl-ms=3000".to_string(),
            "scheduler.sweep-interval-ms=1000".to_string(),
            "scheduler.republish-after-ms=5000".to_string(),
            // Fewer group members, fewer heartbeats (see client_settings).
            "pubsub.consumercount=1".to_string(),
        ];
        for (key, value) in client_settings() {
            settings.push(format!("pubsub.kafka.{key}={value}"));
        }
        settings
            .into_iter()
            .flat_map(|kv| ["--set".to_string(), kv])
            .collect()
    }

    /// The broker's bootstrap address.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }
}

/// The test kit's client settings, made gentler on the durable broker.
///
/// The broker keeps each consumer group's state in one S3 object that
/// every heartbeat of every member rewrites (a conditional PUT; members
/// racing each other get 412 and try again), and every fetch lists its
/// partition's objects. With the test kit's settings (heartbeats every
/// 500 ms, a 3 s session, fetches every 20 ms) and the S3 emulator used
/// before, whose listings walked every key it held, the emulator's work
/// grew with the run until heartbeats waited behind slow requests and
/// planning stopped (seed 7, 60 minutes). The test kit's own emulator
/// lists in order and a 60-minute soak planned to the end; these settings
/// stay, as a margin that costs the soak nothing: heartbeats every second,
/// a 6 s session (the most the broker notes recommend; a dead server's
/// partitions move within it), fetches that wait up to 500 ms, and one
/// task consumer per server ([`Services::node_args`]).
pub fn client_settings() -> Vec<(&'static str, &'static str)> {
    Broker::client_settings()
        .into_iter()
        .map(|(key, value)| match key {
            "fetch.wait.max.ms" => (key, "500"),
            "heartbeat.interval.ms" => (key, "1000"),
            "session.timeout.ms" => (key, "6000"),
            _ => (key, value),
        })
        .collect()
}

/// The log filter of every dts node: `DTS_CHAOS_LOG` when set (say
/// `info,dts_bus::kafka::consumer=trace` to see each consumer's
/// deliveries), else `info`.
fn node_log_filter() -> String {
    std::env::var("DTS_CHAOS_LOG").unwrap_or_else(|_| "info".to_string())
}

/// Locks a handle, even one a panicking thread held: the handles hold
/// processes, and a poisoned lock must not leave them running unseen.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a node is, for the fault log and for the checker's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A `dts server`: API, scheduler and sweeper.
    Server,
    /// A `dts worker`: runs items.
    Worker,
    /// The embedded `dts up`: everything in one process.
    Up,
}

/// One dts process, started again on demand with the same arguments.
pub struct Node {
    /// Its name: the worker id for workers, `server-N` or `up` otherwise.
    pub name: String,
    /// What it is.
    pub role: Role,
    /// Its API (`http://127.0.0.1:PORT`), for servers and `dts up`.
    pub base: Option<String>,
    args: Vec<String>,
    /// The network namespace it runs in (a worker, when partitions are on).
    netns: Option<PathBuf>,
    ready: &'static str,
    dts: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(
        dts: &Path,
        name: String,
        role: Role,
        args: Vec<String>,
        port: Option<u16>,
        log_dir: &Path,
    ) -> Node {
        let ready = match role {
            Role::Worker => "dts worker ",
            Role::Server | Role::Up => "dts listening on ",
        };
        Node {
            log: log_dir.join(format!("{name}.log")),
            base: port.map(|port| format!("http://127.0.0.1:{port}")),
            name,
            role,
            args,
            netns: None,
            ready,
            dts: dts.to_path_buf(),
            child: None,
        }
    }

    /// Starts the process and waits until it says it is ready, starting it
    /// again while it exits early: a dts node refuses to start while Redis
    /// is away (a fault may be restarting it), as a supervisor would retry.
    pub fn start(&mut self) -> Result<(), ChaosError> {
        let deadline = std::time::Instant::now() + RESTART_WITHIN;
        // ends: at the deadline.
        loop {
            match self.start_once()? {
                true => return Ok(()),
                false if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_secs(1));
                }
                false => {
                    return Err(ChaosError::NotReady {
                        what: self.name.clone(),
                        log: self.log.clone(),
                    });
                }
            }
        }
    }

    /// One start: `Ok(true)` once ready, `Ok(false)` if it exited first.
    /// Its stderr is appended to its log, so restarts keep the earlier
    /// runs' lines.
    fn start_once(&mut self) -> Result<bool, ChaosError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|source| ChaosError::Io {
                path: self.log.clone(),
                source,
            })?;
        let mut command = Command::new(&self.dts);
        // Held open until the spawn, for `setns` in the child.
        let mut _netns = None;
        if let Some(path) = &self.netns {
            let file = std::fs::File::open(path).map_err(|source| ChaosError::Io {
                path: path.clone(),
                source,
            })?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
            _netns = Some(file);
            // Not `ip netns exec`: it remounts /sys, which hides the cgroup
            // mounts that item isolation needs.
            // SAFETY: setns is async-signal-safe, and `fd` stays open until
            // the spawn returns.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .args(&self.args)
            .env("DTS_LOG", node_log_filter())
            .env_remove("DTS_AUTH_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|source| ChaosError::Spawn {
                what: self.name.clone(),
                source,
            })?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(false);
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = self.ready;
        // Reads stdout to its end (the process's), so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with(ready) {
                    let _ = tx.send(());
                }
            }
        });
        match rx.recv_timeout(READY_WITHIN) {
            Ok(()) => {
                self.child = Some(child);
                Ok(true)
            }
            // Its stdout ended: it exited before it was ready.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.kill();
                let _ = child.wait();
                Ok(false)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(ChaosError::NotReady {
                    what: self.name.clone(),
                    log: self.log.clone(),
                })
            }
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would; reaped at once.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the running process.
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: signalling our own child process, which is not reaped
            // while `self.child` holds it.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        self.kill9();
    }
}

/// A whole cluster. Each node is behind its own lock, so faults on
/// different nodes run at the same time.
pub struct Cluster {
    /// Redis and the broker.
    pub services: Services,
    /// The two `dts server`s.
    pub servers: Vec<Arc<Mutex<Node>>>,
    /// The three `dts worker`s.
    pub workers: Vec<Arc<Mutex<Node>>>,
    /// The embedded `dts up`.
    pub up: Arc<Mutex<Node>>,
    /// Where every item appends its start line (see [`crate::starts`]).
    pub starts_log: PathBuf,
    /// The workers' network namespaces and the services' addresses (root
    /// only), for partitions. Declared after the nodes and services, so
    /// it is removed after they stop.
    pub partitions: Option<Partitions>,
    /// The nodes' logs and data, kept when `keep` was asked for.
    pub dir: PathBuf,
    /// The small tmpfs under `dts up`'s data directory (root only), which
    /// the full-disk fault fills.
    pub small_disk: Option<SmallDisk>,
    _dir: Option<TempDir>,
}

impl Cluster {
    /// Starts Redis, the broker, 2 servers, 3 workers and `dts up`, with
    /// `dts` the binary to run. With `keep`, the directory with the logs
    /// is left behind for a failed run to be read.
    pub fn start(dts: &Path, keep: bool) -> Result<Cluster, ChaosError> {
        let dir = tempfile::Builder::new()
            .prefix("dts-chaos-")
            .tempdir()
            .map_err(|source| ChaosError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let path = dir.path().to_path_buf();
        // Items may run as another user (`nobody` when dts runs as root):
        // the directory and the log must be writable by everyone.
        let starts_log = path.join("starts.log");
        make_shared(&path, &starts_log)?;
        // SAFETY: geteuid has no preconditions.
        let partitions = if unsafe { libc::geteuid() } == 0 {
            Some(Partitions::set_up(3)?)
        } else {
            None
        };
        let services = Services::start(
            partitions
                .as_ref()
                .map(|p| (p.redis_host(), p.broker_host())),
        );
        let node_args = services.node_args();
        let mut servers = Vec::new();
        for n in 1..=2 {
            let port = dts_testkit::free_port();
            let mut args = vec!["server".to_string(), "--port".into(), port.to_string()];
            args.extend(node_args.iter().cloned());
            let mut node = Node::new(
                dts,
                format!("server-{n}"),
                Role::Server,
                args,
                Some(port),
                &path,
            );
            node.start()?;
            servers.push(Arc::new(Mutex::new(node)));
        }
        let mut workers = Vec::new();
        for n in 1..=3 {
            let name = format!("worker-{n}");
            let mut args = vec![
                "worker".to_string(),
                "--id".into(),
                name.clone(),
                "--cores".into(),
                "2".into(),
            ];
            args.extend(node_args.iter().cloned());
            let mut node = Node::new(dts, name, Role::Worker, args, None, &path);
            node.netns = partitions.as_ref().map(|p| p.namespace_path(n));
            node.start()?;
            workers.push(Arc::new(Mutex::new(node)));
        }
        let port = dts_testkit::free_port();
        let small_disk = SmallDisk::mount(&path.join("up-disk"));
        let data = match &small_disk {
            Some(disk) => disk.path.join("data"),
            None => path.join("up-data"),
        };
        let args = vec![
            "up".to_string(),
            "--port".into(),
            port.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ];
        let mut up = Node::new(dts, "up".into(), Role::Up, args, Some(port), &path);
        up.start()?;
        Ok(Cluster {
            services,
            servers,
            workers,
            up: Arc::new(Mutex::new(up)),
            small_disk,
            partitions,
            starts_log,
            dir: path,
            _dir: if keep {
                let _ = dir.keep();
                None
            } else {
                Some(dir)
            },
        })
    }

    /// Every dts node, servers first, then workers, then `dts up`.
    pub fn nodes(&self) -> Vec<Arc<Mutex<Node>>> {
        let mut all: Vec<_> = self.servers.to_vec();
        all.extend(self.workers.iter().cloned());
        all.push(self.up.clone());
        all
    }

    /// The APIs to feed and to check: the servers' and `dts up`'s.
    pub fn apis(&self) -> Vec<(String, String)> {
        let mut apis = Vec::new();
        for node in self.servers.iter().chain(std::iter::once(&self.up)) {
            let node = lock(node);
            if let Some(base) = &node.base {
                apis.push((node.name.clone(), base.clone()));
            }
        }
        apis
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // `dts up` first: a busy tmpfs does not unmount.
        lock(&self.up).kill9();
        if let Some(disk) = self.small_disk.take() {
            disk.unmount();
        }
    }
}

/// A 32 MB tmpfs for `dts up`'s data directory, so a fault can fill it
/// for real. Mounted only as root, as `dts-chaos-disk-PID`; unmounted when
/// the cluster is dropped, and at a later start if a killed run left it
/// (its PID is gone). Another run's live disk is never touched: unmounted
/// under it, its fills would land on the real disk.
pub struct SmallDisk {
    /// Where it is mounted.
    pub path: PathBuf,
}

impl SmallDisk {
    /// Mounts it at `path`; `None` when not root or the mount fails. One
    /// per process: the soak's, or a test's of its own.
    pub fn mount(path: &Path) -> Option<SmallDisk> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        unmount_leftovers();
        std::fs::create_dir_all(path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=32m,mode=0777"])
            .arg(disk_source(std::process::id()))
            .arg(path)
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| SmallDisk {
            path: path.to_path_buf(),
        })
    }

    /// Fills it: writes zeros to a file until the disk is full. Returns
    /// the file, for [`SmallDisk::drain`]; an error, and nothing written,
    /// if the tmpfs is no longer mounted there (the real disk would fill).
    pub fn fill(&self) -> Result<PathBuf, String> {
        use std::io::Write;
        if !self.is_mounted() {
            return Err(format!(
                "{} is no longer our tmpfs; not filling the disk under it",
                self.path.display()
            ));
        }
        let file = self.path.join("dts-chaos-fill");
        if let Ok(mut out) = std::fs::File::create(&file) {
            let chunk = vec![0u8; 1 << 20];
            // ends: a tmpfs of 32 MB is full after at most 32 chunks.
            while out.write_all(&chunk).is_ok() {}
        }
        Ok(file)
    }

    /// Whether our tmpfs is still mounted at its path.
    fn is_mounted(&self) -> bool {
        let source = disk_source(std::process::id());
        std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
            mounts.lines().any(|line| {
                let mut fields = line.split(' ');
                fields.next() == Some(source.as_str())
                    && fields.next().map(Path::new) == Some(self.path.as_path())
            })
        })
    }

    /// Frees it again.
    pub fn drain(&self, file: &Path) {
        let _ = std::fs::remove_file(file);
    }

    /// Unmounts it (lazily: a process still using it keeps it until it
    /// exits).
    pub fn unmount(self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The tmpfs's source name: it names the run that mounted it.
fn disk_source(pid: u32) -> String {
    format!("dts-chaos-disk-{pid}")
}

/// Unmounts the small disks of earlier runs that were killed before they
/// could: mounts named `dts-chaos-disk-PID` whose PID is gone. (Runs that
/// named them `dts-chaos-disk` alone cannot be told from live ones, and
/// are left.)
fn unmount_leftovers() {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    for line in mounts.lines() {
        let mut fields = line.split(' ');
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(pid) = source
            .strip_prefix("dts-chaos-disk-")
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("umount").arg("-l").arg(target).status();
        }
    }
}

fn make_shared(dir: &Path, log: &Path) -> Result<(), ChaosError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ChaosError::Io { path, source }
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).map_err(io(dir))?;
    std::fs::File::create(log).map_err(io(log))?;
    std::fs::set_permissions(log, std::fs::Permissions::from_mode(0o666)).map_err(io(log))?;
    Ok(())
}
