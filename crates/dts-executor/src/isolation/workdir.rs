//! Private directories: each item's fresh working directory, and each warm
//! shell's directory for its items' named pipes.
//!
//! They live in one directory per executor (`dts-items-<pid>-<random>` in
//! the system's temporary directory, or `executor.scratch-root`), mode 0711:
//! an item can enter its own directory but not list the others. Each item's
//! directory is mode 0700 and belongs to the user items run as; it is removed
//! when the item ends.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SetupError;

/// The executor's directory of private directories; removed with it.
#[derive(Debug)]
pub(crate) struct Scratch {
    root: PathBuf,
    /// Who owns the directories made in it, when that is not this process.
    owner: Option<(libc::uid_t, libc::gid_t)>,
    next: AtomicU64,
}

impl Scratch {
    /// Makes the executor's directory in `base` (the system's temporary
    /// directory when `None`).
    pub(crate) fn create(
        base: Option<&Path>,
        owner: Option<(libc::uid_t, libc::gid_t)>,
    ) -> Result<Scratch, SetupError> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        remove_stale(&base);
        let suffix = uuid_like();
        let root = base.join(super::items_dir_name(std::process::id(), suffix));
        // A new name each time, made with mkdir: an existing file or symlink
        // of that name makes this fail instead of being followed.
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&root)
            .and_then(|()| fs::set_permissions(&root, fs::Permissions::from_mode(0o711)))
            .map_err(|source| SetupError::Scratch {
                dir: root.clone(),
                source,
            })?;
        Ok(Scratch {
            root,
            owner,
            next: AtomicU64::new(0),
        })
    }

    /// The executor's directory.
    #[cfg(test)]
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// A new, empty directory (mode 0700, owned by the items' user) named
    /// after `label`.
    pub(crate) fn make_dir(&self, label: &str) -> io::Result<PathBuf> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{label}-{n}"));
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        if let Some((uid, gid)) = self.owner {
            if let Err(e) = std::os::unix::fs::chown(&dir, Some(uid), Some(gid)) {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        }
        Ok(dir)
    }

    /// Who should own files made for items.
    pub(crate) fn owner(&self) -> Option<(libc::uid_t, libc::gid_t)> {
        self.owner
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.root) {
            tracing::debug!(dir = %self.root.display(), error = %e, "could not remove the items' scratch directory");
        }
    }
}

/// Removes the scratch directories a dts that died left in `base`: each is
/// named after its process, and only those of processes that are gone and
/// owned by this process's user (never following a symlink) are removed.
/// What killed items left there may be private.
fn remove_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let ours = fs::symlink_metadata(entry.path())
            .is_ok_and(|m| m.is_dir() && std::os::unix::fs::MetadataExt::uid(&m) == me);
        if !ours || !super::left_by_a_dead_dts(&entry.file_name()) {
            continue;
        }
        match remove_tree(&entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed the item directories of a dts that died")
            }
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove the item directories of a dts that died")
            }
        }
    }
}

/// Removes `dir` and everything in it, making directories writable on the
/// way when an item took its own permissions away (a process that is not
/// root cannot otherwise delete inside them). Never follows symlinks.
pub(crate) fn remove_tree(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(first) => {
            open_up(dir);
            fs::remove_dir_all(dir).map_err(|_| first)
        }
    }
}

/// Gives the owner full access to every directory below `dir`, without
/// following symlinks.
fn open_up(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            open_up(&entry.path());
        }
    }
}

/// 16 random hex digits, for names nobody can guess in advance.
fn uuid_like() -> String {
    let mut bytes = [0u8; 8];
    let filled = fs::File::open("/dev/urandom")
        .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !filled {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos as u64).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_directories_are_private_and_removed_with_the_scratch_directory() {
        let base = tempfile::tempdir().expect("base");
        let scratch = Scratch::create(Some(base.path()), None).expect("scratch");
        let root = scratch.root().to_path_buf();
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o711);
        let one = scratch.make_dir("item").expect("dir");
        let two = scratch.make_dir("item").expect("dir");
        assert_ne!(one, two);
        assert_eq!(mode(&one), 0o700);
        drop(scratch);
        assert!(!root.exists());
    }

    #[test]
    fn directories_of_a_dts_that_died_are_removed_and_live_ones_kept() {
        let base = tempfile::tempdir().expect("base");
        // Pid numbers stop well below i32::MAX: this one is gone.
        let dead = base.path().join(format!("dts-items-{}-abc", i32::MAX));
        let alive = base
            .path()
            .join(format!("dts-items-{}-abc", std::process::id()));
        let other = base.path().join("something-else");
        for dir in [&dead, &alive, &other] {
            fs::create_dir_all(dir.join("item-0")).expect("dir");
        }
        let scratch = Scratch::create(Some(base.path()), None).expect("scratch");
        assert!(!dead.exists());
        assert!(alive.exists() && other.exists());
        drop(scratch);
    }

    #[test]
    fn a_tree_whose_directories_lost_their_permissions_is_still_removed() {
        let base = tempfile::tempdir().expect("base");
        let dir = base.path().join("item");
        fs::create_dir_all(dir.join("locked/inner")).expect("dirs");
        fs::write(dir.join("locked/inner/file"), "x").expect("file");
        fs::set_permissions(dir.join("locked"), fs::Permissions::from_mode(0o000)).expect("chmod");
        remove_tree(&dir).expect("removed");
        assert!(!dir.exists());
        // Removing what is already gone is fine.
        remove_tree(&dir).expect("nothing to remove");
    }
}
