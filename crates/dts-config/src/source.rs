//! Where a configuration value came from.
//!
//! Every value the loader keeps carries a [`Source`] so that error messages and
//! `dts config` output can say which layer set it and, for files, where.

use std::fmt;
use std::path::PathBuf;

/// The layer (and place within it) that set a value. Later layers win:
/// default < file < environment < flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default from the key table.
    Default,
    /// A configuration file; `line` is the 1-based line the key starts on.
    File {
        /// The file as it was given to the loader.
        path: PathBuf,
        /// 1-based line of the key, when known.
        line: Option<usize>,
    },
    /// An environment variable, by name (e.g. `DTS_SERVER_PORT`).
    Env(String),
    /// A command-line flag, by the key the CLI passed (e.g. `server.port`).
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File {
                path,
                line: Some(line),
            } => write!(f, "file {} line {line}", path.display()),
            Source::File { path, line: None } => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(key) => write!(f, "command-line flag for {key}"),
        }
    }
}
