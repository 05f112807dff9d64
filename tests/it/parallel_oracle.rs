//! GNU parallel as the oracle for `dts run`: for a corpus of commands and
//! awkward inputs, `dts run -k`'s stdout is byte for byte what `parallel -k`
//! prints. Debian's `parallel` is installed by scripts/install-test-deps.sh;
//! without it these tests fail saying so rather than pass untested.

use crate::common::{dts_binary, text};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(120);

/// A directory of input files whose names and contents are awkward.
struct Corpus {
    dir: tempfile::TempDir,
    files: Vec<PathBuf>,
}

impl Corpus {
    fn new() -> Corpus {
        let dir = tempfile::TempDir::new().unwrap();
        let names: [&[u8]; 6] = [
            b"plain.txt",
            b"with space.txt",
            b"it's \"quoted\".txt",
            b"dollar $HOME `x`.txt",
            b"caf\xe9-latin1.txt",
            b"-starts-with-dash.txt",
        ];
        let mut files = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let path = dir.path().join(OsStr::from_bytes(name));
            let mut body = Vec::new();
            for line in 0..(50 * (i + 1)) {
                body.extend_from_slice(format!("line {line} of file {i}\n").as_bytes());
            }
            body.extend_from_slice(b"bytes \xe9\xff\x00 end\n");
            std::fs::write(&path, body).unwrap();
            files.push(path);
        }
        Corpus { dir, files }
    }

    /// The file names one per line, as `::::` reads them.
    fn list(&self, separator: u8) -> PathBuf {
        let mut list = Vec::new();
        for file in &self.files {
            list.extend_from_slice(file.as_os_str().as_bytes());
            list.push(separator);
        }
        let path = self
            .dir
            .path()
            .join(if separator == 0 { "list0" } else { "list" });
        std::fs::write(&path, list).unwrap();
        path
    }
}

fn output(command: &mut Command, what: &str) -> Output {
    dts_testkit::output_within(command, DEADLINE, what)
}

/// `parallel -k COMMAND :::: LIST` (and `extra` flags before it).
fn parallel(extra: &[&str], command: &str, list: &Path) -> Output {
    let found = Command::new("parallel").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "GNU parallel is not installed: run scripts/install-test-deps.sh (apt-get install parallel)"
    );
    output(
        Command::new("parallel")
            .args(["--will-cite", "-k", "-j", "2"])
            .args(extra)
            .arg(command)
            .arg("::::")
            .arg(list),
        "parallel -k",
    )
}

/// `dts run -k TEMPLATE :::: LIST` (and `extra` flags before it).
fn dts_run(extra: &[&str], template: &str, list: &Path) -> Output {
    output(
        Command::new(dts_binary())
            .args(["run", "-k", "-j", "2"])
            .args(extra)
            .arg(template)
            .arg("::::")
            .arg(list)
            .env("DTS_LOG", "warn"),
        "dts run -k",
    )
}

/// Runs the same command both ways over the corpus and compares stdout.
fn same_stdout(extra: &[&str], parallel_command: &str, dts_template: &str, separator: u8) {
    let corpus = Corpus::new();
    let list = corpus.list(separator);
    let expected = parallel(extra, parallel_command, &list);
    assert!(
        expected.status.success(),
        "parallel failed: {}",
        text(&expected.stderr)
    );
    let got = dts_run(extra, dts_template, &list);
    assert!(
        got.status.success(),
        "dts run failed: {}",
        text(&got.stderr)
    );
    assert!(!expected.stdout.is_empty(), "the oracle printed something");
    assert!(
        got.stdout == expected.stdout,
        "dts run -k differs from parallel -k for {dts_template:?}:\n--- parallel ({} bytes)\n{}\n--- dts ({} bytes)\n{}",
        expected.stdout.len(),
        text(&expected.stdout),
        got.stdout.len(),
        text(&got.stdout),
    );
}

#[test]
fn sha256sum_of_awkwardly_named_files_matches_parallel() {
    same_stdout(&[], "sha256sum {}", r#"sha256sum "$1""#, b'\n');
}

#[test]
fn gzip_output_is_the_same_bytes_as_parallels() {
    same_stdout(&[], "gzip -c -n {}", r#"gzip -c -n "$1""#, b'\n');
}

#[test]
fn wc_matches_parallel() {
    same_stdout(&[], "wc {}", r#"wc "$1""#, b'\n');
}

#[test]
fn a_python3_script_sees_the_same_argument_as_under_parallel() {
    let script = "import os, sys; sys.stdout.buffer.write(os.fsencode(sys.argv[1])[::-1] + b'\\n')";
    same_stdout(
        &[],
        &format!("python3 -c \"{script}\" {{}}"),
        &format!("python3 -c \"{script}\" \"$1\""),
        b'\n',
    );
}

#[test]
fn inputs_with_newlines_and_quotes_separated_by_nul_match_parallel() {
    let corpus = Corpus::new();
    let mut inputs = Vec::new();
    for input in [
        &b"two\nlines"[..],
        b"tab\there",
        b"'single' and \"double\"",
        b"caf\xe9 \xff",
        b"  leading and trailing  ",
        b"*glob?[x]",
    ] {
        inputs.extend_from_slice(input);
        inputs.push(0);
    }
    let list = corpus.dir.path().join("nul-separated");
    std::fs::write(&list, inputs).unwrap();
    let expected = parallel(&["-0"], "printf '[%s]\\n' {} | od -c", &list);
    assert!(expected.status.success(), "{}", text(&expected.stderr));
    let got = dts_run(&["-0"], r#"printf '[%s]\n' "$1" | od -c"#, &list);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), text(&expected.stdout));
    assert!(got.stdout == expected.stdout, "byte for byte");
}

#[test]
fn non_utf8_input_lines_reach_the_script_as_the_same_bytes_as_under_parallel() {
    let corpus = Corpus::new();
    let list = corpus.dir.path().join("latin1-lines");
    std::fs::write(&list, b"caf\xe9\nna\xefve\nplain\n\xff\xfe\n").unwrap();
    let expected = parallel(&[], "printf %s {} | od -An -tx1", &list);
    assert!(expected.status.success(), "{}", text(&expected.stderr));
    let got = dts_run(&[], r#"printf %s "$1" | od -An -tx1"#, &list);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert!(
        got.stdout == expected.stdout,
        "parallel:\n{}\ndts:\n{}",
        text(&expected.stdout),
        text(&got.stdout)
    );
}
