//! How a task's script is run, through `dts run`: each known interpreter
//! gets the item where its users look for an argument, and Go-template
//! braces reach the script (README.md, "How an item runs").
//!
//! An interpreter missing here skips its test with a message, unless
//! `DTS_TEST_REQUIRE_INTERPRETERS` is set (scripts/test.sh sets it as root,
//! after scripts/install-test-deps.sh installed them).

use crate::common::{DEADLINE, dts_binary};
use std::io::Write;
use std::process::{Command, Stdio};

/// Inputs a naive command line would get wrong: spaces, both quotes, and a
/// leading dash an interpreter could take for one of its options.
const INPUTS: [&str; 3] = ["it's a \"quoted\" item", "-n --version", "plain"];

/// Whether `name` is on this test's `PATH` (which `dts run`'s items get).
fn installed(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// The stdout of `dts run --interpreter INTERPRETER SCRIPT` over
/// [`INPUTS`], or `None` (with a message) when the interpreter is missing
/// and not required.
fn run_with(interpreter: &str, script: &str) -> Option<String> {
    if !installed(interpreter) {
        assert!(
            std::env::var_os("DTS_TEST_REQUIRE_INTERPRETERS").is_none(),
            "{interpreter} is not on PATH, and DTS_TEST_REQUIRE_INTERPRETERS says it must be"
        );
        eprintln!(
            "skipped: {interpreter} is not installed (scripts/install-test-deps.sh installs it)"
        );
        return None;
    }
    let mut child = Command::new(dts_binary())
        .args(["run", "--cores", "2", "--interpreter", interpreter, script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dts run");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(INPUTS.join("\n").as_bytes()).unwrap();
    drop(stdin);
    let out = dts_testkit::finish_within(&mut child, DEADLINE, "dts run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{interpreter}: {stderr}");
    Some(String::from_utf8(out.stdout).unwrap())
}

/// What a script prints for each input as `<argument count> <argv0> [<input>]`.
fn expected(count: usize, argv0: &str) -> String {
    INPUTS
        .iter()
        .map(|input| format!("{count} {argv0} [{input}]\n"))
        .collect()
}

#[test]
fn python3_scripts_get_the_item_as_sys_argv_1() {
    let script = "import sys; print(len(sys.argv), sys.argv[0], '[' + sys.argv[1] + ']')";
    if let Some(stdout) = run_with("python3", script) {
        assert_eq!(stdout, expected(2, "-c"));
    }
}

#[test]
fn perl_scripts_get_the_item_as_argv_0() {
    let script = r#"print scalar(@ARGV), " $0 [$ARGV[0]]\n""#;
    if let Some(stdout) = run_with("perl", script) {
        assert_eq!(stdout, expected(1, "-e"));
    }
}

#[test]
fn ruby_scripts_get_the_item_as_argv_0() {
    let script = r##"puts "#{ARGV.length} #{$0} [#{ARGV[0]}]""##;
    if let Some(stdout) = run_with("ruby", script) {
        assert_eq!(stdout, expected(1, "-e"));
    }
}

#[test]
fn node_scripts_get_the_item_as_process_argv_1_after_nodes_own_path() {
    let script = "const a = process.argv; \
                  console.log(a.length, a[0] === process.execPath, '[' + a[1] + ']')";
    if let Some(stdout) = run_with("node", script) {
        assert_eq!(stdout, expected(2, "true"));
    }
}

#[test]
fn sh_dash_and_zsh_scripts_get_the_item_as_dollar_1() {
    for shell in ["sh", "dash", "zsh"] {
        if let Some(stdout) = run_with(shell, r#"printf '%s %s [%s]\n' "$#" "$0" "$1""#) {
            assert_eq!(stdout, expected(1, "dts-item"), "{shell}");
        }
    }
}

#[test]
fn dts_run_passes_docker_format_braces_through_and_renders_doubled_ones_literally() {
    let template = "docker() { printf '%s\\n' \"$@\"; }; docker ps --format '{{.ID}}\\t{{.Names}}' --filter name={{{{name}}}} \"$1\"";
    let mut child = Command::new(dts_binary())
        .args(["run", template, "it's \"x\""])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dts run");
    let out = dts_testkit::finish_within(&mut child, DEADLINE, "dts run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ps\n--format\n{{.ID}}\\t{{.Names}}\n--filter\nname={{name}}\nit's \"x\"\n"
    );
}
