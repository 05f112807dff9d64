//! The embedded store: a SQLite database in a data directory private to
//! dts's user (0700, files 0600), locked so two nodes never share it, or
//! an in-memory one.

use crate::NodeError;
use dts_config::Settings;
use dts_store::{DynStore, SqliteStore};
use rustix::fs::FlockOperation;
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;

/// The data directory's lock, held while the node runs; dropping it (or
/// the process ending) releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// The store `store.*` asks for: in memory (`store.ephemeral`), or the
/// database in `store.data-dir`, which is made private and locked. Leases
/// left in a locked store belong to a node that died, so they are expired
/// at once and its shards may be taken over.
pub async fn open_store(settings: &Settings) -> Result<(DynStore, Option<DataDirLock>), NodeError> {
    if settings.store.ephemeral {
        info!("ephemeral store: nothing survives a restart");
        let store = SqliteStore::in_memory().map_err(|source| NodeError::OpenStore {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        return Ok((Arc::new(store), None));
    }
    let dir = &settings.store.data_dir;
    private_dir(dir)?;
    let lock = lock_data_dir(dir)?;
    let path = private_files(dir)?;
    let open_error = |source| NodeError::OpenStore {
        path: path.clone(),
        source,
    };
    let store = SqliteStore::open(&path).map_err(open_error)?;
    // We hold the data directory's lock: any lease in the store belongs to
    // a dts up that died, so its shards may be taken over now.
    let expired = store.expire_all_leases().await.map_err(open_error)?;
    if expired > 0 {
        info!(
            shards = expired,
            "taking over shards left running by a previous dts up"
        );
    }
    info!(path = %path.display(), "store opened");
    Ok((Arc::new(store), Some(DataDirLock { _file: lock })))
}

/// Takes an exclusive lock on the data directory, so two `dts up` never
/// share (and double-run) one store.
fn lock_data_dir(dir: &Path) -> Result<File, NodeError> {
    let file = open_private(&dir.join(LOCK_FILE), "create")?;
    // A dts that was just killed can leave the lock held for a moment by a
    // child it forked that has not yet run its program: try for a while.
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let locked = loop {
        let locked = rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok();
        if locked || std::time::Instant::now() >= deadline {
            break locked;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if !locked {
        return Err(NodeError::DataDirInUse {
            dir: dir.to_path_buf(),
        });
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

/// Opens `path` for writing, creating it 0600 if missing and keeping what
/// it holds; `action` names the step in the error.
fn open_private(path: &Path, action: &'static str) -> Result<File, NodeError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| NodeError::DataDir {
            action,
            path: path.to_path_buf(),
            source,
        })
}

/// Creates the data directory 0700, or makes an existing one (an older dts
/// made it 0755) private: it holds every script, variable, input and
/// output, which other users of the machine must not read.
fn private_dir(dir: &Path) -> Result<(), NodeError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| NodeError::DataDir {
            action: "create the data directory",
            path: dir.to_path_buf(),
            source,
        })?;
    make_private(dir, 0o700)
}

/// Makes dts's existing files in the data directory 0600, and creates the
/// database 0600 if it is missing; returns the database's path. The
/// database must exist with that mode before SQLite opens it: SQLite gives
/// the `-wal` and `-shm` files it creates the database file's mode.
fn private_files(dir: &Path) -> Result<PathBuf, NodeError> {
    for name in DATA_FILES {
        let path = dir.join(name);
        if path.exists() {
            make_private(&path, 0o600)?;
        }
    }
    let path = dir.join(STORE_FILE);
    open_private(&path, "create the store")?;
    Ok(path)
}

/// Sets `path`'s mode to `mode` if its group or others have any access.
fn make_private(path: &Path, mode: u32) -> Result<(), NodeError> {
    let current = std::fs::metadata(path)
        .map_err(|source| NodeError::DataDir {
            action: "read the permissions of",
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if current & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        NodeError::DataDir {
            action: "take group and other access away from",
            path: path.to_path_buf(),
            source,
        }
    })?;
    info!(path = %path.display(), was = %format!("{current:o}"), now = %format!("{mode:o}"), "made private to dts's user");
    Ok(())
}
