//! Keeping items apart from the worker and from what is not theirs.
//!
//! Set up once per [`crate::Executor`] from [`IsolationSettings`]:
//! - `user`: the user items run as ([`IsolationSettings::run_as`]); a worker
//!   running as root runs items as an unprivileged user;
//! - `workdir`: a fresh private working directory per item;
//! - `cgroup`: one cgroup per item, to kill every process of the item and to
//!   enforce the task's `memoryMb` and `cpus`;
//! - `reaper`: where cgroups are not writable, the subreaper fallback that
//!   still kills every descendant of an item;
//! - `confine`: the steps a child takes between `clone` and `exec` (carried
//!   out by the `spawn` module).
//!
//! The executor asks [`Isolation`] for an item's directory and cgroup before
//! it starts the item, and gives both back when the item ends.
//! docs/security.md says what each mechanism guarantees.

mod cgroup;
mod confine;
pub(crate) mod reaper;
mod user;
pub(crate) mod workdir;

use std::path::PathBuf;

pub use cgroup::CgroupError;
pub(crate) use cgroup::{Cgroups, ItemCgroup};
pub(crate) use confine::Confinement;
pub(crate) use user::RunAs;
pub(crate) use workdir::Scratch;

/// What the directories an executor makes for items (its scratch directory,
/// its item cgroups' parent) are named after: `dts-items-<pid>-<suffix>`,
/// so that those of a dts that died can be found and removed.
const ITEMS_DIR_PREFIX: &str = "dts-items-";

/// The name of an items directory of process `pid`: `dts-items-<pid>-<suffix>`.
pub(crate) fn items_dir_name(pid: u32, suffix: impl std::fmt::Display) -> String {
    format!("{ITEMS_DIR_PREFIX}{pid}-{suffix}")
}

/// Whether `name` is an items directory of a process that is gone.
pub(crate) fn left_by_a_dead_dts(name: &std::ffi::OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_prefix(ITEMS_DIR_PREFIX))
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
}

/// How items are kept apart; part of [`crate::ExecSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IsolationSettings {
    /// Run items as this user: a name from the passwd database, or a
    /// numeric uid. Switching users needs root; naming the worker's own
    /// user is the same as `None`, which runs items as the worker's user.
    pub run_as: Option<String>,
    /// Give every item a fresh private working directory, removed when the
    /// item ends. [`crate::ExecSettings::workdir`] takes precedence.
    pub private_workdir: bool,
    /// Where private directories (and warm shells' pipes) are made; `None`
    /// is the system's temporary directory.
    pub scratch_root: Option<PathBuf>,
    /// How every descendant of an item is found and killed.
    pub containment: ContainmentChoice,
}

/// Which containment mechanism to use (`executor.containment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContainmentChoice {
    /// A cgroup per item where cgroups are writable, the subreaper otherwise.
    #[default]
    Auto,
    /// A cgroup per item, or the executor does not start.
    Cgroup,
    /// The subreaper, even where cgroups are writable (limits then come only
    /// from v1 hierarchies, where there are writable ones).
    Subreaper,
}

/// The containment mechanism an executor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containment {
    /// Each item runs in a cgroup of its own, killed with `cgroup.kill`.
    Cgroup,
    /// The worker and each item's first process are child subreapers.
    Subreaper,
}

impl Containment {
    /// The name `GET /v1/workers` and the docs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Containment::Cgroup => "cgroup",
            Containment::Subreaper => "subreaper",
        }
    }
}

/// What an executor's isolation is, for heartbeats and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationReport {
    /// What kills every process an item started, and enforces its limits.
    pub containment: Containment,
    /// The user items run as, when it is not the worker's own.
    pub run_as: Option<String>,
    /// Each item runs in a fresh private directory.
    pub private_workdir: bool,
    /// The task limits this worker enforces, by field name (`memoryMb`,
    /// `cpus`).
    pub limits: Vec<&'static str>,
}

