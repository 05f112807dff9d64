//! Items kept apart from their worker (issue 9, "Safe by default"): each
//! test does what a hostile or careless item did against `dts up` (or
//! `dts run`) started as CI starts it, as root with its defaults, and checks
//! what a user cares about: the server's secrets stay unread, the worker
//! stays up, nothing an item started outlives it, the task's `memoryMb` and
//! `cpus` hold, and a worker short of descriptors does not fail items for it.

use crate::common::{DEADLINE, DtsUp, dts_binary, items, process_gone, shared_dir, task, wait_for};
use crate::security::{wait_for_a_dts_worker, workers};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use tempfile::TempDir;

/// These tests are about what a dts running as root does with other
/// people's items; as another user there is no one to switch to and no
/// cgroup to write.
fn assert_root() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the isolation tests run as root, as CI does: a root dts runs items as nobody, in cgroups"
    );
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The one result of a one-item task, once it ended.
async fn only_result(up: &DtsUp, id: &str) -> (Value, Value) {
    let task = up.wait_ended(id).await;
    let results = up.all_results(id, "").await;
    assert_eq!(results.len(), 1, "{results:?}");
    (task, results[0].clone())
}

fn stdout(result: &Value) -> &str {
    result["stdout"].as_str().expect("stdout")
}

fn stderr(result: &Value) -> &str {
    result["stderr"].as_str().expect("stderr")
}

// ---------------------------------------------------------------------------
// The server's secrets and the worker itself (finding 3, and finding 7)
// ---------------------------------------------------------------------------

/// A secret in the server's environment: its API token.
const TOKEN: &str = "the-servers-api-token-0123456789";
/// A secret in the server's configuration file.
const CONFIG_SECRET: &str = "the-servers-sasl-password-9876543210";

/// `dts up` as an operator starts it: as root, with the token in its
/// environment and a configuration file holding a secret (mode 0600) in its
/// working directory `dir`. `dir` is one others may enter, as `/opt/dts`
/// is, so what keeps items out is the modes of the files themselves.
fn node_with_secrets(dir: &Path) -> DtsUp {
    set_mode(dir, 0o755);
    let config = dir.join("dts.properties");
    std::fs::write(
        &config,
        format!("pubsub.kafka.sasl.password={CONFIG_SECRET}\n"),
    )
    .expect("write the config file");
    set_mode(&config, 0o600);
    let config = config.display().to_string();
    DtsUp::start_in_with(
        &dir.join("data"),
        &["--config", &config],
        &[("DTS_AUTH_TOKEN", TOKEN)],
        |command| {
            command.current_dir(dir);
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_reads_none_of_the_servers_token_config_or_database() {
    assert_root();
    let dir = TempDir::new().expect("temp dir");
    let up = node_with_secrets(dir.path());
    let server = dir.path().display().to_string();
    // What the attacker's item did: read the worker's environment and files
    // by absolute path and look into its working directory; and a careless
    // one: read a config from its own directory, as if it were the
    // worker's (finding 7).
    let attack = format!(
        "echo \"parent $PPID\"
         echo \"user $(id -un)\"
         echo \"pwd $(pwd)\"
         stat -c 'dir %a %U' .
         tr '\\0' '\\n' </proc/$PPID/environ
         cat '{server}/dts.properties'
         cat dts.properties
         cat '{server}/data/dts.sqlite3'
         ls /proc/$PPID/cwd
         env
         true"
    );
    let id = up.submit(task(&attack, &items(1))).await;
    let (done, result) = only_result(&up, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let (out, err) = (stdout(&result), stderr(&result));

    for secret in [TOKEN, CONFIG_SECRET] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "the item read a secret of the server: {result}"
        );
    }
    let pid = up.pid();
    assert!(
        out.contains(&format!("parent {pid}\n")),
        "$PPID is the worker: {out}"
    );
    for path in [
        format!("/proc/{pid}/environ"),
        format!("{server}/dts.properties"),
        format!("{server}/data/dts.sqlite3"),
        format!("/proc/{pid}/cwd"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&path) && l.contains("Permission denied")),
            "reading {path} was not refused: {err}"
        );
    }
    assert!(
        err.contains("dts.properties: No such file or directory"),
        "the item's directory is not its own: {err}"
    );
    assert!(out.contains("user nobody\n"), "{out}");
    let pwd = out
        .lines()
        .find_map(|l| l.strip_prefix("pwd "))
        .expect("a pwd line");
    assert!(
        !pwd.starts_with(&server),
        "the item ran in the server's directory: {pwd}"
    );
    assert!(
        out.contains("dir 700 nobody\n"),
        "the item's directory is private: {out}"
    );
}

