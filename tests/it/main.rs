//! Integration tests: the real `dts` binary, started on a free port with its
//! own data directory, driven over HTTP and the CLI.

mod common;
mod contract;

mod bad_requests;
mod cancel;
mod chaos;
mod cli;
mod cli_hardening;
mod completion_events;
mod distributed;
mod doc_examples;
mod execution;
mod faults;
mod halt;
mod hostile;
mod input_bytes;
mod isolation;
mod labels;
mod lease_load;
mod logs;
mod metrics;
mod openapi;
mod outputs;
mod overview;
mod parallel_oracle;
mod reduce;
mod restart;
mod retry;
mod run;
mod schedule_cli;
mod schedules;
mod scheduling;
mod scripts;
mod security;
mod seed_api;
mod sentinel;
mod storage_full;
mod submit_habits;
mod task_ids;
mod terminal;
mod ui;
mod v1_api;
mod waiting;
mod workflows;
