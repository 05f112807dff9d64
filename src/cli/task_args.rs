//! How `dts run` and a command-line `dts submit` build a task from their
//! arguments: a template, its inputs from exactly one source, `--var`
//! variables and the per-item flags. One parser for both, so a command line
//! that `dts run` takes means the same task when it is submitted to a
//! server.

use anyhow::{Context, Result, bail};
use clap::Args;
use dts_model::template::{self, MissingVariables};
use dts_model::{Bytes, Variables};
use serde_json::{Map, Value, json};
use std::ffi::{OsStr, OsString};
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The flags that say what each item gets: its variables, where its inputs
/// come from when they are not arguments, and its limits.
#[derive(Args, Debug, Default)]
pub struct TaskFlags {
    /// Read the inputs from FILE, one per line (- for standard input).
    #[arg(long = "inputs", value_name = "FILE")]
    pub inputs_file: Option<PathBuf>,
    /// Inputs read from a file or standard input end with a NUL byte, not
    /// a newline, so they may hold newlines (find -print0, xargs -0).
    #[arg(short = '0', long = "null")]
    pub null: bool,
    /// A template variable, for a {{NAME}} placeholder (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Per-item timeout in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Extra attempts for a failed item.
    #[arg(long)]
    pub retries: Option<u32>,
    /// The program that runs the script (default bash).
    #[arg(long)]
    pub interpreter: Option<String>,
    /// Stop at failures, as GNU parallel's --halt (the task's `halt`):
    /// `now,fail=N` kills the running items once N items failed,
    /// `soon,fail=N` starts no new item and lets the running ones finish;
    /// N may be a percentage of the items (`soon,fail=10%`). `never` is the
    /// default.
    #[arg(long, value_name = "WHEN,fail=N", value_parser = halt_flag)]
    pub halt: Option<String>,
    /// A script that runs once after every item, reading every item's
    /// result as a JSON line on standard input, in input order (the task's
    /// `reduce`); its result ends the task.
    #[arg(long, value_name = "SCRIPT")]
    pub reduce: Option<String>,
    /// When the --reduce script runs: `success` (only if every item
    /// succeeded; the default) or `always`.
    #[arg(long, value_name = "WHEN", requires = "reduce", value_parser = ["success", "always"])]
    pub reduce_when: Option<String>,
}

