//! Starting and stopping server processes, and finding free ports.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A port nobody listens on right now. Another process could take it before
/// the caller binds it; callers that start servers retry on a new port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the OS gives out a free loopback port")
}

/// Waits until something accepts connections on `port`, or `timeout` passes.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    wait_for_port_on(std::net::Ipv4Addr::LOCALHOST, port, timeout)
}

/// [`wait_for_port`] on a local address other than 127.0.0.1 (a server
/// bound to one address answers on no other).
pub(crate) fn wait_for_port_on(host: std::net::Ipv4Addr, port: u16, timeout: Duration) -> bool {
    let address = SocketAddr::from((host, port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The workspace's top directory (where `.tools/` lives).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// Finds a program: an environment variable naming it, then `.tools/bin`,
/// then the usual system directories, then `PATH`.
pub(crate) fn find_program(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let candidates = [
        workspace_root().join(".tools/bin").join(name),
        PathBuf::from("/usr/sbin").join(name),
        PathBuf::from("/usr/bin").join(name),
        PathBuf::from("/usr/local/bin").join(name),
    ];
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("{name} is not installed: run scripts/install-test-deps.sh (or set {env_var})");
}

/// Stops a child: SIGTERM, then SIGKILL if it is still there after `grace`.
pub(crate) fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILL and reap.
pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts a server process in a directory of its own: `spawn(port, dir)`
/// returns the child once it answers on `port`, or `None` if it did not.
/// A closure, so a server can carry settings (the broker's storage).
pub(crate) type Spawn = Box<dyn Fn(u16, &TempDir) -> Option<Child> + Send + Sync>;

/// A server process on a free loopback port with its own directory, which
/// can be stopped, killed and restarted on the same port and directory.
/// Killed when dropped.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) port: u16,
    pub(crate) dir: TempDir,
    spawn: Spawn,
    what: &'static str,
}

impl Server {
    /// Starts `what` on a free port, trying a new port if one was taken
    /// between finding it free and the server binding it.
    pub(crate) fn start(
        what: &'static str,
        spawn: impl Fn(u16, &TempDir) -> Option<Child> + Send + Sync + 'static,
    ) -> Server {
        let spawn: Spawn = Box::new(spawn);
        let dir = TempDir::new().unwrap_or_else(|e| panic!("temp dir for {what}: {e}"));
        for _ in 0..5 {
            let port = free_port();
            if let Some(child) = spawn(port, &dir) {
                return Server {
                    child: Some(child),
                    port,
                    dir,
                    spawn,
                    what,
                };
            }
        }
        panic!(
            "{what} did not start (its files are in {})",
            dir.path().display()
        );
    }

    pub(crate) fn child(&self) -> Option<&Child> {
        self.child.as_ref()
    }

    /// SIGTERM, then SIGKILL if it is still there after a grace.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop(&mut child, Duration::from_secs(5));
        }
    }

    /// SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Stops it and starts it again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.stop();
        for _ in 0..50 {
            if let Some(child) = (self.spawn)(self.port, &self.dir) {
                self.child = Some(child);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not restart on port {}", self.what, self.port);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