/// This is why `faults.rs`'s poison-item test
/// (`an_item_that_kills_its_worker_is_failed_after_three_deaths_...`) sets
/// `executor.run-as=root`: as `nobody`, an item cannot signal its worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_cannot_kill_its_worker() {
    assert_root();
    let up = DtsUp::start(&[]);
    let id = up
        .submit(task(
            "echo \"parent $PPID\"; kill -9 $PPID; echo \"kill exit $?\"; true",
            &items(1),
        ))
        .await;
    let pid = up.pid();
    // The worker must outlive the item: asked before each look at the task,
    // so a dead worker fails here rather than as a refused connection.
    wait_for("the item to end with its worker alive", || async {
        assert!(!process_gone(pid as i32), "the item killed its worker");
        let status = up.task(&id).await["status"].clone();
        status == "COMPLETED" || status == "FAILED"
    })
    .await;
    let (done, result) = only_result(&up, &id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        stdout(&result),
        format!("parent {pid}\nkill exit 1\n"),
        "{result}"
    );
    assert!(
        stderr(&result).contains("Operation not permitted"),
        "{result}"
    );
    assert!(!process_gone(pid as i32), "the worker died");
    let next = up.submit(task("echo $1", &items(3))).await;
    let next = up.wait_ended(&next).await;
    assert_eq!(next["status"], "COMPLETED", "{next}");
}

// ---------------------------------------------------------------------------
// Processes that leave the item's process group (finding 4)
// ---------------------------------------------------------------------------

/// Starts a process in a session of its own (out of the item's process
/// group, which is what a timeout used to kill), prints its pid, and
/// outlives the item's timeout.
const ESCAPE_AND_HANG: &str = "setsid sleep 1006 & echo $!; sleep 100";
/// Double-forks the escapee: the subshell that started it exits at once,
/// so it has no parent in the item; the item then ends well.
const ESCAPE_AND_EXIT: &str = "(setsid sleep 1007 & echo $!) ; sleep 0.2";

/// The pid an item printed first.
fn printed_pid(result: &Value) -> i32 {
    stdout(result)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in the item's output: {result}"))
}

/// Whether the `sleep SECONDS` started as `pid` is gone: no such process, a
/// zombie, or the pid now used by another program.
fn escapee_gone(pid: i32, seconds: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return true;
    };
    process_gone(pid) || cmdline != format!("sleep\0{seconds}\0").as_bytes()
}

