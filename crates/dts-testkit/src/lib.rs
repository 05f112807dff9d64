//! Test support for dts: each test that needs Redis, a Kafka-protocol broker
//! or nginx starts its own on a free loopback port in a temp directory, and
//! it is stopped when the handle is dropped. Tests never use a server someone
//! left running, and never a fixed port.
//!
//! `fuzz` is the time-boxed runner of the proptest fuzz targets.
//!
//! `scripts/install-test-deps.sh` installs the programs: `redis-server` and
//! `nginx` from apt, and the broker (tansu) into `.tools/bin/`.

pub mod fuzz;
mod nginx;
mod process;
mod redis;
mod tansu;

pub use nginx::Nginx;
pub use process::{free_port, wait_for_port, workspace_root};
pub use redis::RedisServer;
pub use tansu::Broker;
