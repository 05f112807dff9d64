"""The command line: parses the flags, runs the sections asked for in
order (throughput, store operations, profile, latency and status reads,
scheduling, W4), prints the report and writes it; stops everything it started on the
way out, also on Ctrl-C, SIGTERM and SIGHUP."""

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
import traceback

from .clients import Redis, check_completed, task_body
from .common import CORES, ROOT, BenchError, failure, log
from .latency import latency, status_reads
from .machine import check_tools, machine_info
from .nodes import Distributed, Embedded, warm_up
from .processes import cleanup_all, cpu_idle_fraction, remove_temps
from .profile import profile_dts_up
from .report import render
from .runners import RUNNER_FN, RUNNER_LABEL, RUNNERS, run_dts_up
from .scheduling import sched_errors, scheduling
from .store_ops import store_ops_run
from .summary import median, percentile, summarize
from .w4 import w4
from .workloads import make_workloads, warm_caches

SECTIONS = ["W1", "W2", "W3", "W4", "LAT", "READS", "SCHEDULING"]


def parse_args(description):
    """The flags, checked, with what they imply: runs, sections, runners and
    the report's path (None: print only)."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer items and one run: a smoke check")
    ap.add_argument("--runs", type=int, default=None, help="runs per (workload, runner); medians are reported (default 3, 1 with --quick)")
    ap.add_argument("--long-runs", type=int, default=1,
                    help="runs of the scheduling section's long cases (16 workers × 10,000 items; the 32-worker scale run); default 1")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--skip-w4", action="store_true", help="leave out W4 (1,000,000 items)")
    ap.add_argument("--w4-complete", action="store_true", help="run W4 to completion (many minutes) instead of cancelling it once planned")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                    help="profile dts up with perf during an extra W1 run (default: on for full runs when perf is installed)")
    ap.add_argument("--runners", default=",".join(RUNNERS), help=f"comma-separated subset of {','.join(RUNNERS)}")
    ap.add_argument("--output", default=None, help="where to write the report (default BENCHMARKS.md for a full run; none for --quick/--only unless given)")
    ap.add_argument("--json", default=None, help="also write every measurement as JSON to this file")
    args = ap.parse_args()

    args.runs = args.runs if args.runs is not None else (1 if args.quick else 3)
    if args.runs < 1 or args.long_runs < 1:
        ap.error("--runs and --long-runs must be at least 1")
    sections = SECTIONS if args.only is None else [x.strip().upper() for x in args.only.split(",") if x.strip()]
    bad = [x for x in sections if x not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown {bad}; choose from {SECTIONS}")
    sections = list(sections)
    if args.skip_w4 and "W4" in sections:
        sections.remove("W4")
    args.sections = sections
    runners = [x.strip() for x in args.runners.split(",") if x.strip()]
    bad = [x for x in runners if x not in RUNNERS]
    if bad:
        ap.error(f"--runners: unknown {bad}; choose from {RUNNERS}")
    args.runner_list = runners
    # Only a full run of everything may overwrite BENCHMARKS.md by default.
    if args.output is None and not args.quick and args.only is None and not args.skip_w4 and args.runners == ",".join(RUNNERS):
        args.output = os.path.join(ROOT, "BENCHMARKS.md")
    if args.profile is None:
        args.profile = not args.quick and shutil.which("perf") is not None
    return args


def check_machine():
    """Notes for the report when something else loads the machine."""
    idle = cpu_idle_fraction(1.0)
    load = os.getloadavg()
    log(f"machine idle {idle * 100:.0f}% over 1 s, load average {load[0]:.2f}")
    notes = []
    if idle < 0.9:
        notes.append(f"The machine was only {idle * 100:.0f}% idle when the benchmark started (load average {load[0]:.2f}): something else was running.")
    return notes


def main(description):
    args = parse_args(description)
    check_tools()
    command = os.environ.get("BENCH_COMMAND") or " ".join(shlex.quote(a) for a in ["python3", "bench/bench.py"] + sys.argv[1:])
    info = machine_info()
    started = time.time()
    log(f"dts benchmark: {info['nproc']} cores, {info['cpu']}, kernel {info['kernel']}, dts {info['commit']}")
    extra = {"notes": check_machine()}
    workloads = make_workloads(args.sections, args.quick, extra)
    if workloads:
        warm_caches(workloads)
    rows = run_throughput(workloads, args.runner_list, args.runs)
    summary = summarize(rows, list(workloads))
    add_commandstats(summary, extra)
    if "W1" in workloads and "dts-dist" in args.runner_list:
        extra["store_ops"] = measure_store_ops(workloads["W1"])
    if args.profile and "W1" in workloads and "dts-up" in args.runner_list:
        extra["profile"] = measure_profile(workloads["W1"])
        ab = abs_interpreter_ab(workloads["W1"], args.runs, rows)
        if ab:
            extra["abs_interpreter"] = ab
    # Latency and status reads, then W4, each on fresh nodes.
    lat_count = 20 if args.quick else 200
    wrk_secs = 3 if args.quick else 10
    w4_items = 100_000 if args.quick else 1_000_000
    for mode in ("embedded", "distributed"):
        wanted = ("dts-up" if mode == "embedded" else "dts-dist") in args.runner_list
        if wanted and {"LAT", "READS"} & set(args.sections):
            latency_and_reads(mode, args.sections, lat_count, wrk_secs, extra)
    if "SCHEDULING" in args.sections:
        modes = [m for m, r in (("embedded", "dts-up"), ("distributed", "dts-dist")) if r in args.runner_list]
        extra["scheduling"] = scheduling(modes, args.runs, args.long_runs, args.quick)
    if "W4" in args.sections:
        for mode in ("embedded", "distributed"):
            if ("dts-up" if mode == "embedded" else "dts-dist") in args.runner_list:
                extra.setdefault("w4", {})[mode] = measure_w4(mode, w4_items, args.w4_complete)

    duration = time.time() - started
    report = render(info, command, args, args.runs, summary, extra, duration)
    write_outputs(args, report, info, rows, summary, extra)
    failed = [r for r in rows if "error" in r]
    failed += [1 for sec in ("latency", "reads", "w4") for v in extra.get(sec, {}).values() if "error" in v]
    failed += sched_errors(extra.get("scheduling", {}))
    return 1 if failed else 0


def run_throughput(workloads, runners, runs):
    """Every (run, workload, runner) once, in that order; a row that fails
    keeps its error and the others go on. Each row's ratio is to xargs in
    the same run and workload."""
    rows = []
    for run in range(1, runs + 1):
        for wname, wl in workloads.items():
            for runner in runners:
                log(f"run {run}/{runs}  {wname} × {wl['n']}  {RUNNER_LABEL[runner]} ...")
                rows.append(throughput_row(wl, runner, run))
            base = next((r["rate"] for r in rows if r["run"] == run and r["workload"] == wname
                         and r["runner"] == "xargs" and "rate" in r), None)
            for r in rows:
                if base and r["run"] == run and r["workload"] == wname and "rate" in r:
                    r["ratio"] = r["rate"] / base
    return rows


def throughput_row(wl, runner, run):
    row = {"workload": wl["name"], "runner": runner, "run": run, "n": wl["n"]}
    try:
        r = RUNNER_FN[runner](wl, wl["conc"])
        row.update(r)
        row["rate"] = wl["n"] / r["elapsed"]
        log(f"    {row['rate']:8.1f} items/s  ({r['elapsed']:.2f} s; runner CPU {r['own'] / wl['n'] * 1000:.3f} ms/item, "
            f"scripts {r['children'] / wl['n'] * 1000:.3f} ms/item)")
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # keep going: one broken row must not hide the others
        row["error"] = f"{type(e).__name__}: {e}"
        log(f"    ERROR {row['error']}")
        traceback.print_exc()
    return row


def add_commandstats(summary, extra):
    """Redis's own count of commands per item over the timed distributed W1
    runs, next to the store-ops run's MONITOR count."""
    w1 = next((s for s in summary if s["workload"] == "W1" and s["runner"] == "dts-dist" and s.get("redis")), None)
    if w1:
        per = [sum(red["calls"].values()) / w1["n"] for red in w1["redis"]]
        extra["commandstats_per_item"] = median(per)
        extra["commandstats_runs"] = per


