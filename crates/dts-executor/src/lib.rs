//! Runs one item of a task as a child process and reports what happened.
//!
//! The worker calls [`Executor::run`] once per item, up to one item per core at
//! a time, so everything that can be decided earlier is: the environment scripts
//! get is filtered once per [`Executor`], and how a rendered template is run is
//! decided once per shard by [`Program::prepare`].
//!
//! The parts:
//! - `program`: a rendered template becomes a [`Program`] (a script for an
//!   interpreter, or an executable run directly, as the seed did).
//! - `executor`: spawns the child in its own process group with a cleared
//!   environment, feeds it the item, enforces the timeout and cancellation,
//!   and builds the [`ExecOutcome`] (`outcome`).
//! - `feed`: what the child's stdin gets — the item, or for a streamed run
//!   the chunks of a [`StdinSource`].
//! - `settings`, `env`, `output` and `kill`: the knobs, the allow-listed
//!   environment, capped capture of stdout/stderr, and signals to a whole
//!   process group.
//! - `isolation`: what keeps items apart from the worker — the user they run
//!   as, private working directories, a cgroup per item (or the subreaper
//!   where cgroups are not writable) that kills every descendant and
//!   enforces the task's limits (docs/security.md).
//! - `spawn`: starts a child without copying the worker's memory
//!   (`clone(CLONE_VM | CLONE_VFORK)`), confined as `isolation` says.
//! - `warm`: warm shells, an opt-in way to run bash items as forked
//!   subshells of a shell kept running per slot (docs/warm-shell.md).
//!
//! Items are data: an item reaches the script as `$1` (or its language's
//! first argument, [`Convention`]), on stdin and as
//! `DTS_ITEM`, and is never pasted into the script text.
//!
//! A task's `reduce` step is one run that reads every result of the task on
//! its stdin: [`Executor::run_streamed`] streams that stdin from a producer
//! ([`StdinSource`], a bounded channel) instead of writing an item,
//! so a million results are never held in memory together.

#![warn(missing_docs)]

mod env;
mod executor;
mod feed;
mod isolation;
mod kill;
mod outcome;
mod output;
mod program;
mod settings;
mod spawn;
mod warm;

pub use executor::{Executor, ItemContext, ItemLimits};
pub use feed::StdinSource;
pub use isolation::{
    CgroupError, Containment, ContainmentChoice, IsolationReport, IsolationSettings, SetupError,
};
pub use outcome::ExecOutcome;
pub use output::{OutputStream, OutputTap};
pub use program::{Convention, Program};
pub use settings::{DEFAULT_ENV_ALLOW, ExecSettings};
