//! `dts run` as the everyday replacement for GNU parallel: signals kill its
//! items, output streams as items end, nothing is cut, and parallel's
//! habits (`-j`, `--halt`, `--dry-run`, `--tag`, `--joblog`, `--results`).

use crate::cli_hardening::{Screen, frames, on_terminal};
use crate::common::{DEADLINE, dts_binary, run_dts, text};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;

/// `dts run ARGS` to its end, stdin closed.
fn dts_run(args: &[&str]) -> Output {
    run_dts(Command::new(dts_binary()).arg("run").args(args))
}

/// `dts run ARGS`, started with its stdout and stderr piped.
fn spawn_run(args: &[&str]) -> Child {
    Command::new(dts_binary())
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dts run")
}

/// A marker no other test's process has in its command line.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("dts-test-{}-{nanos}", std::process::id())
}

/// Pids of the processes whose command line holds `marker`, but `except`
/// (dts itself has it in its arguments).
fn processes_with(marker: &str, except: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != except)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .windows(marker.len())
                    .any(|w| w == marker.as_bytes())
            })
        })
        .collect()
}

/// Starts `dts run 'sleep 21; echo x # MARKER' a b`, waits until both items
/// run, sends `signal`, and checks the exit status, the one line on
/// stderr, that nothing was printed, and that no item is left running.
fn interrupted_run_kills_its_items(signal: libc::c_int, status: i32) {
    let marker = marker();
    let template = format!("sleep 21; echo x # {marker}");
    let mut child = spawn_run(&["-j", "2", &template, "a", "b"]);
    let dts = child.id();
    dts_testkit::wait_until_blocking(DEADLINE, "both items to be running", || {
        processes_with(&marker, dts).len() == 2
    });
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(dts as libc::pid_t, signal) }, 0);
    let out = dts_testkit::finish_within(&mut child, DEADLINE, "dts run after the signal");
    assert_eq!(out.status.code(), Some(status), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "dts: interrupted: killed 2 running items, 0 of 2 done\n"
    );
    assert_eq!(text(&out.stdout), "");
    dts_testkit::wait_until_blocking(DEADLINE, "no item process to be left", || {
        processes_with(&marker, dts).is_empty()
    });
}

#[test]
fn sigterm_on_dts_run_kills_its_running_items_and_exits_143() {
    interrupted_run_kills_its_items(libc::SIGTERM, 143);
}

#[test]
fn ctrl_c_on_dts_run_kills_its_running_items_and_exits_130() {
    interrupted_run_kills_its_items(libc::SIGINT, 130);
}

#[test]
fn a_hangup_on_dts_run_kills_its_running_items_and_exits_129() {
    interrupted_run_kills_its_items(libc::SIGHUP, 129);
}

