//! Command-line parsing and dispatch. Arguments are parsed by clap, then
//! turned into configuration flags (`dts up`) or client calls.

mod args;
mod client;
mod commands;
mod logs;
mod process;
mod run;
mod schedule;
mod server;
mod submit;
mod task_args;
pub mod terminal;
mod up;
mod worker;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use process::Role;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use terminal::Console;

#[derive(Parser)]
#[command(
    name = "dts",
    version,
    about = "A distributed task scheduler: run a script over a list of inputs on every core."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API, a scheduler and a local worker on this machine (embedded mode).
    Up(up::UpArgs),
    /// Run the API and scheduler over Kafka and Redis (distributed mode; run several).
    Server(server::ServerArgs),
    /// Run shards from Kafka on this machine's cores, with state in Redis (distributed mode).
    Worker(worker::WorkerArgs),
    /// Run one task here and now, printing each item's output in order (no server needed).
    Run(run::RunArgs),
    /// Submit a task to a server: a JSON task file, or a template and its
    /// inputs as `dts run` takes them.
    ///
    /// `dts submit FILE.json` (or `-`, JSON on standard input) sends the file
    /// as it is. `dts submit 'TEMPLATE' a b c` (or `::: a b c`, `:::: FILE`,
    /// `--inputs FILE`, or inputs on standard input) builds the task as
    /// `dts run` does. The first argument is a task file when it is `-`,
    /// ends in `.json` or names an existing file, and no inputs or template
    /// flags follow; `-` or a `.json` file with inputs or template flags is
    /// refused, naming both.
    Submit(submit::SubmitArgs),
    /// Show a task's status and counts.
    Status {
        /// The task id, or a unique prefix of it (at least 4 characters).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Follow a task until it ends; exit 1 unless it completed.
    Watch {
        /// The task id, or a unique prefix of it (at least 4 characters).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a task's item results (output, exit code, duration).
    Results {
        /// The task id, or a unique prefix of it (at least 4 characters).
        id: String,
        /// Only the items that failed.
        #[arg(long)]
        failed: bool,
        /// Only the items' output, byte for byte, in index order, as
        /// `dts run` prints it: each item's stdout to stdout, its stderr to
        /// stderr, with no listing around it (`dts results ID --output-only
        /// | gunzip`).
        #[arg(long, conflicts_with = "json")]
        output_only: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the output of running items: one item's (its tail, then with
    /// -f everything it writes until it ends), or without an index every
    /// running item's, each line after the item's input and a TAB.
    Logs {
        /// The task id, or a unique prefix of it (at least 4 characters).
        id: String,
        /// The item's index in the task's input list (from 0).
        index: Option<u64>,
        /// Follow: print output as it is written, until the item (or,
        /// without an index, the task) ends.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a task: running items are killed, no new item starts.
    Cancel {
        /// The task id, or a unique prefix of it (at least 4 characters).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a failed or cancelled task's failed and never-run items again,
    /// as the same task (same id, one results list, exact counts).
    Retry {
        /// The task id, or a unique prefix of it (at least 4 characters).
        id: String,
        /// Follow the task until it ends, as `submit --wait` does; exit 1
        /// unless it completed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete ended tasks and their results (cancel a running one first).
    Rm {
        /// Task ids, or unique prefixes of them (at least 4 characters).
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List tasks, newest first.
    Tasks {
        /// Only tasks with this status (QUEUED, INPROGRESS, COMPLETED, FAILED, ...).
        #[arg(long)]
        status: Option<String>,
        /// Tasks per page (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Every task, fetched page by page, not only the first page.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List live workers.
    Workers {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Schedules on a server: a task submitted at every firing of a cron
    /// expression (add, ls, show, rm, pause, resume).
    Schedule(schedule::ScheduleArgs),
}

impl Command {
    fn role(&self) -> Role {
        match self {
            Command::Up(_) | Command::Server(_) | Command::Worker(_) => Role::Service,
            Command::Run(_) => Role::Run,
            _ => Role::Client,
        }
    }
}

/// Where the client commands find the server, and how they print.
#[derive(Args)]
struct ClientArgs {
    /// The dts server's URL.
    #[arg(long, env = "DTS_SERVER", default_value = "http://127.0.0.1:30000")]
    server: String,
    /// Bearer token, when the server requires one. Other users can see it
    /// in `ps`: prefer --token-file or the DTS_AUTH_TOKEN environment
    /// variable (used when neither flag is given).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// Read the bearer token from FILE (one trailing newline is dropped);
    /// wins over DTS_AUTH_TOKEN.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    json: bool,
    /// Print control characters in item output, names and messages as they
    /// are. By default a terminal shows them escaped (\x1b); output to a
    /// pipe or a file is never changed. Errors stay escaped.
    #[arg(long)]
    raw: bool,
}

impl ClientArgs {
    fn connect(&self) -> Result<client::Client> {
        // Two flags are refused by clap (naming both); the environment is
        // ambient, so a flag given on the command line wins over it.
        let token = match (&self.token_file, &self.token) {
            (Some(path), _) => Some(read_token(path)?),
            (None, Some(token)) => Some(token.clone()),
            (None, None) => std::env::var("DTS_AUTH_TOKEN")
                .ok()
                .filter(|token| !token.is_empty()),
        };
        client::Client::new(&self.server, token)
    }

    fn console(&self) -> Console {
        Console::new(self.raw)
    }
}

/// The token in the file at `path`, without its trailing newline.
fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = dts_config::token_in_file(&text);
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token.to_string())
}

pub fn main() -> Result<ExitCode> {
    let inherited = process::before_anything();
    let cli = Cli::parse();
    let role = cli.command.role();
    match role {
        Role::Service => args::init_logging("info"),
        // Only warnings by default: the items' output is what `dts run` prints.
        Role::Run => args::init_logging("warn"),
        Role::Client => restore_default_sigpipe(),
    }
    process::harden(role, inherited);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Server(args) => server::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Submit(args) => submit::run(args).await,
            Command::Status { id, client } => {
                let console = &mut client.console();
                client::status(&client.connect()?, console, &id, client.json).await
            }
            Command::Watch { id, client } => {
                let console = &mut client.console();
                client::watch(&client.connect()?, console, &id, client.json).await
            }
            Command::Results {
                id,
                failed,
                output_only,
                client,
            } => {
                let console = &mut client.console();
                let shape = match (client.json, output_only) {
                    (true, _) => client::ResultsShape::Json,
                    (false, true) => client::ResultsShape::OutputOnly,
                    (false, false) => client::ResultsShape::Listing,
                };
                client::results(&client.connect()?, console, &id, failed, shape).await
            }
            Command::Logs {
                id,
                index,
                follow,
                client,
            } => {
                if client.json {
                    bail!(
                        "dts logs prints the items' output as they wrote it and has no --json; \
                         GET /v1/tasks/{{id}}/log?follow=true gives it as JSON events"
                    );
                }
                logs::logs(
                    &client.connect()?,
                    &mut client.console(),
                    &id,
                    index,
                    follow,
                )
                .await
            }
            Command::Cancel { id, client } => {
                client::cancel(&client.connect()?, &mut client.console(), &id).await
            }
            Command::Retry { id, wait, client } => {
                let console = &mut client.console();
                client::retry(&client.connect()?, console, &id, wait, client.json).await
            }
            Command::Rm { ids, client } => {
                client::rm(&client.connect()?, &mut client.console(), &ids).await
            }
            Command::Tasks {
                status,
                limit,
                all,
                client,
            } => {
                let console = &mut client.console();
                let status = status.as_deref();
                let connection = client.connect()?;
                client::tasks(&connection, console, status, limit, all, client.json).await
            }
            Command::Workers { client } => {
                client::workers(&client.connect()?, &mut client.console(), client.json).await
            }
            Command::Schedule(args) => schedule::run(args).await,
        }
    })
}

/// Lets a client command die quietly when its output pipe closes
/// (`dts results ID | head`), as Unix tools do, instead of panicking in
/// `println!`. Not for the nodes (`up`, `server`, `worker`): a script
/// closing its stdin early must not kill them.
fn restore_default_sigpipe() {
    // SAFETY: setting a signal disposition to its default has no
    // preconditions; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
