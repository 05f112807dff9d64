//! The rule the wait helpers exist for: no test in this workspace waits in
//! a loop without a deadline. Every `loop` and `while` in test code (the
//! integration tests, each crate's `tests/`, this kit) must have a
//! `deadline` in it or in the three lines above it, or a comment
//! `// ends: why` just above it (a loop over something finite).
//!
//! A keyword check cannot prove that a deadline is honoured on every path;
//! it makes a wait without one stand out, in review and in CI.

use dts_testkit::workspace_root;
use std::path::{Path, PathBuf};

/// Where test code lives: the integration tests, every crate's tests, and
/// this test kit.
fn test_sources() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut dirs = vec![root.join("tests"), root.join("crates/dts-testkit/src")];
    for entry in std::fs::read_dir(root.join("crates")).expect("list crates") {
        let tests = entry.expect("a crate").path().join("tests");
        if tests.is_dir() {
            dirs.push(tests);
        }
    }
    let mut files = Vec::new();
    // ends: each directory is listed once, and the tree is finite.
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("list a test directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Whether `line` starts a Rust loop that may wait: `loop`, `while` and
/// `while let` (not a `for` over something finite, and not a shell `while`
/// inside a script string).
fn starts_a_loop(line: &str) -> bool {
    let code = without_strings(line.trim_start());
    if code.starts_with("//") || line.contains("; do") {
        return false;
    }
    code.starts_with("loop {")
        || code.starts_with("while ")
        || code.contains("= loop {")
        || code.contains("=> loop {")
}

/// `line` with what is between double quotes left out (escaped quotes
/// taken into account), so a loop's keyword in a string does not count.
fn without_strings(line: &str) -> String {
    let mut code = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in line.chars() {
        match (in_string, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, true, _) => escaped = false,
            (_, false, '"') => in_string = !in_string,
            (false, _, c) => code.push(c),
            (true, false, _) => {}
        }
    }
    code
}

/// The lines of the loop that starts at `start`: up to the brace that closes
/// the one it opens.
fn loop_body(lines: &[&str], start: usize) -> std::ops::Range<usize> {
    let mut depth = 0i32;
    let mut opened = false;
    for (i, line) in lines.iter().enumerate().skip(start) {
        for c in line.chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => depth -= 1,
                _ => {}
            }
        }
        if opened && depth <= 0 {
            return start..i + 1;
        }
    }
    start..lines.len()
}

/// The loops in `path` with neither a deadline in or just above them nor an
/// `// ends:` comment saying why they end.
fn loops_without_a_deadline(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).expect("read a test source");
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !starts_a_loop(line) {
            continue;
        }
        let above = &lines[i.saturating_sub(3)..i];
        let says_why = above.iter().any(|l| l.trim_start().starts_with("// ends:"));
        let body = loop_body(&lines, i);
        let has_deadline = above
            .iter()
            .chain(&lines[body])
            .any(|l| l.to_lowercase().contains("deadline"));
        if !says_why && !has_deadline {
            let shown = path.strip_prefix(workspace_root()).unwrap_or(path);
            found.push(format!("{}:{}: {}", shown.display(), i + 1, line.trim()));
        }
    }
    found
}

#[test]
fn no_test_waits_in_a_loop_without_a_deadline_or_a_reason_it_ends() {
    let files = test_sources();
    assert!(
        files.iter().any(|f| f.ends_with("tests/it/common.rs")),
        "the scan found the integration tests: {files:?}"
    );
    let found: Vec<String> = files
        .iter()
        .flat_map(|f| loops_without_a_deadline(f))
        .collect();
    assert!(
        found.is_empty(),
        "loops in test code with no deadline (use dts_testkit::wait_*, or give the loop a \
         `deadline`, or say above it `// ends: why`):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_loop_rule_catches_a_poll_without_a_deadline_and_accepts_one_with_it() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let file = dir.path().join("poll.rs");
    std::fs::write(
        &file,
        "fn a() {\n    loop {\n        if ready() { break; }\n        sleep();\n    }\n}\n\
         fn b() {\n    let deadline = now() + WAIT;\n    while !ready() {\n        sleep();\n    }\n}\n\
         fn c() {\n    // ends: at EOF.\n    while let Some(line) = lines.next() {\n    }\n}\n\
         const S: &str = \"while [ -e f ]; do sleep 1; done\";\n",
    )
    .expect("write a sample");
    let found = loops_without_a_deadline(&file);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("poll.rs:2: loop {"), "{found:?}");
}