def measure_store_ops(wl):
    log("store operations: an extra W1 run on a fresh distributed stack with Redis MONITOR ...")
    try:
        ops = store_ops_run(wl)
        n = ops["items"]
        ops["client_per_item"] = max(0.0, ops["client"] - ops["idle_client_per_s"] * ops["elapsed"]
                                     - ops["polls"] * ops["per_get"]) / n
        ops["lua_per_item"] = max(0.0, ops["lua"] - ops["idle_lua_per_s"] * ops["elapsed"]
                                  - ops["polls"] * ops["per_get_lua"]) / n
        ops["client_per_shard"] = ops["client_per_item"] * n / (ops["shards"] or 1)
        log(f"    {ops['client_per_item']:.3f} client requests and {ops['lua_per_item']:.2f} script commands per item "
            f"({ops['shards']} shards)")
        return ops
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        return failure(e)


def measure_profile(wl):
    if shutil.which("perf") is None:
        log("profile skipped: perf is not installed (apt-get install linux-perf)")
        return {"error": "perf is not installed"}
    log("profile: perf record on dts up during an extra, untimed W1 run ...")
    try:
        pr = profile_dts_up(wl)
        log(f"    fork {pr['fork'] * 100:.0f}% and page faults {pr['page_faults'] * 100:.0f}% of dts's samples")
        return pr
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        return failure(e)


