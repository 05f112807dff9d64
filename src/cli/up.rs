//! `dts up`: the whole system on one machine — API, scheduler consumers and a
//! local worker over the embedded bus and a SQLite store, served over HTTP.
//! The store's data directory is private to dts's user (0700, files 0600).

use super::args::{ConfigArgs, ExecArgs, ListenArgs, flag};
use super::process;
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_node::embedded::{EmbeddedNode, Role};
use dts_node::node;
use dts_store::{DynStore, SqliteStore};
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    listen: ListenArgs,
    #[command(flatten)]
    exec: ExecArgs,
    /// Where the SQLite store lives (store.data-dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory; nothing survives a restart (store.ephemeral).
    #[arg(long)]
    ephemeral: bool,
}

impl UpArgs {
    /// The options as configuration flags, the top layer.
    fn flags(&self) -> Vec<(String, String)> {
        let mut flags = Vec::new();
        self.listen.push_flags(&mut flags);
        self.exec.push_flags(&mut flags);
        flag(
            &mut flags,
            "store.data-dir",
            self.data_dir.as_ref().map(|d| d.display()),
        );
        flag(
            &mut flags,
            "store.ephemeral",
            self.ephemeral.then_some(true),
        );
        flags
    }
}

pub async fn run(args: UpArgs) -> Result<ExitCode> {
    let settings = args.config.load(args.flags())?;
    node::check_exposure(&settings)?;

    let (store, _lock): (DynStore, Option<File>) = if settings.store.ephemeral {
        info!("ephemeral store: nothing survives a restart");
        (Arc::new(SqliteStore::in_memory()?), None)
    } else {
        let dir = &settings.store.data_dir;
        private_dir(dir)?;
        let lock = lock_data_dir(dir)?;
        let path = private_files(dir)?;
        let store = SqliteStore::open(&path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        // We hold the data directory's lock: any lease in the store belongs to
        // a dts up that died, so its shards may be taken over now.
        let expired = store.expire_all_leases().await?;
        if expired > 0 {
            info!(
                shards = expired,
                "taking over shards left running by a previous dts up"
            );
        }
        info!(path = %path.display(), "store opened");
        (Arc::new(store), Some(lock))
    };
    let node = EmbeddedNode::start(
        &settings,
        store,
        Role::Up,
        process::items_open_files_limit(),
    )
    .await?;
    info!(worker = %node.worker_id(), "dts up: API, scheduler and worker running");
    let state = node::app_state(&settings, node.store.clone(), node.submitter.clone());
    node::serve_api(&settings, state, node.shutdown.clone()).await?;
    node.stop().await;
    info!("dts stopped");
    Ok(ExitCode::SUCCESS)
}

/// Takes an exclusive lock on the data directory, so two `dts up` never
/// share (and double-run) one store.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // A dts that was just killed can leave the lock held for a moment by a
    // child it forked that has not yet run its program: try for a while.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let locked = loop {
        // SAFETY: flock on a file descriptor we own; it has no memory effects.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 || std::time::Instant::now() >= deadline {
            break rc == 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if !locked {
        bail!(
            "another dts is already using the data directory {} (stop it, or pass --data-dir)",
            dir.display()
        );
    }
    Ok(file)
}

/// The SQLite database in the data directory.
const STORE_FILE: &str = "dts.sqlite3";
/// How long [`lock_data_dir`] waits for the lock before it says another
/// dts holds it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The file [`lock_data_dir`] locks.
const LOCK_FILE: &str = "lock";
/// Every file dts keeps in the data directory: the database, SQLite's
/// journals beside it, and the lock.
const DATA_FILES: [&str; 5] = [
    STORE_FILE,
    "dts.sqlite3-wal",
    "dts.sqlite3-shm",
    "dts.sqlite3-journal",
    LOCK_FILE,
];

/// Creates the data directory 0700, or makes an existing one (an older dts
/// made it 0755) private: it holds every script, variable, input and
/// output, which other users of the machine must not read.
fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    make_private(dir, 0o700)
}

/// Makes dts's existing files in the data directory 0600, and creates the
/// database 0600 if it is missing; returns the database's path. The
/// database must exist with that mode before SQLite opens it: SQLite gives
/// the `-wal` and `-shm` files it creates the database file's mode.
fn private_files(dir: &Path) -> Result<PathBuf> {
    for name in DATA_FILES {
        let path = dir.join(name);
        if path.exists() {
            make_private(&path, 0o600)?;
        }
    }
    let path = dir.join(STORE_FILE);
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create the store {}", path.display()))?;
    Ok(path)
}

/// Sets `path`'s mode to `mode` if its group or others have any access.
fn make_private(path: &Path, mode: u32) -> Result<()> {
    let current = std::fs::metadata(path)
        .with_context(|| format!("cannot read the permissions of {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    if current & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot make {} private to its owner", path.display()))?;
    info!(path = %path.display(), was = %format!("{current:o}"), now = %format!("{mode:o}"), "made private to dts's user");
    Ok(())
}
