//! Every command example in README.md, docs/cli.md and docs/workflows.md
//! runs as written, so
//! the docs stay true: each ```sh block runs under `bash -e -o pipefail` in
//! a scratch directory and must exit 0.
//!
//! The scratch directory has what the examples name: `target/release/dts`
//! (and `dts` on PATH) is the binary under test, a few input files (`a.txt`,
//! `b.txt`, `list.txt`, `app.log`, `task.json`, `photos/*.jpg`), and
//! `DTS_SERVER` points at a `dts up` this test starts. ImageMagick is not installed on test machines, so
//! a stand-in `convert` on PATH copies its input to its output. A block that
//! cannot run here (it builds dts, starts a long-running server, or needs a
//! cluster set up by hand) is preceded by
//! `<!-- not run by the doc examples test: REASON -->`, and the reason must
//! be given.

use crate::common::{DtsUp, dts_binary, text};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One block may run a few small tasks; a loaded machine gets room.
const DEADLINE: Duration = Duration::from_secs(120);
const SKIP: &str = "<!-- not run by the doc examples test:";

/// A fenced ```sh block of a document.
struct Example {
    /// `file:line` of the opening fence.
    place: String,
    code: String,
    /// Why it does not run, when its marker says so.
    skip: Option<String>,
}

fn examples(doc: &str) -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(doc);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut at = 0;
    // ends: `at` only grows, and stops at the last line.
    while at < lines.len() {
        if lines[at].trim_end() != "```sh" {
            at += 1;
            continue;
        }
        let start = at;
        let mut code = String::new();
        at += 1;
        // ends: at the closing fence or the end of the document.
        while at < lines.len() && lines[at].trim_end() != "```" {
            code.push_str(lines[at]);
            code.push('\n');
            at += 1;
        }
        let previous = start.checked_sub(1).map(|i| lines[i].trim()).unwrap_or("");
        let skip = previous.strip_prefix(SKIP).map(|rest| {
            let reason = rest.trim_end_matches("-->").trim();
            assert!(
                !reason.is_empty(),
                "{doc}:{}: a skipped example must say why",
                start + 1
            );
            reason.to_string()
        });
        found.push(Example {
            place: format!("{doc}:{}", start + 1),
            code,
            skip,
        });
        at += 1;
    }
    found
}

/// A scratch directory with what the examples name.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    let root = dir.path();
    // Items of `dts up` run as `nobody` when the tests run as root: they
    // must be able to read the files the examples give them.
    let mut open = std::fs::metadata(root).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut open, 0o755);
    std::fs::set_permissions(root, open).unwrap();
    let bin = root.join(".bin");
    std::fs::create_dir_all(root.join("target/release")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(dts_binary(), root.join("target/release/dts")).unwrap();
    std::os::unix::fs::symlink(dts_binary(), bin.join("dts")).unwrap();
    let convert = bin.join("convert");
    // The stand-in for ImageMagick: the last two arguments are the input
    // and the output.
    std::fs::write(
        &convert,
        "#!/bin/sh\nfor last; do :; done\neval \"input=\\${$(($#-1))}\"\ncp \"$input\" \"$last\"\n",
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&convert).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&convert, permissions).unwrap();
    for (name, body) in [
        ("a.txt", "alpha\nbeta\n"),
        ("b.txt", "gamma\n"),
        ("list.txt", "a.txt\nb.txt\n"),
        ("app.log", "started\nstopped\n"),
        (
            "task.json",
            r#"{"templateFunction": "echo \"$1\"", "inputList": ["a", "b"]}"#,
        ),
    ] {
        std::fs::write(root.join(name), body).unwrap();
    }
    std::fs::create_dir_all(root.join("photos")).unwrap();
    std::fs::create_dir_all(root.join("thumbs")).unwrap();
    for name in ["a.jpg", "b.jpg"] {
        std::fs::write(root.join("photos").join(name), name).unwrap();
    }
    dir
}

fn run_examples(doc: &str) {
    let all = examples(doc);
    assert!(!all.is_empty(), "{doc} has command examples");
    let up = DtsUp::start(&[]);
    let mut ran = 0;
    for example in &all {
        if example.skip.is_some() {
            continue;
        }
        let dir = scratch();
        let path = format!(
            "{}:{}",
            dir.path().join(".bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let output = dts_testkit::output_within(
            Command::new("bash")
                .args(["-e", "-o", "pipefail", "-c", &example.code])
                .current_dir(dir.path())
                .env("PATH", path)
                .env("DTS_SERVER", &up.base)
                .env("DTS_LOG", "warn")
                .env_remove("DTS_AUTH_TOKEN"),
            DEADLINE,
            &format!("the example at {}", example.place),
        );
        assert!(
            output.status.success(),
            "the example at {} failed ({}):\n{}\n--- stdout\n{}\n--- stderr\n{}",
            example.place,
            output.status,
            example.code,
            text(&output.stdout),
            text(&output.stderr)
        );
        ran += 1;
    }
    assert!(ran > 0, "{doc}: every example is skipped");
}

#[test]
fn every_command_example_in_the_readme_runs() {
    run_examples("README.md");
}

#[test]
fn every_command_example_in_the_cli_guide_runs() {
    run_examples("docs/cli.md");
}

#[test]
fn every_command_example_in_the_workflows_guide_runs() {
    run_examples("docs/workflows.md");
}
