//! What scripts print: a gigabyte of output is cut at the cap without the
//! worker holding it in memory, and binary output (NUL, 0xff, invalid UTF-8,
//! a character cut by the cap) is stored safely and read back as valid JSON.

use crate::common::DtsUp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Instant;

/// `executor.output-cap-bytes` by default.
const CAP: usize = 65_536;

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("a VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// GETs `path` and insists the body is valid UTF-8 JSON as sent (no lossy
/// decoding on our side).
async fn strict_json(up: &DtsUp, path: &str) -> Value {
    let response = reqwest::get(format!("{}{path}", up.base))
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let bytes = response.bytes().await.expect("body");
    assert!(
        std::str::from_utf8(&bytes).is_ok(),
        "{path}: the body is not UTF-8"
    );
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{path}: the body is not JSON ({e})"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gigabyte_on_stdout_is_cut_at_the_cap_without_exhausting_memory() {
    let up = DtsUp::start(&[]);
    let baseline = peak_rss(up.pid());
    let started = Instant::now();
    let id = up
        .submit(json!({
            // Exits non-zero (141) if a pipe closed early: every byte was read.
            "templateFunction": "head -c 1000000000 /dev/zero || exit; head -c 100000000 /dev/zero >&2 || exit",
            "inputList": ["flood"],
        }))
        .await;
    let done = up.wait_ended(&id).await;
    let elapsed = started.elapsed();
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let results = strict_json(&up, &format!("/v1/tasks/{id}/results")).await;
    let result = &results["items"][0];
    assert_eq!(result["exitCode"], 0, "{}", result["error"]);
    let stdout = result["stdout"].as_str().expect("stdout");
    assert_eq!(stdout.len(), CAP, "stdout is cut at the cap");
    assert!(
        stdout.bytes().all(|b| b == 0),
        "the kept bytes are the NULs"
    );
    assert_eq!(result["stdoutTruncated"], true);
    let stderr = result["stderr"].as_str().expect("stderr");
    assert_eq!(stderr.len(), CAP, "stderr is cut at the cap");
    assert_eq!(result["stderrTruncated"], true);

    let peak = peak_rss(up.pid());
    println!(
        "1 GB on stdout and 100 MB on stderr in {:.1} s: kept {CAP} bytes of each; \
         peak RSS of dts up {:.1} MB (at start {:.1} MB)",
        elapsed.as_secs_f64(),
        peak as f64 / 1e6,
        baseline as f64 / 1e6
    );
    assert!(
        peak < 200_000_000,
        "dts up peaked at {peak} bytes while a script wrote 1 GB"
    );
    // Still serving, and the task reads back in both shapes.
    strict_json(&up, &format!("/v1/tasks/{id}")).await;
    strict_json(&up, &format!("/schedule/status?taskId={id}")).await;
}

/// One item per kind of awkward output; the script prints the bytes for the
/// item's name to stdout and to stderr.
const BINARY_SCRIPT: &str = r#"
out() { printf "$@"; printf "$@" >&2; }
case "$1" in
  nul) out 'a\x00b\x00' ;;
  ff) out '\xff\xfe\xfd' ;;
  invalid) out 'ok\xc3\x28 \xed\xa0\x80 \xc0\xaf \xf5\x80 end' ;;
  incomplete-at-end) out 'tail\xf0\x9f\x98' ;;
  controls) out '\x1b[2J\r\x07\x08\x7f\x01' ;;
  quotes) out '"}]\\u0000\\' ;;
  cut-2-byte) head -c 65535 /dev/zero | tr '\0' x; printf '\xc3\xa9' ;;
  cut-4-byte) head -c 65534 /dev/zero | tr '\0' x; printf '\xf0\x9f\x98\x80' ;;
  urandom-cap) head -c 65536 /dev/urandom; head -c 65536 /dev/urandom >&2 ;;
  urandom-over) head -c 1000000 /dev/urandom; head -c 1000000 /dev/urandom >&2 ;;
esac
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_output_is_stored_safely_and_read_back_as_valid_json() {
    let up = DtsUp::start(&[]);
    let names = [
        "nul",
        "ff",
        "invalid",
        "incomplete-at-end",
        "controls",
        "quotes",
        "cut-2-byte",
        "cut-4-byte",
        "urandom-cap",
        "urandom-over",
    ];
    let id = up
        .submit(json!({"templateFunction": BINARY_SCRIPT, "inputList": names}))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["itemsSucceeded"], names.len());

    let page = strict_json(&up, &format!("/v1/tasks/{id}/results?limit=100")).await;
    let results = page["items"].as_array().expect("items");
    assert_eq!(results.len(), names.len());
    let by_name = |name: &str| -> &Value {
        results
            .iter()
            .find(|r| r["input"] == name)
            .unwrap_or_else(|| panic!("no result for {name}"))
    };
    // Output that fits: invalid UTF-8 becomes U+FFFD, everything else is kept.
    let exact: [(&str, &[u8]); 6] = [
        ("nul", b"a\x00b\x00"),
        ("ff", b"\xff\xfe\xfd"),
        ("invalid", b"ok\xc3\x28 \xed\xa0\x80 \xc0\xaf \xf5\x80 end"),
        ("incomplete-at-end", b"tail\xf0\x9f\x98"),
        ("controls", b"\x1b[2J\r\x07\x08\x7f\x01"),
        ("quotes", b"\"}]\\u0000\\"),
    ];
    for (name, bytes) in exact {
        let r = by_name(name);
        let expected = String::from_utf8_lossy(bytes);
        assert_eq!(r["stdout"], json!(expected), "{name} stdout");
        assert_eq!(r["stderr"], json!(expected), "{name} stderr");
        assert_eq!(r["stdoutTruncated"], false, "{name}");
        assert_eq!(r["exitCode"], 0, "{name}");
    }
    // A character cut by the cap is dropped whole, not half-kept or replaced.
    let r = by_name("cut-2-byte");
    assert_eq!(r["stdout"], json!("x".repeat(CAP - 1)));
    assert_eq!(r["stdoutTruncated"], true);
    let r = by_name("cut-4-byte");
    assert_eq!(r["stdout"], json!("x".repeat(CAP - 2)));
    assert_eq!(r["stdoutTruncated"], true);
    // Random bytes: exactly the cap is not truncated, more is; either way the
    // text is valid and holds at most the cap's worth of bytes (each invalid
    // byte becomes one U+FFFD).
    for (name, truncated) in [("urandom-cap", false), ("urandom-over", true)] {
        let r = by_name(name);
        for stream in ["stdout", "stderr"] {
            let text = r[stream].as_str().expect("text");
            let chars = text.chars().count();
            assert!(
                (CAP / 4..=CAP).contains(&chars),
                "{name} {stream}: {chars} characters"
            );
            assert_eq!(
                r[format!("{stream}Truncated")],
                truncated,
                "{name} {stream}"
            );
        }
    }

    // The task, its seed view and the task list all read back as JSON.
    strict_json(&up, &format!("/v1/tasks/{id}")).await;
    strict_json(&up, &format!("/schedule/status?taskId={id}")).await;
    strict_json(&up, "/v1/tasks").await;
    println!(
        "binary output: {} items of NUL, 0xff, invalid UTF-8, control bytes, random bytes and \
         characters cut by the cap stored and read back as valid JSON",
        names.len()
    );
}
