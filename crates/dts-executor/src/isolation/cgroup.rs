//! One cgroup per running item: every process the item starts is in it, so
//! killing the cgroup kills them all (even those that left the item's process
//! group with `setsid`), and the task's `memoryMb` and `cpus` become the
//! cgroup's limits.
//!
//! Design for pure cgroup v2 first: the hierarchy is found in
//! `/proc/self/mountinfo`, this process's own cgroup in `/proc/self/cgroup`,
//! and item cgroups are made in a directory of this executor's below it
//! (`dts-items-<pid>-<n>`). Killing uses `cgroup.kill`. Limits use the
//! `memory` and `cpu` controllers when the v2 hierarchy has them; where it
//! does not (a hybrid host, where v1 holds the controllers), the v1 `memory`
//! and `cpu` hierarchies hold the limits instead.
//!
//! Making a cgroup costs milliseconds (the kernel waits for RCU), so cgroups
//! are kept in a pool and reused once empty; limits are written again for
//! every item.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::executor::ItemLimits;

/// The period `cpus` quotas are expressed in, in microseconds (the kernel's
/// default CFS period).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// Why item cgroups cannot be used, or one could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// This machine has no cgroup v2 hierarchy this process can see.
    #[error("no cgroup v2 hierarchy is mounted (none in /proc/self/mountinfo)")]
    NoHierarchy,
    /// `/proc/self/cgroup` does not place this process in the v2 hierarchy.
    #[error("this process's cgroup v2 path is unknown (no `0::` line in /proc/self/cgroup)")]
    UnknownOwnCgroup,
    /// A file or directory of the hierarchy could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot create", "cannot write", ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The task asks for a limit no hierarchy here can enforce.
    #[error(
        "this worker cannot enforce {field}: {reason}; run the worker where cgroups are \
         writable (as root, or in a delegated cgroup) or submit the task without {field}"
    )]
    CannotEnforce {
        /// The task's field naming the limit (`memoryMb`, `cpus`).
        field: &'static str,
        /// Why no hierarchy here can enforce it.
        reason: &'static str,
    },
}

