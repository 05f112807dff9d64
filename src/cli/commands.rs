//! What `dts run` and `dts submit --wait` share of GNU parallel's habits:
//! each item's command line (`--dry-run`, the job log's Command column),
//! the job log and the results directory (`--joblog`, `--results`), and an
//! item's output as `dts run` prints it (`--tag`). One implementation, so
//! a file written for a task on a server reads as one `dts run` wrote.

use super::client;
use anyhow::{Context, Result};
use dts_executor::{Convention, Program};
use dts_model::submit::{self, NewTask, SubmitLimits};
use dts_model::{ItemResult, template};
use serde_json::Value;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The task in `body` (the API's JSON), checked as a server checks it
/// against `limits`; an error names the field.
pub fn new_task(body: &Value, limits: &SubmitLimits) -> Result<NewTask> {
    submit::from_json(body, limits).map_err(|e| {
        anyhow::anyhow!(
            "{}{}",
            e.message,
            e.field
                .map(|f| format!(" (field: {f})"))
                .unwrap_or_default()
        )
    })
}

/// Limits that refuse nothing a server could accept: `dts submit` reads a
/// task only to show its commands, and the server it goes to is the judge
/// of its own limits.
pub fn any_server() -> SubmitLimits {
    SubmitLimits {
        max_items: usize::MAX,
        max_item_bytes: usize::MAX,
        max_template_bytes: usize::MAX,
        max_timeout_secs: u64::MAX,
        max_retries: u32::MAX,
        max_variables_bytes: usize::MAX,
        max_memory_mb: u64::MAX,
        // In thousandths of a CPU, this still fits a u32.
        max_cpus: u32::MAX / 1000,
        ..SubmitLimits::default()
    }
}

/// The command each item runs, as a shell would take it: for `--dry-run`
/// and the job log's Command column.
pub struct Commands {
    program: Program,
    convention: Convention,
}

impl Commands {
    pub fn of(task: &NewTask) -> Result<Commands> {
        let script = template::render(&task.template_function, &task.variables)
            .map_err(|missing| anyhow::anyhow!("{missing}"))?;
        let path = std::env::var_os("PATH");
        Ok(Commands {
            program: Program::prepare(&script, &task.interpreter, path.as_deref()),
            convention: Convention::of(&task.interpreter),
        })
    }

    /// The command line for `input`, each word shell-quoted.
    pub fn line(&self, input: &[u8]) -> Vec<u8> {
        let words: Vec<&[u8]> = match &self.program {
            Program::Direct(path) => vec![
                std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()),
                input,
            ],
            Program::Script {
                interpreter,
                script,
            } => std::iter::once(interpreter.as_bytes())
                .chain(self.convention.args(script).into_iter().map(str::as_bytes))
                .chain(std::iter::once(input))
                .collect(),
        };
        let mut line = Vec::new();
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                line.push(b' ');
            }
            line.extend_from_slice(&shell_quote(word));
        }
        line
    }
}

