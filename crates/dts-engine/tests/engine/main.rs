//! The engine's deterministic tests: the submitter, scheduler, workers and
//! sweeper in one process on tokio's paused clock, items simulated by the
//! harness's fake runner (see `tests/harness`). Times in assertions are
//! simulated milliseconds.

#[path = "../harness/mod.rs"]
mod harness;

mod after;
mod cancel;
mod deadlines;
mod events;
mod halt;
mod leases;
mod outcomes;
mod planning;
mod policy;
mod recovery;
mod reduce;
mod retries;
mod speculation;
