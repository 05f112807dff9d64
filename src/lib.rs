//! dts — a distributed task scheduler.
//!
//! A client submits a *task*: a script template, variables and a list of
//! inputs. dts renders the template, splits the inputs into *shards* across the
//! live workers, runs the script once per input on every core, and tracks the
//! task's progress until it ends. See `DESIGN.md` for the whole picture.
//!
//! The parts, in the order a task meets them:
//! - [`model`]: the task, its statuses, templates, validation and shard planning
//!   (pure, no I/O);
//! - [`api`]: the HTTP API (v1 and the seed-compatible endpoints);
//! - [`bus`]: publishing and consuming messages (embedded queues or Kafka);
//! - [`store`]: tasks, plans, results and heartbeats (SQLite, memory or Redis);
//! - [`scheduler`]: turns a submitted task into shards on the bus;
//! - [`worker`]: runs shards on a pool of one slot per core;
//! - [`executor`]: runs one item as a process;
//! - [`config`]: layered settings keyed by the seed's property names;
//! - [`cli`]: the `dts` command.

pub mod model;
