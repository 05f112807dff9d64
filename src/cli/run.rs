//! `dts run`: one task on this machine, start to finish, without a server —
//! the embedded engine in this process, in memory. Each item's stdout is
//! printed in input order (and its stderr to stderr), as `parallel -k` does;
//! the exit status says whether every item succeeded. On a terminal, control
//! characters in that output are shown escaped unless `--raw` is given (see
//! [`super::terminal`]); a pipe or a file gets the bytes as they are.
//!
//! ```text
//! ls *.jpg | dts run 'convert "$1" "${1%.jpg}.png"'
//! dts run 'echo {{greeting}} $1' --var greeting=hi a b c
//! dts run 'gzip -k "$1"' ::: a.txt b.txt
//! dts run 'wc -l "$1"' :::: list.txt
//! dts run --task task.json --timeout 5
//! ```
//!
//! The inputs come from exactly one source: the arguments after the
//! template (with or without GNU parallel's `:::`), the files after `::::`,
//! `--inputs FILE`, or standard input. Two sources are refused, naming
//! both: GNU parallel would run every combination of them, but a dts item
//! has one input, so combining them silently would run something else than
//! a parallel user expects. With `--task FILE`, the flags `--timeout`,
//! `--retries`, `--interpreter`, `--speculate` and `--var` override the
//! file's fields.

use super::args::{ConfigArgs, ExecArgs};
use super::process;
use super::terminal::{Mode, Sanitized, count};
use anyhow::{Context, Result, bail};
use clap::Args;
use dts_api::views::ResultView;
use dts_model::template::{self, MissingVariables};
use dts_model::{TaskStatus, Variables, submit};
use dts_node::embedded::{EmbeddedNode, Role};
use dts_node::wiring;
use dts_store::ResultFilter;
use serde_json::{Map, Value, json};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How often the task is looked at while it runs (an in-memory read).
const POLL: Duration = Duration::from_millis(5);
/// Results read per page when printing.
const PAGE: u64 = 10_000;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The script template, run once per input ($1 is the input).
    template: Option<String>,
    /// The inputs: `a b c`, or as GNU parallel takes them, `::: a b c` or
    /// `:::: FILE` (one input per line). Without any, they are read one per
    /// line from --inputs or standard input. One source only: several are
    /// refused (GNU parallel would combine them).
    inputs: Vec<String>,
    /// A task file as for `dts submit` instead of a template and inputs;
    /// --timeout, --retries, --interpreter, --speculate and --var override
    /// its fields.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["template", "inputs", "inputs_file"])]
    task: Option<PathBuf>,
    /// Read the inputs from FILE, one per line (- for standard input).
    #[arg(long = "inputs", value_name = "FILE")]
    inputs_file: Option<PathBuf>,
    /// A template variable, for a {{NAME}} placeholder (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    #[command(flatten)]
    exec: ExecArgs,
    /// Per-item timeout in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// Extra attempts for a failed item.
    #[arg(long)]
    retries: Option<u32>,
    /// The program that runs the script (default bash).
    #[arg(long)]
    interpreter: Option<String>,
    /// Let an idle core run a copy of an item that has run far longer than
    /// the others (straggler speculation); the first to finish counts. Off
    /// by default here, as in xargs and GNU parallel: a copied item runs
    /// twice, which a script with side effects must not.
    #[arg(long)]
    speculate: bool,
    /// Print the results as JSON instead of the items' output.
    #[arg(long)]
    json: bool,
    /// Print control characters in the items' output as they are. By
    /// default a terminal shows them escaped (\x1b); output to a pipe or a
    /// file is never changed.
    #[arg(long)]
    raw: bool,
}