/// `word` as one shell word: as it is when it holds only characters no
/// shell treats specially, else in single quotes. Bytes, not text: an
/// input that is not UTF-8 is quoted exactly as the item gets it.
fn shell_quote(word: &[u8]) -> Vec<u8> {
    let plain = !word.is_empty()
        && word
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(c));
    if plain {
        return word.to_vec();
    }
    let mut quoted = vec![b'\''];
    for &byte in word {
        if byte == b'\'' {
            quoted.extend_from_slice(br"'\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

/// `--dry-run`: each item's command, one per line, and nothing run.
pub fn dry_run(task: &NewTask, commands: &Commands) -> Result<ExitCode> {
    let mut out = super::terminal::stdout(false);
    for input in &task.inputs {
        let mut line = commands.line(input.as_bytes());
        line.push(b'\n');
        match out.write_all(&line) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            other => other?,
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The job log and the results directory: what `--joblog FILE` and
/// `--results DIR` keep of each item.
pub struct Keeper {
    commands: Commands,
    joblog: Option<(PathBuf, BufWriter<File>)>,
    results: Option<PathBuf>,
}

impl Keeper {
    /// Creates the job log (with its header line) and the results
    /// directory, so a path that cannot be written is refused before
    /// anything runs.
    pub fn new(
        commands: Commands,
        joblog: Option<&Path>,
        results: Option<&Path>,
    ) -> Result<Keeper> {
        let joblog = match joblog {
            Some(path) => {
                let file = File::create(path).with_context(|| {
                    format!("cannot create the --joblog file {}", path.display())
                })?;
                let mut log = BufWriter::new(file);
                writeln!(
                    log,
                    "Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand"
                )
                .with_context(|| format!("cannot write the --joblog file {}", path.display()))?;
                Some((path.to_path_buf(), log))
            }
            None => None,
        };
        if let Some(dir) = results {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("cannot create the --results directory {}", dir.display())
            })?;
        }
        Ok(Keeper {
            commands,
            joblog,
            results: results.map(Path::to_path_buf),
        })
    }

    /// The job log line and the results directory of one item, which
    /// ended at about `ended` (since the epoch) on `host` (parallel's Host
    /// column: `:` for this machine).
    pub fn keep(
        &mut self,
        result: &ItemResult,
        ended: Duration,
        host: &str,
    ) -> std::io::Result<()> {
        let seq = result.index + 1;
        let exitval = result.exit_code.unwrap_or(-1);
        let signal = result.signal.unwrap_or(0);
        if let Some((path, log)) = &mut self.joblog {
            let runtime = Duration::from_millis(result.duration_ms);
            let start = ended.saturating_sub(runtime);
            let named = |e: std::io::Error| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot write the --joblog file {}: {e}", path.display()),
                )
            };
            // A column must not hold the log's separators.
            let host: String = host
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let mut line = format!(
                "{seq}\t{host}\t{:.3}\t{:.3}\t0\t{}\t{exitval}\t{signal}\t",
                start.as_secs_f64(),
                runtime.as_secs_f64(),
                result.stdout.len(),
            )
            .into_bytes();
            line.extend_from_slice(&self.commands.line(result.input.as_bytes()));
            line.push(b'\n');
            log.write_all(&line).map_err(named)?;
        }
        if let Some(dir) = &self.results {
            let item = dir.join(seq.to_string());
            let named = |e: std::io::Error| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot write the --results files in {}: {e}",
                        item.display()
                    ),
                )
            };
            std::fs::create_dir_all(&item).map_err(named)?;
            std::fs::write(item.join("input"), result.input.as_bytes()).map_err(named)?;
            std::fs::write(item.join("stdout"), result.stdout.as_bytes()).map_err(named)?;
            std::fs::write(item.join("stderr"), result.stderr.as_bytes()).map_err(named)?;
            std::fs::write(item.join("exitcode"), format!("{exitval}\n")).map_err(named)?;
        }
        Ok(())
    }

    /// Flushes the job log.
    pub fn finish(&mut self) -> Result<()> {
        if let Some((path, log)) = &mut self.joblog {
            log.flush()
                .with_context(|| format!("cannot write the --joblog file {}", path.display()))?;
        }
        Ok(())
    }
}

/// An item's output as `dts run` prints it: its stdout to `out` and its
/// stderr to `err` (each line after the input and a tab with `tag`), then
/// on `err` what a cap cut (`keeper` says whose cap) and why it failed.
pub fn show_output(
    out: &mut impl Write,
    err: &mut impl Write,
    result: &ItemResult,
    tag: bool,
    keeper: &str,
) -> std::io::Result<()> {
    let prefix = tag.then(|| [result.input.as_bytes(), b"\t"].concat());
    write_tagged(out, result.stdout.as_bytes(), prefix.as_deref())?;
    write_tagged(err, result.stderr.as_bytes(), prefix.as_deref())?;
    for note in client::cut_notes(result, keeper) {
        writeln!(err, "dts: {note}")?;
    }
    if !result.succeeded() {
        let why = match (&result.error, result.exit_code, result.signal) {
            (Some(error), _, _) => error.clone(),
            (None, _, _) if result.timed_out => "timed out".to_string(),
            (None, Some(code), _) => format!("exit {code}"),
            (None, None, Some(signal)) => format!("killed by signal {signal}"),
            _ => "failed".to_string(),
        };
        writeln!(
            err,
            "dts: item {} ({:?}) failed: {why}",
            result.index, result.input
        )?;
    }
    Ok(())
}

/// `bytes` with `prefix` before each line, as `--tag` shows them.
pub fn write_tagged(
    out: &mut impl Write,
    bytes: &[u8],
    prefix: Option<&[u8]>,
) -> std::io::Result<()> {
    let Some(prefix) = prefix else {
        return out.write_all(bytes);
    };
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        out.write_all(prefix)?;
        out.write_all(line)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_a_shell_would_split_or_expand_are_single_quoted() {
        assert_eq!(shell_quote(b"a.txt"), b"a.txt");
        assert_eq!(shell_quote(b"a b"), b"'a b'");
        assert_eq!(shell_quote(b"it's"), br"'it'\''s'");
        assert_eq!(shell_quote(b"$1"), b"'$1'");
        assert_eq!(shell_quote(b""), b"''");
        assert_eq!(shell_quote(b"caf\xe9"), b"'caf\xe9'");
    }

    #[test]
    fn tag_prefixes_every_line_and_an_unfinished_last_one() {
        let mut out = Vec::new();
        write_tagged(&mut out, b"x\ny\nz", Some(b"in\t")).unwrap();
        assert_eq!(out, b"in\tx\nin\ty\nin\tz");
    }
}