def abs_interpreter_ab(w1, runs, rows):
    """A/B for the profile's finding: the same W1 with the interpreter given
    as an absolute path, which lets Rust's Command use posix_spawn. None if
    every run failed."""
    bash = shutil.which("bash")
    log(f"diagnostic: W1 on dts up with \"interpreter\": \"{bash}\" ({runs} runs) ...")
    ab = []
    for _ in range(runs):
        try:
            wl = dict(w1, interpreter=bash)
            r = run_dts_up(wl, wl["conc"])
            ab.append({"rate": wl["n"] / r["elapsed"], "own_ms": r["own"] / wl["n"] * 1000,
                       "children_ms": r["children"] / wl["n"] * 1000})
            log(f"    {ab[-1]['rate']:.0f} items/s, dts CPU {ab[-1]['own_ms']:.3f} ms/item, "
                f"scripts {ab[-1]['children_ms']:.3f} ms/item")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            log(f"    ERROR {e}")
    if not ab:
        return None
    xr = [r["rate"] for r in rows if r["workload"] == "W1" and r["runner"] == "xargs" and "rate" in r]
    return {"path": bash, "runs": ab, "rate": median([a["rate"] for a in ab]),
            "own_ms": median([a["own_ms"] for a in ab]),
            "children_ms": median([a["children_ms"] for a in ab]),
            "xargs_rate": median(xr)}


def latency_and_reads(mode, sections, lat_count, wrk_secs, extra):
    """Latency, then status reads on the last latency task (or a new
    one-item task), on one fresh node of `mode`."""
    node = None
    try:
        log(f"{mode}: starting for latency / status reads ...")
        node = Embedded(CORES) if mode == "embedded" else Distributed(worker_cores=1)
        warm_up(node.api, "true")
        tid = None
        if "LAT" in sections:
            tid = measure_latency(mode, node, lat_count, extra)
        if "READS" in sections:
            if tid is None:
                tid = node.api.submit(task_body('echo "$1"', ["x"]))
                check_completed(node.api.wait(tid), 1, "status-read task")
            measure_reads(mode, node, tid, wrk_secs, extra)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        extra.setdefault("latency", {})[mode] = failure(e)
    finally:
        if node:
            node.stop()