impl RunArgs {
    /// The task as the API would receive it.
    fn task_body(&self) -> Result<Value> {
        let mut variables = Map::new();
        for pair in &self.vars {
            let Some((name, value)) = pair.split_once('=') else {
                bail!("--var takes NAME=VALUE, not {pair:?}");
            };
            variables.insert(name.to_string(), Value::String(value.to_string()));
        }
        let mut body = match &self.task {
            Some(file) => task_file(file, variables)?,
            None => {
                let Some(template) = &self.template else {
                    bail!("give a template (dts run 'echo \"$1\"' a b c) or --task FILE");
                };
                if is_marker(template) {
                    bail!(
                        "{template} must come after the template (dts run 'echo \"$1\"' ::: a b c)"
                    );
                }
                json!({
                    "templateFunction": template,
                    "variableJson": variables,
                    "inputList": self.read_inputs()?,
                })
            }
        };
        // Flags override the task file's fields (and there is no file
        // otherwise): a flag the user typed is never ignored.
        if self.speculate || self.task.is_none() {
            body["speculation"] = json!(self.speculate);
        }
        if let Some(timeout) = self.timeout {
            body["timeoutSecs"] = json!(timeout);
        }
        if let Some(retries) = self.retries {
            body["retries"] = json!(retries);
        }
        if let Some(interpreter) = &self.interpreter {
            body["interpreter"] = json!(interpreter);
        }
        check_placeholders(&body)?;
        Ok(body)
    }

    /// The inputs from the one source the user gave.
    fn read_inputs(&self) -> Result<Vec<String>> {
        let source = Source::of(&self.inputs, self.inputs_file.as_deref())?;
        match source {
            Source::Args(inputs) => Ok(inputs),
            Source::File(path) => read_lines(&path),
            Source::Stdin if !std::io::stdin().is_terminal() => read_lines(Path::new("-")),
            Source::Stdin => bail!(
                "no inputs: give them after the template (a b c, or ::: a b c), with :::: FILE or --inputs FILE, or on standard input"
            ),
        }
    }
}

/// Where the items' inputs come from: one source, never a combination.
#[derive(Debug, PartialEq)]
enum Source {
    /// The arguments after the template, or after `:::`.
    Args(Vec<String>),
    /// One input per line of a file (`-` for standard input): `:::: FILE`
    /// or `--inputs FILE`.
    File(PathBuf),
    /// Nothing given: standard input, one input per line.
    Stdin,
}

impl Source {
    /// The source the arguments after the template and `--inputs` name.
    /// `:::` and `::::` are GNU parallel's: `::: a b` gives the inputs `a`
    /// and `b`, `:::: FILE` the lines of FILE. Two sources (a second `:::`
    /// group, two files, `::: a` with `--inputs FILE`, inputs before `:::`)
    /// are refused naming both: parallel runs every combination of its
    /// sources, and a dts item has one input.
    fn of(args: &[String], inputs_file: Option<&Path>) -> Result<Source> {
        let mut sources: Vec<(String, Source)> = Vec::new();
        let mut rest = args;
        let plain = rest.iter().take_while(|a| !is_marker(a)).count();
        if plain > 0 {
            let inputs = rest[..plain].to_vec();
            sources.push((
                format!("the inputs {}", quoted_list(&inputs)),
                Source::Args(inputs),
            ));
            rest = &rest[plain..];
        }
        while let Some((marker, after)) = rest.split_first() {
            let n = after.iter().take_while(|a| !is_marker(a)).count();
            let group = &after[..n];
            rest = &after[n..];
            match marker.as_str() {
                ":::" if group.is_empty() => bail!("::: is followed by no inputs"),
                ":::" => sources.push((
                    format!("::: {}", quoted_list(group)),
                    Source::Args(group.to_vec()),
                )),
                "::::" if group.is_empty() => bail!(":::: is followed by no file"),
                "::::" => {
                    for file in group {
                        sources.push((format!(":::: {file}"), Source::File(file.into())));
                    }
                }
                other => bail!(
                    "{other} (GNU parallel's linked input sources) is not supported: dts gives each item one input"
                ),
            }
        }
        if let Some(file) = inputs_file {
            sources.push((
                format!("--inputs {}", file.display()),
                Source::File(file.to_path_buf()),
            ));
        }
        match sources.len() {
            0 => Ok(Source::Stdin),
            1 => Ok(sources.remove(0).1),
            _ => bail!(
                "{} and {} are two input sources; give one: GNU parallel would run every combination of them, but a dts item has one input",
                sources[0].0,
                sources[1].0
            ),
        }
    }
}

/// `:::`, `::::` and their linked forms `:::+`, `::::+`.
fn is_marker(arg: &str) -> bool {
    matches!(arg, ":::" | "::::" | ":::+" | "::::+")
}

/// The first few of `items`, quoted, for an error message.
fn quoted_list(items: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut shown: Vec<String> = items.iter().take(SHOWN).map(|i| format!("{i:?}")).collect();
    if items.len() > SHOWN {
        shown.push("...".into());
    }
    shown.join(" ")
}