/// Waits until the escapee `pid` (a `sleep SECONDS`) is gone; on the
/// deadline, kills it and fails saying `what`.
async fn wait_escapee_gone(pid: i32, seconds: &str, what: &str) {
    let gone = tokio::time::timeout(DEADLINE, async {
        while !escapee_gone(pid, seconds) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    if gone.is_err() {
        // SAFETY: a signal to a process this test's item started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("{what}: the escapee {pid} (sleep {seconds}) outlived its item");
    }
}

/// Both escapes against a node whose items are contained by `containment`.
async fn escapees_die_with_their_items(up: &DtsUp, containment: &str) {
    let worker = wait_for_a_dts_worker(up).await;
    assert_eq!(
        worker["isolation"]["containment"], containment,
        "the mechanism under test is in use: {worker}"
    );

    let hang = up
        .submit(json!({"templateFunction": ESCAPE_AND_HANG, "inputList": ["a"], "timeoutSecs": 1}))
        .await;
    let (done, result) = only_result(up, &hang).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(result["timedOut"], true, "{result}");
    let pid = printed_pid(&result);
    wait_escapee_gone(pid, "1006", &format!("{containment}, timed out")).await;

    let exit = up.submit(task(ESCAPE_AND_EXIT, &items(1))).await;
    let (done, result) = only_result(up, &exit).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(result["exitCode"], 0, "{result}");
    let pid = printed_pid(&result);
    wait_escapee_gone(pid, "1007", &format!("{containment}, double fork")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_leave_the_items_session_die_with_it_in_dts_up() {
    assert_root();
    let up = DtsUp::start(&[]);
    escapees_die_with_their_items(&up, "cgroup").await;
}

/// The fallback where cgroups are not writable, forced here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_that_leave_the_items_session_die_with_it_under_the_subreaper() {
    let up = DtsUp::start(&["--set", "executor.containment=subreaper"]);
    escapees_die_with_their_items(&up, "subreaper").await;
}

/// Runs `command` to its end with its output captured, or kills it and
/// fails at the deadline saying `what`.
fn output_within_deadline(mut command: Command, what: &str) -> Output {
    dts_testkit::output_within(&mut command, DEADLINE, what)
}

/// `dts run --json ARGS`: its exit code and its one result.
fn dts_run_one(args: &[&str]) -> (Option<i32>, Value) {
    let mut command = Command::new(dts_binary());
    command.args(["run", "--json"]).args(args);
    let out = output_within_deadline(command, &format!("dts run {args:?}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("dts run {args:?} printed no JSON ({e}): {stderr}"));
    assert_eq!(results.as_array().map(Vec::len), Some(1), "{results}");
    (out.status.code(), results[0].clone())
}

/// `dts run` runs items as the caller, where it was started, but still
/// kills everything they start; with either mechanism, since a user's
/// machine may well have no writable cgroups.
#[tokio::test]
async fn processes_that_leave_the_items_session_die_with_it_in_dts_run() {
    for containment in ["auto", "subreaper"] {
        let setting = format!("executor.containment={containment}");
        let (code, result) =
            dts_run_one(&["--set", &setting, "--timeout", "1", ESCAPE_AND_HANG, "a"]);
        assert_eq!(code, Some(1), "{containment}: {result}");
        assert_eq!(result["timedOut"], true, "{containment}: {result}");
        let pid = printed_pid(&result);
        wait_escapee_gone(pid, "1006", &format!("dts run, {containment}, timed out")).await;

        let (code, result) = dts_run_one(&["--set", &setting, ESCAPE_AND_EXIT, "a"]);
        assert_eq!(code, Some(0), "{containment}: {result}");
        let pid = printed_pid(&result);
        wait_escapee_gone(pid, "1007", &format!("dts run, {containment}, double fork")).await;
    }
}

// ---------------------------------------------------------------------------
// The task's memoryMb and cpus
// ---------------------------------------------------------------------------

/// Holds `$1` bytes in a shell variable, and prints how many it got.
const ALLOCATE: &str = r"x=$(head -c $1 /dev/zero | tr '\0' a); echo ${#x}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_over_its_memory_limit_fails_naming_memory_mb_and_one_within_it_completes() {
    assert_root();
    let up = DtsUp::start(&[]);
    let over = up
        .submit(json!({"templateFunction": ALLOCATE, "inputList": ["200000000"], "memoryMb": 64}))
        .await;
    let within = up
        .submit(json!({"templateFunction": ALLOCATE, "inputList": ["50000000"], "memoryMb": 512}))
        .await;

    let (done, result) = only_result(&up, &over).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert_eq!(result["succeeded"], false, "{result}");
    assert_eq!(
        result["error"], "killed: the item used more memory than the task allows (memoryMb = 64)",
        "{result}"
    );

    let (done, result) = only_result(&up, &within).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(stdout(&result), "50000000\n", "{result}");
}

/// Finds the item's own CPU cgroup (a v1 `cpu` hierarchy, or the v2 one),
/// prints its quota and `nr_throttled`, keeps a CPU busy until it is
/// throttled (or `$1` seconds have passed), and prints `nr_throttled` again.
/// Counts are compared before and after, as the cgroup may have served an
/// earlier item.
const CPU_REPORT: &str = r#"
v1=$(grep -E '^[0-9]+:([^:]*,)?cpu(,[^:]*)?:' /proc/self/cgroup)
if [ -n "$v1" ]; then
  path=${v1#*:*:}
  for mount in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct; do
    [ -f "$mount$path/cpu.cfs_quota_us" ] && dir=$mount$path && break
  done
  quota=$(cat "$dir/cpu.cfs_quota_us")
else
  path=$(sed -n 's/^0:://p' /proc/self/cgroup)
  for mount in /sys/fs/cgroup /sys/fs/cgroup/unified; do
    [ -f "$mount$path/cpu.max" ] && dir=$mount$path && break
  done
  read -r quota _ <"$dir/cpu.max"
fi
throttled() {
  local key value
  while read -r key value; do
    [ "$key" = nr_throttled ] && echo "$value"
  done <"$dir/cpu.stat"
}
before=$(throttled)
end=$((SECONDS + $1))
while [ "$(throttled)" = "$before" ] && [ $SECONDS -lt $end ]; do
  for i in {1..2000}; do :; done
done
echo "quota $quota"
echo "before $before"
echo "after $(throttled)"
"#;

/// The `key value` lines of an item's output.
fn report(result: &Value) -> BTreeMap<String, String> {
    stdout(result)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn count(report: &BTreeMap<String, String>, key: &str) -> u64 {
    report
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number for {key}: {report:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_over_its_cpu_limit_is_throttled_and_one_without_a_limit_is_not() {
    assert_root();
    let up = DtsUp::start(&[]);
    // Busy until throttled, which a fifth of a CPU is within a period or two.
    let limited = up
        .submit(json!({"templateFunction": CPU_REPORT, "inputList": ["60"], "cpus": 0.2}))
        .await;
    let (done, result) = only_result(&up, &limited).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let limited = report(&result);
    assert_eq!(limited["quota"], "20000", "a fifth of 100 ms: {result}");
    assert!(
        count(&limited, "after") > count(&limited, "before"),
        "never throttled: {result}"
    );

    // Busy for a second or two, far above a fifth of a CPU.
    let free = up.submit(task(CPU_REPORT, &["2".to_string()])).await;
    let (done, result) = only_result(&up, &free).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let free = report(&result);
    assert!(
        ["-1", "max"].contains(&free["quota"].as_str()),
        "no quota: {result}"
    );
    assert_eq!(
        count(&free, "after"),
        count(&free, "before"),
        "throttled without a limit: {result}"
    );
}

// ---------------------------------------------------------------------------
// What GET /v1/workers shows
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_list_shows_how_items_are_isolated() {
    assert_root();
    let up = DtsUp::start(&[]);
    let worker = wait_for_a_dts_worker(&up).await;
    assert_eq!(
        worker["isolation"],
        json!({"containment": "cgroup", "runAs": "nobody", "privateWorkdir": true, "limits": ["memoryMb", "cpus"]}),
        "{worker}"
    );
    assert!(!up.log_text().contains("INSECURE"), "{}", up.log_text());
    drop(up);

    let up = DtsUp::start(&["--set", "executor.containment=subreaper"]);
    let worker = wait_for_a_dts_worker(&up).await;
    assert_eq!(worker["isolation"]["containment"], "subreaper", "{worker}");
    assert_eq!(worker["isolation"]["runAs"], "nobody", "{worker}");
    drop(up);

    let up = DtsUp::start(&["--set", "executor.run-as=root"]);
    let worker = wait_for_a_dts_worker(&up).await;
    assert_eq!(worker["isolation"]["runAs"], Value::Null, "{worker}");
    wait_for("the warning that items run as root", || async {
        up.log_text().contains("INSECURE: items run as root")
    })
    .await;
    assert_eq!(workers(&up).await.len(), 1);
}

// ---------------------------------------------------------------------------
// A worker out of descriptors (finding 2, last bullet)
// ---------------------------------------------------------------------------

/// Descriptors the node may open beyond those it holds once idle: room
/// for a few running items (each holds pipes and cgroup files), not for
/// sixteen.
const DESCRIPTOR_HEADROOM: u64 = 40;

fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the node's descriptors")
        .count() as u64
}

/// Sets the soft and hard `RLIMIT_NOFILE` of the running process `pid`.
fn limit_open_files(pid: u32, limit: u64) {
    let limit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit reads the struct we pass and writes nothing back.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_out_of_descriptors_runs_every_item_once_without_failing_or_counting_them() {
    let ran = shared_dir();
    let up = DtsUp::start(&["--cores", "16"]);
    wait_for_a_dts_worker(&up).await;
    // The limit is lowered once the node is up and idle, so the headroom
    // is the same whatever the node holds by then.
    let limit = open_descriptors(up.pid()) + DESCRIPTOR_HEADROOM;
    limit_open_files(up.pid(), limit);

    let log = ran.path().join("ran");
    let inputs = items(32);
    let script = format!("sleep 0.3; echo \"$1\" >>'{}'; echo \"$1\"", log.display());
    let mut body = task(&script, &inputs);
    // Items waiting out the descriptor shortage look like stragglers; a
    // copy would run them twice, which is not what this test is about.
    body["speculation"] = json!(false);
    let id = up.submit(body).await;
    let done = up.wait_ended(&id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(
        (&done["itemsSucceeded"], &done["itemsFailed"]),
        (&json!(32), &json!(0)),
        "{done}"
    );
    let results = up.all_results(&id, "").await;
    assert_eq!(results.len(), inputs.len());
    for (index, (result, input)) in results.iter().zip(&inputs).enumerate() {
        assert_eq!(result["index"], index, "{result}");
        assert_eq!(stdout(result), format!("{input}\n"), "{result}");
        assert_eq!(
            result["attempt"], 1,
            "a fault counted as an attempt: {result}"
        );
    }
    let mut ran: Vec<String> = std::fs::read_to_string(&log)
        .expect("the items' log")
        .lines()
        .map(str::to_string)
        .collect();
    ran.sort();
    let mut expected = inputs.clone();
    expected.sort();
    assert_eq!(ran, expected, "every item ran exactly once");
    let text = up.log_text();
    let faults = text
        .matches("could not start on this worker; trying again")
        .count();
    println!("{faults} starts put off for lack of descriptors ({limit} allowed)");
    assert!(
        faults > 0,
        "the worker never ran out of descriptors ({limit} allowed): {text}"
    );
}
