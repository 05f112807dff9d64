//! `dts-chaos --minutes N --seed S [--report FILE]`: runs a chaos soak
//! against the real `dts` binary and prints its table; exits 1 on any
//! violation (with the seed and the fault schedule, to replay it).

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// A chaos soak: a dts cluster under a seeded stream of tasks and faults.
#[derive(Parser, Debug)]
#[command(name = "dts-chaos")]
struct Args {
    /// How long the whole soak runs, in minutes; the last half minute is
    /// for the tasks to end (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1440))]
    minutes: u64,
    /// Fixes the workload and the fault schedule.
    #[arg(long, default_value_t = 14)]
    seed: u64,
    /// Also write the report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The dts binary (default: the workspace's target/debug/dts).
    #[arg(long)]
    dts: Option<PathBuf>,
    /// Keep the nodes' logs and data after the run.
    #[arg(long)]
    keep: bool,
}

/// How long the cluster's processes get to be stopped at the end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Resolves at Ctrl-C or SIGTERM, so an interrupted soak still cleans up
/// (a SIGTERM used to leave every node, the mounts and the namespaces).
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dts = args
        .dts
        .unwrap_or_else(|| dts_testkit::workspace_root().join("target/debug/dts"));
    if !dts.is_file() {
        eprintln!(
            "dts-chaos: --dts {}: no such file (build it with `cargo build --bin dts`)",
            dts.display()
        );
        return ExitCode::from(2);
    }
    let config = dts_chaos::Config::for_minutes(dts, args.seed, args.minutes, args.keep);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dts-chaos: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = dts_chaos::run(&config) => Some(outcome),
            () = interrupted() => None,
        }
    });
    // Ends the run's own tasks too, which drops the cluster: its processes
    // are killed, its small disk unmounted and its network namespaces
    // removed, even after an interrupt.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    let report = match outcome {
        Some(Ok(report)) => report,
        Some(Err(e)) => {
            eprintln!("dts-chaos: {e}");
            return ExitCode::from(2);
        }
        None => {
            eprintln!("dts-chaos: interrupted; the cluster was stopped, no report");
            return ExitCode::from(130);
        }
    };
    let text = report.markdown();
    println!("{text}");
    if let Some(path) = &args.report {
        if let Err(e) = std::fs::write(path, &text) {
            eprintln!("dts-chaos: --report {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