/// The lines of `path` (`-` for standard input), one input each.
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let lines = |reader: &mut dyn BufRead| -> Result<Vec<String>> {
        reader
            .lines()
            .collect::<Result<_, _>>()
            .with_context(|| format!("cannot read the inputs from {}", shown_path(path)))
    };
    if path.as_os_str() == "-" {
        return lines(&mut std::io::stdin().lock());
    }
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the inputs file {}", path.display()))?;
    lines(&mut std::io::BufReader::new(file))
}

fn shown_path(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "standard input".into()
    } else {
        path.display().to_string()
    }
}

/// The task in `file`, with the `--var` variables added to (and winning
/// over) its `variableJson`.
fn task_file(file: &Path, vars: Map<String, Value>) -> Result<Value> {
    let text = std::fs::read(file)
        .with_context(|| format!("cannot read the task file {}", file.display()))?;
    let mut body: Value = serde_json::from_slice(&text)
        .with_context(|| format!("the task file {} is not valid JSON", file.display()))?;
    let Some(fields) = body.as_object_mut() else {
        bail!("the task file {} must hold a JSON object", file.display());
    };
    if vars.is_empty() {
        return Ok(body);
    }
    let mut variables = match fields.remove("variableJson") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        // The seed's form: a string holding the object.
        Some(Value::String(text)) if text.trim().is_empty() => Map::new(),
        Some(Value::String(text)) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => map,
            _ => bail!(
                "--var cannot be added to the variableJson of {}: it is not a JSON object",
                file.display()
            ),
        },
        Some(_) => bail!(
            "--var cannot be added to the variableJson of {}: it is not a JSON object",
            file.display()
        ),
    };
    variables.extend(vars);
    fields.insert("variableJson".into(), Value::Object(variables));
    Ok(body)
}

/// Refuses a template with a placeholder no variable fills, in the
/// command line's words (`--var NAME=VALUE`, not the API's
/// `variableJson`), and suggests a given variable whose name is close.
fn check_placeholders(body: &Value) -> Result<()> {
    let Some(template) = body["templateFunction"].as_str() else {
        return Ok(()); // the task's own validation names the field
    };
    let variables = match &body["variableJson"] {
        Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
        other => other.clone(),
    };
    let Ok(vars) = Variables::from_json(&variables) else {
        return Ok(()); // refused, with the field, by the task's validation
    };
    let Err(MissingVariables(missing)) = template::render(template, &vars) else {
        return Ok(());
    };
    let given: Vec<&str> = variables
        .as_object()
        .map(|map| map.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let mut message = MissingVariables(missing.clone()).to_string();
    let hints: Vec<String> = missing
        .iter()
        .map(|name| match closest(name, &given) {
            Some(close) => format!("did you mean {{{{{close}}}}}? (--var {close}=... was given)"),
            None => format!("give it with --var {name}=VALUE"),
        })
        .collect();
    message.push_str(&format!(": {}", hints.join("; ")));
    bail!(message)
}

/// The name in `given` closest to `name`, if it is close enough to be a
/// typo: at most a third of its letters differ (and at least one may).
fn closest<'a>(name: &str, given: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    given
        .iter()
        .map(|g| (edit_distance(name, g), *g))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, g)| g)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // rows[i][j]: the distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

