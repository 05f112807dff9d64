//! Assembling a running dts node from its configuration: the store and bus,
//! the executor, the API, the scheduler, the worker and the sweeper. The
//! `dts` binary parses arguments and calls in here, so a whole node can be
//! started, used and stopped inside one process (and one test).

pub mod embedded;
pub mod node;
pub mod wiring;
pub mod worker_thread;