impl CgroupError {
    fn io(what: &'static str, path: &Path, source: io::Error) -> Self {
        CgroupError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The OS error behind this one, if any (to tell resource exhaustion
    /// apart from a configuration problem).
    pub(crate) fn os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// One line of `/proc/self/mountinfo` that dts cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The directory of the hierarchy that is mounted (`/` unless a
    /// container mounted only part of it).
    pub(crate) root: String,
    /// Where it is mounted.
    pub(crate) point: PathBuf,
    pub(crate) fstype: String,
    /// The superblock options: for cgroup v1, which controllers the
    /// hierarchy has (`rw,memory`).
    pub(crate) super_options: Vec<String>,
}

/// The cgroup (and cgroup2) mounts in a `/proc/self/mountinfo` text.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let (root, point) = (fields.get(3)?, fields.get(4)?);
            let mut rest = after.split(' ');
            let fstype = rest.next()?;
            let _source = rest.next()?;
            let super_options = rest.next().unwrap_or("");
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(Mount {
                root: unescape_octal(root),
                point: PathBuf::from(unescape_octal(point)),
                fstype: fstype.to_owned(),
                super_options: super_options.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\NNN` (octal).
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|b| (b'0'..=b'7').contains(b)))
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match escaped {
            Some(value) => {
                out.push(value);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's cgroup path in the hierarchy whose controller list
/// matches: `""` for the v2 hierarchy (`0::/path`), a controller name such
/// as `memory` for a v1 one.
pub(crate) fn own_path(proc_self_cgroup: &str, controller: &str) -> Option<String> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            controllers.is_empty()
        } else {
            controllers.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_owned())
    })
}

/// The directory of cgroup `path` under `mount`, if the mount shows it.
pub(crate) fn dir_of(mount: &Mount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path.trim_start_matches('/')
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(if relative.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(relative)
    })
}

/// Distinguishes the item directories of several executors in one process.
static NEXT_PARENT: AtomicU64 = AtomicU64::new(0);
/// Distinguishes item cgroups (and their names in logs).
static NEXT_ITEM: AtomicU64 = AtomicU64::new(0);

/// A hierarchy this executor made its items' directory in.
#[derive(Debug)]
struct Hierarchy {
    /// `dts-items-<pid>-<n>`, below this process's own cgroup.
    parent: PathBuf,
}

/// What the v2 hierarchy offers this executor.
#[derive(Debug)]
struct V2 {
    hierarchy: Hierarchy,
    memory: bool,
    cpu: bool,
    /// `cgroup.kill` exists (Linux 5.14); otherwise items are frozen and
    /// killed one process at a time.
    kill_file: bool,
}

/// Every hierarchy item cgroups use, and the pool of empty item cgroups.
#[derive(Debug)]
pub(crate) struct Cgroups {
    v2: Option<V2>,
    /// v1 hierarchies for the limits v2 cannot enforce here.
    v1_memory: Option<Hierarchy>,
    v1_cpu: Option<Hierarchy>,
    /// Empty item cgroups, ready for the next item.
    idle: Mutex<Vec<ItemCgroup>>,
}

impl Cgroups {
    /// Sets up item cgroups: the v2 hierarchy when `track` (containment by
    /// cgroup) and writable, and v1 `memory`/`cpu` for the limits v2 lacks.
    /// Never fails outright: what is not available is left out, and
    /// [`Cgroups::tracks`] and [`Cgroups::limits`] say what is.
    pub(crate) fn discover(track: bool) -> (Cgroups, Option<CgroupError>) {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = parse_mountinfo(&mountinfo);
        let (v2, why_not) = if track {
            match setup_v2(&mounts, &own) {
                Ok(v2) => (Some(v2), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        let v1_memory = if v2.as_ref().is_some_and(|v2| v2.memory) {
            None
        } else {
            setup_v1(&mounts, &own, "memory")
        };
        let v1_cpu = if v2.as_ref().is_some_and(|v2| v2.cpu) {
            None
        } else {
            setup_v1(&mounts, &own, "cpu")
        };
        let cgroups = Cgroups {
            v2,
            v1_memory,
            v1_cpu,
            idle: Mutex::new(Vec::new()),
        };
        (cgroups, why_not)
    }

    /// Whether every item gets a v2 cgroup that is killed when it ends.
    pub(crate) fn tracks(&self) -> bool {
        self.v2.is_some()
    }

    /// Which of the task's limits can be enforced: (`memoryMb`, `cpus`).
    pub(crate) fn limits(&self) -> (bool, bool) {
        let v2 = self.v2.as_ref();
        (
            v2.is_some_and(|v2| v2.memory) || self.v1_memory.is_some(),
            v2.is_some_and(|v2| v2.cpu) || self.v1_cpu.is_some(),
        )
    }

    /// Whether there is anything to do for an item with `limits`.
    fn needed(&self, limits: &ItemLimits) -> bool {
        self.tracks() || limits.memory_mb.is_some() || limits.milli_cpus.is_some()
    }

    /// The cgroup for one item with `limits` written, or `None` when the
    /// item needs none (no tracking here and no limits asked for).
    pub(crate) fn take(&self, limits: &ItemLimits) -> Result<Option<ItemCgroup>, CgroupError> {
        if !self.needed(limits) {
            return Ok(None);
        }
        let (memory, cpu) = self.limits();
        if limits.memory_mb.is_some() && !memory {
            return Err(CgroupError::CannotEnforce {
                field: "memoryMb",
                reason: "no writable cgroup has the memory controller",
            });
        }
        if limits.milli_cpus.is_some() && !cpu {
            return Err(CgroupError::CannotEnforce {
                field: "cpus",
                reason: "no writable cgroup has the cpu controller",
            });
        }
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let empty = idle.iter().position(ItemCgroup::is_empty);
            empty.map(|at| idle.swap_remove(at))
        };
        let mut cgroup = match reused {
            Some(cgroup) => cgroup,
            None => self.create()?,
        };
        match cgroup
            .set_limits(self, limits)
            .and_then(|()| cgroup.open_procs())
        {
            Ok(()) => Ok(Some(cgroup)),
            Err(e) => {
                // A cgroup whose limits cannot be written is not reused.
                cgroup.remove_now();
                Err(e)
            }
        }
    }

    /// Gives an item's cgroup back once its processes were killed; it is
    /// reused when empty.
    pub(crate) fn put(&self, mut cgroup: ItemCgroup) {
        cgroup.close_procs();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.push(cgroup);
    }

    fn create(&self) -> Result<ItemCgroup, CgroupError> {
        let name = format!("item-{}", NEXT_ITEM.fetch_add(1, Ordering::Relaxed));
        let mut cgroup = ItemCgroup {
            name: name.clone(),
            v2: None,
            v1_memory: None,
            v1_cpu: None,
            kill_file: self.v2.as_ref().is_some_and(|v2| v2.kill_file),
            v2_memory: self.v2.as_ref().is_some_and(|v2| v2.memory),
            v2_cpu: self.v2.as_ref().is_some_and(|v2| v2.cpu),
            joins_v1: (false, false),
            v2_written: None,
            oom_kills_before: None,
        };
        if let Some(v2) = &self.v2 {
            cgroup.v2 = Some(Member::create(&v2.hierarchy, &name)?);
        }
        // v1 directories are made when an item first needs their limits.
        Ok(cgroup)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        for mut cgroup in idle {
            cgroup.remove_now();
        }
        let parents = [
            self.v2.as_ref().map(|v2| &v2.hierarchy),
            self.v1_memory.as_ref(),
            self.v1_cpu.as_ref(),
        ];
        for hierarchy in parents.into_iter().flatten() {
            if let Err(e) = fs::remove_dir(&hierarchy.parent) {
                tracing::debug!(dir = %hierarchy.parent.display(), error = %e, "could not remove the items' cgroup directory");
            }
        }
    }
}

/// Finds and prepares the v2 hierarchy: this executor's directory below
/// this process's cgroup, with the controllers it can enable.
fn setup_v2(mounts: &[Mount], own: &str) -> Result<V2, CgroupError> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or(CgroupError::NoHierarchy)?;
    let path = own_path(own, "").ok_or(CgroupError::UnknownOwnCgroup)?;
    let own_dir = dir_of(mount, &path).ok_or(CgroupError::UnknownOwnCgroup)?;
    remove_stale_parents(&own_dir);
    let parent = make_parent(&own_dir)?;
    if !mount.super_options.iter().any(|o| o == "favordynmods") {
        // Moving a process into a cgroup takes a lock that, without this
        // option, waits for an RCU grace period and holds up every fork on
        // the machine meanwhile: items start a few milliseconds later.
        tracing::info!(
            mount = %mount.point.display(),
            "cgroup2 is mounted without favordynmods; items start faster with it \
             (mount -o remount,favordynmods {})",
            mount.point.display()
        );
    }
    let kill_file = parent.join("cgroup.kill").exists();
    let mut v2 = V2 {
        hierarchy: Hierarchy { parent },
        memory: false,
        cpu: false,
        kill_file,
    };
    let available = fs::read_to_string(own_dir.join("cgroup.controllers")).unwrap_or_default();
    for controller in ["memory", "cpu"] {
        if !available.split_whitespace().any(|c| c == controller) {
            continue;
        }
        let enabled = enable_controller(&own_dir, controller)
            && write_file(
                &v2.hierarchy.parent.join("cgroup.subtree_control"),
                &format!("+{controller}"),
            )
            .is_ok();
        match controller {
            "memory" => v2.memory = enabled,
            _ => v2.cpu = enabled,
        }
    }
    Ok(v2)
}

/// Makes `<own>/dts-items-<pid>-<n>`.
fn make_parent(own_dir: &Path) -> Result<PathBuf, CgroupError> {
    let parent = own_dir.join(super::items_dir_name(
        std::process::id(),
        NEXT_PARENT.fetch_add(1, Ordering::Relaxed),
    ));
    match fs::create_dir(&parent) {
        Ok(()) => Ok(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(parent),
        Err(e) => Err(CgroupError::io("cannot make the cgroup", &parent, e)),
    }
}

/// Enables `controller` for the children of `own_dir`. A cgroup that holds
/// processes cannot do that (cgroup v2's "no internal processes" rule), so
/// when this process is alone in its cgroup — as a systemd service with
/// `Delegate=yes` is — it moves itself to a leaf of its own first, as
/// systemd's delegation documentation recommends.
fn enable_controller(own_dir: &Path, controller: &str) -> bool {
    let control = own_dir.join("cgroup.subtree_control");
    let already = fs::read_to_string(&control)
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == controller);
    if already || write_file(&control, &format!("+{controller}")).is_ok() {
        return true;
    }
    let procs = fs::read_to_string(own_dir.join("cgroup.procs")).unwrap_or_default();
    let me = std::process::id().to_string();
    if procs.split_whitespace().any(|pid| pid != me) {
        tracing::info!(
            cgroup = %own_dir.display(),
            controller,
            "other processes share this cgroup, so its {controller} controller cannot be handed to items"
        );
        return false;
    }
    let leaf = own_dir.join(format!("dts-supervisor-{me}"));
    let moved = fs::create_dir(&leaf)
        .or_else(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                Ok(())
            } else {
                Err(e)
            }
        })
        .and_then(|()| write_file(&leaf.join("cgroup.procs"), "0"));
    if let Err(e) = moved {
        tracing::info!(cgroup = %own_dir.display(), error = %e, "cannot move dts to a leaf cgroup to enable {controller} for items");
        return false;
    }
    write_file(&control, &format!("+{controller}")).is_ok()
}

/// What became of removing the item cgroups of a dts that died.
///
/// Several dts processes may start at once (a worker and `dts run`s, or a
/// test suite's many), and each sweeps what dead ones left: the directory
/// one of them removes is gone when the next one gets to it. That is what
/// the sweep wanted, so it is not worth a warning.
#[derive(Debug)]
enum StaleRemoval {
    /// This process removed it.
    Removed,
    /// Another process removed it first.
    AlreadyGone,
    /// Its items are still dying (a cgroup's `cgroup.kill` does not wait),
    /// or the dts that made it is exiting and removing it too: the next
    /// start looks again.
    StillBusy,
    /// It could not be removed, for this reason.
    Failed(io::Error),
}

impl From<io::Result<()>> for StaleRemoval {
    fn from(removal: io::Result<()>) -> StaleRemoval {
        match removal {
            Ok(()) => StaleRemoval::Removed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => StaleRemoval::AlreadyGone,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => StaleRemoval::StillBusy,
            Err(e) => StaleRemoval::Failed(e),
        }
    }
}

/// Removes item directories left by a dts that died: `dts-items-<pid>-*`
/// whose process is gone. Their processes are killed first.
fn remove_stale_parents(own_dir: &Path) {
    let Ok(entries) = fs::read_dir(own_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !super::left_by_a_dead_dts(&entry.file_name()) {
            continue;
        }
        let dir = entry.path();
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = write_file(&child.path().join("cgroup.kill"), "1");
                let _ = fs::remove_dir(child.path());
            }
        }
        match StaleRemoval::from(fs::remove_dir(&dir)) {
            StaleRemoval::Removed => {
                tracing::info!(dir = %dir.display(), "removed the item cgroups of a dts that died")
            }
            StaleRemoval::AlreadyGone => {
                tracing::debug!(dir = %dir.display(), "another dts removed the item cgroups of a dts that died first")
            }
            StaleRemoval::StillBusy => {
                tracing::info!(dir = %dir.display(), "the item cgroups of a dts that died are still emptying; left for the next start")
            }
            StaleRemoval::Failed(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the item cgroups of a dts that died")
            }
        }
    }
}

/// A v1 hierarchy with `controller`, made ready for item cgroups, if it is
/// mounted and writable.
fn setup_v1(mounts: &[Mount], own: &str, controller: &str) -> Option<Hierarchy> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))?;
    let path = own_path(own, controller)?;
    let own_dir = dir_of(mount, &path)?;
    remove_stale_parents(&own_dir);
    match make_parent(&own_dir) {
        Ok(parent) => Some(Hierarchy { parent }),
        Err(e) => {
            tracing::debug!(controller, error = %e, "the v1 {controller} hierarchy is not writable");
            None
        }
    }
}

/// The item's member of a v1 hierarchy, made when first needed.
fn member_of<'m>(
    member: &'m mut Option<Member>,
    hierarchy: Option<&Hierarchy>,
    name: &str,
) -> Result<&'m Member, CgroupError> {
    let missing = CgroupError::CannotEnforce {
        field: "memoryMb or cpus",
        reason: "no writable cgroup has the controller",
    };
    if member.is_none() {
        let hierarchy = hierarchy.ok_or(missing)?;
        *member = Some(Member::create(hierarchy, name)?);
        return member.as_ref().ok_or(CgroupError::NoHierarchy);
    }
    member.as_ref().ok_or(missing)
}

/// Writes `text` to a cgroup file in one `write`.
fn write_file(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text)
}

/// An item's directory in one hierarchy, with its `cgroup.procs` open for
/// writing while an item uses it: opened before any fork, so that joining
/// it in the child is one `write` (and works after the child gave up root:
/// the kernel checks the credentials of whoever opened the file). Closed
/// while the cgroup waits in the pool, so the pool holds no descriptors.
#[derive(Debug)]
struct Member {
    dir: PathBuf,
    procs: Option<OwnedFd>,
}

impl Member {
    fn create(hierarchy: &Hierarchy, name: &str) -> Result<Member, CgroupError> {
        let dir = hierarchy.parent.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CgroupError::io("cannot make the cgroup", &dir, e)),
        }
        Ok(Member { dir, procs: None })
    }

    /// Opens `cgroup.procs` for the next item, if it is not open.
    fn open_procs(&mut self) -> Result<(), CgroupError> {
        if self.procs.is_none() {
            let path = self.dir.join("cgroup.procs");
            let file = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| CgroupError::io("cannot open", &path, e))?;
            self.procs = Some(file.into());
        }
        Ok(())
    }

    fn write(&self, file: &str, text: &str) -> Result<(), CgroupError> {
        let path = self.dir.join(file);
        write_file(&path, text).map_err(|e| CgroupError::io("cannot write", &path, e))
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn pids(&self) -> Vec<libc::pid_t> {
        self.read("cgroup.procs")
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }
}

/// The cgroups of one item: a v2 one that holds every process of the item,
/// and v1 ones for limits the v2 hierarchy cannot enforce here.
#[derive(Debug)]
pub(crate) struct ItemCgroup {
    name: String,
    v2: Option<Member>,
    v1_memory: Option<Member>,
    v1_cpu: Option<Member>,
    kill_file: bool,
    v2_memory: bool,
    v2_cpu: bool,
    /// Whether this item joins the v1 `memory` and `cpu` cgroups: only an
    /// item with that limit does (each hierarchy joined costs a migration).
    joins_v1: (bool, bool),
    /// The limits last written to the v2 cgroup (memory bytes, CPU quota),
    /// so the next item with the same ones writes nothing.
    v2_written: Option<(Option<u64>, Option<u64>)>,
    /// OOM kills counted before this item started, when it has a memory
    /// limit (the counter lives as long as the cgroup, which is reused, so
    /// only a count taken at the item's start says what it did).
    oom_kills_before: Option<u64>,
}

impl ItemCgroup {
    /// The members this item's processes are in.
    fn joined(&self) -> impl Iterator<Item = &Member> {
        let (memory, cpu) = self.joins_v1;
        [
            self.v2.as_ref(),
            self.v1_memory.as_ref().filter(|_| memory),
            self.v1_cpu.as_ref().filter(|_| cpu),
        ]
        .into_iter()
        .flatten()
    }

    /// The `cgroup.procs` files the child writes `0` to, to join.
    pub(crate) fn procs_fds(&self) -> Vec<RawFd> {
        self.joined()
            .filter_map(|member| member.procs.as_ref())
            .map(|procs| procs.as_raw_fd())
            .collect()
    }

    /// Opens the `cgroup.procs` files of the members this item joins.
    fn open_procs(&mut self) -> Result<(), CgroupError> {
        let (memory, cpu) = self.joins_v1;
        for member in [
            self.v2.as_mut(),
            self.v1_memory.as_mut().filter(|_| memory),
            self.v1_cpu.as_mut().filter(|_| cpu),
        ]
        .into_iter()
        .flatten()
        {
            member.open_procs()?;
        }
        Ok(())
    }

    /// Closes every `cgroup.procs` this cgroup holds open.
    fn close_procs(&mut self) {
        for member in [
            self.v2.as_mut(),
            self.v1_memory.as_mut(),
            self.v1_cpu.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            member.procs = None;
        }
    }

    /// Moves `pid` (a warm shell's subshell that has not started the
    /// script yet) into every cgroup of the item.
    pub(crate) fn add(&self, pid: u32) -> Result<(), CgroupError> {
        for member in self.joined() {
            member.write("cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Writes the item's limits: to the v2 cgroup when it has the
    /// controller (only what changed since the last item), otherwise to v1
    /// cgroups, made on first use, which the item then joins.
    fn set_limits(&mut self, cgroups: &Cgroups, limits: &ItemLimits) -> Result<(), CgroupError> {
        let memory_bytes = limits.memory_mb.map(|mb| mb.saturating_mul(1024 * 1024));
        let quota_us = limits
            .milli_cpus
            .map(|milli| (u64::from(milli) * CPU_PERIOD_US / 1000).max(CPU_MIN_QUOTA_US));
        let (old_memory, old_quota) = match self.v2_written {
            Some((memory, quota)) => (Some(memory), Some(quota)),
            None => (None, None),
        };
        if let (Some(v2), true) = (&self.v2, self.v2_memory) {
            if old_memory != Some(memory_bytes) {
                let max = memory_bytes.map_or("max".to_owned(), |b| b.to_string());
                v2.write("memory.max", &max)?;
                // Over its limit an item is killed, not pushed into swap.
                let _ = v2.write(
                    "memory.swap.max",
                    if memory_bytes.is_some() { "0" } else { "max" },
                );
            }
        }
        if let (Some(v2), true) = (&self.v2, self.v2_cpu) {
            if old_quota != Some(quota_us) {
                let max = quota_us.map_or(format!("max {CPU_PERIOD_US}"), |q| {
                    format!("{q} {CPU_PERIOD_US}")
                });
                v2.write("cpu.max", &max)?;
            }
        }
        self.v2_written = Some((memory_bytes, quota_us));
        let v1_memory = memory_bytes.filter(|_| !self.v2_memory);
        let v1_quota = quota_us.filter(|_| !self.v2_cpu);
        self.joins_v1 = (v1_memory.is_some(), v1_quota.is_some());
        if let Some(bytes) = v1_memory {
            let memory = member_of(&mut self.v1_memory, cgroups.v1_memory.as_ref(), &self.name)?;
            let limit = bytes.to_string();
            // v1 wants memory+swap never below memory: lift it first, set
            // memory, then bring memory+swap down to the same value (so an
            // item over its limit is killed rather than swapped).
            let swap = memory.dir.join("memory.memsw.limit_in_bytes").exists();
            if swap {
                let _ = memory.write("memory.memsw.limit_in_bytes", "-1");
            }
            if memory.write("memory.limit_in_bytes", &limit).is_err() {
                // Page cache the last item left can hold usage above a new,
                // lower limit: drop it and try once more.
                let _ = memory.write("memory.force_empty", "0");
                memory.write("memory.limit_in_bytes", &limit)?;
            }
            if swap {
                let _ = memory.write("memory.memsw.limit_in_bytes", &limit);
            }
        }
        if let Some(quota) = v1_quota {
            let cpu = member_of(&mut self.v1_cpu, cgroups.v1_cpu.as_ref(), &self.name)?;
            cpu.write("cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
            cpu.write("cpu.cfs_quota_us", &quota.to_string())?;
        }
        self.oom_kills_before = memory_bytes.map(|_| self.oom_kills());
        Ok(())
    }

    /// OOM kills this cgroup has seen in its life.
    fn oom_kills(&self) -> u64 {
        let count = |text: String| {
            text.lines()
                .find_map(|line| line.strip_prefix("oom_kill "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        match (&self.v2, self.v2_memory, &self.v1_memory, self.joins_v1.0) {
            (Some(v2), true, _, _) => count(v2.read("memory.events")),
            (_, _, Some(v1), true) => count(v1.read("memory.oom_control")),
            _ => 0,
        }
    }

    /// Whether the kernel killed a process of this item for going over its
    /// memory limit (`false` for an item without one).
    pub(crate) fn oom_killed(&self) -> bool {
        self.oom_kills_before
            .is_some_and(|before| self.oom_kills() > before)
    }

    /// Kills every process of the item. Without `cgroup.kill` (before Linux
    /// 5.14) the cgroup is frozen so nothing can fork, and its processes are
    /// killed one by one.
    pub(crate) fn kill(&self) {
        let Some(v2) = &self.v2 else { return };
        if self.kill_file {
            if let Err(e) = v2.write("cgroup.kill", "1") {
                tracing::warn!(cgroup = %self.name, error = %e, "cannot kill the item's cgroup");
            }
            return;
        }
        let _ = v2.write("cgroup.freeze", "1");
        for _ in 0..100 {
            let pids = v2.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions; the pid
                // was listed in the item's own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = v2.write("cgroup.freeze", "0");
    }

    /// No process is left in any of the item's cgroups.
    fn is_empty(&self) -> bool {
        let v2_empty = self.v2.as_ref().is_none_or(|v2| {
            v2.read("cgroup.events")
                .lines()
                .any(|line| line.trim() == "populated 0")
        });
        v2_empty
            && [&self.v1_memory, &self.v1_cpu]
                .into_iter()
                .flatten()
                .all(|member| member.pids().is_empty())
    }

    /// Kills what is left and removes the directories (the pool does not
    /// want this cgroup back). A directory that still holds a process that
    /// will not die stays, and is logged.
    pub(crate) fn remove_now(&mut self) {
        self.kill();
        for member in [self.v2.take(), self.v1_memory.take(), self.v1_cpu.take()]
            .into_iter()
            .flatten()
        {
            let mut removed = false;
            for _ in 0..200 {
                if fs::remove_dir(&member.dir).is_ok() {
                    removed = true;
                    break;
                }
                if let Some(pid) = member.pids().first() {
                    // SAFETY: as in `kill`.
                    unsafe { libc::kill(*pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if !removed {
                tracing::warn!(cgroup = %member.dir.display(), "cannot remove an item cgroup; a process in it does not die");
            }
        }
    }
}

impl Drop for ItemCgroup {
    /// An item cgroup dropped instead of given back (its run was aborted):
    /// kill what is in it now, and remove it off this thread once empty.
    fn drop(&mut self) {
        if self.v2.is_none() && self.v1_memory.is_none() && self.v1_cpu.is_none() {
            return;
        }
        self.kill();
        let mut rest = ItemCgroup {
            name: std::mem::take(&mut self.name),
            v2: self.v2.take(),
            v1_memory: self.v1_memory.take(),
            v1_cpu: self.v1_cpu.take(),
            kill_file: self.kill_file,
            v2_memory: self.v2_memory,
            v2_cpu: self.v2_cpu,
            joins_v1: self.joins_v1,
            v2_written: None,
            oom_kills_before: None,
        };
        let spawned = std::thread::Builder::new()
            .name("dts-cgroup-cleanup".into())
            .spawn(move || rest.remove_now());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread to remove an item cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI seen: a `dts run` warned on stderr because a `dts` starting at the
    /// same moment had removed a dead dts's item cgroups a moment before.
    #[test]
    fn item_cgroups_another_dts_removed_first_are_not_a_failure() {
        let outcome = |e: io::Error| StaleRemoval::from(Err(e));
        assert!(matches!(StaleRemoval::from(Ok(())), StaleRemoval::Removed));
        assert!(matches!(
            outcome(io::Error::from(io::ErrorKind::NotFound)),
            StaleRemoval::AlreadyGone
        ));
        assert!(matches!(
            outcome(io::Error::from_raw_os_error(libc::EBUSY)),
            StaleRemoval::StillBusy
        ));
        assert!(matches!(
            outcome(io::Error::from_raw_os_error(libc::EACCES)),
            StaleRemoval::Failed(e) if e.raw_os_error() == Some(libc::EACCES)
        ));
    }

    #[test]
    fn the_sweep_removes_the_item_directory_of_a_dead_dts_and_keeps_a_live_ones() {
        let own = tempfile::tempdir().expect("a temporary directory");
        // No process has pid u32::MAX - 1: the maximum is 2^22.
        let stale = own
            .path()
            .join(super::super::items_dir_name(u32::MAX - 1, 1));
        fs::create_dir(&stale).expect("the stale directory");
        let live = make_parent(own.path()).expect("this process's directory");
        remove_stale_parents(own.path());
        assert!(!stale.exists(), "the dead dts's directory is removed");
        assert!(live.exists(), "a live dts's directory is kept");
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_gives_the_cgroup_mounts_and_their_controllers() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 4, "{mounts:?}");
        let v2 = mounts.iter().find(|m| m.fstype == "cgroup2").expect("v2");
        assert_eq!(v2.point, PathBuf::from("/sys/fs/cgroup/unified"));
        let cpu = mounts
            .iter()
            .find(|m| m.super_options.iter().any(|o| o == "cpu"))
            .expect("cpu");
        assert_eq!(cpu.point, PathBuf::from("/sys/fs/cgroup/cpu"));
        // cpuset is not cpu.
        assert_eq!(
            mounts
                .iter()
                .filter(|m| m.super_options.iter().any(|o| o == "cpu"))
                .count(),
            1
        );
    }

    #[test]
    fn mount_points_with_escaped_spaces_are_decoded() {
        let line = "41 31 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(line)[0].point,
            PathBuf::from("/mnt/my cgroups")
        );
    }

    #[test]
    fn the_own_cgroup_is_found_per_hierarchy() {
        let own = "4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu,cpuacct:/x\n0::/user.slice/dts.service\n";
        assert_eq!(
            own_path(own, "").as_deref(),
            Some("/user.slice/dts.service")
        );
        assert_eq!(own_path(own, "memory").as_deref(), Some("/process_api/abc"));
        assert_eq!(own_path(own, "cpu").as_deref(), Some("/x"));
        assert_eq!(own_path(own, "pids"), None);
    }

    #[test]
    fn a_cgroup_path_maps_to_a_directory_under_its_mount() {
        let mount = Mount {
            root: "/".into(),
            point: "/sys/fs/cgroup".into(),
            fstype: "cgroup2".into(),
            super_options: vec![],
        };
        assert_eq!(
            dir_of(&mount, "/a/b"),
            Some(PathBuf::from("/sys/fs/cgroup/a/b"))
        );
        assert_eq!(dir_of(&mount, "/"), Some(PathBuf::from("/sys/fs/cgroup")));
        // A container that mounted only part of the hierarchy.
        let partial = Mount {
            root: "/kubepods/pod1".into(),
            ..mount
        };
        assert_eq!(
            dir_of(&partial, "/kubepods/pod1/c"),
            Some(PathBuf::from("/sys/fs/cgroup/c"))
        );
        assert_eq!(dir_of(&partial, "/kubepods/pod10"), None);
        assert_eq!(dir_of(&partial, "/elsewhere"), None);
    }
}