pub async fn run(args: RunArgs) -> Result<ExitCode> {
    let mut flags = vec![("store.ephemeral".to_string(), "true".to_string())];
    args.exec.push_flags(&mut flags);
    let settings = args.config.load(flags)?;
    let new =
        submit::from_json(&args.task_body()?, &wiring::submit_limits(&settings)).map_err(|e| {
            anyhow::anyhow!(
                "{}{}",
                e.message,
                e.field
                    .map(|f| format!(" (field: {f})"))
                    .unwrap_or_default()
            )
        })?;

    let started = Instant::now();
    // In memory: `store.ephemeral` is set above.
    let (store, _) = dts_node::open_store(&settings).await?;
    let node = EmbeddedNode::start(&settings, store, Role::Run, process::inherited()).await?;
    let task = node.submitter.submit(new).await?;
    let task = loop {
        let current = node
            .store
            .task(&task.id)
            .await?
            .context("the task disappeared")?;
        if current.status.is_terminal() {
            break current;
        }
        tokio::time::sleep(POLL).await;
    };
    let elapsed = started.elapsed();
    match print_results(&node, &task.id, args.json, args.raw).await {
        // `dts run ... | head`: the reader has what it wanted.
        Err(e) if is_broken_pipe(&e) => {}
        other => other?,
    }
    node.stop().await;

    if std::io::stderr().is_terminal() {
        eprintln!(
            "dts: {}, {} succeeded, {} failed in {:.2} s",
            count(task.items_total, "item"),
            task.items_succeeded,
            task.items_failed,
            elapsed.as_secs_f64()
        );
    }
    Ok(if task.status == TaskStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Each item's stdout to stdout and stderr to stderr, in input order; or all
/// results as one JSON array. Each stream is escaped if it is a terminal,
/// unless `raw`.
async fn print_results(node: &EmbeddedNode, id: &str, json: bool, raw: bool) -> Result<()> {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    let out_mode = Mode::for_stream(stdout.is_terminal(), raw);
    let err_mode = Mode::for_stream(stderr.is_terminal(), raw);
    let mut stdout = Sanitized::new(stdout.lock(), out_mode);
    let mut stderr = Sanitized::new(stderr.lock(), err_mode);
    let mut offset = 0;
    let mut first = true;
    if json {
        write!(stdout, "[")?;
    }
    loop {
        let (total, page) = node
            .store
            .results(id, ResultFilter::All, offset, PAGE)
            .await?;
        for result in &page {
            if json {
                let separator = if first { "" } else { "," };
                first = false;
                // The same view as the API's results.
                let view = ResultView {
                    succeeded: result.succeeded(),
                    result: result.clone(),
                };
                let text = serde_json::to_string(&view)?;
                write!(stdout, "{separator}{}", out_mode.show_json(&text))?;
                continue;
            }
            stdout.write_all(result.stdout.as_bytes())?;
            stderr.write_all(result.stderr.as_bytes())?;
            if !result.succeeded() {
                let why = match (&result.error, result.exit_code, result.signal) {
                    (Some(error), _, _) => error.clone(),
                    (None, _, _) if result.timed_out => "timed out".to_string(),
                    (None, Some(code), _) => format!("exit {code}"),
                    (None, None, Some(signal)) => format!("killed by signal {signal}"),
                    _ => "failed".to_string(),
                };
                writeln!(
                    stderr,
                    "dts: item {} ({:?}) failed: {why}",
                    result.index, result.input
                )?;
            }
        }
        offset += page.len() as u64;
        if page.is_empty() || offset >= total {
            break;
        }
    }
    if json {
        writeln!(stdout, "]")?;
    }
    stdout.flush()?;
    Ok(())
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn each_way_of_giving_inputs_is_one_source() {
        assert_eq!(
            Source::of(&args(&["a", "b"]), None).unwrap(),
            Source::Args(args(&["a", "b"]))
        );
        assert_eq!(
            Source::of(&args(&[":::", "a", "b"]), None).unwrap(),
            Source::Args(args(&["a", "b"]))
        );
        assert_eq!(
            Source::of(&args(&["::::", "list"]), None).unwrap(),
            Source::File("list".into())
        );
        assert_eq!(
            Source::of(&[], Some(Path::new("in"))).unwrap(),
            Source::File("in".into())
        );
        assert_eq!(Source::of(&[], None).unwrap(), Source::Stdin);
    }

    #[test]
    fn two_files_after_quadruple_colons_and_linked_sources_are_refused() {
        let error = |list: &[&str]| Source::of(&args(list), None).unwrap_err().to_string();
        assert!(
            error(&["::::", "f1", "f2"]).starts_with(":::: f1 and :::: f2 are two input sources"),
            "{}",
            error(&["::::", "f1", "f2"])
        );
        assert_eq!(
            error(&[":::", "a", ":::+", "b"]),
            ":::+ (GNU parallel's linked input sources) is not supported: dts gives each item one input"
        );
        assert_eq!(error(&[":::"]), "::: is followed by no inputs");
        assert_eq!(error(&["::::"]), ":::: is followed by no file");
    }

    #[test]
    fn a_typo_is_close_and_another_name_is_not() {
        assert_eq!(closest("nmae", &["name", "other"]), Some("name"));
        assert_eq!(closest("greeting", &["greting"]), Some("greting"));
        assert_eq!(closest("x", &["y"]), Some("y"));
        assert_eq!(closest("name", &["host"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