/// Why an executor could not be set up as configured.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `executor.run-as` names a user the system does not know.
    #[error("executor.run-as: no user {user:?} in the passwd database")]
    NoSuchUser {
        /// The name given.
        user: String,
    },
    /// The passwd database could not be read.
    #[error("executor.run-as: cannot look up user {user:?}: {source}")]
    UserLookup {
        /// The name given.
        user: String,
        /// Why the lookup failed.
        source: std::io::Error,
    },
    /// Switching users needs root.
    #[error(
        "executor.run-as: items cannot run as {user:?} because dts runs as {current:?}, not root \
         (run dts as root, or leave executor.run-as unset to run items as {current:?})"
    )]
    RunAsNeedsRoot {
        /// The user asked for.
        user: String,
        /// The user dts runs as.
        current: String,
    },
    /// `executor.containment=cgroup` was asked for and cgroups are not writable here.
    #[error("executor.containment=cgroup, but item cgroups cannot be used here: {0}")]
    CgroupUnavailable(#[source] CgroupError),
    /// `prctl(PR_SET_CHILD_SUBREAPER)` failed.
    #[error("executor.containment: cannot make dts a child subreaper: {0}")]
    Subreaper(#[source] std::io::Error),
    /// The parent of the items' private directories could not be made.
    #[error("cannot make the items' scratch directory {}: {source}", dir.display())]
    Scratch {
        /// The directory.
        dir: PathBuf,
        /// Why it could not be made.
        source: std::io::Error,
    },
}

/// An executor's isolation, set up.
#[derive(Debug)]
pub(crate) struct Isolation {
    /// The user items switch to; `None` keeps the worker's.
    pub(crate) user: Option<RunAs>,
    /// The name items run as, for `USER` and `LOGNAME` and the report.
    pub(crate) run_as_name: Option<String>,
    pub(crate) private_workdir: bool,
    pub(crate) scratch: Scratch,
    pub(crate) containment: Containment,
    pub(crate) cgroups: Cgroups,
    /// The open-files soft limit items get ([`crate::ExecSettings::items_open_files`]).
    pub(crate) open_files: Option<u64>,
}

impl Isolation {
    pub(crate) fn setup(
        settings: &IsolationSettings,
        open_files: Option<u64>,
    ) -> Result<Isolation, SetupError> {
        let current = RunAs::current()?;
        let (user, run_as_name) = match &settings.run_as {
            None => (None, None),
            Some(name) => {
                let target = RunAs::lookup(name)?;
                if target.uid == current.uid {
                    (None, None)
                } else if !current.is_root() {
                    return Err(SetupError::RunAsNeedsRoot {
                        user: name.clone(),
                        current: current.name,
                    });
                } else {
                    let name = target.name.clone();
                    (Some(target), Some(name))
                }
            }
        };
        let (cgroups, why_not) =
            Cgroups::discover(settings.containment != ContainmentChoice::Subreaper);
        let containment = match (settings.containment, cgroups.tracks()) {
            (ContainmentChoice::Cgroup | ContainmentChoice::Auto, true) => Containment::Cgroup,
            (ContainmentChoice::Cgroup, false) => {
                return Err(SetupError::CgroupUnavailable(
                    why_not.unwrap_or(CgroupError::NoHierarchy),
                ));
            }
            (ContainmentChoice::Auto | ContainmentChoice::Subreaper, _) => {
                if let Some(why) = why_not {
                    tracing::info!(reason = %why, "item cgroups are not available; using the subreaper");
                }
                reaper::become_subreaper().map_err(SetupError::Subreaper)?;
                Containment::Subreaper
            }
        };
        let owner = user.as_ref().map(|u| (u.uid, u.gid));
        let scratch = Scratch::create(settings.scratch_root.as_deref(), owner)?;
        Ok(Isolation {
            user,
            run_as_name,
            private_workdir: settings.private_workdir,
            scratch,
            containment,
            cgroups,
            open_files,
        })
    }

    pub(crate) fn report(&self, workdir_set: bool) -> IsolationReport {
        let (memory, cpu) = self.cgroups.limits();
        let mut limits = Vec::new();
        if memory {
            limits.push("memoryMb");
        }
        if cpu {
            limits.push("cpus");
        }
        IsolationReport {
            containment: self.containment,
            run_as: self.run_as_name.clone(),
            private_workdir: self.private_workdir && !workdir_set,
            limits,
        }
    }

    /// The steps every child of this executor takes before `exec`; the
    /// caller adds the item's cgroups.
    pub(crate) fn confinement(&self) -> Confinement {
        Confinement {
            cgroup_procs: Vec::new(),
            subreaper: self.containment == Containment::Subreaper,
            user: self.user.as_ref().map(|u| (u.uid, u.gid)),
            open_files: self.open_files,
            pass_as_3: None,
        }
    }
}
