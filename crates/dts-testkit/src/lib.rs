//! Test support for dts: each test that needs Redis, a Kafka-protocol broker
//! or nginx starts its own on a free loopback port in a temp directory, and
//! it is stopped when the handle is dropped. Tests never use a server someone
//! left running, and never a fixed port.
//!
//! `fuzz` is the time-boxed runner of the proptest fuzz targets; `wait`
//! holds the only ways tests wait for something: each with a deadline and a
//! message saying what was awaited.
//!
//! [`RedisSentinel`] is a primary, a replica and three sentinels, for
//! tests that fail Redis over.
//!
//! `browser` drives a headless Chromium for the dashboard's tests.
//!
//! `scripts/install-test-deps.sh` installs the programs: `redis-server`,
//! `nginx`, `chromium` and `chromium-driver` from apt, and the broker (tansu)
//! into `.tools/bin/`. The S3 emulator that is a durable broker's storage
//! runs inside the test process (`s3`).

#![warn(missing_docs)]

pub mod browser;
pub mod fuzz;
mod nginx;
mod process;
mod redis;
mod s3;
mod sentinel;
mod tansu;
pub mod wait;

pub use nginx::Nginx;
pub use process::{free_port, wait_for_port, workspace_root};
pub use redis::RedisServer;
pub use sentinel::{MASTER_NAME, RedisSentinel};
pub use tansu::Broker;
pub use wait::{
    DEADLINE, finish_within, output_within, wait_for, wait_for_blocking, wait_for_exit, wait_until,
    wait_until_blocking,
};