/// `--halt`, checked as the task's `halt` field is (by dts-model), so a bad
/// value is a usage error naming it before anything runs.
fn halt_flag(text: &str) -> Result<String, String> {
    dts_model::Halt::parse(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

impl TaskFlags {
    /// The `--var` variables, as the task's `variableJson`.
    pub fn variables(&self) -> Result<Map<String, Value>> {
        let mut variables = Map::new();
        for pair in &self.vars {
            let Some((name, value)) = pair.split_once('=') else {
                bail!("--var takes NAME=VALUE, not {pair:?}");
            };
            variables.insert(name.to_string(), Value::String(value.to_string()));
        }
        Ok(variables)
    }

    /// The task `template` makes with the inputs `args` name (or
    /// `--inputs`, or standard input) and the `--var` variables. `command`
    /// is `run` or `submit`, for the example in an error.
    pub fn template_task(&self, command: &str, template: &str, args: &[OsString]) -> Result<Value> {
        if is_marker(template) {
            bail!(
                "{template} must come after the template (dts {command} 'echo \"$1\"' ::: a b c)"
            );
        }
        let source = Source::of(args, self.inputs_file.as_deref())?;
        let separator = if self.null {
            Separator::Nul
        } else {
            Separator::Newline
        };
        let inputs: Vec<Value> = source
            .read(separator)?
            .into_iter()
            .map(input_json)
            .collect();
        Ok(json!({
            "templateFunction": template,
            "variableJson": self.variables()?,
            "inputList": inputs,
        }))
    }

    /// Sets the fields the per-item flags give; a flag the user typed wins
    /// over a task file's field.
    pub fn apply(&self, body: &mut Value) {
        if let Some(timeout) = self.timeout {
            body["timeoutSecs"] = json!(timeout);
        }
        if let Some(retries) = self.retries {
            body["retries"] = json!(retries);
        }
        if let Some(interpreter) = &self.interpreter {
            body["interpreter"] = json!(interpreter);
        }
        if let Some(halt) = &self.halt {
            body["halt"] = json!(halt);
        }
        if let Some(script) = &self.reduce {
            let mut reduce = json!({"templateFunction": script});
            if let Some(when) = &self.reduce_when {
                reduce["when"] = json!(when);
            }
            // The reduce runs with the items' interpreter and timeout.
            if let Some(interpreter) = &self.interpreter {
                reduce["interpreter"] = json!(interpreter);
            }
            if let Some(timeout) = self.timeout {
                reduce["timeoutSecs"] = json!(timeout);
            }
            body["reduce"] = reduce;
        }
    }

    /// The flags given, as the user typed them, for an error that refuses
    /// them with something else.
    pub fn given(&self) -> Vec<String> {
        let mut given = Vec::new();
        if let Some(file) = &self.inputs_file {
            given.push(format!("--inputs {}", file.display()));
        }
        if self.null {
            given.push("-0".into());
        }
        if let Some(var) = self.vars.first() {
            given.push(format!("--var {var}"));
        }
        if let Some(timeout) = self.timeout {
            given.push(format!("--timeout {timeout}"));
        }
        if let Some(retries) = self.retries {
            given.push(format!("--retries {retries}"));
        }
        if let Some(interpreter) = &self.interpreter {
            given.push(format!("--interpreter {interpreter}"));
        }
        if let Some(halt) = &self.halt {
            given.push(format!("--halt {halt}"));
        }
        if let Some(script) = &self.reduce {
            given.push(format!("--reduce {script}"));
        }
        given
    }
}

/// Where the items' inputs come from: one source, never a combination.
#[derive(Debug, PartialEq)]
pub enum Source {
    /// The arguments after the template, or after `:::`: bytes, as the OS
    /// gives them (a file name need not be UTF-8).
    Args(Vec<Vec<u8>>),
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
    pub fn of(args: &[OsString], inputs_file: Option<&Path>) -> Result<Source> {
        let mut sources: Vec<(String, Source)> = Vec::new();
        let mut rest = args;
        let plain = rest.iter().take_while(|a| !is_marker(a)).count();
        if plain > 0 {
            let inputs = &rest[..plain];
            sources.push((
                format!("the inputs {}", quoted_list(inputs)),
                Source::Args(arg_bytes(inputs)),
            ));
            rest = &rest[plain..];
        }
        while let Some((marker, after)) = rest.split_first() {
            let n = after.iter().take_while(|a| !is_marker(a)).count();
            let group = &after[..n];
            rest = &after[n..];
            match marker.to_string_lossy().as_ref() {
                ":::" if group.is_empty() => bail!("::: is followed by no inputs"),
                ":::" => sources.push((
                    format!("::: {}", quoted_list(group)),
                    Source::Args(arg_bytes(group)),
                )),
                "::::" if group.is_empty() => bail!(":::: is followed by no file"),
                "::::" => {
                    for file in group {
                        sources.push((
                            format!(":::: {}", file.to_string_lossy()),
                            Source::File(file.into()),
                        ));
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

impl Source {
    /// The inputs this source gives, as bytes: a file's are split at
    /// `separator`.
    pub fn read(self, separator: Separator) -> Result<Vec<Vec<u8>>> {
        match self {
            Source::Args(inputs) => Ok(inputs),
            Source::File(path) => read_inputs(&path, separator),
            Source::Stdin if !std::io::stdin().is_terminal() => {
                read_inputs(Path::new("-"), separator)
            }
            Source::Stdin => bail!(
                "no inputs: give them after the template (a b c, or ::: a b c), with :::: FILE or --inputs FILE, or on standard input"
            ),
        }
    }
}

/// What ends each input read from a file or standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    /// A newline (a `\r` before it goes too), as `xargs` and `parallel`.
    Newline,
    /// A NUL byte (`-0`), as `xargs -0` and `parallel -0`: inputs may then
    /// hold newlines, as file names may.
    Nul,
}

/// `:::`, `::::` and their linked forms `:::+`, `::::+`.
pub fn is_marker(arg: impl AsRef<OsStr>) -> bool {
    matches!(
        arg.as_ref().as_bytes(),
        b":::" | b"::::" | b":::+" | b"::::+"
    )
}

/// The arguments' bytes, exactly as the OS gave them.
fn arg_bytes(args: &[OsString]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

/// An input as `inputList` takes it: a string when it is UTF-8, else
/// `{"base64": ...}`, so bytes that are not text arrive exactly.
fn input_json(input: Vec<u8>) -> Value {
    match String::from_utf8(input) {
        Ok(text) => Value::String(text),
        Err(e) => json!({ "base64": Bytes::new(e.into_bytes()).to_base64() }),
    }
}

/// The first few of `items`, quoted, for an error message.
pub fn quoted_list(items: &[impl AsRef<OsStr>]) -> String {
    const SHOWN: usize = 3;
    let mut shown: Vec<String> = items
        .iter()
        .take(SHOWN)
        .map(|i| format!("{:?}", i.as_ref()))
        .collect();
    if items.len() > SHOWN {
        shown.push("...".into());
    }
    shown.join(" ")
}

/// The inputs in `path` (`-` for standard input), each ended by
/// `separator`; the last one need not be. Bytes, split as they are: an
/// input need not be UTF-8. One holding a NUL byte is refused, naming it,
/// since a process cannot take it as an argument.
fn read_inputs(path: &Path, separator: Separator) -> Result<Vec<Vec<u8>>> {
    let mut data = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().lock().read_to_end(&mut data)
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open the inputs file {}", path.display()))?
            .read_to_end(&mut data)
    };
    read.with_context(|| format!("cannot read the inputs from {}", shown_path(path)))?;
    let inputs = split_inputs(&data, separator);
    if let Some(n) = inputs.iter().position(|input| input.contains(&0)) {
        bail!(
            "line {} of {} contains a NUL byte, which a process cannot take as an argument \
             (for NUL-separated inputs, as find -print0 writes them, give -0)",
            n + 1,
            shown_path(path)
        );
    }
    Ok(inputs)
}

/// `data` cut at each `separator`. A separator at the very end ends the
/// last input and starts no empty one; with newlines a `\r` before the
/// newline is dropped too (as `BufRead::lines`, which this replaces).
fn split_inputs(data: &[u8], separator: Separator) -> Vec<Vec<u8>> {
    let byte = match separator {
        Separator::Newline => b'\n',
        Separator::Nul => 0,
    };
    let data = data.strip_suffix(&[byte]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == byte)
        .map(|input| match separator {
            Separator::Newline => input.strip_suffix(b"\r").unwrap_or(input).to_vec(),
            Separator::Nul => input.to_vec(),
        })
        .collect()
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
pub fn task_file(file: &Path, vars: Map<String, Value>) -> Result<Value> {
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
pub fn check_placeholders(body: &Value) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn bytes(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn each_way_of_giving_inputs_is_one_source() {
        assert_eq!(
            Source::of(&args(&["a", "b"]), None).unwrap(),
            Source::Args(bytes(&["a", "b"]))
        );
        assert_eq!(
            Source::of(&args(&[":::", "a", "b"]), None).unwrap(),
            Source::Args(bytes(&["a", "b"]))
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
    fn arguments_that_are_not_utf8_are_inputs_with_their_exact_bytes() {
        let latin1 = OsString::from(OsStr::from_bytes(b"caf\xe9"));
        assert_eq!(
            Source::of(&[OsString::from(":::"), latin1], None).unwrap(),
            Source::Args(vec![b"caf\xe9".to_vec()])
        );
        assert_eq!(
            input_json(b"caf\xe9".to_vec()),
            json!({"base64": "Y2Fm6Q=="})
        );
        assert_eq!(input_json(b"caf\xc3\xa9".to_vec()), json!("café"));
    }

    #[test]
    fn inputs_split_at_their_separator_and_a_trailing_one_makes_no_empty_input() {
        let newline = |data: &[u8]| split_inputs(data, Separator::Newline);
        let nul = |data: &[u8]| split_inputs(data, Separator::Nul);
        assert_eq!(newline(b"caf\xe9\nok\n"), [&b"caf\xe9"[..], b"ok"]);
        assert_eq!(newline(b"a\r\n\nb"), [&b"a"[..], b"", b"b"]);
        assert_eq!(newline(b""), Vec::<Vec<u8>>::new());
        assert_eq!(newline(b"\n"), Vec::<Vec<u8>>::new());
        assert_eq!(nul(b"a b\0c\nd\0"), [&b"a b"[..], b"c\nd"]);
        assert_eq!(nul(b"a\0\0b"), [&b"a"[..], b"", b"b"]);
        assert_eq!(nul(b"\0"), Vec::<Vec<u8>>::new());
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