/// Each line `reader` gives, as it comes.
fn lines_of(reader: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn dts_run_prints_the_first_items_output_while_later_items_still_run() {
    let inputs: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    let mut args = vec!["-j", "2", "sleep 0.5; echo $1"];
    args.extend(inputs.iter().map(String::as_str));
    let mut child = spawn_run(&args);
    let lines = lines_of(child.stdout.take().expect("piped stdout"));
    let first = lines
        .recv_timeout(DEADLINE)
        .expect("the first line within the deadline");
    // Twelve items of half a second on two cores take three seconds; the
    // first line comes as soon as item 0 is done.
    assert!(
        child.try_wait().expect("dts run's status").is_none(),
        "dts run had exited when its first line was read"
    );
    assert_eq!(first, "0");
    let out = dts_testkit::finish_within(&mut child, DEADLINE, "dts run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(rest, inputs[1..]);
}

#[test]
fn as_finished_prints_items_in_the_order_they_end_and_the_default_in_input_order() {
    let template = "sleep $1; echo $1";
    let out = dts_run(&["-j", "3", "--as-finished", template, "2", "0.1", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "0.1\n1\n2\n");
    let out = dts_run(&["-j", "3", "--ungroup", template, "1", "0.1"]);
    assert_eq!(text(&out.stdout), "0.1\n1\n");
    let out = dts_run(&["-j", "3", "-k", template, "2", "0.1", "1"]);
    assert_eq!(text(&out.stdout), "2\n0.1\n1\n");
}

#[test]
fn json_still_prints_one_array_with_every_item_once() {
    let out = dts_run(&["-j", "2", "--json", "echo $1", "a", "b", "c"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let outputs: Vec<&str> = results
        .iter()
        .map(|r| r["stdout"].as_str().unwrap())
        .collect();
    assert_eq!(outputs, ["a\n", "b\n", "c\n"]);
}

#[test]
fn a_600000_byte_file_comes_through_dts_run_byte_for_byte() {
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("big.txt");
    let content: Vec<u8> = (0..600_000u32)
        .map(|i| {
            if i % 81 == 80 {
                b'\n'
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect();
    std::fs::write(&file, &content).unwrap();
    let out = dts_run(&["cat \"$1\"", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 600_000);
    assert!(out.stdout == content, "the output differs from the file");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn a_cap_the_user_sets_cuts_output_and_says_which_item_and_by_how_much_on_stderr() {
    let out = dts_run(&[
        "--set",
        "executor.output-cap-bytes=10",
        "head -c 100 /dev/zero | tr '\\0' x",
        "big",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "xxxxxxxxxx");
    assert_eq!(
        text(&out.stderr),
        "dts: item 0 (\"big\"): stdout cut at 10 of 100 bytes (dts run was given executor.output-cap-bytes)\n"
    );
}

#[test]
fn tag_prefixes_each_line_with_the_input_and_a_tab() {
    let out = dts_run(&[
        "-j",
        "2",
        "--tag",
        "echo one; echo two >&2; echo $1",
        "a",
        "b c",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a\tone\na\ta\nb c\tone\nb c\tb c\n");
    assert_eq!(text(&out.stderr), "a\ttwo\nb c\ttwo\n");
}

#[test]
fn dry_run_prints_each_items_command_shell_quoted_and_runs_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let ran = dir.path().join("ran");
    let template = format!("touch '{}'; echo {{{{word}}}} \"$1\"", ran.display());
    let out = dts_run(&[
        "--dry-run",
        "--var",
        "word=hi",
        &template,
        "a",
        "b c",
        "it's",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let script = format!("touch '\\''{}'\\''; echo hi \"$1\"", ran.display());
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].ends_with(&format!(" -c '{script}' dts-item a")),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with(" dts-item 'b c'"), "{}", lines[1]);
    assert!(lines[2].ends_with(r" dts-item 'it'\''s'"), "{}", lines[2]);
    assert!(!ran.exists(), "an item ran");
    // The printed command runs the item as dts would.
    let shell = run_dts(Command::new("sh").arg("-c").arg(&lines[1]));
    assert_eq!(text(&shell.stdout), "hi b c\n");
}

#[test]
fn the_joblog_has_parallels_columns_one_line_per_item() {
    let dir = tempfile::TempDir::new().unwrap();
    let log = dir.path().join("jobs.tsv");
    let out = dts_run(&[
        "-j",
        "2",
        "--joblog",
        log.to_str().unwrap(),
        "echo $1; [ $1 != b ] || exit 3",
        "a",
        "b",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let text = std::fs::read_to_string(&log).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(
        rows[0],
        [
            "Seq",
            "Host",
            "Starttime",
            "JobRuntime",
            "Send",
            "Receive",
            "Exitval",
            "Signal",
            "Command"
        ]
    );
    for (row, (seq, exitval, input)) in rows[1..].iter().zip([("1", "0", "a"), ("2", "3", "b")]) {
        assert_eq!(row.len(), 9, "{row:?}");
        assert_eq!(row[0], seq);
        assert_eq!(row[1], ":");
        let start: f64 = row[2].parse().unwrap();
        assert!(start > 1.7e9, "{row:?}");
        assert_eq!(row[2].split('.').nth(1).map(str::len), Some(3), "{row:?}");
        assert_eq!(row[3].split('.').nth(1).map(str::len), Some(3), "{row:?}");
        assert_eq!(row[4], "0");
        assert_eq!(row[5], "2", "stdout bytes: {row:?}");
        assert_eq!(row[6], exitval);
        assert_eq!(row[7], "0");
        assert!(
            row[8].ends_with(&format!(
                " -c 'echo $1; [ $1 != b ] || exit 3' dts-item {input}"
            )),
            "{row:?}"
        );
    }
}

/// The files of `dir/<seq>`, by name.
fn item_files(dir: &Path, seq: u32) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir.join(seq.to_string()))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn results_keeps_each_items_input_output_and_exit_code_in_a_directory_of_its_own() {
    let dir = tempfile::TempDir::new().unwrap();
    let results = dir.path().join("out");
    let out = dts_run(&[
        "--results",
        results.to_str().unwrap(),
        "echo out $1; echo err >&2; [ $1 = a ] || exit 4",
        "a",
        "b",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_results_of_a_and_b(&results);
}

/// `--results DIR` of `echo out $1; echo err >&2; [ $1 = a ] || exit 4`
/// over `a b`: a directory per item and nothing else, for `dts run` and
/// `dts submit --wait` alike.
pub(crate) fn assert_results_of_a_and_b(results: &Path) {
    let file = |name: &str, content: &str| (name.to_string(), content.to_string());
    assert_eq!(
        item_files(results, 1),
        [
            file("exitcode", "0\n"),
            file("input", "a"),
            file("stderr", "err\n"),
            file("stdout", "out a\n")
        ]
    );
    assert_eq!(
        item_files(results, 2),
        [
            file("exitcode", "4\n"),
            file("input", "b"),
            file("stderr", "err\n"),
            file("stdout", "out b\n")
        ]
    );
    let mut entries: Vec<String> = std::fs::read_dir(results)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["1", "2"]);
}

#[test]
fn halt_now_at_the_first_failure_kills_the_running_item_and_starts_no_other() {
    let dir = tempfile::TempDir::new().unwrap();
    let template = format!(
        "[ $1 != a ] || exit 7; sleep 5; touch '{}'/$1; echo $1",
        dir.path().display()
    );
    let out = dts_run(&[
        "-j",
        "1",
        "--halt",
        "now,fail=1",
        &template,
        "a",
        "b",
        "c",
        "d",
    ]);
    // GNU parallel exits with the exit status of the item that failed.
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("dts: item 0 (\"a\") failed: exit 7\ndts: halted (--halt now,fail=1): 1 item failed; killed "),
        "{stderr}"
    );
    assert!(stderr.ends_with(", 1 of 4 done\n"), "{stderr}");
    let touched: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(touched.is_empty(), "items ran to their end: {touched:?}");
}

#[test]
fn halt_soon_lets_running_items_finish_and_starts_no_new_one() {
    let dir = tempfile::TempDir::new().unwrap();
    let template = format!(
        "touch '{}'/$1; if [ $1 = a ]; then sleep 0.5; exit 1; fi; sleep 2; echo $1",
        dir.path().display()
    );
    let out = dts_run(&[
        "-j",
        "2",
        "--halt",
        "soon,fail=1",
        &template,
        "a",
        "b",
        "c",
        "d",
        "e",
        "f",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // `b` ran beside `a` and finished; the slot `a` freed may have started
    // `c` before the failure was seen, but no item started after that.
    let stdout = text(&out.stdout);
    assert!(stdout == "b\n" || stdout == "b\nc\n", "{stdout}");
    let mut started: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    started.sort();
    assert!(
        started == ["a", "b"] || started == ["a", "b", "c"],
        "{started:?}"
    );
    assert!(
        text(&out.stderr).contains("dts: halted (--halt soon,fail=1): 1 item failed; let "),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_halt_value_is_refused_naming_it_and_runs_nothing() {
    let dir = tempfile::TempDir::new().unwrap();
    let ran = dir.path().join("ran");
    let template = format!("touch '{}'", ran.display());
    let out = dts_run(&["--halt", "now,success=1", &template, "a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("\"success=1\" in \"now,success=1\": only fail=N is supported"),
        "{}",
        text(&out.stderr)
    );
    assert!(!ran.exists());
}

#[test]
fn bar_draws_progress_on_a_terminal_and_leaves_the_output_alone() {
    let args = [
        "run",
        "--bar",
        "-j",
        "2",
        "sleep 0.3; echo $1",
        "1",
        "2",
        "3",
        "4",
    ];
    let shown = on_terminal(&args, Screen::Stderr);
    assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.screen));
    assert_eq!(text(&shown.piped), "1\n2\n3\n4\n");
    let frames = frames(&shown.screen);
    assert!(
        frames.iter().any(|f| f.contains("/4 items")),
        "{:?}",
        text(&shown.screen)
    );
    // Without --bar, only the closing line.
    let shown = on_terminal(
        &args[..1]
            .iter()
            .chain(&args[2..])
            .copied()
            .collect::<Vec<_>>(),
        Screen::Stderr,
    );
    assert!(
        text(&shown.screen).starts_with("dts: 4 items, 4 succeeded, 0 failed in "),
        "{:?}",
        text(&shown.screen)
    );
}

#[test]
fn halt_now_does_not_wait_for_earlier_items_to_end_before_killing_them() {
    let dir = tempfile::TempDir::new().unwrap();
    let template = format!(
        "[ $1 != b ] || exit 5; sleep 5; touch '{}'/$1",
        dir.path().display()
    );
    let out = dts_run(&["-j", "2", "--halt", "now,fail=1", &template, "a", "b"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    // `a` runs beside `b` (on a machine too busy to have started it yet,
    // it is never started: 0 running items to kill).
    let stderr = text(&out.stderr);
    let halted = "dts: halted (--halt now,fail=1): 1 item failed; killed ";
    assert!(
        stderr.ends_with(&format!("{halted}1 running item, 1 of 2 done\n"))
            || stderr.ends_with(&format!("{halted}0 running items, 1 of 2 done\n")),
        "{stderr}"
    );
    let touched: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(touched.is_empty(), "item a ran to its end: {touched:?}");
}

#[test]
fn tag_with_json_and_dry_run_with_a_joblog_are_refused_naming_both() {
    let out = dts_run(&["--tag", "--json", "echo", "a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("the argument '--tag' cannot be used with '--json'"),
        "{}",
        text(&out.stderr)
    );
    let dir = tempfile::TempDir::new().unwrap();
    let log = dir.path().join("jobs.tsv");
    let out = dts_run(&["--dry-run", "--joblog", log.to_str().unwrap(), "echo", "a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("the argument '--dry-run' cannot be used with '--joblog <FILE>'"),
        "{}",
        text(&out.stderr)
    );
    assert!(!log.exists());
}
