//! [`ConfigError`]: everything that can stop the configuration from loading.
//!
//! Messages are lower case and name the key, the offending value and the
//! [`Source`] that supplied it, so a user can find and fix the right layer.

use std::path::PathBuf;

use crate::labels::LabelProblem;
use crate::source::Source;

/// Why the configuration could not be loaded. None of these go away on retry:
/// a person has to change a file, a variable or a flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file is missing or unreadable.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file as it was given.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// The configuration file is not valid properties or TOML.
    #[error("syntax error in config file {}{}: {message}", path.display(), line_suffix(*line))]
    Syntax {
        /// The file as it was given.
        path: PathBuf,
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },

    /// A value does not parse as its key's type or is out of range.
    #[error("invalid value {value:?} for {key} (from {from}): expected {expected}")]
    InvalidValue {
        /// The key, e.g. `server.port`.
        key: String,
        /// The value as given (masked for secret keys).
        value: String,
        /// Where the value came from.
        from: Source,
        /// What a valid value looks like.
        expected: String,
    },

    /// A command-line flag names a key dts does not know. (Unknown keys in
    /// files only produce warnings; unknown `DTS_*` variables are ignored.)
    #[error("unknown configuration key `{key}` (from {from}){}", suggestion_suffix(suggestion.as_deref()))]
    UnknownKey {
        /// The key as given.
        key: String,
        /// Where it came from.
        from: Source,
        /// The closest known key, if any is close.
        suggestion: Option<String>,
    },

    /// The file a secret is to be read from cannot be read.
    #[error("cannot read {key} file {} (from {from}): {source}", path.display())]
    ReadSecretFile {
        /// The key that names the file, e.g. `server.auth-token-file`.
        key: String,
        /// The file as it was given.
        path: PathBuf,
        /// Where the key's value came from.
        from: Source,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A worker label (`worker.labels`, `--label`) is malformed, conflicts
    /// with another value for the same name, or is one too many.
    #[error("invalid label {label:?} in {key} (from {from}): {problem}")]
    InvalidLabel {
        /// The key, `worker.labels`.
        key: String,
        /// The label as given, `name=value`.
        label: String,
        /// Where the label came from.
        from: Source,
        /// What is wrong with it: a detail of this error, already in its
        /// message, not an underlying cause (so not a `source`).
        problem: LabelProblem,
    },

    /// Values that are fine alone but contradict each other.
    #[error("{message}")]
    Inconsistent {
        /// The keys involved, for programs; the message names them for people.
        keys: Vec<String>,
        /// What contradicts what, with each value's source.
        message: String,
    },
}

impl ConfigError {
    /// Whether trying again unchanged could succeed. Configuration errors
    /// need a person to fix them, so this is always false; it exists so retry
    /// loops can treat every error type of dts alike.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|line| format!(" line {line}")).unwrap_or_default()
}

fn suggestion_suffix(suggestion: Option<&str>) -> String {
    suggestion
        .map(|key| format!("; did you mean `{key}`?"))
        .unwrap_or_default()
}