def measure_latency(mode, node, count, extra):
    """Records the latency in `extra`; returns the last task's id (None if
    it failed)."""
    log(f"{mode}: latency over {count} one-item tasks ...")
    try:
        lat = latency(node, count)
        extra.setdefault("latency", {})[mode] = lat
        log(f"    first item p50 {percentile(lat['first'], 50) * 1000:.1f} ms, p99 {percentile(lat['first'], 99) * 1000:.1f} ms")
        return lat["task_id"]
    except BenchError as e:
        extra.setdefault("latency", {})[mode] = {"error": str(e)}
        log(f"    ERROR {e}")
        return None


def measure_reads(mode, node, tid, wrk_secs, extra):
    log(f"{mode}: wrk -t2 -c32 -d{wrk_secs}s GET /v1/tasks/{{id}} ...")
    try:
        cpu0 = node.cpu()
        rd = status_reads(node, tid, wrk_secs)
        cpu1 = node.cpu()
        rd["cpu_parts_s"] = {k: cpu1["parts"][k] - cpu0["parts"].get(k, 0) for k in cpu1["parts"]}
        extra.setdefault("reads", {})[mode] = rd
        log(f"    {rd['rps']:,.0f} requests/s")
    except BenchError as e:
        extra.setdefault("reads", {})[mode] = {"error": str(e)}
        log(f"    ERROR {e}")


def measure_w4(mode, items, complete):
    """W4 on a fresh node of `mode`: the measurements, or {"error": ...}."""
    node = redis = None
    log(f"W4 {mode}: one task of {items:,} items of `true`{' (to completion)' if complete else ''} ...")
    try:
        if mode == "embedded":
            node = Embedded(CORES)
            warm_up(node.api, "true")
            r = w4(node, items, complete)
        else:
            node = Distributed(worker_cores=1)
            warm_up(node.api, "true")
            redis = Redis(node.redis_port)
            r = w4(node, items, complete, redis=redis, broker_port=node.broker_port)
        log(f"    accepted {r['t_accepted']:.2f} s, planned {r.get('t_planned', float('nan')):.2f} s, "
            f"INPROGRESS {r.get('t_inprogress', float('nan')):.2f} s"
            + (f", published (log) {r['t_published_log']:.2f} s" if "t_published_log" in r else "")
            + (f", on the topic {r['t_published']:.2f} s" if "t_published" in r else "")
            + f", {r.get('shards')} shards; RSS " + ", ".join(f"{k} {v / 1024:.0f} MB" for k, v in r["rss"].items() if v))
        return r
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        return failure(e)
    finally:
        if redis:
            redis.close()
        if node:
            node.stop()


def write_outputs(args, report, info, rows, summary, extra):
    print(report["text"])
    if args.output:
        with open(args.output, "w") as f:
            f.write(report["markdown"])
        log(f"wrote {args.output}")
    else:
        log("report not written (a --quick or partial run; pass --output FILE to write one)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"info": info, "rows": rows, "summary": summary, "extra": extra}, f, indent=1, default=str)


SIGNALLED = []


def _on_signal(signum, _frame):
    SIGNALLED.append(signum)
    raise SystemExit(128 + signum)


def run(description):
    """main() with clean-up: returns the exit code."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    code = 1
    try:
        code = main(description)
    except KeyboardInterrupt:
        log("interrupted: stopping everything the benchmark started")
        code = 130
    except SystemExit as e:
        if SIGNALLED:
            log("stopped by a signal: stopping everything the benchmark started")
        code = e.code if isinstance(e.code, int) else 1
    except BenchError as e:
        log(f"error: {e}")
        code = 1
    finally:
        # Ctrl-C again while cleaning up must not leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup_all()
        remove_temps()
    return code
