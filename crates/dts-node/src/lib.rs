//! Assembling a running dts node from its configuration: the store and bus,
//! the executor, the API, the scheduler, the worker and the sweeper, and
//! stopping them in order. The `dts` binary parses arguments, prepares its
//! process and prints; everything it runs is started here, so a whole node
//! can be started, used and stopped inside one process (and one test).
//!
//! - [`UpNode`]: `dts up`, everything on one machine over SQLite.
//! - [`ServerNode`]: `dts server`, the API and scheduler over Kafka and Redis.
//! - [`WorkerNode`]: `dts worker`, a worker over Kafka and Redis.
//! - [`EmbeddedNode`]: the engine `dts up` serves and `dts run` drives.
//!
//! Each node stops when its shutdown token is cancelled; listening for
//! signals is the caller's business.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod data_dir;
pub mod embedded;
mod error;
pub mod node;
pub mod server;
pub mod up;
pub mod wiring;
pub mod worker;
mod worker_thread;

pub use data_dir::{DataDirLock, open_store};
pub use embedded::{EmbeddedNode, Role};
pub use error::NodeError;
pub use node::load_settings;
pub use server::ServerNode;
pub use up::UpNode;
pub use wiring::Inherited;
pub use worker::WorkerNode;
