//! The executor's knobs, filled in by the worker from its configuration.

use std::path::PathBuf;
use std::time::Duration;

use crate::isolation::IsolationSettings;

/// The worker's environment variables that scripts get by default: enough to
/// find programs and to behave like a login shell, and none of the worker's
/// credentials.
pub const DEFAULT_ENV_ALLOW: &[&str] = &[
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// How items are run; one value per [`crate::Executor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSettings {
    /// Bytes kept per stream (stdout and stderr each), so one chatty item
    /// cannot exhaust the worker's memory or the store. The rest is read and
    /// discarded so the child never blocks on a full pipe.
    pub output_cap_bytes: usize,
    /// Time between SIGTERM and SIGKILL when an item is stopped, so scripts
    /// can clean up but cannot refuse to die.
    pub kill_grace: Duration,
    /// Names of the worker's environment variables passed on to scripts;
    /// everything else (the worker's secrets) is withheld.
    pub env_allow: Vec<String>,
    /// Working directory of scripts; `None` keeps the worker's own.
    pub workdir: Option<PathBuf>,
    /// Run bash scripts' items in subshells of a shell kept running per slot
    /// instead of a fresh `bash` each (about a tenth of the start-up cost).
    /// Off by default: a few things differ for scripts (docs/warm-shell.md).
    pub warm_shell: bool,
    /// The items' user, private directories and containment. The default
    /// runs items as the worker's user in its working directory, each in a
    /// cgroup where cgroups are writable (the subreaper otherwise): what
    /// `dts run` wants. The service modes ask for more.
    pub isolation: IsolationSettings,
    /// The open-files soft limit items start with, when the worker raised
    /// its own above what it was given; `None` leaves items the worker's.
    pub items_open_files: Option<u64>,
}

impl Default for ExecSettings {
    fn default() -> Self {
        Self {
            output_cap_bytes: 64 * 1024,
            kill_grace: Duration::from_secs(1),
            env_allow: DEFAULT_ENV_ALLOW
                .iter()
                .map(|name| (*name).to_owned())
                .collect(),
            workdir: None,
            warm_shell: false,
            isolation: IsolationSettings::default(),
            items_open_files: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_values() {
        let settings = ExecSettings::default();
        assert_eq!(settings.output_cap_bytes, 65_536);
        assert_eq!(settings.kill_grace, Duration::from_secs(1));
        assert_eq!(
            settings.env_allow,
            [
                "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME"
            ]
        );
        assert_eq!(settings.workdir, None);
        assert!(!settings.warm_shell);
    }
}
