//! Inputs are bytes: a line, an argument or an API input that is not UTF-8
//! reaches the script exactly, `-0` reads NUL-separated inputs, and an
//! input holding a NUL (which no process can take as an argument) is
//! refused naming it.

use crate::common::{DEADLINE, DtsUp, dts_binary, dts_client as dts, text};
use reqwest::StatusCode;
use serde_json::json;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};

/// Prints each item's input as hex bytes, one line per item.
const HEX: &str = r#"printf %s "$1" | od -An -tx1"#;

/// `dts run ARGS` with `stdin` (bytes) on its standard input.
fn dts_run(args: &[&OsStr], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(dts_binary())
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dts run");
    let mut input = child.stdin.take().expect("a pipe to its stdin");
    input.write_all(stdin).expect("write the inputs");
    drop(input);
    dts_testkit::finish_within(&mut child, DEADLINE, "dts run")
}

fn os(text: &str) -> &OsStr {
    OsStr::new(text)
}

#[test]
fn dts_run_takes_a_line_that_is_not_utf8_as_an_input_like_any_other() {
    let out = dts_run(&[os(HEX)], b"caf\xe9\nok\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), " 63 61 66 e9\n 6f 6b\n");
}

#[test]
fn dts_run_dash_zero_reads_nul_separated_inputs_that_hold_spaces_and_newlines() {
    for flag in ["-0", "--null"] {
        let out = dts_run(&[os(flag), os(HEX)], b"a b\0c\nd\0");
        assert_eq!(out.status.code(), Some(0), "{flag}: {}", text(&out.stderr));
        // Two items, "a b" and "c\nd", and no empty third one.
        assert_eq!(text(&out.stdout), " 61 20 62\n 63 0a 64\n", "{flag}");
    }
}

#[test]
fn dts_run_takes_an_argument_that_is_not_utf8_as_its_exact_bytes() {
    let latin1 = OsStr::from_bytes(b"caf\xe9");
    for args in [vec![os(HEX), latin1], vec![os(HEX), os(":::"), latin1]] {
        let out = dts_run(&args, b"");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), " 63 61 66 e9\n");
    }
}

#[test]
fn dts_run_refuses_a_line_holding_a_nul_naming_it_and_runs_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let marker = dir.path().join("ran");
    let script = format!("touch {}", marker.display());
    let out = dts_run(&[os(&script)], b"a\nb\0c\n");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "dts: error: line 2 of standard input contains a NUL byte, which a process cannot \
         take as an argument (for NUL-separated inputs, as find -print0 writes them, give -0)\n"
    );
    assert!(!marker.exists(), "an item ran");
}

#[tokio::test]
async fn a_base64_input_reaches_the_script_exactly_and_its_result_has_input_base64() {
    let up = DtsUp::start(&[]);
    // "Y2Fm6Q==" is caf\xe9.
    let body = json!({"templateFunction": HEX, "inputList": ["ok", {"base64": "Y2Fm6Q=="}]});
    let (status, task) = up.post_json("/v1/tasks", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{task}");
    assert_eq!(task["inputList"], json!(["ok", {"base64": "Y2Fm6Q=="}]));
    let id = task["id"].as_str().expect("an id");
    let done = up.wait_ended(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let results = up.all_results(id, "").await;
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["input"], "ok");
    assert_eq!(results[0].get("inputBase64"), None, "{}", results[0]);
    assert_eq!(results[0]["stdout"], " 6f 6b\n");
    assert_eq!(results[1]["input"], "caf\u{fffd}");
    assert_eq!(results[1]["inputBase64"], "Y2Fm6Q==");
    assert_eq!(results[1]["stdout"], " 63 61 66 e9\n");
}

#[tokio::test]
async fn an_input_holding_a_nul_is_refused_with_400_naming_its_index() {
    let up = DtsUp::start(&[]);
    // "YQBi" is a\0b.
    for input in [json!({"base64": "YQBi"}), json!("a\u{0}b")] {
        let body = json!({"templateFunction": "echo $1", "inputList": ["a", input]});
        let (status, error) = up.post_json("/v1/tasks", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["field"], "inputList[1]", "{error}");
        assert_eq!(
            error["error"]["message"],
            "inputList[1] contains a NUL byte, which cannot be passed to a process"
        );
    }
    assert_eq!(up.task_count().await, 0);
}

#[tokio::test]
async fn a_command_line_submit_reads_nul_separated_inputs_with_dash_zero() {
    let up = DtsUp::start(&[]);
    let dir = tempfile::TempDir::new().unwrap();
    let list = dir.path().join("names");
    std::fs::write(&list, b"a b\0caf\xe9\nx\0").unwrap();
    let file = list.to_str().expect("a UTF-8 temp path");
    let out = dts(
        &up,
        &["submit", HEX, "--inputs", file, "-0", "--wait", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let task: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the task as JSON");
    assert_eq!(task["status"], "COMPLETED", "{task}");
    assert_eq!(task["itemsTotal"], 2);
    let results = up
        .all_results(task["id"].as_str().expect("an id"), "")
        .await;
    let stdout: Vec<&str> = results
        .iter()
        .map(|r| r["stdout"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(stdout, [" 61 20 62\n", " 63 61 66 e9 0a 78\n"]);
}
