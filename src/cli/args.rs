//! The options every command that runs a node takes, turned into
//! configuration flags; logging; and stopping a node on a signal.

use anyhow::{Result, bail};
use clap::Args;
use dts_config::Settings;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Options every node command takes.
#[derive(Args, Debug, Default)]
pub struct ConfigArgs {
    /// A configuration file: the seed's application.properties, or .toml.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Any configuration key, e.g. --set limits.max-items=10000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    /// Loads defaults < file < environment < `flags` < `--set`.
    pub fn load(&self, mut flags: Vec<(String, String)>) -> Result<Settings> {
        for pair in &self.set {
            let Some((key, value)) = pair.split_once('=') else {
                bail!("--set takes KEY=VALUE, not {pair:?}");
            };
            flags.push((key.trim().to_string(), value.to_string()));
        }
        let env: HashMap<String, String> = std::env::vars().collect();
        Ok(dts_node::load_settings(
            self.config.as_deref(),
            &env,
            &flags,
        )?)
    }
}

/// Where the API listens: `dts up` and `dts server`.
#[derive(Args, Debug, Default)]
pub struct ListenArgs {
    /// HTTP port (server.port); 0 picks a free one.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (server.bind). Anything but loopback needs a token.
    #[arg(long)]
    pub bind: Option<String>,
    /// Listen on a non-loopback address without a token (server.insecure).
    #[arg(long)]
    pub insecure: bool,
}

impl ListenArgs {
    /// The options as configuration flags.
    pub fn push_flags(&self, flags: &mut Vec<(String, String)>) {
        flag(flags, "server.port", self.port);
        flag(flags, "server.bind", self.bind.as_ref());
        flag(flags, "server.insecure", self.insecure.then_some(true));
    }
}

/// How this machine runs items: `dts up`, `dts worker` and `dts run`.
#[derive(Args, Debug, Default)]
pub struct ExecArgs {
    /// Items to run at once (worker.cores); default all cores of this
    /// machine. `-j` is GNU parallel's name for it.
    #[arg(long, short = 'j', value_name = "N")]
    pub cores: Option<u32>,
    /// Run bash items in warm shells (executor.warm-shell; docs/warm-shell.md).
    #[arg(long)]
    pub warm_shell: bool,
}

impl ExecArgs {
    /// The options as configuration flags.
    pub fn push_flags(&self, flags: &mut Vec<(String, String)>) {
        flag(flags, "worker.cores", self.cores);
        flag(
            flags,
            "executor.warm-shell",
            self.warm_shell.then_some(true),
        );
    }
}

/// The labels a worker announces: `dts up` and `dts worker`.
#[derive(Args, Debug, Default)]
pub struct LabelArgs {
    /// A label this worker announces, e.g. --label gpu=a100 (repeatable;
    /// adds to worker.labels, and wins over its value for the same name).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
}

impl LabelArgs {
    /// One `worker.labels` flag per label: the configuration checks each and
    /// refuses a name given two values.
    pub fn push_flags(&self, flags: &mut Vec<(String, String)>) {
        for label in &self.labels {
            flags.push(("worker.labels".to_string(), label.clone()));
        }
    }
}

/// Adds `(key, value)` to `flags` when the option was given.
pub fn flag<T: ToString>(flags: &mut Vec<(String, String)>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        flags.push((key.to_string(), value.to_string()));
    }
}

/// Logs to standard error; `DTS_LOG` (or `RUST_LOG`) sets the filter,
/// `default` when neither is set.
pub fn init_logging(default: &str) {
    let filter = std::env::var("DTS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM, logging `what` happens next.
pub fn stop_on_signal(shutdown: CancellationToken, what: &'static str) {
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown_signal() => info!("shutting down: {what}"),
            _ = shutdown.cancelled() => {}
        }
        shutdown.cancel();
    });
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops dts");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
