//! What scripts print: a gigabyte of output is cut at the cap without the
//! worker holding it in memory; output is bytes end to end (NUL, 0xff,
//! invalid UTF-8, gzip, a character cut by the cap) — valid JSON with the
//! exact bytes in `stdoutBase64`, and `dts results` and `dts run` write the
//! bytes themselves; a cut is said, with how much was written.

use crate::common::{DtsUp, dts_binary, dts_client, run_dts, shared_dir, text};
use dts_model::Bytes;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
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
    let (status, _, bytes) = crate::contract::read_checked(&reqwest::Method::GET, response).await;
    assert_eq!(status, StatusCode::OK, "{path}");
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
    assert_eq!(
        (&result["stdoutBytes"], &result["stderrBytes"]),
        (&json!(1_000_000_000u64), &json!(100_000_000u64)),
        "every byte written is counted"
    );

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

/// A stream's exact bytes from an API result: `stdoutBase64` when the
/// server sent it, else the text of `stdout`.
fn exact_bytes(result: &Value, stream: &str) -> Vec<u8> {
    match result.get(format!("{stream}Base64")) {
        Some(encoded) => Bytes::from_base64(encoded.as_str().expect("base64 is a string"))
            .expect("valid base64")
            .into_vec(),
        None => result[stream].as_str().expect("text").as_bytes().to_vec(),
    }
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
    // Output that fits is kept exactly: as text when it is UTF-8, else as
    // text with U+FFFD for people and the bytes in base64 for programs.
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
        for stream in ["stdout", "stderr"] {
            assert_eq!(r[stream], json!(expected), "{name} {stream}");
            assert_eq!(exact_bytes(r, stream), bytes, "{name} {stream}");
            assert_eq!(
                r.get(format!("{stream}Base64")).is_some(),
                std::str::from_utf8(bytes).is_err(),
                "{name} {stream}: base64 only for bytes that are not text"
            );
            assert_eq!(r[format!("{stream}Bytes")], bytes.len(), "{name} {stream}");
        }
        assert_eq!(r["stdoutTruncated"], false, "{name}");
        assert_eq!(r["exitCode"], 0, "{name}");
    }
    // The cap cuts at a byte, even inside a character: the first CAP bytes.
    for (name, tail, written) in [
        ("cut-2-byte", &b"\xc3"[..], CAP + 1),
        ("cut-4-byte", &b"\xf0\x9f"[..], CAP + 2),
    ] {
        let r = by_name(name);
        let mut kept = vec![b'x'; CAP - tail.len()];
        kept.extend_from_slice(tail);
        assert_eq!(exact_bytes(r, "stdout"), kept, "{name}");
        assert_eq!(r["stdoutTruncated"], true, "{name}");
        assert_eq!(r["stdoutBytes"], written, "{name}");
    }
    // Random bytes: exactly the cap is not truncated, more is; either way
    // the first CAP bytes are kept and the count says what was written.
    for (name, truncated, written) in [
        ("urandom-cap", false, CAP),
        ("urandom-over", true, 1_000_000),
    ] {
        let r = by_name(name);
        for stream in ["stdout", "stderr"] {
            assert_eq!(exact_bytes(r, stream).len(), CAP, "{name} {stream}");
            assert_eq!(
                r[format!("{stream}Truncated")],
                truncated,
                "{name} {stream}"
            );
            assert_eq!(r[format!("{stream}Bytes")], written, "{name} {stream}");
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

/// `seq 1 LAST`; `seq 1 100000` is the 588,895 bytes of issue 12's
/// `big.txt`.
fn seq_output(last: u32) -> Vec<u8> {
    (1..=last)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// `len` bytes that gzip cannot shrink much, the same every run.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// `gzip -c FILE`, as the items run it.
fn gzip(file: &Path) -> Vec<u8> {
    let out = Command::new("gzip")
        .arg("-c")
        .arg(file)
        .output()
        .expect("run gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_utf8_reaches_the_api_exactly_in_base64_and_text_has_none() {
    let dir = shared_dir();
    let file = dir.path().join("known.txt");
    // 108,894 bytes; gzip makes them about 45,000, under the cap.
    std::fs::write(&file, seq_output(20_000)).unwrap();
    let up = DtsUp::start(&[]);
    let id = up
        .submit(json!({
            "templateFunction": r#"case "$1" in latin1) printf 'caf\xe9' ;; text) printf 'café\n' ;; *) gzip -c "$1" ;; esac"#,
            "inputList": ["latin1", "text", file],
        }))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let page = strict_json(&up, &format!("/v1/tasks/{id}/results")).await;
    let [latin1, utf8, gzipped] = page["items"].as_array().expect("items").as_slice() else {
        panic!("three results: {page}");
    };

    assert_eq!(
        latin1["stdout"], "caf\u{fffd}",
        "shown to people with U+FFFD"
    );
    assert_eq!(latin1["stdoutBase64"], "Y2Fm6Q==", "{latin1}");
    assert_eq!(exact_bytes(latin1, "stdout"), b"caf\xe9");
    assert_eq!(latin1["stdoutBytes"], 4);

    assert_eq!(utf8["stdout"], "café\n");
    assert_eq!(utf8.get("stdoutBase64"), None, "{utf8}");
    assert_eq!(utf8.get("stderrBase64"), None, "{utf8}");
    assert_eq!(utf8["stdoutBytes"], 6);

    let expected = gzip(&file);
    assert_eq!(&expected[..2], b"\x1f\x8b");
    assert!(
        exact_bytes(gzipped, "stdout") == expected,
        "the API's bytes are not gzip's"
    );
    assert_eq!(gzipped["stdoutBytes"], expected.len());
    assert_eq!(gzipped["stdoutTruncated"], false);
}

/// Issue 12, point 1: output cut by the cap was lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_results_says_on_stderr_how_much_the_cap_cut_and_prints_exactly_the_kept_bytes() {
    let up = DtsUp::start(&[]);
    let id = up
        .submit(json!({"templateFunction": "seq 1 100000", "inputList": ["big.txt"]}))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let said = "dts: item 0 (\"big.txt\"): stdout cut at 65,536 of 588,895 bytes \
                (the server keeps executor.output-cap-bytes per item)\n";

    let out = dts_client(&up, &["results", &id, "--output-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == seq_output(100_000)[..CAP],
        "stdout is not the first {CAP} bytes"
    );
    assert_eq!(text(&out.stderr), said);

    let listed = dts_client(&up, &["results", &id]);
    assert_eq!(listed.status.code(), Some(0));
    assert_eq!(text(&listed.stderr), said, "the listing says it too, once");
    assert!(
        text(&listed.stdout).starts_with("#0 \"big.txt\" [ok] "),
        "{}",
        text(&listed.stdout)
    );

    let json = dts_client(&up, &["results", &id, "--json"]);
    assert_eq!(json.status.code(), Some(0));
    let items: Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(
        (&items[0]["stdoutTruncated"], &items[0]["stdoutBytes"]),
        (&json!(true), &json!(588_895))
    );
    assert_eq!(text(&json.stderr), said);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dts_results_of_gzip_piped_to_gunzip_gives_the_file_back() {
    let dir = shared_dir();
    let file = dir.path().join("noise.bin");
    let content = noise(300_000);
    std::fs::write(&file, &content).unwrap();
    let data = tempfile::TempDir::new().unwrap();
    // A cap the compressed file fits in.
    let up = DtsUp::start_in(
        &data.path().join("data"),
        &[],
        &[("DTS_EXECUTOR_OUTPUT_CAP_BYTES", "1048576")],
    );
    let id = up
        .submit(json!({"templateFunction": "gzip -c \"$1\"", "inputList": [file]}))
        .await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert!(
        gzip(&file).len() > 65_536,
        "the default cap would have cut it"
    );

    let out = run_dts(
        Command::new("sh")
            .arg("-c")
            .arg(r#""$0" results "$1" --output-only --server "$2" | gunzip"#)
            .arg(dts_binary())
            .arg(&id)
            .arg(&up.base)
            .env_remove("DTS_AUTH_TOKEN"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout == content, "gunzip gave other bytes back");
    assert_eq!(text(&out.stderr), "");
}

/// Issue 12, point 5: `dts run 'gzip -c "$1"' f | gunzip` failed, and
/// `caf\xe9` came out as `caf\u{fffd}`.
#[test]
fn dts_run_writes_each_items_output_bytes_as_they_are() {
    let dir = shared_dir();
    let file = dir.path().join("known.txt");
    std::fs::write(&file, seq_output(20_000)).unwrap();
    assert!(gzip(&file).len() < CAP, "gzip's output fits dts run's cap");
    let out = run_dts(
        Command::new("sh")
            .arg("-c")
            .arg(r#""$0" run "$1" "$2" | gunzip"#)
            .arg(dts_binary())
            .arg(r#"gzip -c "$1""#)
            .arg(&file),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == seq_output(20_000),
        "gunzip gave other bytes back"
    );

    let out = run_dts(Command::new(dts_binary()).args(["run", r#"printf 'caf\xe9'"#, "x"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout, b"caf\xe9");
}
